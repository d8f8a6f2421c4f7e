"""Live expiry: a socket is warned ``auth:expiring`` before its identity's
``expires_at`` and ended with ``auth:expired`` and a server disconnect at it."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import socketio

from realtime_gateway import (
    AuditRecord,
    CallbackAuthenticator,
    Gateway,
    GatewayConfig,
    Handshake,
    Identity,
    SignedTokenAuthenticator,
    default_namespaces,
    reference_rules,
)
from realtime_gateway._log import pseudonym
from realtime_gateway._prometheus import exposition
from realtime_gateway._sessions import _GRANULE

from .clinic import USERS, Inbox, clinic_gateway, connect_as
from .conftest import Clients, call, quick_config, socketio_client, until

CHAT = "/chat"
AHEAD = 0.5


class Tokens:
    """A :class:`CallbackAuthenticator` whose tokens stand for identities made by the
    test, so that ``expires_at`` can be to the millisecond."""

    def __init__(self) -> None:
        self._identities: dict[str, Identity] = {}
        self.authenticator = CallbackAuthenticator(self._lookup)

    async def _lookup(self, handshake: Handshake) -> Identity | None:
        return self._identities.get(str(handshake.auth.get("token")))

    def token(self, identity: Identity) -> str:
        key = uuid.uuid4().hex
        self._identities[key] = identity
        return key


def expiring(role: str, seconds: float | None, **fields: Any) -> Identity:
    """The reference user of ``role``, whose identity expires ``seconds`` from now."""
    expires = None if seconds is None else dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    return attrs.evolve(USERS[role], expires_at=expires, **fields)


class Departure:
    """When a client's namespace sockets were disconnected, on the loop's clock."""

    def __init__(self, client: socketio.AsyncClient, namespaces: tuple[str, ...]) -> None:
        self.at: dict[str, float] = {}
        self._gone = {namespace: asyncio.Event() for namespace in namespaces}
        for namespace in namespaces:
            client.on("disconnect", self._recorder(namespace), namespace=namespace)

    def _recorder(self, namespace: str) -> Callable[..., Any]:
        async def record(*reason: Any) -> None:
            self.at[namespace] = asyncio.get_running_loop().time()
            self._gone[namespace].set()

        return record

    async def wait(self, namespace: str = "/", within: float = 5.0) -> float:
        async with asyncio.timeout(within):
            await self._gone[namespace].wait()
        return self.at[namespace]


class TimedInbox(Inbox):
    """An inbox that also notes when each event arrived (loop time)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: dict[tuple[str, str], list[float]] = {}

    def _recorder(self, namespace: str) -> Callable[..., Any]:
        record = super()._recorder(namespace)

        async def timed(name: str, data: Any = None, *more: Any) -> None:
            self.times.setdefault((namespace, name), []).append(asyncio.get_running_loop().time())
            await record(name, data, *more)

        return timed


async def watched(
    clients: Clients,
    url: str,
    token: str,
    *,
    namespaces: tuple[str, ...] = ("/",),
    transport: str = "websocket",
) -> tuple[socketio.AsyncClient, TimedInbox, Departure]:
    """Connect with ``token``, recording events (with times) and disconnects."""
    inbox = TimedInbox()
    client = socketio_client()
    inbox.listen(client, namespaces)
    departure = Departure(client, namespaces)
    clients.adopt(client)
    await client.connect(
        url,
        namespaces=list(namespaces),
        transports=[transport],
        auth={"token": token},
        wait_timeout=5,
    )
    return client, inbox, departure


def expiry_config(**settings: Any) -> GatewayConfig:
    return quick_config(refresh_ahead=AHEAD, **settings)


def only_sid(gateway: Gateway, user_id: str, namespace: str = "/") -> str:
    (sid,) = [
        sid
        for sid, conn in gateway.connections.items()
        if conn.identity.user_id == user_id and conn.namespace == namespace
    ]
    return sid


# -- settings ---------------------------------------------------------------------------


def test_settings_default_to_a_minute_ahead_and_no_grace() -> None:
    config = GatewayConfig()
    assert config.refresh_ahead == 60
    assert config.expiry_grace == 0
    assert GatewayConfig(refresh_ahead=0, expiry_grace=2.5).expiry_grace == 2.5


# -- the client's view ------------------------------------------------------------------


async def test_expiring_then_expired_then_disconnected(
    clients: Clients, server_kind: str, transport: str
) -> None:
    tokens = Tokens()
    gateway = clinic_gateway(tokens.authenticator, config=expiry_config())
    async with clients.serve(gateway, server_kind) as server:
        identity = expiring("doctor", 1.5)
        assert identity.expires_at is not None
        loop = asyncio.get_running_loop()
        # The loop-clock moment of expires_at.
        expires = loop.time() + identity.expires_at.timestamp() - time.time()
        client, inbox, departure = await watched(
            clients, server.url, tokens.token(identity), transport=transport
        )

        (expired,) = await inbox.wait("auth:expired", within=5)
        gone_at = await departure.wait()

        assert expired == {"reason": "expired"}
        (warning,) = inbox.of("auth:expiring")
        assert warning["expiresAt"] == round(identity.expires_at.timestamp() * 1000)
        assert warning["secondsLeft"] in (0, 1)
        (warned_at,) = inbox.times[("/", "auth:expiring")]
        (expired_at,) = inbox.times[("/", "auth:expired")]
        assert expires - AHEAD - 0.1 <= warned_at < expired_at <= gone_at
        assert expires - 0.1 <= expired_at <= expires + 1.5
        await until(lambda: not gateway.connections)
        assert not await gateway.registry.users()
        assert len(gateway._sessions) == 0
        assert not client.connected or "/" not in client.namespaces


async def test_a_signed_token_with_a_ttl_expires(clients: Clients, server_kind: str) -> None:
    authenticator = SignedTokenAuthenticator(["k" * 32], salt="expiry", max_age=600)
    gateway = clinic_gateway(authenticator, config=expiry_config())
    async with clients.serve(gateway, server_kind) as server:
        token = authenticator.issue(USERS["nurse"], ttl=2)
        _, inbox, departure = await watched(clients, server.url, token)

        await inbox.wait("auth:expired", within=5)
        await departure.wait()

        assert len(inbox.of("auth:expiring")) == 1
        await until(lambda: not gateway.connections)


async def test_every_namespace_socket_expires_and_presence_forgets_it(
    clients: Clients, server_kind: str
) -> None:
    tokens = Tokens()
    gateway = clinic_gateway(tokens.authenticator, config=expiry_config())
    async with clients.serve(gateway, server_kind) as server:
        doctor, doctor_inbox = await connect_as(
            clients, server.url, tokens.token(expiring("doctor", None)), namespaces=(CHAT,)
        )
        nurse, nurse_inbox, departure = await watched(
            clients, server.url, tokens.token(expiring("nurse", 2.0)), namespaces=("/", CHAT)
        )
        for client in (doctor, nurse):
            ack = await call(client, "join:conversation", "c1", CHAT)
            assert ack["success"] is True, ack

        (left,) = await doctor_inbox.wait("user:left", CHAT, within=5)
        (presence,) = await doctor_inbox.wait("presence:leave", CHAT)

        assert left["userId"] == "u-nurse"
        assert presence == {**presence, "room": "conversation:c1", "userId": "u-nurse"}
        for namespace in ("/", CHAT):
            await departure.wait(namespace)
            assert len(nurse_inbox.of("auth:expiring", namespace)) == 1
            assert nurse_inbox.of("auth:expired", namespace) == [{"reason": "expired"}]
        assert await gateway.presence("conversation:c1", namespace=CHAT) == {"u-doctor"}
        assert not await gateway.is_user_connected("u-nurse")
        assert doctor_inbox.of("auth:expiring", CHAT) == []
        assert doctor.connected


async def test_a_socket_without_expiry_is_never_touched(clients: Clients, server_kind: str) -> None:
    tokens = Tokens()
    gateway = clinic_gateway(tokens.authenticator, config=expiry_config())
    async with clients.serve(gateway, server_kind) as server:
        lasting, lasting_inbox = await connect_as(
            clients, server.url, tokens.token(expiring("doctor", None)), namespaces=("/",)
        )
        _, _, departure = await watched(clients, server.url, tokens.token(expiring("nurse", 1.0)))
        assert only_sid(gateway, "u-doctor") not in gateway._sessions

        await departure.wait()

        await gateway.emit_to_user("u-doctor", "barrier", {"n": 1})
        await lasting_inbox.wait("barrier")
        assert lasting_inbox.of("auth:expiring") == []
        assert lasting_inbox.of("auth:expired") == []
        assert lasting.connected
        assert await gateway.is_user_connected("u-doctor")
        assert (await call(lasting, "ping"))["success"] is True


async def test_inside_the_window_already_is_warned_at_once(
    clients: Clients, server_kind: str
) -> None:
    tokens = Tokens()
    gateway = clinic_gateway(tokens.authenticator, config=quick_config(refresh_ahead=30))
    async with clients.serve(gateway, server_kind) as server:
        identity = expiring("doctor", 20)
        assert identity.expires_at is not None
        started = asyncio.get_running_loop().time()
        _, inbox, _ = await watched(clients, server.url, tokens.token(identity))

        (warning,) = await inbox.wait("auth:expiring", within=2)

        assert inbox.times[("/", "auth:expiring")][0] - started < 2
        assert warning == {
            "expiresAt": round(identity.expires_at.timestamp() * 1000),
            "secondsLeft": warning["secondsLeft"],
        }
        assert 18 <= warning["secondsLeft"] <= 20
        assert inbox.of("auth:expired") == []
        assert gateway.connections


async def test_grace_keeps_the_socket_past_expiry(clients: Clients, server_kind: str) -> None:
    tokens = Tokens()
    gateway = clinic_gateway(tokens.authenticator, config=expiry_config(expiry_grace=1.0))
    async with clients.serve(gateway, server_kind) as server:
        identity = expiring("doctor", 1.0)
        assert identity.expires_at is not None
        loop = asyncio.get_running_loop()
        expires = loop.time() + identity.expires_at.timestamp() - time.time()
        _, inbox, departure = await watched(clients, server.url, tokens.token(identity))

        gone_at = await departure.wait(within=6)

        (expired_at,) = inbox.times[("/", "auth:expired")]
        assert expires + 1.0 - 0.1 <= expired_at <= expires + 1.0 + 1.5
        assert expired_at <= gone_at


# -- timers ---------------------------------------------------------------------------------


def timers_of(gateway: Gateway, sid: str) -> list[asyncio.TimerHandle]:
    """The loop timers of the buckets that hold a deadline of ``sid``."""
    sessions = gateway._sessions
    return [
        bucket.handle
        for buckets in (sessions._warnings, sessions._endings)
        for bucket in buckets._buckets.values()
        if sid in bucket
    ]


def timer_count(gateway: Gateway) -> int:
    """The loop timers the gateway's session deadlines hold."""
    sessions = gateway._sessions
    return sum(len(buckets) for buckets in (sessions._warnings, sessions._endings))


async def test_leaving_early_cancels_the_timers(clients: Clients, server_kind: str) -> None:
    tokens = Tokens()
    gateway = clinic_gateway(tokens.authenticator, config=expiry_config())
    async with clients.serve(gateway, server_kind) as server:
        client, _, _ = await watched(clients, server.url, tokens.token(expiring("doctor", 30)))
        sid = only_sid(gateway, "u-doctor")
        await until(lambda: sid in gateway._sessions)
        handles = timers_of(gateway, sid)
        assert len(handles) == 2  # the warning's and the ending's, in buckets of their own
        assert not any(handle.cancelled() for handle in handles)

        await client.disconnect()
        await until(lambda: not gateway.connections)

        assert len(gateway._sessions) == 0
        assert timers_of(gateway, sid) == []
        assert timer_count(gateway) == 0
        assert all(handle.cancelled() for handle in handles)
        assert gateway.metrics.sessions_ended == {}


async def test_sockets_due_together_share_one_timer(clients: Clients, server_kind: str) -> None:
    tokens = Tokens()
    gateway = clinic_gateway(tokens.authenticator, config=expiry_config())
    # An expiry in the middle of a bucket on the loop's clock, far from its edges.
    loop = asyncio.get_running_loop()
    offset = time.time() - loop.time()
    due = (math.floor((loop.time() + 30) / _GRANULE) + 0.5) * _GRANULE
    expires_at = dt.datetime.fromtimestamp(due + offset, dt.UTC)
    async with clients.serve(gateway, server_kind) as server:
        users = [
            await watched(
                clients,
                server.url,
                tokens.token(Identity(user_id=f"u-{n}", roles={"doctor"}, expires_at=expires_at)),
            )
            for n in range(3)
        ]
        await until(lambda: len(gateway._sessions) == 3)
        assert timer_count(gateway) == 2
        first, second, third = users

        await first[0].disconnect()
        await until(lambda: len(gateway._sessions) == 2)
        assert timer_count(gateway) == 2  # the others still need them
        await second[0].disconnect()
        await third[0].disconnect()
        await until(lambda: not gateway.connections)

        assert timer_count(gateway) == 0


async def test_reauthorizing_with_a_new_identity_rearms(clients: Clients, server_kind: str) -> None:
    tokens = Tokens()
    gateway = clinic_gateway(tokens.authenticator, config=expiry_config())
    async with clients.serve(gateway, server_kind) as server:
        await watched(clients, server.url, tokens.token(expiring("doctor", 30)))
        sid = only_sid(gateway, "u-doctor")
        await until(lambda: sid in gateway._sessions)
        first = gateway._sessions._entries[sid]
        first_timers = timers_of(gateway, sid)

        later = expiring("doctor", 120)
        assert later.expires_at is not None
        await gateway.reauthorize("u-doctor", later)

        second = gateway._sessions._entries[sid]
        assert second is not first
        assert all(handle.cancelled() for handle in first_timers)
        second_timers = timers_of(gateway, sid)
        assert len(second_timers) == 2
        assert not set(second_timers) & set(first_timers)
        assert timer_count(gateway) == 2
        assert second.expires_at == later.expires_at.timestamp()

        await gateway.reauthorize("u-doctor", expiring("doctor", None))
        assert sid not in gateway._sessions
        assert timer_count(gateway) == 0
        assert all(handle.cancelled() for handle in second_timers)


async def test_ending_a_session_by_hand_takes_the_same_path(
    clients: Clients, server_kind: str
) -> None:
    tokens = Tokens()
    gateway = clinic_gateway(tokens.authenticator, config=expiry_config())
    async with clients.serve(gateway, server_kind) as server:
        _, inbox, departure = await watched(
            clients, server.url, tokens.token(expiring("doctor", None))
        )
        conn = gateway.connection(only_sid(gateway, "u-doctor"))
        assert conn is not None
        assert conn.sid not in gateway._sessions

        gateway._sessions.end(conn, "expired")

        assert await inbox.wait("auth:expired") == [{"reason": "expired"}]
        await departure.wait()
        await until(lambda: not gateway.connections)
        assert inbox.of("auth:expiring") == []
        assert len(gateway._sessions) == 0
        assert gateway.metrics.sessions_ended == {"expired": 1}


async def test_many_sockets_expiring_together_all_go(clients: Clients, server_kind: str) -> None:
    tokens = Tokens()
    # 200 handshakes at once from one address: past the default handshake budget.
    gateway = clinic_gateway(tokens.authenticator, config=expiry_config(handshake_rate=None))
    count = 200
    async with clients.serve(gateway, server_kind) as server:
        expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
        identities = [
            Identity(user_id=f"u-{n}", roles={"doctor"}, expires_at=expires_at)
            for n in range(count)
        ]
        connected = await asyncio.gather(
            *(watched(clients, server.url, tokens.token(identity)) for identity in identities)
        )
        assert len(gateway.connections) == count
        await until(lambda: len(gateway._sessions) == count)
        # From just before the expiry, note on every loop iteration how many sockets
        # are left: the loop must get a turn while the batch is being disconnected.
        loop = asyncio.get_running_loop()
        seen: list[int] = []

        def probe() -> None:
            seen.append(len(gateway.connections))
            if gateway.connections:
                loop.call_soon(probe)

        loop.call_at(loop.time() + expires_at.timestamp() - time.time() - 0.3, probe)

        async with asyncio.timeout(15):
            for _, inbox, departure in connected:
                await departure.wait(within=15)
                assert inbox.of("auth:expired") == [{"reason": "expired"}]
                assert len(inbox.of("auth:expiring")) == 1

        await until(lambda: not gateway.connections)
        assert not await gateway.registry.users()
        assert len(gateway._sessions) == 0
        assert gateway.metrics.sessions_ended == {"expired": count}
        assert any(0 < left < count for left in seen), sorted(set(seen))


# -- audit, metrics, logs -------------------------------------------------------------


async def test_an_expiry_is_audited_counted_and_logged_pseudonymously(
    clients: Clients, server_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="realtime_gateway")
    records: list[AuditRecord] = []
    tokens = Tokens()
    gateway = Gateway(
        authenticator=tokens.authenticator,
        authorizer=reference_rules(),
        config=expiry_config(),
        namespaces=default_namespaces(),
        audit=records.append,
    )
    user_id = "u-patient-7731"
    async with clients.serve(gateway, server_kind) as server:
        _, _, departure = await watched(
            clients, server.url, tokens.token(expiring("doctor", 1.0, user_id=user_id))
        )
        await departure.wait()
        await until(lambda: not gateway.connections)

        stats = await gateway.stats()

    (ended,) = [record for record in records if record.action == "session"]
    assert ended.user_id == user_id
    assert ended.allowed is False
    assert ended.reason == "expired"
    assert ended.target == "/"
    assert ended.target_kind == "namespace"
    assert stats["sessions_ended"] == {"expired": 1}
    assert 'rtg_sessions_ended_total{reason="expired"} 1.0' in exposition(stats)
    ours = [record for record in caplog.records if record.name.startswith("realtime_gateway")]
    fields: list[dict[str, Any]] = [getattr(record, "rtg", {}) for record in ours]
    (logged,) = [rtg for rtg in fields if rtg.get("what") == "session_ended"]
    assert logged["user"] == pseudonym(user_id)
    assert logged["reason"] == "expired"
    assert logged["namespace"] == "/"
    for record, rtg in zip(ours, fields, strict=True):
        assert user_id not in record.getMessage()
        assert user_id not in repr(rtg)
