"""What a binary packet waiting for its attachments may hold: its text and the
attachments received so far stay within the namespace's largest event size (plus
room for the header), on both servers and transports; over it the connection is
closed with a ``protocol_errors`` reason. Well-behaved binary events are unchanged."""

from __future__ import annotations

import json

import aiohttp

from realtime_gateway import SignedTokenAuthenticator

from .clinic import USERS
from .conftest import Clients, until
from .rawio import CONNECT, RawSession
from .test_hostile_socketio import assert_closed, hostile_gateway, nurse_session, placeholder

FRAME = 900_000  # the issue's frames: 900 KB each, under max_payload_size
POLLED_FRAME = 700_000  # base64 in a polling body, which max_payload_size also bounds


async def join_blobs(session: RawSession, authenticator: SignedTokenAuthenticator) -> None:
    kind, data = await session.connect_ns("/blobs", {"token": authenticator.issue(USERS["nurse"])})
    assert kind == CONNECT, data


async def test_many_large_attachments_are_not_held(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str, transport: str
) -> None:
    # The issue's scenario: a declared attachment count within max_attachments, then
    # frames of 900 KB. Only the default max_event_size (64 KiB) may be held.
    gateway = hostile_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        async with nurse_session(server, authenticator, transport) as session:
            await join_blobs(session, authenticator)
            header = json.dumps(["echo", [placeholder(n) for n in range(10)]])
            await session.send_sio(f"510-/blobs,1{header}")
            pending = gateway.server._binary_packet
            await until(lambda: len(pending) == 1)
            (packet,) = pending.values()
            assert packet.held_limit < 70_000
            # Attachments under the budget are held and counted...
            await session.send_binary(b"a" * 30_000)
            await until(lambda: packet.held_bytes > 30_000)
            await session.send_binary(b"b" * 30_000)
            await until(lambda: packet.held_bytes > 60_000)
            assert packet.held_bytes <= packet.held_limit
            # ...and the first large frame ends the connection.
            frame = FRAME if transport == "websocket" else POLLED_FRAME
            for _ in range(60):
                if session.closed:
                    break
                try:
                    await session.send_binary(b"z" * frame)
                except (aiohttp.ClientError, ConnectionError, RuntimeError):
                    break
                if transport == "polling" and session.last_status != 200:
                    break
            await assert_closed(session, gateway)
            assert pending == {}
        assert gateway.metrics.protocol_errors == {"attachments too large": 1}


async def test_binary_text_over_the_budget_is_not_held(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str, transport: str
) -> None:
    # The packet's own text waits with it: 900 KB of it is not held either.
    gateway = hostile_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        async with nurse_session(server, authenticator, transport) as session:
            await join_blobs(session, authenticator)
            header = json.dumps(["echo", placeholder(0), "t" * FRAME])
            await session.send_sio(f"51-/blobs,1{header}")
            await assert_closed(session, gateway)
        assert gateway.server._binary_packet == {}
        assert gateway.metrics.protocol_errors == {"binary packet too large": 1}


async def test_binary_event_at_the_size_limit_is_answered(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str, transport: str
) -> None:
    # A python-socketio client's binary event exactly at max_event_size (its payload
    # measures as "null" plus the bytes) is dispatched as before; one byte more is
    # refused as an event, with the connection kept.
    limit = 8_000
    gateway = hostile_gateway(authenticator, max_event_size=limit)
    async with clients.serve(gateway, server_kind) as server:
        client = await clients.connect(
            server.url,
            namespaces=["/blobs"],
            transport=transport,
            auth={"token": authenticator.issue(USERS["nurse"])},
        )
        at_limit = b"x" * (limit - len("null"))
        answer = await client.call("echo", at_limit, namespace="/blobs", timeout=5)
        assert answer == {"success": True, "bytes": len(at_limit)}
        over = await client.call("echo", at_limit + b"x", namespace="/blobs", timeout=5)
        assert (over["success"], over["code"]) == (False, "invalid_payload")
        two = [b"p" * 3_000, b"q" * 3_000]
        answer = await client.call("echo", two, namespace="/blobs", timeout=5)
        assert answer == {"success": True, "bytes": 6_000}
        assert gateway.metrics.protocol_errors == {}
        assert client.connected
