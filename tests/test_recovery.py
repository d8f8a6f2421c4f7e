"""Missed-message recovery with the official socket.io client (Node), in one process.

The client (``tests/js/sioclient.cjs``) drops its transport as a network failure
would and reconnects when told, so each test acts while it is away."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest
import socketio

from realtime_gateway import (
    AuditRecord,
    ChatNamespace,
    Gateway,
    GatewayNamespace,
    Identity,
    MemoryRecoveryStore,
    MemoryRegistry,
    MemoryRevocationStore,
    SignedTokenAuthenticator,
    UpdatesNamespace,
    reference_rules,
)

from .clinic import USERS, Inbox, clinic_gateway, connect_as
from .conftest import Clients, RunningServer, quick_config, serve, until
from .jsclient import JsClient, js_client

UPDATES = "/updates"


def _vitals(client: JsClient) -> list[Any]:
    return [args[0]["data"]["n"] for args in client.events("patient:update")]


def _gateway(
    authenticator: SignedTokenAuthenticator,
    *,
    audit: Callable[[AuditRecord], None] | None = None,
    namespaces: list[GatewayNamespace] | None = None,
    **settings: Any,
) -> Gateway:
    return Gateway(
        authenticator=authenticator,
        authorizer=reference_rules(),
        config=quick_config(**{"recovery_window": 30, **settings}),
        namespaces=namespaces or [UpdatesNamespace()],
        audit=audit,
    )


@pytest.fixture
async def clinic(authenticator: SignedTokenAuthenticator) -> AsyncIterator[RunningServer]:
    async with serve(_gateway(authenticator), "aiohttp") as running:
        yield running


async def _parked(gateway: Gateway, count: int = 1) -> None:
    """Wait until the server has heard ``count`` sockets drop (they are parked)."""
    recovery = gateway._recovery
    assert recovery is not None
    await until(lambda: len(recovery._parked) >= count)


async def _subscribed(client: JsClient, patient: str = "p1") -> Any:
    report = await client.connected()
    assert not report.get("recovered")
    ack = await client.call("subscribe:patient", {"patientId": patient})
    assert ack["success"] is True
    return report


async def _drop(client: JsClient, gateway: Gateway) -> None:
    client.send("drop")
    await client.disconnected()
    await _parked(gateway)


async def _publish(gateway: Gateway, *numbers: int, patient: str = "p1") -> None:
    for n in numbers:
        await gateway.publish_update("patient", patient, "vitals", {"n": n}, namespace=UPDATES)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_a_dropped_client_recovers_the_events_it_missed_in_order_once(
    clinic: RunningServer, authenticator: SignedTokenAuthenticator, transport: str
) -> None:
    gateway = clinic.gateway
    token = authenticator.issue(USERS["nurse"])
    async with js_client(
        clinic.url, UPDATES, auth={"token": token}, transports=(transport,)
    ) as client:
        first = await _subscribed(client)
        assert first["pid"]  # the CONNECT reply carried {sid, pid}
        await _publish(gateway, 0)
        await client.event("patient:update")

        await _drop(client, gateway)
        await _publish(gateway, 1, 2, 3)
        client.send("reconnect")
        again = await client.connected()
        assert again["recovered"] is True
        assert again["pid"] == first["pid"]
        assert again["id"] != first["id"]
        await _publish(gateway, 4)
        await until(lambda: len(_vitals(client)) >= 5)
        assert _vitals(client) == [0, 1, 2, 3, 4]
        # Each event carries its offset, a string, as its last argument; increasing.
        offsets = [args[-1] for args in client.events("patient:update")]
        assert all(isinstance(offset, str) for offset in offsets)
        assert [int(o) for o in offsets] == sorted({int(o) for o in offsets})
        # The recovered socket is back in its room: a new update reaches it once.
        conn = gateway.connection(again["id"])
        assert conn is not None
        assert "patient:p1" in conn.rooms
    assert gateway.metrics.recoveries["recovered"] == 1
    assert gateway.metrics.recovered_events == 3


class GatedRules:
    """The reference rules, with ``subscribe`` decisions held while ``gate`` is shut."""

    def __init__(self) -> None:
        self.rules = reference_rules()
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()

    async def authorize(self, identity: Identity, action: str, target: str) -> None:
        if action == "subscribe" and not self.gate.is_set():
            self.waiting.set()
            await self.gate.wait()
        await self.rules.authorize(identity, action, target)


async def test_events_sent_while_the_socket_is_being_recovered_arrive_once_in_order(
    authenticator: SignedTokenAuthenticator,
) -> None:
    """The socket is in its own rooms before its old rooms are re-authorized: what
    reaches it meanwhile is held, and what the replay already carries is dropped."""
    rules = GatedRules()
    gateway = Gateway(
        authenticator=authenticator,
        authorizer=rules,
        config=quick_config(recovery_window=30),
        namespaces=[UpdatesNamespace()],
    )
    nurse = USERS["nurse"]
    async with serve(gateway, "aiohttp") as running:
        token = authenticator.issue(nurse)
        async with js_client(running.url, UPDATES, auth={"token": token}) as client:
            await _subscribed(client)
            await _drop(client, gateway)
            await gateway.emit_to_user(nurse.user_id, "note", {"n": 1}, namespace=UPDATES)
            rules.gate.clear()
            client.send("reconnect")
            await rules.waiting.wait()  # the recovery is re-authorizing patient:p1
            await gateway.emit_to_user(nurse.user_id, "note", {"n": 2}, namespace=UPDATES)
            await _publish(gateway, 1)
            rules.gate.set()
            assert (await client.connected())["recovered"] is True
            await gateway.emit_to_user(nurse.user_id, "note", {"n": 3}, namespace=UPDATES)
            await until(lambda: len(client.events("note")) >= 3)
            await _publish(gateway, 2)
            await until(lambda: len(_vitals(client)) >= 2)
            assert [args[0]["n"] for args in client.events("note")] == [1, 2, 3]
            assert _vitals(client) == [1, 2]
    recovery = gateway._recovery
    assert recovery is not None
    assert not recovery.holding


class GatedRegistry(MemoryRegistry):
    """The in-memory registry, with joins of ``room`` held while ``gate`` is shut."""

    def __init__(self, room: str) -> None:
        super().__init__()
        self.room = room
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()

    async def join(self, sid: str, room: str) -> bool:
        if room == self.room and not self.gate.is_set():
            self.waiting.set()
            await self.gate.wait()
        return await super().join(sid, room)


async def test_events_sent_while_the_socket_enters_its_own_rooms_arrive_once(
    authenticator: SignedTokenAuthenticator,
) -> None:
    """A recovering socket's deliveries are held from admission on, before it is in
    any room: an event reaching it while its user room is being recorded comes once."""
    nurse = USERS["nurse"]
    registry = GatedRegistry(f"user:{nurse.user_id}")
    gateway = Gateway(
        authenticator=authenticator,
        authorizer=reference_rules(),
        config=quick_config(recovery_window=30),
        namespaces=[UpdatesNamespace()],
        registry=registry,
    )
    async with serve(gateway, "aiohttp") as running:
        token = authenticator.issue(nurse)
        async with js_client(running.url, UPDATES, auth={"token": token}) as client:
            await _subscribed(client)
            await _drop(client, gateway)
            await gateway.emit_to_user(nurse.user_id, "note", {"n": 1}, namespace=UPDATES)
            registry.gate.clear()
            client.send("reconnect")
            await asyncio.wait_for(registry.waiting.wait(), 5)  # in the room, unrecorded
            await gateway.emit_to_user(nurse.user_id, "note", {"n": 2}, namespace=UPDATES)
            registry.gate.set()
            assert (await client.connected())["recovered"] is True
            await gateway.emit_to_user(nurse.user_id, "note", {"n": 3}, namespace=UPDATES)
            await until(lambda: len(client.events("note")) >= 3)
            await _publish(gateway, 4)  # a later event: nothing more was on its way
            await until(lambda: len(_vitals(client)) >= 1)
            assert [args[0]["n"] for args in client.events("note")] == [1, 2, 3]


async def test_offsets_keep_advancing_over_two_drops_in_a_row(
    clinic: RunningServer, authenticator: SignedTokenAuthenticator
) -> None:
    """socket.io#5419: after a recovery, the next recovery starts where the client is."""
    gateway = clinic.gateway
    token = authenticator.issue(USERS["nurse"])
    async with js_client(clinic.url, UPDATES, auth={"token": token}) as client:
        await _subscribed(client)
        await _drop(client, gateway)
        await _publish(gateway, 1, 2)
        client.send("reconnect")
        assert (await client.connected())["recovered"] is True
        await until(lambda: len(_vitals(client)) >= 2)

        await _drop(client, gateway)
        await _publish(gateway, 3)
        client.send("reconnect")
        assert (await client.connected())["recovered"] is True
        await _publish(gateway, 4)
        await until(lambda: len(_vitals(client)) >= 4)
        assert _vitals(client) == [1, 2, 3, 4]
    assert gateway.metrics.recoveries["recovered"] == 2


async def test_a_client_that_got_no_event_yet_still_recovers(
    clinic: RunningServer, authenticator: SignedTokenAuthenticator
) -> None:
    """The client sends no offset until an event reached it: the gateway uses where
    the socket started (Node's socket.io cannot recover such a client)."""
    gateway = clinic.gateway
    token = authenticator.issue(USERS["nurse"])
    async with js_client(clinic.url, UPDATES, auth={"token": token}) as client:
        await _subscribed(client)
        await _drop(client, gateway)
        await _publish(gateway, 1)
        client.send("reconnect")
        assert (await client.connected())["recovered"] is True
        await until(lambda: len(_vitals(client)) >= 1)
        assert _vitals(client) == [1]


async def test_no_recovery_after_the_window(authenticator: SignedTokenAuthenticator) -> None:
    gateway = _gateway(authenticator, recovery_window=0.3)
    async with serve(gateway, "aiohttp") as running:
        token = authenticator.issue(USERS["nurse"])
        async with js_client(running.url, UPDATES, auth={"token": token}) as client:
            await _subscribed(client)
            await _drop(client, gateway)
            await _publish(gateway, 1)
            recovery = gateway._recovery
            assert recovery is not None
            await until(lambda: not recovery._parked)  # the window ended
            client.send("reconnect")
            assert (await client.connected())["recovered"] is False
            await _publish(gateway, 2)  # a fresh socket is in none of the old rooms
            await client.call("subscribe:patient", {"patientId": "p1"})
            await _publish(gateway, 3)
            await until(lambda: len(_vitals(client)) >= 1)
            assert _vitals(client) == [3]
    assert gateway.metrics.recoveries["expired"] == 1


async def test_no_recovery_after_an_explicit_disconnect(
    clinic: RunningServer, authenticator: SignedTokenAuthenticator
) -> None:
    gateway = clinic.gateway
    token = authenticator.issue(USERS["nurse"])
    async with js_client(clinic.url, UPDATES, auth={"token": token}) as client:
        await _subscribed(client)
        client.send("disconnect")
        await client.disconnected()
        await until(lambda: not gateway.connections)
        await _publish(gateway, 1)
        client.send("reconnect")
        assert (await client.connected())["recovered"] is False
    recovery = gateway._recovery
    assert recovery is not None
    assert not recovery._parked
    assert gateway.metrics.recoveries["unknown"] == 1
    assert gateway.metrics.recovered_events == 0


async def test_no_recovery_for_a_socket_the_gateway_ended(
    clinic: RunningServer, authenticator: SignedTokenAuthenticator
) -> None:
    """Expiry, revocation, idle logoff and disconnect_socket all end a socket from
    the server: none of them is a drop."""
    gateway = clinic.gateway
    token = authenticator.issue(USERS["nurse"])
    async with js_client(clinic.url, UPDATES, auth={"token": token}) as client:
        report = await _subscribed(client)
        assert await gateway.disconnect_socket(report["id"])
        await client.disconnected()
        client.send("reconnect")
        assert (await client.connected())["recovered"] is False
    assert gateway.metrics.recoveries["unknown"] == 1


async def test_no_recovery_of_a_session_revoked_while_away(
    clinic: RunningServer, authenticator: SignedTokenAuthenticator
) -> None:
    gateway = clinic.gateway
    nurse = attrs.evolve(USERS["nurse"], session_id="s-ward-tablet")
    async with js_client(clinic.url, UPDATES, auth={"token": authenticator.issue(nurse)}) as client:
        await _subscribed(client)
        await _drop(client, gateway)
        await gateway.revoke_session("s-ward-tablet", user_id=nurse.user_id)
        await _publish(gateway, 1)
        # A new login of the same user: it authenticates, the old session does not recover.
        fresh = attrs.evolve(USERS["nurse"], session_id="s-new-login")
        client.send("reconnect", auth={"token": authenticator.issue(fresh)})
        assert (await client.connected())["recovered"] is False
    assert gateway.metrics.recoveries["denied"] == 1
    assert gateway.metrics.recovered_events == 0


async def test_a_stolen_pid_with_another_users_token_does_not_recover(
    clinic: RunningServer, authenticator: SignedTokenAuthenticator
) -> None:
    gateway = clinic.gateway
    nurse_token = authenticator.issue(USERS["nurse"])
    async with js_client(clinic.url, UPDATES, auth={"token": nurse_token}) as victim:
        report = await _subscribed(victim)
        await _publish(gateway, 0)
        offset = (await victim.event("patient:update"))["args"][-1]
        await _drop(victim, gateway)
        await _publish(gateway, 1)
        stolen = {"token": authenticator.issue(USERS["doctor"]), "pid": report["pid"]}
        async with js_client(clinic.url, UPDATES, auth={**stolen, "offset": offset}) as thief:
            assert (await thief.connected())["recovered"] is False
            await _publish(gateway, 2)
            assert thief.events("patient:update") == []
        # The owner still recovers: a wrong claim does not take the session away.
        victim.send("reconnect")
        assert (await victim.connected())["recovered"] is True
        await until(lambda: len(_vitals(victim)) >= 3)
        assert _vitals(victim) == [0, 1, 2]
    assert gateway.metrics.recoveries["denied"] == 1


async def test_more_missed_than_recovery_max_packets_is_a_fresh_connection(
    authenticator: SignedTokenAuthenticator,
) -> None:
    gateway = _gateway(authenticator, recovery_max_packets=3)
    async with serve(gateway, "aiohttp") as running:
        token = authenticator.issue(USERS["nurse"])
        async with js_client(running.url, UPDATES, auth={"token": token}) as client:
            await _subscribed(client)
            await _drop(client, gateway)
            await _publish(gateway, 1, 2, 3, 4)
            client.send("reconnect")
            report = await client.connected()
            assert report["recovered"] is False
            conn = gateway.connection(report["id"])
            assert conn is not None
            assert "patient:p1" not in conn.rooms
    assert gateway.metrics.recoveries["too_many"] == 1
    assert gateway.metrics.recovered_events == 0


async def test_a_room_lost_while_away_is_not_rejoined_nor_replayed(
    authenticator: SignedTokenAuthenticator,
) -> None:
    records: list[AuditRecord] = []
    gateway = _gateway(authenticator, audit=records.append)
    async with serve(gateway, "aiohttp") as running:
        nurse = USERS["nurse"]
        async with js_client(
            running.url, UPDATES, auth={"token": authenticator.issue(nurse)}
        ) as client:
            await _subscribed(client)
            await _drop(client, gateway)
            await _publish(gateway, 1)
            await gateway.emit_to_user(nurse.user_id, "shift:note", {"n": 1}, namespace=UPDATES)
            # Meanwhile the nurse lost the permission to view patients.
            demoted = attrs.evolve(nurse, permissions=frozenset())
            client.send("reconnect", auth={"token": authenticator.issue(demoted)})
            report = await client.connected()
            assert report["recovered"] is True
            await _publish(gateway, 2)
            await gateway.emit_to_user(nurse.user_id, "shift:note", {"n": 2}, namespace=UPDATES)
            await until(lambda: len(client.events("shift:note")) >= 2)
            assert [args[0]["n"] for args in client.events("shift:note")] == [1, 2]
            assert client.events("patient:update") == []
            conn = gateway.connection(report["id"])
            assert conn is not None
            assert "patient:p1" not in conn.rooms
    recovered = [record for record in records if record.action == "recover"]
    assert len(recovered) == 1
    assert recovered[0].allowed is True
    assert recovered[0].dropped == ("patient:p1",)
    assert recovered[0].to_json()["dropped"] == ["patient:p1"]
    denied = [r for r in records if r.action == "subscribe" and not r.allowed]
    assert [r.target for r in denied] == ["patient:p1"]


@attrs.define
class Conversation:
    """A doctor (python-socketio, watching) and a nurse (the official client) in
    conversation c1 of a recovery-enabled /chat, both present."""

    gateway: Gateway
    watcher: socketio.AsyncClient
    doctor: Inbox
    nurse: JsClient


@contextlib.asynccontextmanager
async def conversation(
    authenticator: SignedTokenAuthenticator, clients: Clients, **settings: Any
) -> AsyncIterator[Conversation]:
    gateway = _gateway(authenticator, namespaces=[ChatNamespace()], **settings)
    async with serve(gateway, "aiohttp") as running:
        watcher, doctor = await connect_as(
            clients, running.url, authenticator.issue(USERS["doctor"]), namespaces=("/chat",)
        )
        await watcher.call("join:conversation", "c1", namespace="/chat", timeout=5)
        async with js_client(
            running.url, "/chat", auth={"token": authenticator.issue(USERS["nurse"])}
        ) as nurse:
            await nurse.connected()
            assert (await nurse.call("join:conversation", "c1"))["success"] is True
            await doctor.wait("user:joined", "/chat")
            yield Conversation(gateway, watcher, doctor, nurse)


async def test_presence_does_not_flap_for_a_recovered_socket(
    authenticator: SignedTokenAuthenticator, clients: Clients
) -> None:
    async with conversation(authenticator, clients) as chat:
        gateway, doctor, nurse = chat.gateway, chat.doctor, chat.nurse

        await _drop(nurse, gateway)
        nurse.send("reconnect")
        assert (await nurse.connected())["recovered"] is True
        # A later event from the nurse's side shows nothing else came before it.
        assert (await nurse.call("send:message", {"conversationId": "c1", "content": "hi"}))[
            "success"
        ]
        await doctor.wait("new:message", "/chat")
        assert len(doctor.of("user:joined", "/chat")) == 1
        assert doctor.of("user:left", "/chat") == []
        assert await gateway.presence("conversation:c1", namespace="/chat") == {
            "u-doctor",
            "u-nurse",
        }


async def test_the_departure_is_told_when_the_window_ends_without_recovery(
    authenticator: SignedTokenAuthenticator, clients: Clients
) -> None:
    async with conversation(authenticator, clients, recovery_window=0.5) as chat:
        gateway, doctor, nurse = chat.gateway, chat.doctor, chat.nurse
        await _drop(nurse, gateway)
        assert doctor.of("user:left", "/chat") == []
        left = await doctor.wait("user:left", "/chat", within=5)
        assert left[0]["userId"] == "u-nurse"


async def test_python_clients_get_the_offset_as_an_extra_last_argument(
    clinic: RunningServer, authenticator: SignedTokenAuthenticator, clients: Clients
) -> None:
    """python-socketio's client does not recover; its handlers take the offset as
    an optional last parameter (the README shows this handler)."""
    gateway = clinic.gateway
    received: list[tuple[Any, Any]] = []
    client = socketio.AsyncClient(reconnection=False)
    clients.adopt(client)

    async def on_update(update: dict[str, Any], offset: str | None = None) -> None:
        received.append((update["data"]["n"], offset))

    client.on("patient:update", on_update, namespace=UPDATES)
    token = authenticator.issue(USERS["nurse"])
    await client.connect(
        clinic.url, namespaces=[UPDATES], transports=["websocket"], auth={"token": token}
    )
    ack = await client.call("subscribe:patient", {"patientId": "p1"}, namespace=UPDATES)
    assert ack["success"] is True
    await _publish(gateway, 1)
    await until(lambda: len(received) == 1)
    number, offset = received[0]
    assert number == 1
    assert isinstance(offset, str)
    assert offset.isdigit()


async def test_events_carry_no_offset_when_recovery_is_off(
    authenticator: SignedTokenAuthenticator, clients: Clients
) -> None:
    gateway = clinic_gateway(authenticator)
    async with (
        serve(gateway, "aiohttp") as running,
        js_client(
            running.url, UPDATES, auth={"token": authenticator.issue(USERS["nurse"])}
        ) as client,
    ):
        report = await _subscribed(client)
        assert report.get("pid") is None
        await _publish(gateway, 1)
        update = await client.event("patient:update")
        assert len(update["args"]) == 1


async def test_a_bogus_recovery_request_is_a_fresh_connection(
    clinic: RunningServer, authenticator: SignedTokenAuthenticator, clients: Clients
) -> None:
    token = authenticator.issue(USERS["nurse"])
    for auth in (
        {"pid": "x" * 30, "offset": "1"},
        {"pid": "short", "offset": "1"},
        {"pid": "y" * 30, "offset": "not-an-offset"},
        {"pid": ["list"], "offset": 3},
        {"pid": "z" * 30, "offset": "9" * 60},
    ):
        inbox = Inbox()
        client = socketio.AsyncClient(reconnection=False)
        inbox.listen(client, [UPDATES])
        clients.adopt(client)
        await client.connect(
            clinic.url,
            namespaces=[UPDATES],
            transports=["websocket"],
            auth={"token": token, **auth},
            wait_timeout=5,
        )
        ack = await client.call("subscribe:patient", {"patientId": "p1"}, namespace=UPDATES)
        assert ack["success"] is True
        await client.disconnect()
    assert clinic.gateway.metrics.recovered_events == 0


async def test_missed_events_too_large_to_send_at_once_are_a_fresh_connection(
    authenticator: SignedTokenAuthenticator,
) -> None:
    """A replay over half of ``max_pending_output`` would evict the socket as a slow
    consumer the moment it came back: it is refused as ``too_many`` instead."""
    gateway = _gateway(authenticator, max_pending_output=8192)
    async with serve(gateway, "aiohttp") as running:
        token = authenticator.issue(USERS["nurse"])
        async with js_client(running.url, UPDATES, auth={"token": token}) as client:
            await _subscribed(client)
            await _drop(client, gateway)
            for n in range(3):
                await gateway.publish_update(
                    "patient", "p1", "vitals", {"n": n, "note": "x" * 2000}, namespace=UPDATES
                )
            client.send("reconnect")
            report = await client.connected()
            assert report["recovered"] is False
            assert gateway.connection(report["id"]) is not None  # connected, not evicted
    assert gateway.metrics.recoveries["too_many"] == 1
    assert gateway.metrics.slow_consumers == 0


async def test_a_failed_recovery_tells_the_departure_it_held_back(
    authenticator: SignedTokenAuthenticator, clients: Clients
) -> None:
    async with conversation(authenticator, clients, recovery_max_packets=1) as chat:
        gateway, watcher, doctor, nurse = chat.gateway, chat.watcher, chat.doctor, chat.nurse
        await _drop(nurse, gateway)
        for text in ("one", "two"):
            await watcher.call(
                "send:message", {"conversationId": "c1", "content": text}, namespace="/chat"
            )
        nurse.send("reconnect")
        assert (await nurse.connected())["recovered"] is False
        left = await doctor.wait("user:left", "/chat")
        assert [event["userId"] for event in left] == ["u-nurse"]
    assert gateway.metrics.recoveries["too_many"] == 1


async def test_a_socket_ended_by_its_expiry_is_not_recovered() -> None:
    short = SignedTokenAuthenticator(
        ["recovery-expiry-key-0123456789abcdef"], salt="recovery", max_age=2.5
    )
    gateway = _gateway(short, refresh_ahead=0.2)
    async with (
        serve(gateway, "aiohttp") as running,
        js_client(running.url, UPDATES, auth={"token": short.issue(USERS["nurse"])}) as client,
    ):
        await _subscribed(client)
        await client.event("auth:expired")
        assert (await client.disconnected())["reason"] == "io server disconnect"
        client.send("reconnect", auth={"token": short.issue(USERS["nurse"])})
        assert (await client.connected())["recovered"] is False
    assert gateway.metrics.recoveries["unknown"] == 1


def test_empty_stores_passed_to_the_gateway_are_the_ones_it_uses(
    authenticator: SignedTokenAuthenticator,
) -> None:
    """A store with a ``__len__`` is falsy while empty: the gateway must still use it."""
    registry, revocations = MemoryRegistry(), MemoryRevocationStore()
    recovery = MemoryRecoveryStore(window=30)
    assert not registry
    assert not recovery
    gateway = Gateway(
        authenticator=authenticator,
        authorizer=reference_rules(),
        config=quick_config(recovery_window=30),
        registry=registry,
        revocations=revocations,
        recovery=recovery,
    )
    assert gateway.registry is registry
    assert gateway.revocations is revocations
    assert gateway._recovery is not None
    assert gateway._recovery.store is recovery
