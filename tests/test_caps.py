"""Caps and budgets a client cannot grow past: rooms per socket, sockets per user,
the per-user event budget and the disconnect of a socket that stays over budget.

Real aiohttp and uvicorn servers, real python-socketio clients; a client under
every limit sees exactly what it saw before the limits existed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

import pytest
import socketio

from realtime_gateway import (
    Gateway,
    GatewayConfig,
    Identity,
    LimitExceeded,
    PermissionDenied,
    SignedTokenAuthenticator,
    default_namespaces,
)
from realtime_gateway._connection import STREAK_GAP, Connection, TokenBucket
from realtime_gateway._identity import Handshake

from .clinic import assert_refused
from .conftest import Clients, call, quick_config, socketio_client, until


class OpenAuthorizer:
    """Allows everything but targets naming a secret; yields to the loop on every
    decision, as an authorizer asking a database would, so that concurrent joins
    of one socket interleave."""

    def __init__(self) -> None:
        self.asked: Counter[str] = Counter()

    async def authorize(self, identity: Identity, action: str, target: str) -> None:
        self.asked[action] += 1
        for _ in range(3):
            await asyncio.sleep(0)
        if "secret" in target:
            raise PermissionDenied(action, target)


def caps_gateway(
    authenticator: SignedTokenAuthenticator,
    authorizer: OpenAuthorizer | None = None,
    **settings: Any,
) -> Gateway:
    return Gateway(
        authenticator=authenticator,
        authorizer=authorizer or OpenAuthorizer(),
        config=quick_config(**settings),
        namespaces=default_namespaces(),
    )


NURSE = Identity(user_id="u-nurse", roles={"nurse", "staff"})
OTHER = Identity(user_id="u-other", roles={"nurse"})


def token(authenticator: SignedTokenAuthenticator, identity: Identity = NURSE) -> dict[str, str]:
    return {"token": authenticator.issue(identity)}


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The gateway's structured fields of a log record."""
    rtg: dict[str, Any] = getattr(record, "rtg")  # noqa: B009 (set through ``extra``)
    return rtg


def asked_rooms(gateway: Gateway, client: socketio.AsyncClient, namespace: str) -> set[str]:
    conn = gateway.connection(client.get_sid(namespace))
    assert conn is not None
    return {room for room, action in conn.rooms.items() if action is not None}


# -- rooms per socket -------------------------------------------------------------


async def test_a_socket_joins_at_most_max_rooms_per_socket_rooms(
    server_kind: str,
    transport: str,
    authenticator: SignedTokenAuthenticator,
    clients: Clients,
    caplog: pytest.LogCaptureFixture,
) -> None:
    authorizer = OpenAuthorizer()
    gateway = caps_gateway(authenticator, authorizer, max_rooms_per_socket=3)
    async with clients.serve(gateway, server_kind) as server:
        client = await clients.connect(server.url, transport=transport, auth=token(authenticator))
        conn = gateway.connection(client.get_sid("/"))
        assert conn is not None
        # The gateway's own rooms (user and two roles) are not counted.
        assert set(conn.rooms) == {"user:u-nurse", "role:nurse", "role:staff"}
        for room in ("ward-1", "ward-2", "ward-3"):
            assert await call(client, "join:room", room) == {"success": True, "room": room}
        joins_asked = authorizer.asked["join"]

        caplog.set_level(logging.WARNING, logger="realtime_gateway")
        ack = await call(client, "join:room", "ward-4")
        assert_refused(ack, "limit_exceeded")
        assert ack["reason"] == "too_many_rooms"
        assert authorizer.asked["join"] == joins_asked, "refused before the authorizer"
        assert gateway.metrics.limits_exceeded == {"too_many_rooms": 1}
        assert gateway.metrics.events_refused["limit_exceeded"] == 1
        [record] = [r for r in caplog.records if r.getMessage().startswith("limit_exceeded")]
        assert fields(record)["reason"] == "too_many_rooms"
        assert "u-nurse" not in record.getMessage()
        assert asked_rooms(gateway, client, "/") == {"ward-1", "ward-2", "ward-3"}
        info = await gateway.connection_info(client.get_sid("/"))
        assert info is not None
        assert "ward-4" not in info.rooms
        assert "ward-4" not in gateway.server.manager.rooms["/"]

        # Joining a room again at the cap is the usual no-op, and leaving frees a place.
        assert (await call(client, "join:room", "ward-2"))["success"] is True
        assert (await call(client, "leave:room", "ward-1"))["success"] is True
        assert (await call(client, "join:room", "ward-4"))["success"] is True
        assert_refused(await call(client, "join:room", "ward-5"), "limit_exceeded")
        # The stats (and so /metrics and Prometheus) carry the counter.
        assert (await gateway.stats())["limits_exceeded"] == {"too_many_rooms": 2}


class GatedAuthorizer(OpenAuthorizer):
    """Holds every ``join`` decision until :attr:`gate` opens."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def authorize(self, identity: Identity, action: str, target: str) -> None:
        if action == "join":
            await self.gate.wait()
        await super().authorize(identity, action, target)


async def test_concurrent_joins_do_not_pass_the_cap_together(
    server_kind: str, transport: str, authenticator: SignedTokenAuthenticator, clients: Clients
) -> None:
    authorizer = GatedAuthorizer()
    gateway = caps_gateway(authenticator, authorizer, max_rooms_per_socket=5)
    async with clients.serve(gateway, server_kind) as server:
        client = await clients.connect(server.url, transport=transport, auth=token(authenticator))
        joins = asyncio.gather(*(call(client, "join:room", f"ward-{n}") for n in range(12)))
        # Every join has been dispatched, so has checked the cap, and those let
        # through wait for the authorizer: none of them is in its room yet.
        await until(lambda: gateway.metrics.events_received["/"] >= 12)
        authorizer.gate.set()
        acks = await joins
        assert sum(ack["success"] for ack in acks) == 5
        assert {ack.get("reason") for ack in acks if not ack["success"]} == {"too_many_rooms"}
        assert len(asked_rooms(gateway, client, "/")) == 5
        assert authorizer.asked["join"] == 5
        conn = gateway.connection(client.get_sid("/"))
        assert conn is not None
        # No place is left held by a finished join.
        assert conn.reserve_room(6)
        conn.release_room()
        assert not conn.reserve_room(5)


async def test_batch_subscribe_reports_channels_over_the_cap(
    server_kind: str,
    authenticator: SignedTokenAuthenticator,
    clients: Clients,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = caps_gateway(authenticator, max_rooms_per_socket=3)
    ns = "/notifications"
    async with clients.serve(gateway, server_kind) as server:
        client = await clients.connect(server.url, namespaces=[ns], auth=token(authenticator))
        caplog.set_level(logging.WARNING, logger="realtime_gateway")
        ack = await call(client, "subscribe", ["a", "secret-b", "c", "d", "e", "f"], ns)
        assert ack == {
            "success": True,
            "subscribedChannels": ["a", "c", "d"],
            "deniedChannels": ["secret-b", "e", "f"],
            "limitedChannels": ["e", "f"],
        }
        assert asked_rooms(gateway, client, ns) == {"channel:a", "channel:c", "channel:d"}
        # One refusal per event, whatever the number of channels over the cap.
        assert gateway.metrics.limits_exceeded == {"too_many_rooms": 1}
        assert len([r for r in caplog.records if r.getMessage().startswith("limit_exceeded")]) == 1

        # Channels already subscribed still answer subscribed at the cap.
        ack = await call(client, "subscribe", ["g", "a", "d"], ns)
        assert ack["subscribedChannels"] == ["a", "d"]
        assert ack["limitedChannels"] == ["g"]
        assert (await call(client, "unsubscribe", ["c"], ns))["unsubscribedChannels"] == ["c"]
        ack = await call(client, "subscribe", ["g", "h"], ns)
        assert ack["subscribedChannels"] == ["g"]
        assert ack["limitedChannels"] == ["h"]
        assert asked_rooms(gateway, client, ns) == {"channel:a", "channel:d", "channel:g"}
        info = await gateway.connection_info(client.get_sid(ns))
        assert info is not None
        assert {r for r in info.rooms if r.startswith("channel:")} == asked_rooms(
            gateway, client, ns
        )


async def test_updates_and_chat_joins_count_against_the_same_cap(
    server_kind: str, authenticator: SignedTokenAuthenticator, clients: Clients
) -> None:
    gateway = caps_gateway(authenticator, max_rooms_per_socket=2)
    async with clients.serve(gateway, server_kind) as server:
        client = await clients.connect(
            server.url, namespaces=["/updates", "/chat"], auth=token(authenticator)
        )
        for n in (1, 2):
            assert (await call(client, "subscribe:patient", n, "/updates"))["success"]
        ack = await call(client, "subscribe:patient", 3, "/updates")
        assert_refused(ack, "limit_exceeded")
        # The cap is per socket: the client's /chat socket has its own.
        for conversation in ("c1", "c2"):
            assert (await call(client, "join:conversation", conversation, "/chat"))["success"]
        assert_refused(await call(client, "join:conversation", "c3", "/chat"), "limit_exceeded")


# -- sockets per user ----------------------------------------------------------------


async def test_a_user_has_at_most_max_sockets_per_user_sockets(
    server_kind: str,
    transport: str,
    authenticator: SignedTokenAuthenticator,
    clients: Clients,
    caplog: pytest.LogCaptureFixture,
) -> None:
    authorizer = OpenAuthorizer()
    gateway = caps_gateway(authenticator, authorizer, max_sockets_per_user=3)
    async with clients.serve(gateway, server_kind) as server:
        # Sockets, not client connections: one client on two namespaces holds two.
        first = await clients.connect(
            server.url,
            namespaces=["/", "/notifications"],
            transport=transport,
            auth=token(authenticator),
        )
        await clients.connect(server.url, transport=transport, auth=token(authenticator))
        caplog.set_level(logging.WARNING, logger="realtime_gateway")
        # Refused over websocket: python-engineio's client, aborting a polling session
        # after a refusal, leaves its pending long-poll's HTTP connection unclosed.
        refusal = await clients.refusal(server.url, auth=token(authenticator))
        assert refusal.data == {
            "message": "Too many connections for this user",
            "data": {"code": "limit_exceeded", "reason": "too_many_connections"},
        }
        assert gateway.metrics.limits_exceeded == {"too_many_connections": 1}
        assert authorizer.asked["connect"] == 3, "refused before the authorizer"
        [record] = [r for r in caplog.records if r.getMessage().startswith("limit_exceeded")]
        assert fields(record)["reason"] == "too_many_connections"
        assert len(await gateway.user_sockets("u-nurse")) == 3
        # Another user is not affected.
        other = await clients.connect(
            server.url, transport=transport, auth=token(authenticator, OTHER)
        )
        assert (await call(other, "ping"))["status"] == "pong"

        # A socket leaving frees a place.
        await first.disconnect()
        await until(lambda: len(gateway.connections) == 2)
        again = await clients.connect(server.url, transport=transport, auth=token(authenticator))
        assert (await call(again, "ping"))["status"] == "pong"
        assert gateway.metrics.limits_exceeded == {"too_many_connections": 1}


async def test_concurrent_connects_at_the_cap_do_not_both_pass(
    server_kind: str, authenticator: SignedTokenAuthenticator, clients: Clients
) -> None:
    gateway = caps_gateway(authenticator, max_sockets_per_user=3)
    async with clients.serve(gateway, server_kind) as server:

        async def attempt() -> bool:
            client = socketio_client()
            try:
                await client.connect(
                    server.url, transports=["websocket"], auth=token(authenticator), wait_timeout=5
                )
            except socketio.exceptions.ConnectionError:
                # python-socketio leaves the transport open after a refused namespace.
                await client.eio.disconnect(abort=True)
                return False
            clients.adopt(client)
            return True

        admitted = await asyncio.gather(*(attempt() for _ in range(8)))
        assert sum(admitted) == 3
        assert len(await gateway.user_sockets("u-nurse")) == 3
        assert gateway.metrics.limits_exceeded["too_many_connections"] == 5
        assert gateway._live.users == 1


# -- the per-user event budget and sustained refusals --------------------------------


async def test_a_user_s_sockets_share_one_event_budget(
    server_kind: str, authenticator: SignedTokenAuthenticator, clients: Clients
) -> None:
    # Refilled at one event per 100 s: nothing refills during the test.
    gateway = caps_gateway(
        authenticator, user_rate_limit=0.01, user_rate_burst=6, rate_limit_disconnect_after=None
    )
    async with clients.serve(gateway, server_kind) as server:
        one = await clients.connect(server.url, auth=token(authenticator))
        two = await clients.connect(server.url, namespaces=["/chat"], auth=token(authenticator))
        other = await clients.connect(server.url, auth=token(authenticator, OTHER))
        acks = [await call(one, "ping") for _ in range(4)]
        acks += [await call(two, "join:conversation", f"c{n}", "/chat") for n in range(2)]
        assert all(ack["success"] for ack in acks)
        # Both sockets spent the user's budget: neither gets more.
        assert_refused(await call(one, "ping"), "rate_limited")
        assert_refused(await call(two, "join:conversation", "c9", "/chat"), "rate_limited")
        assert gateway.metrics.limits_exceeded == {"user_rate_limit": 2}
        # Another user has a budget of their own.
        assert all([(await call(other, "ping"))["success"] for _ in range(6)])
        assert one.connected
        assert two.connected

        # The table of budgets holds the users with sockets only.
        assert gateway._live.users == 2
        await asyncio.gather(one.disconnect(), two.disconnect(), other.disconnect())
        await until(lambda: not gateway.connections)
        assert gateway._live.users == 0
        # A user who comes back starts with a full budget.
        back = await clients.connect(server.url, auth=token(authenticator))
        assert (await call(back, "ping"))["success"]


async def test_a_socket_kept_over_budget_is_disconnected(
    server_kind: str,
    transport: str,
    authenticator: SignedTokenAuthenticator,
    clients: Clients,
    caplog: pytest.LogCaptureFixture,
) -> None:
    after = 0.4
    gateway = caps_gateway(
        authenticator, user_rate_limit=0.01, user_rate_burst=2, rate_limit_disconnect_after=after
    )
    async with clients.serve(gateway, server_kind) as server:
        told: list[Any] = []
        gone = asyncio.Event()

        async def on_limit(data: Any) -> None:
            told.append(data)

        async def on_disconnect(reason: Any = None) -> None:
            gone.set()

        caplog.set_level(logging.WARNING, logger="realtime_gateway")
        flooder = await clients.connect(
            server.url,
            transport=transport,
            auth=token(authenticator),
            handlers={"limit:exceeded": on_limit, "disconnect": on_disconnect},
        )
        calm = await clients.connect(server.url, auth=token(authenticator, OTHER))
        # When the first refused event was sent: the server refused it later.
        first_refused: float | None = None
        async with asyncio.timeout(10):
            while not gone.is_set():
                sent = time.monotonic()
                try:
                    ack = await flooder.call("ping", namespace="/", timeout=1)
                except (socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError):
                    continue
                if not ack["success"] and first_refused is None:
                    first_refused = sent
                    assert ack["code"] == "rate_limited"
            await gone.wait()
        assert first_refused is not None
        assert time.monotonic() - first_refused >= after
        assert told == [{"reason": "rate_limited"}]
        await until(lambda: len(gateway.connections) == 1)
        assert gateway.metrics.limits_exceeded["rate_limit_sustained"] == 1
        assert gateway.metrics.sessions_ended == {"rate_limited": 1}
        # One record for the streak, one for the session's end: not one per event.
        streaks = [r for r in caplog.records if r.getMessage().startswith("rate_limited")]
        assert len(streaks) == 1
        assert fields(streaks[0])["budget"] == "user"
        assert gateway._live.users == 1
        assert (await call(calm, "ping"))["success"]


async def test_the_socket_budget_also_counts_toward_the_sustained_refusal(
    server_kind: str, authenticator: SignedTokenAuthenticator, clients: Clients
) -> None:
    gateway = caps_gateway(
        authenticator, rate_limit=0.01, rate_burst=1, rate_limit_disconnect_after=0.2
    )
    async with clients.serve(gateway, server_kind) as server:
        gone = asyncio.Event()

        async def on_disconnect(reason: Any = None) -> None:
            gone.set()

        client = await clients.connect(
            server.url, auth=token(authenticator), handlers={"disconnect": on_disconnect}
        )
        async with asyncio.timeout(10):
            while not gone.is_set():
                try:
                    await client.call("ping", namespace="/", timeout=1)
                except (socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError):
                    continue
        assert gateway.metrics.sessions_ended == {"rate_limited": 1}
        assert "user_rate_limit" not in gateway.metrics.limits_exceeded


def test_refusals_with_pauses_are_no_sustained_streak() -> None:
    conn = Connection(sid="s", namespace="/", identity=NURSE, handshake=Handshake(namespace="/"))
    assert conn.refused_for(100.0) == (0.0, True)
    assert conn.refused_for(100.5) == (0.5, False)
    assert conn.refused_for(100.5 + STREAK_GAP * 0.9)[1] is False
    # A pause longer than the gap starts a new streak.
    lasted, started = conn.refused_for(200.0)
    assert (lasted, started) == (0.0, True)
    assert conn.refused_for(200.0 + 3 * STREAK_GAP) == (0.0, True)


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket()
    assert [bucket.take(2.0, 3, now=10.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(2.0, 3, now=10.4) is False  # 0.8 of a token
    assert bucket.take(2.0, 3, now=10.5) is True
    assert [bucket.take(2.0, 3, now=100.0) for _ in range(4)] == [True, True, True, False]


# -- well-behaved clients ----------------------------------------------------------------


async def test_a_client_under_every_limit_sees_no_difference(
    server_kind: str, transport: str, authenticator: SignedTokenAuthenticator, clients: Clients
) -> None:
    # Every default limit on, the socket rate limit included.
    config = GatewayConfig(ping_interval=1, ping_timeout=1, connect_timeout=1)
    assert config.max_rooms_per_socket == 128
    assert config.max_sockets_per_user == 50
    assert config.user_rate_limit == 100.0
    assert config.user_rate_burst == 200
    assert config.rate_limit_disconnect_after == 10.0
    gateway = Gateway(
        authenticator=authenticator,
        authorizer=OpenAuthorizer(),
        config=config,
        namespaces=default_namespaces(),
    )
    namespaces = ["/", "/notifications", "/chat", "/updates"]
    async with clients.serve(gateway, server_kind) as server:
        tabs = [
            await clients.connect(
                server.url, namespaces=namespaces, transport=transport, auth=token(authenticator)
            )
            for _ in range(3)
        ]
        for tab in tabs:
            channels = [f"ch{n}" for n in range(20)]
            assert await call(tab, "subscribe", channels, "/notifications") == {
                "success": True,
                "subscribedChannels": channels,
                "deniedChannels": [],
            }
            for n in range(10):
                assert await call(tab, "join:room", f"r{n}") == {"success": True, "room": f"r{n}"}
            assert (await call(tab, "subscribe:patient", 7, "/updates"))["success"]
            assert (await call(tab, "join:conversation", "c1", "/chat"))["success"]
            assert (await call(tab, "ping"))["status"] == "pong"
        assert len(await gateway.user_sockets("u-nurse")) == 12
        assert gateway.metrics.limits_exceeded == {}
        assert "rate_limited" not in gateway.metrics.events_refused
        assert all(tab.connected for tab in tabs)


def test_limit_exceeded_carries_a_known_reason() -> None:
    refusal = LimitExceeded(LimitExceeded.TOO_MANY_ROOMS, "Too many rooms")
    assert (refusal.code, refusal.reason, refusal.message) == (
        "limit_exceeded",
        "too_many_rooms",
        "Too many rooms",
    )
    with pytest.raises(ValueError, match="unknown limit reason"):
        LimitExceeded("because", "no")
