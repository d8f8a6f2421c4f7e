"""Property tests: whatever frames and packets a client sends, the gateway answers or
closes cleanly, the next connection works, and the registry matches the live sockets.

The decoding properties run on the library's own classes; the end-to-end ones send
hypothesis' frames to a real server over both transports and both servers.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime_gateway import Gateway, SignedTokenAuthenticator
from realtime_gateway._protocol import BadJson, GatewayPacket, JsonCodec, ProtocolViolation

from .clinic import USERS
from .conftest import Clients, RunningServer, until
from .rawio import CONNECT, CONNECT_ERROR, RawSession
from .test_hostile_socketio import HOOK_NAMES, assert_consistent, hostile_gateway

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=40,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(item) for item in value.values()), default=0)
    return 0


@given(value=JSON, limit=st.integers(min_value=1, max_value=6))
def test_depth_check_agrees_with_the_decoded_depth(value: Any, limit: int) -> None:
    text = json.dumps(value)
    codec = JsonCodec(limit)
    if depth(value) <= limit:
        assert codec.loads(text) == json.loads(text)
    else:
        with pytest.raises(BadJson):
            codec.loads(text)


@given(text=st.text(max_size=60) | st.binary(max_size=20))
def test_any_packet_text_decodes_or_is_a_protocol_violation(text: str | bytes) -> None:
    try:
        pkt = GatewayPacket(encoded_packet=text)
    except ProtocolViolation:
        return
    assert 0 <= pkt.packet_type <= 6
    assert pkt.malformed or pkt.data is None or isinstance(pkt.data, object)


# -- end to end ---------------------------------------------------------------------------

EVENT_NAMES = st.sampled_from(
    [*HOOK_NAMES, "ping", "join:room", "leave:room", "message", "echo"]
) | st.text(max_size=10)
# Mostly the namespace the client is in, so that packets reach the gateway's checks.
_KNOWN_NAMESPACES = st.sampled_from(["", "", "", "/", "/blobs", "/nope"])
NAMESPACES = st.one_of(
    _KNOWN_NAMESPACES, _KNOWN_NAMESPACES, _KNOWN_NAMESPACES, st.text(max_size=6).map("/".__add__)
)


@st.composite
def socketio_texts(draw: st.DrawFn) -> str:
    """Socket.io packet texts, mostly almost right."""
    kind = draw(st.sampled_from("22225555336401789x"))
    attachments = draw(st.sampled_from(["", "", "0-", "1-", "1-", "2-", "11-", "999999999-"]))
    namespace = draw(NAMESPACES)
    namespace = f"{namespace}," if namespace not in ("", "/") else ""
    ack = draw(st.sampled_from(["", "", "1", "12", "9" * 30]))
    data = draw(
        st.one_of(
            st.builds(
                lambda name, args: json.dumps([name, *args]),
                EVENT_NAMES,
                st.lists(JSON, max_size=2),
            ),
            JSON.map(json.dumps),
            st.just('[{"_placeholder":true,"num":0}]'),
            st.text(max_size=12),
        )
    )
    return f"{kind}{attachments}{namespace}{ack}{data}"


_SOCKETIO_FRAMES = socketio_texts().map("4".__add__)
FRAMES = st.lists(
    st.one_of(
        _SOCKETIO_FRAMES,
        _SOCKETIO_FRAMES,
        _SOCKETIO_FRAMES,
        st.text(max_size=12),
        st.binary(max_size=12),
        st.sampled_from(["", "x", "b!!!notbase64", "1", "2", "3", "5", "6", "40", "41"]),
    ),
    min_size=1,
    max_size=4,
)


async def probe(session: RawSession, authenticator: SignedTokenAuthenticator) -> str:
    """``"answered"`` if the server still answers a CONNECT on this session, else
    ``"closed"``; never silence."""
    if session.closed:
        return "closed"
    try:
        token = authenticator.issue(USERS["nurse"])
        await session.send_sio("0/blobs," + json.dumps({"token": token}))
    except Exception:  # the transport is already gone
        return "closed"
    while True:
        try:
            reply = await session.next_sio(timeout=5)
        except ConnectionError:
            return "closed"
        if reply is None:
            return "closed"
        if reply.namespace == "/blobs" and reply.type in (CONNECT, CONNECT_ERROR):
            return "answered"


async def check_frames(
    server: RunningServer,
    gateway: Gateway,
    authenticator: SignedTokenAuthenticator,
    transport: str,
    frames: list[str | bytes],
) -> None:
    async with RawSession.open(server.url, transport) as session:
        kind, _ = await session.connect_ns("/", {"token": authenticator.issue(USERS["nurse"])})
        assert kind == CONNECT
        for frame in frames:
            if session.closed:
                break
            try:
                await session.send_raw(frame)
            except Exception:  # the server closed the transport meanwhile
                break
        assert await probe(session, authenticator) in ("answered", "closed")
        await assert_consistent(gateway)
    # Once the client is gone, so is everything of it.
    await until(lambda: not gateway.connections)
    await assert_consistent(gateway)
    async with RawSession.open(server.url, transport) as fresh:
        kind, _ = await fresh.connect_ns("/", {"token": authenticator.issue(USERS["nurse"])})
        assert kind == CONNECT
        (pong,) = await fresh.call("ping")
        assert pong["status"] == "pong"


@pytest.fixture
async def hostile_server(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> Any:
    # Hypothesis opens two sessions per example from one address: past the
    # handshake budget, which tests/test_handshake_limits.py covers.
    gateway = hostile_gateway(authenticator, handshake_rate=None)
    async with clients.serve(gateway, server_kind) as server:
        yield server


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frames=FRAMES)
async def test_any_frames_are_answered_or_closed(
    hostile_server: RunningServer,
    authenticator: SignedTokenAuthenticator,
    transport: str,
    frames: list[str | bytes],
) -> None:
    await check_frames(hostile_server, hostile_server.gateway, authenticator, transport, frames)
