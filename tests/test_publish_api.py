"""The gateway's server-side API against real clients: publishing, disconnecting and
the registry's view. Every "must not receive" is shown by a later barrier event that
the same client does receive (a socket gets its events in the order they were sent).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import attrs
import pytest
import socketio

from realtime_gateway import (
    Gateway,
    Identity,
    InvalidPayload,
    NotFound,
    SignedTokenAuthenticator,
)

from .clinic import NAMESPACES, USERS, Inbox, clinic_gateway, connect_as
from .conftest import Clients, call, until

# Peer name -> role; the doctor has two clients, every client joins all four namespaces.
PEERS = {
    "admin": "admin",
    "doctor": "doctor",
    "doctor2": "doctor",
    "nurse": "nurse",
    "staff": "staff",
    "patient": "patient",
}


@attrs.define
class Peer:
    identity: Identity
    client: socketio.AsyncClient
    inbox: Inbox


@attrs.define
class Clinic:
    gateway: Gateway
    peers: dict[str, Peer]
    barriers: int = 0

    async def settle(self, namespaces: Iterable[str] = NAMESPACES) -> None:
        """Send every socket a fresh barrier event and wait until each has it: whatever
        was emitted before has arrived by then."""
        self.barriers += 1
        name = f"barrier:{self.barriers}"
        namespaces = tuple(namespaces)
        for namespace in namespaces:
            # Straight through python-socketio: the barrier must not touch the metrics.
            await self.gateway.server.emit(name, None, namespace=namespace)
        for peer in self.peers.values():
            for namespace in namespaces:
                await peer.inbox.wait(name, namespace)

    def receivers(self, event: str, namespace: str) -> dict[str, list[Any]]:
        """Which peers got ``event`` in ``namespace``, and what."""
        got = {name: peer.inbox.of(event, namespace) for name, peer in self.peers.items()}
        return {name: data for name, data in got.items() if data}

    def sid(self, peer: str, namespace: str) -> str:
        sid: str = self.peers[peer].client.get_sid(namespace)
        return sid


@pytest.fixture
async def clinic(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> AsyncIterator[Clinic]:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        peers: dict[str, Peer] = {}
        for name, role in PEERS.items():
            identity = USERS[role]
            client, inbox = await connect_as(clients, server.url, authenticator.issue(identity))
            peers[name] = Peer(identity=identity, client=client, inbox=inbox)
        for peer in peers.values():
            await peer.inbox.wait("connected")
        yield Clinic(gateway=gateway, peers=peers)


def only_elsewhere(clinic: Clinic, event: str, namespace: str) -> None:
    """``event`` arrived in no namespace but ``namespace``."""
    for other in NAMESPACES:
        if other != namespace:
            assert clinic.receivers(event, other) == {}, other


# -- publishing ---------------------------------------------------------------------------


async def test_broadcast_reaches_the_whole_namespace_only(clinic: Clinic) -> None:
    await clinic.gateway.broadcast("news", {"n": 1}, namespace="/chat")
    await clinic.gateway.broadcast("headline", [1, 2])
    await clinic.settle()
    everyone = set(PEERS)
    assert clinic.receivers("news", "/chat") == {name: [{"n": 1}] for name in everyone}
    only_elsewhere(clinic, "news", "/chat")
    assert clinic.receivers("headline", "/") == {name: [[1, 2]] for name in everyone}
    only_elsewhere(clinic, "headline", "/")


async def test_emit_to_room_reaches_only_the_room(clinic: Clinic) -> None:
    for name in ("admin", "doctor", "nurse"):
        ack = await call(clinic.peers[name].client, "join:conversation", "c1", "/chat")
        assert ack["success"], ack
    # The same room name in another namespace is another room.
    ack = await call(clinic.peers["staff"].client, "join:room", "conversation:c1")
    assert ack["success"], ack

    await clinic.gateway.emit_to_room("conversation:c1", "room:event", {"x": 1}, namespace="/chat")
    await clinic.gateway.emit_to_room(
        "conversation:c1",
        "room:skip",
        {"x": 2},
        namespace="/chat",
        skip_sid=clinic.sid("nurse", "/chat"),
    )
    await clinic.gateway.emit_to_room("conversation:c1", "room:main", None)
    await clinic.settle()
    assert clinic.receivers("room:event", "/chat") == {
        "admin": [{"x": 1}],
        "doctor": [{"x": 1}],
        "nurse": [{"x": 1}],
    }
    only_elsewhere(clinic, "room:event", "/chat")
    assert clinic.receivers("room:skip", "/chat") == {"admin": [{"x": 2}], "doctor": [{"x": 2}]}
    only_elsewhere(clinic, "room:skip", "/chat")
    assert clinic.receivers("room:main", "/") == {"staff": [None]}
    only_elsewhere(clinic, "room:main", "/")


async def test_emit_to_user_reaches_all_of_their_sockets(clinic: Clinic) -> None:
    await clinic.gateway.emit_to_user("u-doctor", "direct", {"for": "doctor"}, namespace="/updates")
    await clinic.gateway.emit_to_user("u-nobody", "direct", {"for": "nobody"}, namespace="/updates")
    await clinic.gateway.emit_to_user("u-nurse", "direct:main", "hi")
    await clinic.settle()
    assert clinic.receivers("direct", "/updates") == {
        "doctor": [{"for": "doctor"}],
        "doctor2": [{"for": "doctor"}],
    }
    only_elsewhere(clinic, "direct", "/updates")
    assert clinic.receivers("direct:main", "/") == {"nurse": ["hi"]}
    only_elsewhere(clinic, "direct:main", "/")


async def test_emit_to_role_reaches_only_its_holders(clinic: Clinic) -> None:
    await clinic.gateway.emit_to_role("doctor", "for:doctors", 1)
    await clinic.gateway.emit_to_role("nurse", "for:nurses", 2, namespace="/notifications")
    await clinic.gateway.emit_to_role("surgeon", "for:surgeons", 3)
    await clinic.settle()
    assert clinic.receivers("for:doctors", "/") == {"doctor": [1], "doctor2": [1]}
    only_elsewhere(clinic, "for:doctors", "/")
    assert clinic.receivers("for:nurses", "/notifications") == {"nurse": [2]}
    only_elsewhere(clinic, "for:nurses", "/notifications")
    for namespace in NAMESPACES:
        assert clinic.receivers("for:surgeons", namespace) == {}


async def test_notify_user_and_role_deliver_what_they_return(clinic: Clinic) -> None:
    to_nurse = await clinic.gateway.notify_user(
        "u-nurse", "Round", "Bed 4 at 10:00", type="warning", data={"bed": 4}
    )
    assert set(to_nurse) == {"id", "type", "title", "message", "data", "timestamp"}
    assert (to_nurse["type"], to_nurse["title"], to_nurse["message"], to_nurse["data"]) == (
        "warning",
        "Round",
        "Bed 4 at 10:00",
        {"bed": 4},
    )
    to_staff = await clinic.gateway.notify_role("staff", "Invoices", "Due today")
    assert to_staff["type"] == "info"
    assert to_staff["data"] == {}
    to_doctors = await clinic.gateway.notify_role("doctor", "Meeting", "At noon", type="success")
    assert len({to_nurse["id"], to_staff["id"], to_doctors["id"]}) == 3
    await clinic.settle()
    assert clinic.receivers("notification", "/notifications") == {
        "nurse": [to_nurse],
        "staff": [to_staff],
        "doctor": [to_doctors],
        "doctor2": [to_doctors],
    }
    only_elsewhere(clinic, "notification", "/notifications")


async def test_publish_update_reaches_only_subscribers(clinic: Clinic) -> None:
    for name, event, resource in [
        ("doctor", "subscribe:patient", "p1"),
        ("doctor", "subscribe:encounter", "e1"),
        ("nurse", "subscribe:patient", "p1"),
        ("admin", "subscribe:patient", "7"),
    ]:
        ack = await call(clinic.peers[name].client, event, resource, "/updates")
        assert ack["success"], (name, event, ack)

    vitals = await clinic.gateway.publish_update("patient", "p1", "vitals", {"hr": 80})
    assert set(vitals) == {"patientId", "updateType", "data", "timestamp"}
    assert (vitals["patientId"], vitals["updateType"], vitals["data"]) == (
        "p1",
        "vitals",
        {"hr": 80},
    )
    note = await clinic.gateway.publish_update("encounter", "e1", "note")
    assert (note["encounterId"], note["data"]) == ("e1", {})
    by_number = await clinic.gateway.publish_update("patient", 7, "moved")
    assert by_number["patientId"] == "7"
    await clinic.settle()
    assert clinic.receivers("patient:update", "/updates") == {
        "doctor": [vitals],
        "nurse": [vitals],
        "admin": [by_number],
    }
    assert clinic.receivers("encounter:update", "/updates") == {"doctor": [note]}
    only_elsewhere(clinic, "patient:update", "/updates")
    only_elsewhere(clinic, "encounter:update", "/updates")


async def test_emits_are_counted_by_kind(clinic: Clinic) -> None:
    gateway = clinic.gateway
    before = Counter(gateway.metrics.emits)
    await gateway.broadcast("a")
    await gateway.broadcast("a", namespace="/chat")
    await gateway.emit_to_room("somewhere", "a")
    await gateway.emit_to_user("u-nurse", "a")
    await gateway.emit_to_role("staff", "a")
    await gateway.notify_user("u-nurse", "T", "m")
    await gateway.notify_role("staff", "T", "m")
    await gateway.publish_update("patient", "p1", "x")
    with pytest.raises(InvalidPayload):
        await gateway.broadcast("connect")
    with pytest.raises(NotFound):
        await gateway.emit_to_user("u-nurse", "a", namespace="/nope")
    counted = Counter(gateway.metrics.emits)
    counted.subtract(before)
    assert +counted == Counter(
        {"broadcast": 2, "room": 1, "user": 1, "role": 1, "notification": 2, "update": 1}
    )
    assert gateway.metrics.snapshot()["emits"] == dict(gateway.metrics.emits)


# -- bad arguments --------------------------------------------------------------------------

Call = Callable[[Gateway], Awaitable[Any]]
# What socket.io reserves on the wire and what its clients reserve for themselves.
RESERVED: tuple[str, ...] = ("connect", "disconnect", "connect_error", "disconnecting")
RESERVED += ("newListener", "removeListener")
NOWHERE = "/nope"


def with_event(method: str, *args: Any) -> Callable[[object], Call]:
    """``gateway.method(*args, event)`` for a given event."""

    def bind(event: object) -> Call:
        def run(gateway: Gateway) -> Awaitable[Any]:
            result: Awaitable[Any] = getattr(gateway, method)(*args, event)
            return result

        return run

    return bind


EVENT_TAKERS = {
    "broadcast": with_event("broadcast"),
    "emit_to_room": with_event("emit_to_room", "r"),
    "emit_to_user": with_event("emit_to_user", "u-nurse"),
    "emit_to_role": with_event("emit_to_role", "nurse"),
}

BAD_CALLS: list[tuple[str, Call, type[Exception], str | None]] = [
    *(
        (f"{method}({event!r})", take(event), InvalidPayload, "event")
        for method, take in EVENT_TAKERS.items()
        for event in (*RESERVED, "", None)
    ),
    ("broadcast-nowhere", lambda g: g.broadcast("e", namespace=NOWHERE), NotFound, None),
    ("room-nowhere", lambda g: g.emit_to_room("r", "e", namespace=NOWHERE), NotFound, None),
    ("user-nowhere", lambda g: g.emit_to_user("u", "e", namespace=NOWHERE), NotFound, None),
    ("role-nowhere", lambda g: g.emit_to_role("r", "e", namespace=NOWHERE), NotFound, None),
    (
        "notify-user-nowhere",
        lambda g: g.notify_user("u", "t", "m", namespace=NOWHERE),
        NotFound,
        None,
    ),
    (
        "notify-role-nowhere",
        lambda g: g.notify_role("r", "t", "m", namespace=NOWHERE),
        NotFound,
        None,
    ),
    (
        "update-nowhere",
        lambda g: g.publish_update("patient", "p", "x", namespace=NOWHERE),
        NotFound,
        None,
    ),
    (
        "update-not-an-updates-namespace",
        lambda g: g.publish_update("patient", "p", "x", namespace="/chat"),
        NotFound,
        None,
    ),
    ("empty-room", lambda g: g.emit_to_room("", "e"), InvalidPayload, "room"),
    ("empty-user", lambda g: g.emit_to_user("", "e"), InvalidPayload, "userId"),
    ("empty-role", lambda g: g.emit_to_role("", "e"), InvalidPayload, "role"),
    ("notify-empty-user", lambda g: g.notify_user("", "t", "m"), InvalidPayload, "userId"),
    ("notify-empty-role", lambda g: g.notify_role("", "t", "m"), InvalidPayload, "role"),
    ("notify-empty-title", lambda g: g.notify_user("u", " ", "m"), InvalidPayload, "title"),
    (
        "notify-bad-type",
        lambda g: g.notify_role("r", "t", "m", type="urgent"),
        InvalidPayload,
        "type",
    ),
    (
        "update-unknown-type",
        lambda g: g.publish_update("x-ray", "p", "x"),
        InvalidPayload,
        "resourceType",
    ),
    (
        "update-empty-id",
        lambda g: g.publish_update("patient", "", "x"),
        InvalidPayload,
        "resourceId",
    ),
    (
        "update-empty-update-type",
        lambda g: g.publish_update("patient", "p", " "),
        InvalidPayload,
        "updateType",
    ),
]


@pytest.mark.parametrize(
    ("call_", "error", "field"),
    [pytest.param(fn, error, field, id=name) for name, fn, error, field in BAD_CALLS],
)
async def test_bad_arguments_are_refused(
    authenticator: SignedTokenAuthenticator,
    call_: Call,
    error: type[Exception],
    field: str | None,
) -> None:
    # Not mounted: a call that slipped past validation would fail with GatewayNotRunning.
    gateway = clinic_gateway(authenticator)
    with pytest.raises(error) as caught:
        await call_(gateway)
    if field is not None:
        assert isinstance(caught.value, InvalidPayload)
        assert caught.value.field == field
    assert gateway.metrics.emits == Counter()


async def test_bad_calls_send_nothing(clinic: Clinic) -> None:
    for _, call_, error, _ in BAD_CALLS:
        with pytest.raises(error):
            await call_(clinic.gateway)
    await clinic.settle()
    for peer in clinic.peers.values():
        events = {event for (_, event) in peer.inbox.received}
        assert {e for e in events if not e.startswith("barrier:")} == {"connected"}
    assert clinic.gateway.metrics.emits == Counter()


# -- disconnecting ------------------------------------------------------------------------


def disconnect_recorder(client: socketio.AsyncClient) -> list[str]:
    """Record the namespaces in which ``client`` hears its disconnect."""
    heard: list[str] = []
    for namespace in NAMESPACES:

        async def on_disconnect(reason: Any = None, namespace: str = namespace) -> None:
            heard.append(namespace)

        client.on("disconnect", on_disconnect, namespace=namespace)
    return heard


async def test_disconnect_socket(clinic: Clinic) -> None:
    gateway = clinic.gateway
    nurse = clinic.peers["nurse"].client
    heard = disconnect_recorder(nurse)
    sid = clinic.sid("nurse", "/chat")
    assert await gateway.disconnect_socket(sid) is True
    await until(lambda: heard == ["/chat"])
    await until(lambda: sid not in gateway.connections)
    assert await gateway.connection_info(sid) is None
    assert await gateway.disconnect_socket(sid) is False
    assert await gateway.disconnect_socket("no-such-sid") is False
    # Only that namespace went: the client's other sockets still work.
    assert nurse.connected
    assert (await call(nurse, "ping"))["status"] == "pong"
    sockets = await gateway.user_sockets("u-nurse")
    assert sorted(info.namespace for info in sockets) == ["/", "/notifications", "/updates"]
    assert heard == ["/chat"]


async def test_disconnect_user(clinic: Clinic) -> None:
    gateway = clinic.gateway
    heard = {name: disconnect_recorder(clinic.peers[name].client) for name in ("doctor", "doctor2")}
    doctor_sids = {clinic.sid(name, ns) for name in ("doctor", "doctor2") for ns in NAMESPACES}
    assert await gateway.disconnect_user("u-doctor") == 8
    for name in ("doctor", "doctor2"):
        client = clinic.peers[name].client
        await until(lambda client=client: not client.connected)  # type: ignore[misc]
        assert sorted(heard[name]) == sorted(NAMESPACES)
    await until(lambda: not doctor_sids & set(gateway.connections))
    assert not await gateway.is_user_connected("u-doctor")
    assert await gateway.user_sockets("u-doctor") == []
    assert await gateway.disconnect_user("u-doctor") == 0
    assert await gateway.disconnect_user("u-nobody") == 0
    for name in ("admin", "nurse", "staff", "patient"):
        peer = clinic.peers[name]
        assert await gateway.is_user_connected(peer.identity.user_id)
        assert len(await gateway.user_sockets(peer.identity.user_id)) == 4
        assert (await call(peer.client, "ping"))["status"] == "pong"
    assert len(gateway.connections) == 16


# -- the registry's view --------------------------------------------------------------------


async def test_user_sockets_and_is_connected(clinic: Clinic) -> None:
    gateway = clinic.gateway
    for peer in clinic.peers.values():
        assert await gateway.is_user_connected(peer.identity.user_id)
    assert not await gateway.is_user_connected("u-nobody")
    assert await gateway.user_sockets("u-nobody") == []
    sockets = await gateway.user_sockets("u-doctor")
    assert {(info.namespace, info.sid) for info in sockets} == {
        (ns, clinic.sid(name, ns)) for name in ("doctor", "doctor2") for ns in NAMESPACES
    }
    assert len(sockets) == 8
    assert {info.user_id for info in sockets} == {"u-doctor"}


async def test_connection_info(clinic: Clinic) -> None:
    gateway = clinic.gateway
    sid = clinic.sid("nurse", "/chat")
    info = await gateway.connection_info(sid)
    assert info is not None
    nurse = USERS["nurse"]
    assert info.sid == sid
    assert info.namespace == "/chat"
    assert info.user_id == "u-nurse"
    assert (info.identity.roles, info.identity.permissions, info.identity.display_name) == (
        nurse.roles,
        nurse.permissions,
        nurse.display_name,
    )
    assert info.rooms == {"user:u-nurse", "role:nurse"}
    assert info.connected_at <= info.last_activity

    started = time.time()
    ack = await call(clinic.peers["nurse"].client, "join:conversation", "c9", "/chat")
    assert ack["success"], ack
    after = await gateway.connection_info(sid)
    assert after is not None
    assert after.rooms == {"user:u-nurse", "role:nurse", "conversation:c9"}
    assert after.connected_at <= started <= after.last_activity
    assert after.to_json()["rooms"] == ["conversation:c9", "role:nurse", "user:u-nurse"]
    assert await gateway.connection_info("no-such-sid") is None


async def test_presence(clinic: Clinic) -> None:
    gateway = clinic.gateway
    room = "conversation:c5"
    assert await gateway.presence(room, namespace="/chat") == frozenset()
    for name in ("nurse", "doctor", "doctor2"):
        ack = await call(clinic.peers[name].client, "join:conversation", "c5", "/chat")
        assert ack["success"], ack
    assert await gateway.presence(room, namespace="/chat") == {"u-nurse", "u-doctor"}
    assert await gateway.presence(room) == frozenset(), "the same name in / is another room"
    assert await gateway.presence("role:doctor", namespace="/notifications") == {"u-doctor"}
    assert await gateway.presence("user:u-admin") == {"u-admin"}
    ack = await call(clinic.peers["doctor"].client, "leave:conversation", "c5", "/chat")
    assert ack["success"], ack
    assert await gateway.presence(room, namespace="/chat") == {"u-nurse", "u-doctor"}
    ack = await call(clinic.peers["doctor2"].client, "leave:conversation", "c5", "/chat")
    assert ack["success"], ack
    assert await gateway.presence(room, namespace="/chat") == {"u-nurse"}
