"""Hostile clients below socket.io: garbage engine.io frames, size limits, polling
bodies without a sane length, and session ids used by someone else, on both servers
and (where it applies) both transports, with a raw engine.io client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp import web
from playwright.async_api import async_playwright, expect

from realtime_gateway import (
    AllowAll,
    Connection,
    Gateway,
    GatewayConfig,
    GatewayNamespace,
    Identity,
    SignedTokenAuthenticator,
    event,
)
from realtime_gateway._engine import MAX_PACKETS_PER_BODY

from .conftest import RunningServer, serve, socketio_client, until
from .rawio import CONNECT, RawSession, eio_url

MAX_PAYLOAD = 4096
USER = "u-victim"


class Echo(GatewayNamespace):
    @event("echo")
    async def echo(self, conn: Connection, payload: Any) -> dict[str, Any]:
        return {"length": len(payload) if isinstance(payload, str) else None}


def make_gateway(authenticator: SignedTokenAuthenticator, **settings: Any) -> Gateway:
    # Heartbeats far longer than the tests wait: only a prompt close can pass them.
    defaults: dict[str, Any] = {
        "rate_limit": None,
        "ping_interval": 10,
        "ping_timeout": 10,
        "connect_timeout": 10,
        "max_payload_size": MAX_PAYLOAD,
        "max_event_size": MAX_PAYLOAD,
    }
    return Gateway(
        authenticator=authenticator,
        authorizer=AllowAll(),
        config=GatewayConfig(**{**defaults, **settings}),
        namespaces=[Echo("/")],
    )


@contextlib.asynccontextmanager
async def joined(
    server: RunningServer, token: str, transport: str, **options: Any
) -> AsyncIterator[RawSession]:
    """A raw session that has joined ``/`` with ``token``."""
    async with RawSession.open(server.url, transport, **options) as session:
        kind, data = await session.connect_ns("/", {"token": token})
        assert kind == CONNECT, data
        yield session


async def assert_forgotten(server: RunningServer) -> None:
    """The gateway forgot every socket of USER, well within a heartbeat."""
    gateway = server.gateway
    await until(lambda: not gateway.connections and not gateway.server.eio.sockets, within=2)
    assert await gateway.registry.user_sockets(USER) == []


async def assert_next_connection_works(server: RunningServer, token: str, transport: str) -> None:
    async with joined(server, token, transport) as session:
        assert await session.call("echo", "hi") == [{"success": True, "length": 2}]
        assert len(await server.gateway.registry.user_sockets(USER)) == 1


def frame_of(size: int, *, char: str = "a") -> str:
    """An engine.io message carrying an ``echo`` event, exactly ``size`` bytes long."""
    head, tail = '421["echo","', '"]'
    room = size - len(head) - len(tail)
    width = len(char.encode())
    text = char * (room // width) + "a" * (room % width)
    frame = head + text + tail
    assert len(frame.encode()) == size
    return frame


@pytest.fixture
def token(authenticator: SignedTokenAuthenticator) -> str:
    return authenticator.issue(Identity(user_id=USER))


# -- garbage frames ----------------------------------------------------------------

GARBAGE = ["", "x", "b!!!notbase64", "9", "7abc", "0{}", "2", "-1", "\u0663"]


@pytest.mark.parametrize("frame", GARBAGE)
async def test_garbage_websocket_frame_closes_with_1002(
    server_kind: str, authenticator: SignedTokenAuthenticator, token: str, frame: str
) -> None:
    async with serve(make_gateway(authenticator), server_kind) as server:
        async with joined(server, token, "websocket") as session:
            await session.send_raw(frame)
            assert await session.recv() is None
            assert session.close_code == 1002
            await assert_forgotten(server)
        assert server.gateway.metrics.protocol_errors["engineio_frame"] == 1
        await assert_next_connection_works(server, token, "websocket")


TOO_MANY_PACKETS = "3\x1e" * MAX_PACKETS_PER_BODY + "3"


@pytest.mark.parametrize("body", [*GARBAGE, "4ok\x1ex", TOO_MANY_PACKETS, b"4\xff\xfe"])
async def test_garbage_polling_body_is_answered_400_and_closes_the_session(
    server_kind: str, authenticator: SignedTokenAuthenticator, token: str, body: str | bytes
) -> None:
    async with serve(make_gateway(authenticator), server_kind) as server:
        async with joined(server, token, "polling") as session:
            assert await session.post(body) == 400
            # The pending long-poll is told the session closed.
            assert await session.recv() == "1"
            assert await session.recv() is None
            await assert_forgotten(server)
        assert server.gateway.metrics.protocol_errors["engineio_frame"] == 1
        # (The next polling session is checked by the tests below: a polling session
        # that leaves holds uvicorn's shutdown for a second, python-engineio answering
        # its last long-poll only at the heartbeat.)
        await assert_next_connection_works(server, token, "websocket")


@pytest.mark.parametrize("probe", ["x", "", "b!!!"])
async def test_garbage_during_an_upgrade_closes_the_session(
    server_kind: str, authenticator: SignedTokenAuthenticator, token: str, probe: str
) -> None:
    async with serve(make_gateway(authenticator), server_kind) as server:
        async with joined(server, token, "polling") as session:
            ws = await session.http.ws_connect(session.endpoint("websocket"))
            await ws.send_str(probe)
            closing = await ws.receive(timeout=5)
            assert closing.type == aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1002
            await ws.close()
            assert await session.recv() == "1"
            await assert_forgotten(server)
        await assert_next_connection_works(server, token, "polling")


async def test_a_polling_session_upgrades_to_websocket(
    server_kind: str, authenticator: SignedTokenAuthenticator, token: str
) -> None:
    async with (
        serve(make_gateway(authenticator), server_kind) as server,
        joined(server, token, "polling") as session,
    ):
        await session.upgrade()
        assert await session.call("echo", "up") == [{"success": True, "length": 2}]
        await session.send_raw("x")
        assert await session.recv() is None
        assert session.close_code == 1002
        await assert_forgotten(server)


# -- websocket size limit ------------------------------------------------------------


@pytest.mark.parametrize("compression", [False, True])
@pytest.mark.parametrize("char", ["a", "\u00e9"])
async def test_websocket_frames_up_to_max_payload_pass_and_one_more_byte_is_1009(
    server_kind: str,
    authenticator: SignedTokenAuthenticator,
    token: str,
    compression: bool,
    char: str,
) -> None:
    gateway = make_gateway(authenticator, websocket_compression=compression)
    compress = 15 if compression else 0
    async with serve(gateway, server_kind) as server:
        async with joined(server, token, "websocket", compress=compress) as session:
            assert session.handshake["maxPayload"] == MAX_PAYLOAD
            await session.send_raw(frame_of(MAX_PAYLOAD, char=char))
            ack = await session.next_sio()
            assert ack is not None
            assert ack.data[0]["success"] is True
            await session.send_raw(frame_of(MAX_PAYLOAD + 1, char=char))
            assert await session.recv() is None
            assert session.close_code == 1009
            await assert_forgotten(server)
        assert gateway.metrics.protocol_errors["payload_too_large"] == 1
        await assert_next_connection_works(server, token, "websocket")


# -- polling bodies ------------------------------------------------------------------


async def test_polling_post_up_to_max_payload_passes_intact(
    server_kind: str, authenticator: SignedTokenAuthenticator, token: str
) -> None:
    async with (
        serve(make_gateway(authenticator), server_kind) as server,
        joined(server, token, "polling") as session,
    ):
        frame = frame_of(MAX_PAYLOAD, char="\u00e9")
        assert await session.post(frame) == 200
        ack = await session.next_sio()
        assert ack is not None
        assert ack.data[0]["success"] is True


async def raw_http(server: RunningServer, request: bytes) -> tuple[int, bool]:
    """Send ``request`` on a fresh connection; return the status of the server's answer
    and whether the server then closed the connection (rather than waiting for more)."""
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        try:
            async with asyncio.timeout(5):
                await reader.read()
        except TimeoutError:
            return status, False
        return status, True
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def post_head(session: RawSession, headers: str) -> bytes:
    url = session.endpoint("polling")
    return (
        f"POST {url.path_qs} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
        f"Cookie: {session.cookie_header()}\r\nContent-Type: text/plain\r\n{headers}\r\n"
    ).encode()


async def test_polling_post_over_max_payload_is_413_unread_and_released(
    server_kind: str, authenticator: SignedTokenAuthenticator, token: str
) -> None:
    async with serve(make_gateway(authenticator), server_kind) as server:
        async with joined(server, token, "polling") as session:
            # The body never comes: the server must answer without reading it.
            status, closed = await raw_http(
                server, post_head(session, f"Content-Length: {MAX_PAYLOAD + 1}\r\n")
            )
            assert status == 413
            assert closed
            assert await session.recv() == "1"
            await assert_forgotten(server)
        assert server.gateway.metrics.protocol_errors["payload_too_large"] == 1
        await assert_next_connection_works(server, token, "polling")


async def test_polling_post_over_max_payload_from_a_client_that_sends_it(
    server_kind: str, authenticator: SignedTokenAuthenticator, token: str
) -> None:
    async with serve(make_gateway(authenticator), server_kind) as server:
        async with joined(server, token, "polling") as session:
            with contextlib.suppress(aiohttp.ClientError):
                assert await session.post(frame_of(MAX_PAYLOAD + 1)) == 413
            assert await session.recv() == "1"
            await assert_forgotten(server)
        await assert_next_connection_works(server, token, "polling")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [("", 411), ("Transfer-Encoding: chunked\r\n", 411)],
)
async def test_polling_post_without_a_length_is_refused_and_released(
    server_kind: str,
    authenticator: SignedTokenAuthenticator,
    token: str,
    headers: str,
    expected: int,
) -> None:
    async with (
        serve(make_gateway(authenticator), server_kind) as server,
        joined(server, token, "polling") as session,
    ):
        status, closed = await raw_http(server, post_head(session, headers))
        assert status == expected
        assert closed
        # A framing refusal: the session itself is intact.
        assert await session.call("echo", "still") == [{"success": True, "length": 5}]


@pytest.mark.parametrize("length", ["abc", "-1", "1 2"])
async def test_polling_post_with_an_invalid_length_is_400_and_released(
    server_kind: str, authenticator: SignedTokenAuthenticator, token: str, length: str
) -> None:
    async with (
        serve(make_gateway(authenticator), server_kind) as server,
        joined(server, token, "polling") as session,
    ):
        status, closed = await raw_http(server, post_head(session, f"Content-Length: {length}\r\n"))
        assert status == 400
        assert closed
        assert await session.call("echo", "still") == [{"success": True, "length": 5}]


# -- session binding -----------------------------------------------------------------


async def test_a_stolen_polling_sid_reads_and_sends_nothing(
    server_kind: str, authenticator: SignedTokenAuthenticator, token: str
) -> None:
    gateway = make_gateway(authenticator)
    async with serve(gateway, server_kind) as server, joined(server, token, "polling") as victim:
        sid = victim.sid
        polling = eio_url(server.url, "polling", sid=sid)
        own = eio_url(server.url, "polling")
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as thief:
            async with thief.get(polling) as response:
                assert response.status == 403
                assert await response.text() == "Forbidden"
            async with thief.post(polling, data='42["echo","stolen"]') as response:
                assert response.status == 403
            forged = {"Cookie": f"rtg_eio_{sid}=forged"}
            async with thief.get(polling, headers=forged) as response:
                assert response.status == 403
            # A cookie of the thief's own session, renamed for the victim's.
            async with thief.get(own) as response:
                assert response.status == 200
                own_tag = response.cookies[next(iter(response.cookies))].value
            renamed = {"Cookie": f"rtg_eio_{sid}={own_tag}"}
            async with thief.post(polling, data="1", headers=renamed) as response:
                assert response.status == 403
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await thief.ws_connect(eio_url(server.url, "websocket", sid=sid))
            assert refused.value.status == 403
        assert gateway.metrics.session_binding_refused == 5
        # The victim still reads its own packets and is the only one who did.
        await gateway.emit_to_user(USER, "private", {"x": 1})
        pushed = await victim.next_sio()
        assert pushed is not None
        assert pushed.data == ["private", {"x": 1}]
        assert await victim.call("echo", "mine") == [{"success": True, "length": 4}]
        assert gateway.metrics.events_received["/"] == 1
        # And upgrades with its own cookie.
        await victim.upgrade()
        assert await victim.call("echo", "ws") == [{"success": True, "length": 2}]


async def test_a_websocket_session_accepts_no_http_request(
    server_kind: str, authenticator: SignedTokenAuthenticator, token: str
) -> None:
    gateway = make_gateway(authenticator)
    async with serve(gateway, server_kind) as server, joined(server, token, "websocket") as owner:
        polling = eio_url(server.url, "polling", sid=owner.sid)
        async with owner.http.get(polling) as response:
            assert response.status == 403
        async with owner.http.post(polling, data="1") as response:
            assert response.status == 403
        assert gateway.metrics.session_binding_refused == 2
        assert await owner.call("echo", "ok") == [{"success": True, "length": 2}]


async def test_unknown_sid_is_400_without_echoing_it(
    server_kind: str, authenticator: SignedTokenAuthenticator
) -> None:
    async with (
        serve(make_gateway(authenticator), server_kind) as server,
        aiohttp.ClientSession() as http,
        http.get(eio_url(server.url, "polling", sid="made-up-sid")) as response,
    ):
        assert response.status == 400
        assert "made-up-sid" not in await response.text()


async def test_binding_cookie_attributes(
    server_kind: str, authenticator: SignedTokenAuthenticator
) -> None:
    gateway = make_gateway(authenticator, path="/rt")
    async with (
        serve(gateway, server_kind) as server,
        aiohttp.ClientSession() as http,
    ):
        for headers, secure in (({}, False), ({"X-Forwarded-Proto": "https"}, True)):
            url = eio_url(server.url, "polling", path="/rt")
            async with http.get(url, headers=headers) as response:
                assert response.status == 200
                sid = (await response.text()).split('"sid":"')[1].split('"')[0]
                (cookie,) = response.headers.getall("Set-Cookie")
            name, _, rest = cookie.partition("=")
            assert name == f"rtg_eio_{sid}"
            attributes = {part.strip() for part in rest.split(";")[1:]}
            expected = {"Path=/rt", "HttpOnly", "SameSite=Strict"}
            assert attributes == (expected | {"Secure"} if secure else expected)


async def test_handshake_expires_binding_cookies_of_sessions_that_are_gone(
    server_kind: str, authenticator: SignedTokenAuthenticator, token: str
) -> None:
    async with (
        serve(make_gateway(authenticator), server_kind) as server,
        joined(server, token, "polling") as live,
    ):
        cookies = f"{live.cookie_header()}; rtg_eio_gone1=x; rtg_eio_gone2=y; other=z"
        async with (
            aiohttp.ClientSession() as http,
            http.get(eio_url(server.url, "polling"), headers={"Cookie": cookies}) as response,
        ):
            assert response.status == 200
            set_cookies = response.headers.getall("Set-Cookie")
        expired = sorted(c.split("=")[0] for c in set_cookies if "Max-Age=0" in c)
        assert expired == ["rtg_eio_gone1", "rtg_eio_gone2"]
        assert len(set_cookies) == 3
        assert await live.call("echo", "ok") == [{"success": True, "length": 2}]


async def test_python_socketio_client_with_its_default_session_works_by_hostname(
    server_kind: str, authenticator: SignedTokenAuthenticator, token: str
) -> None:
    """aiohttp's default cookie jar keeps cookies from host names (only IP-address
    hosts need ``CookieJar(unsafe=True)``): the polling handshake's cookie goes with
    the upgrade. (Polling-only python-socketio clients run throughout the suite, with
    ``conftest.socketio_client``.)"""
    gateway = make_gateway(authenticator)
    async with serve(gateway, server_kind) as server:
        client = socketio.AsyncClient(reconnection=False)
        try:
            await client.connect(
                server.url.replace("127.0.0.1", "localhost"),
                transports=["polling", "websocket"],
                auth={"token": token},
                wait_timeout=5,
            )
            assert client.transport() == "websocket"
            assert await client.call("echo", "hi", timeout=5) == {"success": True, "length": 2}
        finally:
            await client.disconnect()
        assert gateway.metrics.session_binding_refused == 0


async def test_python_socketio_client_by_ip_needs_a_cookie_jar_for_ips(
    server_kind: str, authenticator: SignedTokenAuthenticator, token: str
) -> None:
    gateway = make_gateway(authenticator)
    async with serve(gateway, server_kind) as server:
        client = socketio_client()
        try:
            await client.connect(
                server.url, transports=["polling", "websocket"], auth={"token": token}
            )
            assert client.transport() == "websocket"
            assert await client.call("echo", "hi", timeout=5) == {"success": True, "length": 2}
        finally:
            await client.disconnect()
        assert gateway.metrics.session_binding_refused == 0
        # python-engineio's client uses aiohttp's default cookie jar, which drops
        # cookies set by an IP-address host: the gateway then refuses the next poll.
        async with aiohttp.ClientSession() as default:
            async with default.get(eio_url(server.url, "polling")) as response:
                assert response.status == 200
                assert "Set-Cookie" in response.headers
                sid = json.loads((await response.text())[1:])["sid"]
            assert len(default.cookie_jar) == 0
            async with default.get(eio_url(server.url, "polling", sid=sid)) as response:
                assert response.status == 403
        assert gateway.metrics.session_binding_refused == 1


# -- python-engineio's own polling gaps ----------------------------------------------


async def test_a_polling_body_arriving_in_parts_is_read_whole(
    server_kind: str, authenticator: SignedTokenAuthenticator, token: str
) -> None:
    """python-engineio reads a POST body with one ``read(length)``, which under
    aiohttp returns only what has arrived so far."""
    async with (
        serve(make_gateway(authenticator), server_kind) as server,
        joined(server, token, "polling") as session,
    ):
        body = frame_of(MAX_PAYLOAD).encode()
        host, port = server.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(post_head(session, f"Content-Length: {len(body)}\r\n"))
            writer.write(body[:100])
            await writer.drain()
            # The server has the first part well before the rest comes.
            await asyncio.sleep(0.2)
            writer.write(body[100:])
            await writer.drain()
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
        finally:
            writer.close()
            await writer.wait_closed()
        ack = await session.next_sio()
        assert ack is not None
        assert ack.data == [{"success": True, "length": MAX_PAYLOAD - 14}]


async def test_a_polling_noop_is_ignored(
    server_kind: str, authenticator: SignedTokenAuthenticator, token: str
) -> None:
    async with (
        serve(make_gateway(authenticator), server_kind) as server,
        joined(server, token, "polling") as session,
    ):
        assert await session.post("6") == 200
        assert await session.call("echo", "ok") == [{"success": True, "length": 2}]


async def test_closing_a_session_nobody_polls_returns(
    server_kind: str, authenticator: SignedTokenAuthenticator
) -> None:
    """python-engineio's close waits for a long-poll to take the CLOSE packet, for
    ever when none comes (the gateway closes such sessions on connect_timeout)."""
    gateway = make_gateway(authenticator, ping_interval=1, ping_timeout=1)
    async with (
        serve(gateway, server_kind) as server,
        aiohttp.ClientSession() as http,
        http.get(eio_url(server.url, "polling")) as response,
    ):
        assert response.status == 200
        sid = json.loads((await response.text())[1:])["sid"]
        await asyncio.wait_for(gateway.server.eio.disconnect(sid), 5)
        assert sid not in gateway.server.eio.sockets


# -- the official browser client ---------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
JS_CLIENT = (
    Path(__file__).resolve().parent.parent / "node_modules/socket.io-client/dist/socket.io.min.js"
)
PAGE = """<!doctype html><html><body><pre id="out">…</pre>
<script src="/socket.io.min.js"></script>
<script>
const out = document.getElementById("out");
const params = new URLSearchParams(location.search);
const socket = io(params.get("gateway"), {
  transports: params.get("transports").split(","),
  withCredentials: params.get("credentials") === "1",
  auth: {token: params.get("token")},
  reconnection: false,
});
socket.on("connect", async () => {
  const ack = await socket.timeout(5000).emitWithAck("echo", "browser");
  if (socket.io.engine.transport.name !== params.get("transports").split(",").pop()) {
    await new Promise((done) => socket.io.engine.once("upgrade", done));
  }
  const again = await socket.timeout(5000).emitWithAck("echo", "again");
  out.textContent = `ok ${ack.length} ${again.length} ${socket.io.engine.transport.name}`;
});
socket.on("connect_error", (error) => { out.textContent = `connect_error ${error.message}`; });
socket.on("disconnect", (reason) => { out.textContent = `disconnect ${reason}`; });
</script></body></html>"""


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium; its absence is a failure, not a skip."""
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make browser` installs it"
    return CHROMIUM


@contextlib.asynccontextmanager
async def page_server() -> AsyncIterator[str]:
    """Another origin on the same host (same site): the page and the JS client."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def client(request: web.Request) -> web.FileResponse:
        return web.FileResponse(JS_CLIENT)

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/socket.io.min.js", client)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("transports", "credentials", "outcome"),
    [
        ("polling", True, "ok 7 5 polling"),
        ("polling,websocket", True, "ok 7 5 websocket"),
        # Without credentials the browser drops the binding cookie: polling is refused.
        ("polling", False, "disconnect transport error"),
    ],
)
async def test_official_browser_client_cross_origin(
    chromium: Path,
    server_kind: str,
    authenticator: SignedTokenAuthenticator,
    token: str,
    transports: str,
    credentials: bool,
    outcome: str,
) -> None:
    async with page_server() as origin:
        gateway = make_gateway(authenticator, allowed_origins=[origin])
        async with serve(gateway, server_kind) as server, async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(chromium), args=["--headless=new", "--no-sandbox"]
            )
            try:
                page = await browser.new_page()
                query = urllib.parse.urlencode(
                    {
                        "gateway": server.url,
                        "transports": transports,
                        "credentials": "1" if credentials else "0",
                        "token": token,
                    }
                )
                await page.goto(f"{origin}/?{query}")
                await expect(page.locator("#out")).to_have_text(outcome, timeout=10_000)
            finally:
                await browser.close()
        refused = gateway.metrics.session_binding_refused
        if credentials:
            assert refused == 0
        else:
            assert refused > 0


async def test_a_client_emitting_many_events_at_once_over_polling_is_answered(
    authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    # The client sends every packet it has buffered in one POST body.
    gateway = make_gateway(authenticator, max_payload_size=100_000, max_event_size=4096)
    async with serve(gateway, server_kind) as server:
        client = socketio_client()
        try:
            await client.connect(
                server.url,
                transports=["polling"],
                auth={"token": authenticator.issue(Identity(user_id=USER))},
                wait_timeout=5,
            )
            acks = await asyncio.gather(
                *(client.call("echo", "x" * n, timeout=10) for n in range(60))
            )
            assert [ack["length"] for ack in acks] == list(range(60))
            assert client.connected
            assert gateway.metrics.protocol_errors == {}
        finally:
            await client.disconnect()
