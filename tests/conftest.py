"""Real servers on 127.0.0.1 (aiohttp and uvicorn) and real python-socketio clients."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import attrs
import pytest
import socketio
import uvicorn
from aiohttp import web
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Mount, Route

from realtime_gateway import AdminAPI, Gateway, GatewayConfig, Identity, SignedTokenAuthenticator
from realtime_gateway.testing import ServerKind
from realtime_gateway.testing import cookie_session as cookie_session

SECRET = "test-secret-key-0123456789abcdef"
SALT = "tests.session"
SERVER_KINDS = ("aiohttp", "asgi")
TRANSPORTS = ("websocket", "polling")


def quick_config(**settings: Any) -> GatewayConfig:
    """Settings that keep teardown quick: a long-poll returns within a second (a closed
    polling client waits for it) and a refused client's lingering transport is closed
    after a second (as with Node's socket.io, it otherwise waits for connect_timeout)."""
    defaults: dict[str, Any] = {
        "rate_limit": None,
        "ping_interval": 1,
        "ping_timeout": 1,
        "connect_timeout": 1,
    }
    return GatewayConfig(**{**defaults, **settings})


@pytest.fixture
def authenticator() -> SignedTokenAuthenticator:
    return SignedTokenAuthenticator([SECRET], salt=SALT, max_age=600)


@pytest.fixture
def token_for(authenticator: SignedTokenAuthenticator) -> Callable[..., str]:
    def make(user_id: str = "u1", **fields: Any) -> str:
        return authenticator.issue(Identity(user_id=user_id, **fields))

    return make


@attrs.define
class RunningServer:
    """A gateway served on 127.0.0.1 by a real web server."""

    url: str
    gateway: Gateway
    kind: str


async def _serve_aiohttp(gateway: Gateway, admin: AdminAPI | None) -> AsyncIterator[str]:
    app = web.Application()
    gateway.attach(app)
    if admin is not None:
        admin.attach(app)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="host app")

    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def _serve_asgi(gateway: Gateway, admin: AdminAPI | None) -> AsyncIterator[str]:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("host app")

    routes: list[BaseRoute] = [Route("/hello", hello)]
    if admin is not None:
        routes.append(Mount(admin.prefix, app=admin.asgi_app()))
    host_app = Starlette(routes=routes)
    app = gateway.asgi_app(host_app)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level="warning",
        ws="websockets-sansio",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextlib.asynccontextmanager
async def serve(
    gateway: Gateway, kind: str, admin: AdminAPI | None = None
) -> AsyncIterator[RunningServer]:
    """Serve ``gateway`` (and ``admin``, at its prefix) with aiohttp or uvicorn on an
    ephemeral port."""
    serve_with = _serve_aiohttp if kind == "aiohttp" else _serve_asgi
    async with contextlib.asynccontextmanager(serve_with)(gateway, admin) as url:
        try:
            yield RunningServer(url=url, gateway=gateway, kind=kind)
        finally:
            # Close every transport first so that no long-poll holds the web server
            # open. A transport the client has just dropped never drains its queue,
            # so nothing waits for the queues.
            transports = [sock.close(wait=False) for sock in gateway.server.eio.sockets.values()]
            await asyncio.wait_for(asyncio.gather(*transports), 2)


@pytest.fixture(params=SERVER_KINDS)
def server_kind(request: pytest.FixtureRequest) -> ServerKind:
    kind: ServerKind = request.param
    return kind


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def socketio_client(**options: Any) -> socketio.AsyncClient:
    """A python-socketio client for the test servers: no reconnection, and cookies
    kept for 127.0.0.1 (python-engineio creates and closes the session)."""
    return socketio.AsyncClient(reconnection=False, http_session=cookie_session, **options)


@attrs.define
class Refusal:
    """How a connection attempt was refused."""

    message: str
    data: Any


class Clients:
    """Opens real socket.io clients and closes them all at the end of a test."""

    def __init__(self) -> None:
        self._open: list[socketio.AsyncClient] = []

    async def connect(
        self,
        url: str,
        *,
        namespaces: Iterable[str] = ("/",),
        transport: str = "websocket",
        auth: Any = None,
        headers: dict[str, str] | None = None,
        handlers: dict[str, Callable[..., Any]] | None = None,
    ) -> socketio.AsyncClient:
        client = socketio_client()
        for name, handler in (handlers or {}).items():
            for namespace in namespaces:
                client.on(name, handler, namespace=namespace)
        self.adopt(client)
        await client.connect(
            url,
            namespaces=list(namespaces),
            transports=[transport],
            auth=auth,
            headers=headers or {},
            wait_timeout=5,
        )
        return client

    def adopt(self, client: socketio.AsyncClient) -> None:
        """Close ``client`` with the others at the end of the test."""
        self._open.append(client)

    async def refusal(
        self,
        url: str,
        *,
        namespace: str = "/",
        transport: str = "websocket",
        auth: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Refusal:
        """Connect expecting a refusal; return what the client was told."""
        told: list[Any] = []

        async def on_error(data: Any = None) -> None:
            told.append(data)

        client = socketio_client()
        client.on("connect_error", on_error, namespace=namespace)
        with pytest.raises(socketio.exceptions.ConnectionError) as caught:
            await client.connect(
                url,
                namespaces=[namespace],
                transports=[transport],
                auth=auth,
                headers=headers or {},
                wait_timeout=5,
            )
        # python-socketio leaves the transport open after a refused namespace.
        await client.eio.disconnect(abort=True)
        return Refusal(message=str(caught.value), data=told[0] if told else None)

    @contextlib.asynccontextmanager
    async def serve(
        self, gateway: Gateway, kind: str, admin: AdminAPI | None = None
    ) -> AsyncIterator[RunningServer]:
        """Serve ``gateway``; the clients leave before the server stops, as in life."""
        try:
            async with serve(gateway, kind, admin) as server:
                yield server
        finally:
            await self.close()

    async def close(self) -> None:
        await asyncio.gather(*(client.disconnect() for client in self._open))
        self._open.clear()


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    pool = Clients()
    try:
        yield pool
    finally:
        await pool.close()


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait for a server-side state change that has no event to await."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 (server state, no event to wait on)
            await asyncio.sleep(0.01)


async def call(
    client: socketio.AsyncClient, event: str, data: Any = None, namespace: str = "/"
) -> Any:
    """Emit ``event`` and return its acknowledgement."""
    return await client.call(event, data, namespace=namespace, timeout=5)
