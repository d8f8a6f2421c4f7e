"""Handshakes: a refused namespace CONNECT closes a client's transport at once (after
its connect_error), a token bucket per remote address budgets new engine.io
sessions (429), and a cap on sessions without a completed CONNECT (503). Each on
both servers and transports, with raw clients for the hostile side and
python-socketio clients for the well-behaved one."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from realtime_gateway import (
    ConfigurationError,
    Gateway,
    GatewayConfig,
    GatewayNamespace,
    MainNamespace,
    SignedTokenAuthenticator,
    reference_rules,
)
from realtime_gateway._handshakes import AddressBudget, bucket_key, client_address

from .clinic import USERS
from .conftest import Clients, RunningServer, cookie_session, quick_config, until
from .rawio import CONNECT, CONNECT_ERROR, RawSession, eio_url

# Long enough that a transport closed within a second was not closed by it.
CONNECT_TIMEOUT = 30.0


def limits_gateway(authenticator: SignedTokenAuthenticator, **settings: Any) -> Gateway:
    """``/`` for everyone; ``/staff`` has no connect rule but for admins, so a
    nurse is refused there by authorization."""
    return Gateway(
        authenticator=authenticator,
        authorizer=reference_rules(),
        config=quick_config(**{"connect_timeout": CONNECT_TIMEOUT, **settings}),
        namespaces=[MainNamespace(), GatewayNamespace("/staff")],
    )


def nurse_auth(authenticator: SignedTokenAuthenticator) -> dict[str, str]:
    return {"token": authenticator.issue(USERS["nurse"])}


def sessions(gateway: Gateway) -> int:
    return len(gateway.server.eio.sockets)


async def handshake_status(server: RunningServer, transport: str, **headers: str) -> int:
    """The HTTP status of a bare engine.io handshake (a websocket one that succeeds
    is closed again at once)."""
    async with aiohttp.ClientSession(headers=headers) as http:
        url = eio_url(server.url, transport)
        if transport == "polling":
            async with http.get(url) as response:
                await response.read()
                return response.status
        try:
            ws = await http.ws_connect(url)
        except aiohttp.WSServerHandshakeError as refused:
            return refused.status
        await ws.close()
        return 101


@contextlib.asynccontextmanager
async def open_sessions(server: RunningServer, transport: str, count: int) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(count):
            await stack.enter_async_context(RawSession.open(server.url, transport))
        yield


# -- a refused CONNECT closes the transport ------------------------------------------------------

REFUSALS = {
    "unauthenticated": ("/", {"token": "not-a-token"}, "unauthenticated"),
    "forbidden": ("/staff", None, "forbidden"),
}


@pytest.mark.parametrize("refusal", sorted(REFUSALS))
async def test_refused_connect_closes_the_transport_at_once(
    authenticator: SignedTokenAuthenticator, server_kind: str, transport: str, refusal: str
) -> None:
    # The official semantics: python-socketio's client gets connect_error with the
    # gateway's data first, then its transport ends, long before connect_timeout.
    namespace, auth, code = REFUSALS[refusal]
    gateway = limits_gateway(authenticator)
    told: list[Any] = []
    # An HTTP session of the test's own, closed at the end: python-engineio's
    # client may leave a long-poll's connection behind when the server ends the
    # session under it.
    http = cookie_session()
    client = socketio.AsyncClient(reconnection=False, http_session=http)

    async def on_error(data: Any = None) -> None:
        told.append(data)

    client.on("connect_error", on_error, namespace=namespace)
    async with Clients().serve(gateway, server_kind) as server:
        started = asyncio.get_running_loop().time()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(
                server.url,
                namespaces=[namespace],
                transports=[transport],
                auth=auth or nurse_auth(authenticator),
                wait_timeout=5,
            )
        assert [data["data"]["code"] for data in told] == [code]
        await until(lambda: not gateway.server.eio.pending, 2)
        if transport == "websocket":
            # (Over polling this client sends CLOSE itself, and python-engineio keeps
            # a closed session until its pending long-poll times out.)
            await until(lambda: sessions(gateway) == 0, 2)
        assert asyncio.get_running_loop().time() - started < CONNECT_TIMEOUT / 6
        assert client.eio.state == "disconnected"
        assert gateway.connections == {}
        await http.close()


async def test_refused_raw_connect_gets_connect_error_then_close(
    authenticator: SignedTokenAuthenticator, server_kind: str, transport: str
) -> None:
    gateway = limits_gateway(authenticator)
    async with (
        Clients().serve(gateway, server_kind) as server,
        RawSession.open(server.url, transport) as session,
    ):
        kind, data = await session.connect_ns("/", {"token": "forged"})
        assert (kind, data["data"]["code"]) == (CONNECT_ERROR, "unauthenticated")
        assert await session.recv() == "1"  # engine.io CLOSE, right after
        assert await session.recv() is None
        await until(lambda: sessions(gateway) == 0, 2)


async def test_malformed_connect_closes_the_transport_too(
    authenticator: SignedTokenAuthenticator, server_kind: str, transport: str
) -> None:
    gateway = limits_gateway(authenticator)
    async with (
        Clients().serve(gateway, server_kind) as server,
        RawSession.open(server.url, transport) as session,
    ):
        await session.send_sio('0{"token":')
        reply = await session.next_sio()
        assert reply is not None
        assert reply.type == CONNECT_ERROR
        assert await session.recv() == "1"
        await until(lambda: sessions(gateway) == 0, 2)


async def test_refused_connect_keeps_a_transport_with_another_namespace(
    authenticator: SignedTokenAuthenticator, server_kind: str, transport: str
) -> None:
    gateway = limits_gateway(authenticator)
    async with (
        Clients().serve(gateway, server_kind) as server,
        RawSession.open(server.url, transport) as session,
    ):
        assert (await session.connect_ns("/", nurse_auth(authenticator)))[0] == CONNECT
        kind, data = await session.connect_ns("/staff", nurse_auth(authenticator))
        assert (kind, data["data"]["code"]) == (CONNECT_ERROR, "forbidden")
        (ack,) = await session.call("ping")
        assert ack["status"] == "pong"
        assert not session.closed
        assert sessions(gateway) == 1


async def test_python_client_with_a_refused_extra_namespace_connects_as_before(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str, transport: str
) -> None:
    # "/" first, "/staff" refused: the client is told, as before; its transport was
    # not closed under "/" by the gateway (the client itself disconnects).
    gateway = limits_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        refusal = await clients.refusal(
            server.url, namespace="/staff", transport=transport, auth=nurse_auth(authenticator)
        )
        assert refusal.data["data"]["code"] == "forbidden"
        client = await clients.connect(
            server.url, transport=transport, auth=nurse_auth(authenticator)
        )
        assert (await client.call("ping", timeout=5))["status"] == "pong"


NODE = "/usr/bin/node"
NODE_MODULES = Path(__file__).resolve().parent.parent / "node_modules"
# The official socket.io client (Node, websocket: its polling in Node keeps no
# cookies, so it cannot bind a polling session). Prints what it saw as JSON.
JS_CLIENT = """
const { io } = require("socket.io-client");
const [url, token, ...namespaces] = process.argv.slice(1);
const seen = [];
const done = () => { console.log(JSON.stringify(seen)); process.exit(0); };
for (const ns of namespaces) {
  const socket = io(url + ns, { transports: ["websocket"], auth: { token } });
  socket.on("connect", () => { seen.push(["connect", ns]); });
  socket.on("connect_error", (e) => { seen.push(["connect_error", ns, e.data]); });
  socket.on("disconnect", (reason) => { seen.push(["disconnect", ns, reason]); });
  socket.io.on("reconnect_attempt", () => { seen.push(["reconnect_attempt", ns]); });
}
setTimeout(done, 1500);
"""


async def official_client(server: RunningServer, token: str, *namespaces: str) -> list[Any]:
    process = await asyncio.create_subprocess_exec(
        NODE,
        "-e",
        JS_CLIENT,
        server.url,
        token,
        *namespaces,
        env={"NODE_PATH": str(NODE_MODULES)},
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 0
    seen: list[Any] = json.loads(out)
    return seen


async def test_official_client_sees_connect_error_and_its_other_namespace_connects(
    authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    # Refused on "/staff" but not on "/", sent together with "/staff" first: the
    # transport stays for "/" (closing it at once made the client reconnect).
    gateway = limits_gateway(authenticator)
    async with Clients().serve(gateway, server_kind) as server:
        token = authenticator.issue(USERS["nurse"])
        seen = await official_client(server, token, "/staff", "/")
        assert seen == [["connect_error", "/staff", {"code": "forbidden"}], ["connect", "/"]]
        # Alone, the refused namespace's client is told and does not reconnect.
        seen = await official_client(server, token, "/staff")
        assert seen == [["connect_error", "/staff", {"code": "forbidden"}]]
        assert len(gateway.connections) == 0
        assert gateway.metrics.connections_total == 1


# -- the per-address handshake budget ------------------------------------------------------------


async def test_handshakes_past_the_address_budget_get_429(
    authenticator: SignedTokenAuthenticator, server_kind: str, transport: str
) -> None:
    gateway = limits_gateway(authenticator, handshake_rate=0.01, handshake_burst=3)
    async with Clients().serve(gateway, server_kind) as server:
        async with open_sessions(server, transport, 3):
            assert sessions(gateway) == 3
            assert await handshake_status(server, transport) == 429
            assert await handshake_status(server, "polling") == 429
            assert sessions(gateway) == 3  # no session for a refused handshake
        assert gateway.metrics.handshakes_refused == {"rate_limited": 2}
        async with (
            aiohttp.ClientSession() as http,
            http.get(eio_url(server.url, "polling")) as response,
        ):
            assert response.status == 429
            assert response.headers["Retry-After"] == "100"
        assert (await gateway.stats())["handshakes_refused"] == {"rate_limited": 3}


async def test_proxy_header_is_trusted_only_when_configured(
    authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    budget = {"handshake_rate": 0.01, "handshake_burst": 1}
    spoofed = ("192.0.2.1", "192.0.2.2")
    # Not configured: the header is the client's own text; every request here
    # comes from 127.0.0.1 and shares its bucket. (uvicorn itself rewrites the peer
    # from X-Forwarded-For sent by 127.0.0.1, its forwarded_allow_ips default, so
    # X-Real-IP stands for a header nobody vouches for.)
    gateway = limits_gateway(authenticator, **budget)
    async with Clients().serve(gateway, server_kind) as server:
        statuses = [
            await handshake_status(server, "polling", **{"X-Real-IP": hop}) for hop in spoofed
        ]
        assert statuses == [200, 429]
    # Configured: the last hop (the one the proxy appended) names the client.
    gateway = limits_gateway(authenticator, trusted_proxy_header="X-Forwarded-For", **budget)
    async with Clients().serve(gateway, server_kind) as server:
        first = await handshake_status(
            server, "polling", **{"X-Forwarded-For": "10.0.0.9, 192.0.2.1"}
        )
        other = await handshake_status(server, "websocket", **{"X-Forwarded-For": "192.0.2.2"})
        again = await handshake_status(
            server, "polling", **{"X-Forwarded-For": "6.6.6.6, 192.0.2.1"}
        )
        assert (first, other, again) == (200, 101, 429)
        # Without the header, the peer's own bucket.
        assert await handshake_status(server, "polling") == 200
        assert gateway.metrics.handshakes_refused == {"rate_limited": 1}


async def test_python_clients_under_the_budget_connect_as_before(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str, transport: str
) -> None:
    gateway = limits_gateway(authenticator, handshake_burst=8, max_pending_sessions=8)
    async with clients.serve(gateway, server_kind) as server:
        for _ in range(8):
            client = await clients.connect(
                server.url, transport=transport, auth=nurse_auth(authenticator)
            )
            assert (await client.call("ping", timeout=5))["status"] == "pong"
        assert gateway.metrics.handshakes_refused == {}
        assert len(gateway.connections) == 8
        assert gateway.server.eio.pending == set()


# -- the cap on sessions without a CONNECT -------------------------------------------------------


async def test_sessions_without_connect_are_capped(
    authenticator: SignedTokenAuthenticator, server_kind: str, transport: str
) -> None:
    gateway = limits_gateway(authenticator, max_pending_sessions=3)
    async with Clients().serve(gateway, server_kind) as server:
        async with RawSession.open(server.url, transport) as first:
            async with open_sessions(server, transport, 2):
                assert len(gateway.server.eio.pending) == 3
                assert await handshake_status(server, transport) == 503
                assert await handshake_status(server, "polling") == 503
                assert sessions(gateway) == 3
                # A session that completes its CONNECT no longer counts.
                assert (await first.connect_ns("/", nurse_auth(authenticator)))[0] == CONNECT
                assert len(gateway.server.eio.pending) == 2
                async with RawSession.open(server.url, transport):
                    assert await handshake_status(server, "polling") == 503
            # Sessions that end free their place.
            await until(lambda: len(gateway.server.eio.pending) == 0, 3)
            async with open_sessions(server, transport, 3):
                assert len(gateway.server.eio.pending) == 3
        assert gateway.metrics.handshakes_refused == {"too_many_pending": 3}


async def test_refused_connects_free_their_place_at_once(
    authenticator: SignedTokenAuthenticator, server_kind: str, transport: str
) -> None:
    # The issue's flood: refused handshakes that used to stay until connect_timeout.
    gateway = limits_gateway(authenticator, max_pending_sessions=5)
    async with Clients().serve(gateway, server_kind) as server:
        for _ in range(20):
            async with RawSession.open(server.url, transport) as session:
                kind, _ = await session.connect_ns("/", {"token": "forged"})
                assert kind == CONNECT_ERROR
                assert await session.recv() == "1"
        await until(lambda: sessions(gateway) == 0 and not gateway.server.eio.pending, 2)
        assert gateway.metrics.handshakes_refused == {}
        assert gateway.metrics.auth_failures["malformed"] == 20


# -- units ---------------------------------------------------------------------------------------


def test_address_budget_refills_expires_and_stays_bounded() -> None:
    budget = AddressBudget(rate=10.0, burst=2, max_keys=3)
    assert [budget.take("a", now=0.0) for _ in range(3)] == [True, True, False]
    assert budget.take("a", now=0.1)  # one token back after 0.1 s at 10/s
    assert not budget.take("a", now=0.1)
    for key in ("b", "c", "d", "e"):
        budget.take(key, now=0.1)
    assert len(budget) == 3  # the least recently used went first
    # Once refilled, buckets are dropped as later handshakes pass.
    budget.take("z", now=100.0)
    budget.take("z", now=100.0)
    assert len(budget) <= 2


def test_bucket_keys() -> None:
    assert bucket_key("192.0.2.7") == "192.0.2.7"
    assert bucket_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert bucket_key("2001:db8:1:2:aaaa::1") == bucket_key("2001:db8:1:2:bbbb::9")
    assert bucket_key("[2001:db8:1:2::1]") == bucket_key("2001:db8:1:2::1")
    assert bucket_key("2001:db8:1:3::1") != bucket_key("2001:db8:1:2::1")
    assert bucket_key("not an address") == "invalid"
    assert bucket_key(None) == "unknown"


def test_client_address_reads_the_header_only_when_trusted() -> None:
    environ = {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 192.0.2.1"}
    assert client_address(environ, None) == "10.0.0.1"
    assert client_address(environ, "X-Forwarded-For") == "192.0.2.1"
    assert (
        client_address({"REMOTE_ADDR": "10.0.0.1", "HTTP_X_REAL_IP": " 192.0.2.3 "}, "x-real-ip")
        == "192.0.2.3"
    )
    assert client_address({"REMOTE_ADDR": "10.0.0.1"}, "X-Forwarded-For") == "10.0.0.1"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("handshake_rate", 0),
        ("handshake_burst", 0),
        ("max_pending_sessions", 0),
        ("trusted_proxy_header", "X Forwarded For"),
        ("trusted_proxy_header", ""),
    ],
)
def test_handshake_settings_are_validated(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError):
        GatewayConfig(**{field: value})


def test_handshake_defaults() -> None:
    config = GatewayConfig()
    assert (config.handshake_rate, config.handshake_burst) == (20.0, 100)
    assert config.trusted_proxy_header is None
    assert config.max_pending_sessions == 1_000
    assert GatewayConfig(handshake_rate=None).handshake_rate is None
