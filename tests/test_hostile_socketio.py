"""Hostile clients at the socket.io layer, with raw packets over both transports and
both servers: lifecycle names as events, malformed and deeply nested packets,
malformed CONNECT auth, inconsistent binary packets, and admin bodies nested deep."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from realtime_gateway import (
    AdminAPI,
    Connection,
    Gateway,
    GatewayConfig,
    GatewayNamespace,
    MainNamespace,
    Rule,
    RuleAuthorizer,
    SignedTokenAuthenticator,
    event,
    reference_rules,
)

from .clinic import USERS
from .conftest import Clients, RunningServer, quick_config
from .rawio import ACK, CONNECT, CONNECT_ERROR, DISCONNECT, RawSession, encode_sio


class Blobs(GatewayNamespace):
    """Accepts anything on ``echo`` and says how many bytes of binary it got."""

    @event("echo")
    async def echo(self, conn: Connection, value: Any) -> dict[str, Any]:
        values = value if isinstance(value, list) else [value]
        return {"bytes": sum(len(item) for item in values if isinstance(item, bytes))}


def hostile_gateway(authenticator: SignedTokenAuthenticator, **settings: Any) -> Gateway:
    return Gateway(
        authenticator=authenticator,
        authorizer=reference_rules() + RuleAuthorizer([Rule(actions="connect", target="/blobs")]),
        config=quick_config(**settings),
        namespaces=[MainNamespace(), Blobs("/blobs")],
    )


@contextlib.asynccontextmanager
async def nurse_session(
    server: RunningServer, authenticator: SignedTokenAuthenticator, transport: str
) -> AsyncIterator[RawSession]:
    """A raw session admitted on ``/`` as the reference nurse."""
    async with RawSession.open(server.url, transport) as session:
        kind, data = await session.connect_ns("/", {"token": authenticator.issue(USERS["nurse"])})
        assert kind == CONNECT, data
        yield session


async def next_ack(session: RawSession, id: int, namespace: str = "/") -> Any:
    """The data of the ACK with ``id``, skipping the events that come before it."""
    while (reply := await session.next_sio()) is not None:
        if reply.type == ACK:
            assert (reply.id, reply.namespace) == (id, namespace)
            return reply.data
    raise AssertionError("the server closed the session")


async def assert_consistent(gateway: Gateway) -> None:
    """The registry lists exactly the gateway's live sockets, by user."""
    live = gateway.connections
    users = {conn.identity.user_id for conn in live.values()}
    assert await gateway.registry.users() == frozenset(users)
    for user in users:
        listed = {info.sid for info in await gateway.registry.user_sockets(user)}
        assert listed == {sid for sid, conn in live.items() if conn.identity.user_id == user}


async def assert_closed(session: RawSession, gateway: Gateway) -> None:
    """The server closed the session, and the registry forgot it by then."""
    while (frame := await session.recv()) is not None:
        if frame == "1":  # the CLOSE packet: python-socketio has heard the disconnect
            break
    assert gateway.connections == {}
    assert await gateway.registry.users() == frozenset()


async def assert_next_connection_works(
    server: RunningServer, authenticator: SignedTokenAuthenticator, transport: str
) -> None:
    async with nurse_session(server, authenticator, transport) as session:
        (ack,) = await session.call("ping")
        assert ack["status"] == "pong"


# -- lifecycle names ----------------------------------------------------------------------

HOOK_NAMES = (
    "connect",
    "disconnect",
    "connect_error",
    "disconnecting",
    "newListener",
    "removeListener",
    "on_connect",
    "on_disconnect",
    "on_connected",
    "on_ready",
    "on_disconnected",
    "on_presence",
    "trigger_event",
    "_connect",
    "_disconnect",
    "_dispatch",
    "_ready",
    "_announce",
    "_join_own_rooms",
    "join",
    "leave",
    "reauthorize",
    "bind",
    "add_event",
    "emit",
    "send",
    "enter_room",
    "leave_room",
    "close_room",
    "disconnect_socket",
    "__init__",
    "__class__",
)


async def test_lifecycle_and_hook_names_are_unknown_events(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str, transport: str
) -> None:
    gateway = hostile_gateway(authenticator)
    admin_token = authenticator.issue(USERS["admin"])
    forged_environ = {
        "REMOTE_ADDR": "10.0.0.1\nconnect sid=forged",
        "HTTP_ORIGIN": "https://evil.example",
        "QUERY_STRING": f"token={admin_token}",
    }
    async with (
        clients.serve(gateway, server_kind) as server,
        nurse_session(server, authenticator, transport) as session,
    ):
        (sid,) = gateway.connections
        before = gateway.metrics.events_refused["not_found"]
        for name in HOOK_NAMES:
            for args in ((), (forged_environ,), (forged_environ, {"token": admin_token})):
                (ack,) = await session.call(name, *args)
                assert ack["success"] is False, name
                assert ack["code"] == "not_found", name
                # Without an ack id: nothing is answered and nothing changes.
                await session.emit(name, *args)
        (pong,) = await session.call("ping")
        assert pong["status"] == "pong"
        assert gateway.metrics.events_refused["not_found"] == before + 6 * len(HOOK_NAMES)

        assert list(gateway.connections) == [sid]
        conn = gateway.connections[sid]
        assert conn.identity.user_id == USERS["nurse"].user_id
        assert conn.handshake.origin is None
        await assert_consistent(gateway)
        assert [info.sid for info in await gateway.user_sockets(USERS["nurse"].user_id)] == [sid]
        assert await gateway.user_sockets(USERS["admin"].user_id) == []
        # The admin can still kick the socket, and then nothing of it is left.
        assert await gateway.disconnect_user(USERS["nurse"].user_id) == 1
        while (reply := await session.next_sio()) is not None and reply.type != DISCONNECT:
            pass
        assert reply is not None
        assert gateway.connections == {}
        await assert_consistent(gateway)


# -- malformed event packets -----------------------------------------------------------------

# socket.io packet texts: an EVENT with ack id 1 whose data is not ``[name, ...]``.
NOT_AN_EVENT = ('21{"a":1}', "21[]", "21null", "21[1]", '21"ping"', "21true", '21[{"a":1}]', "21")


@pytest.mark.parametrize("packet", NOT_AN_EVENT)
async def test_event_data_that_is_not_an_event_is_answered(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    transport: str,
    packet: str,
) -> None:
    gateway = hostile_gateway(authenticator)
    async with (
        clients.serve(gateway, server_kind) as server,
        nurse_session(server, authenticator, transport) as session,
    ):
        await session.send_sio("2" + packet[2:])  # no ack id: nothing to answer
        await session.send_sio(packet)
        (ack,) = await next_ack(session, 1)
        assert ack["success"] is False
        assert ack["code"] == "invalid_payload"
        assert gateway.metrics.events_refused["invalid_payload"] == 2
        (pong,) = await session.call("ping")
        assert pong["status"] == "pong"
        await assert_consistent(gateway)


def nested(depth: int, inner: Any = 0) -> Any:
    value = inner
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [1000, 100_000])
async def test_deeply_nested_payload_is_answered(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    transport: str,
    depth: int,
) -> None:
    gateway = hostile_gateway(authenticator)
    async with (
        clients.serve(gateway, server_kind) as server,
        nurse_session(server, authenticator, transport) as session,
    ):
        text = '21["message",' + "[" * depth + "]" * depth + "]"
        await session.send_sio(text)
        (ack,) = await next_ack(session, 1)
        assert ack["code"] == "invalid_payload"
        (pong,) = await session.call("ping")
        assert pong["status"] == "pong"


async def test_nesting_limit_is_exact_and_ignores_strings(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = hostile_gateway(authenticator, max_nesting_depth=8)
    async with (
        clients.serve(gateway, server_kind) as server,
        nurse_session(server, authenticator, "websocket") as session,
    ):
        kind, _ = await session.connect_ns("/blobs", {"token": authenticator.issue(USERS["nurse"])})
        assert kind == CONNECT
        # The event's argument list is one level: the payload may nest seven more.
        (ok,) = await session.call("echo", nested(7), namespace="/blobs")
        assert ok.get("code") != "invalid_payload"
        (too_deep,) = await session.call("echo", nested(8), namespace="/blobs")
        assert too_deep["code"] == "invalid_payload"
        brackets = "[{" * 500 + '\\"]}' * 10
        (strings,) = await session.call("echo", {"text": brackets}, namespace="/blobs")
        assert strings["success"] is True


async def test_deep_nesting_without_namespace_connection(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = hostile_gateway(authenticator)
    async with (
        clients.serve(gateway, server_kind) as server,
        nurse_session(server, authenticator, "websocket") as session,
    ):
        # An event for a namespace the client never joined is ignored, deep or not.
        await session.send_sio("2/blobs,1" + "[" * 5000 + "]" * 5000)
        (pong,) = await session.call("ping")
        assert pong["status"] == "pong"


# -- CONNECT -----------------------------------------------------------------------------------

MALFORMED_AUTH = ('{"token":', "[" * 1000 + "]" * 1000, '{"token": "x"', "{]")


@pytest.mark.parametrize("namespace", ["/", "/blobs"])
@pytest.mark.parametrize("auth", MALFORMED_AUTH)
async def test_connect_with_malformed_auth_gets_connect_error(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    transport: str,
    namespace: str,
    auth: str,
) -> None:
    gateway = hostile_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        async with RawSession.open(server.url, transport) as session:
            prefix = "0" if namespace == "/" else f"0{namespace},"
            await session.send_sio(prefix + auth)
            reply = await session.next_sio()
            assert reply is not None
            assert (reply.type, reply.namespace) == (CONNECT_ERROR, namespace)
            assert reply.data["data"] == {"code": "unauthenticated", "reason": "malformed"}
            assert gateway.metrics.auth_failures["malformed"] == 1
            assert gateway.connections == {}
            # Nothing else joined on it: the transport is closed after the refusal.
            assert await session.next_sio() is None
        # A new transport connects properly.
        async with RawSession.open(server.url, transport) as fresh:
            kind, _ = await fresh.connect_ns(
                namespace, {"token": authenticator.issue(USERS["nurse"])}
            )
            assert kind == CONNECT
            await assert_consistent(gateway)


# -- binary packets ------------------------------------------------------------------------------


def placeholder(num: Any) -> dict[str, Any]:
    return {"_placeholder": True, "num": num}


async def test_well_formed_binary_event_is_dispatched(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str, transport: str
) -> None:
    gateway = hostile_gateway(authenticator, max_event_size=1000)
    async with (
        clients.serve(gateway, server_kind) as server,
        nurse_session(server, authenticator, transport) as session,
    ):
        kind, _ = await session.connect_ns("/blobs", {"token": authenticator.issue(USERS["nurse"])})
        assert kind == CONNECT
        header = json.dumps(["echo", [placeholder(0), placeholder(1)]], separators=(",", ":"))
        await session.send_sio(f"52-/blobs,7{header}")
        await session.send_binary(b"x" * 400)
        await session.send_binary(b"y" * 500)
        assert await next_ack(session, 7, "/blobs") == [{"success": True, "bytes": 900}]


BAD_BINARY: dict[str, tuple[str, Any, list[bytes | str]]] = {
    "placeholder index out of range": ("51-", ["echo", placeholder(5)], [b"a"]),
    "negative placeholder": ("51-", ["echo", placeholder(-1)], [b"a"]),
    "string placeholder": ("51-", ["echo", placeholder("0")], [b"a"]),
    "boolean placeholder": ("51-", ["echo", placeholder(True)], [b"a"]),
    "no attachments declared": ("50-", ["echo", 1], []),
    "a billion attachments": ("5999999999-", ["echo", placeholder(0)], [b"a"]),
    "over the attachment cap": ("511-", ["echo", placeholder(0)], [b"a"]),
    "attachments over the event budget": ("51-", ["echo", placeholder(0)], [b"z" * 1600]),
    "binary text over the event budget": ("51-", ["echo", placeholder(0), "t" * 1600], []),
    "text instead of an attachment": ("51-", ["echo", placeholder(0)], ["4hello"]),
    "attachment without a packet": ("", None, [b"stray"]),
    "binary ack without a pending call": ("61-", [placeholder(0)], [b"a"]),
}


@pytest.mark.parametrize("case", sorted(BAD_BINARY))
async def test_inconsistent_binary_packet_closes_at_once(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    transport: str,
    case: str,
) -> None:
    prefix, data, attachments = BAD_BINARY[case]
    gateway = hostile_gateway(authenticator, max_event_size=1000)
    async with clients.serve(gateway, server_kind) as server:
        async with nurse_session(server, authenticator, transport) as session:
            kind, _ = await session.connect_ns(
                "/blobs", {"token": authenticator.issue(USERS["nurse"])}
            )
            assert kind == CONNECT
            if data is not None:
                header = json.dumps(data, separators=(",", ":"))
                await session.send_sio(f"{prefix}/blobs,1{header}")
            for attachment in attachments:
                if isinstance(attachment, bytes):
                    await session.send_binary(attachment)
                else:
                    await session.send_raw(attachment)
            if case == "binary ack without a pending call":
                # A complete binary ack is only dropped; a stray attachment after it is not.
                await session.send_binary(b"stray")
            await assert_closed(session, gateway)
        assert sum(gateway.metrics.protocol_errors.values()) == 1
        await assert_next_connection_works(server, authenticator, transport)


@pytest.mark.parametrize(
    "packet", ["7", '8["x"]', "x", '4{"message":"forged"}', "2/blobs," + "1" * 200 + '["echo"]']
)
async def test_unknown_packet_types_close_at_once(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    transport: str,
    packet: str,
) -> None:
    gateway = hostile_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        async with nurse_session(server, authenticator, transport) as session:
            await session.send_sio(packet)
            await assert_closed(session, gateway)
        assert sum(gateway.metrics.protocol_errors.values()) == 1
        await assert_next_connection_works(server, authenticator, transport)


async def test_client_acks_of_any_shape_change_nothing(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str, transport: str
) -> None:
    gateway = hostile_gateway(authenticator)
    async with (
        clients.serve(gateway, server_kind) as server,
        nurse_session(server, authenticator, transport) as session,
    ):
        for data in ("null", '{"a":1}', "[]", "[1,2]", '"x"', "[[[["):
            await session.send_sio(f"35{data}")
        await session.send_sio(encode_sio(ACK, [1], id=99))
        (pong,) = await session.call("ping")
        assert pong["status"] == "pong"
        await assert_consistent(gateway)
        assert sum(gateway.metrics.protocol_errors.values()) == 0


# -- the admin API --------------------------------------------------------------------------------


async def test_admin_body_nested_deep_is_a_400(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = Gateway(
        authenticator=authenticator,
        authorizer=reference_rules(),
        config=GatewayConfig(rate_limit=None, max_nesting_depth=32),
        namespaces=[MainNamespace()],
    )
    api = AdminAPI(gateway)
    token = authenticator.issue(USERS["admin"])
    async with clients.serve(gateway, server_kind, api) as server, aiohttp.ClientSession() as http:
        url = server.url + api.prefix + "/broadcast"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        deep = '{"event":"notice","data":{"x":' + "[" * 10_000 + "]" * 10_000 + "}}"
        async with http.post(url, data=deep, headers=headers) as response:
            assert response.status == 400
            body = await response.json()
        assert body["code"] == "invalid_payload"
        shallow = json.dumps({"event": "notice", "data": {"x": nested(20)}})
        async with http.post(url, data=shallow, headers=headers) as response:
            assert response.status == 200


# -- what python-socketio and python-engineio log ------------------------------------------------


def test_upstream_logs_carry_no_ids_and_touch_no_global_logger(
    caplog: pytest.LogCaptureFixture, authenticator: SignedTokenAuthenticator
) -> None:
    upstream = [logging.getLogger(name) for name in ("socketio.server", "engineio.server")]
    handlers_before = [list(logger.handlers) for logger in upstream]
    gateway = hostile_gateway(authenticator)
    gateway.attach(web.Application())
    assert [list(logger.handlers) for logger in upstream] == handlers_before
    marker = "MARKER-sid-0123456789"
    with caplog.at_level(logging.DEBUG):
        gateway.server.logger.error("Invalid session %s", marker)
        gateway.server.eio.logger.info("%s: Received packet", marker)
        try:
            raise KeyError(marker)
        except KeyError:
            gateway.server.eio.logger.exception("Unknown receive error %s", marker)
    assert marker not in caplog.text
    records = [getattr(record, "rtg", None) for record in caplog.records]
    assert records == [
        {"what": "upstream_log", "source": "socketio"},
        {"what": "upstream_log", "source": "engineio", "error": "KeyError"},
    ]
