"""Test a gateway the way its clients see it: in-process, on a real port.

:func:`serve` starts a :class:`~realtime_gateway.Gateway` on an ephemeral port of
127.0.0.1, behind aiohttp or uvicorn (ASGI), and yields a :class:`GatewayTestServer`
that opens real python-socketio clients with minted identities::

    from realtime_gateway import testing

    async def test_ping(gateway: Gateway) -> None:
        async with testing.serve(gateway) as server:
            nurse = await server.connect("n1", roles=["nurse"])
            assert (await nurse.receive("connected"))["userId"] == "n1"
            assert (await nurse.call("ping"))["status"] == "pong"

Like Django Channels' ``WebsocketCommunicator`` and Starlette's ``TestClient``, the
kit waits for what it is told to expect, never for a fixed time, and everything it
waits for is bounded (``within`` seconds, 5 by default): a test that expects an
event that never comes fails with :class:`EventTimeout` naming it instead of
hanging. :class:`TestClient` records every event from the moment it connects, so an
event sent right after the connect is never missed.

The python-socketio client's traps are handled here: clients never reconnect on
their own; they keep the gateway's polling binding cookie for 127.0.0.1 (aiohttp's
default cookie jar drops cookies from IP-address hosts); a refused connect closes
its transport; and :meth:`TestClient.disconnect` returns within ``within`` seconds even if
the transport does not (python-engineio's client waits for its read loop).

For pytest, ``pytest_plugins = ["realtime_gateway.pytest_plugin"]`` in your
``conftest.py`` gives the ``gateway_server`` fixture (see
:mod:`realtime_gateway.pytest_plugin`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
import attrs
import socketio
from aiohttp import web

from ._admin import AdminAPI
from ._auth import ChainAuthenticator, SignedTokenAuthenticator
from ._exceptions import ConfigurationError
from ._identity import Identity

if TYPE_CHECKING:
    from ._gateway import Gateway

__all__ = [
    "DEFAULT_TIMEOUT",
    "EventTimeout",
    "GatewayTestServer",
    "Minter",
    "Refusal",
    "ServerKind",
    "TestClient",
    "connect",
    "cookie_session",
    "serve",
]

DEFAULT_TIMEOUT = 5.0
"""Seconds any step of the kit waits at most: a connect, an event, an ack, a close."""

ServerKind = Literal["aiohttp", "asgi"]
"""Which web server :func:`serve` runs: aiohttp, or uvicorn serving the ASGI app."""

Minter = Callable[[Identity], "str | Awaitable[str]"]
"""Makes a credential for an identity: a token the authenticator accepts."""

_NO_DATA: Any = object()


class EventTimeout(AssertionError):
    """What was awaited did not happen within the timeout (a failed expectation)."""


def cookie_session() -> aiohttp.ClientSession:
    """An aiohttp session that keeps the cookies 127.0.0.1 sets (aiohttp's default
    jar drops cookies from IP-address hosts, which would lose the gateway's polling
    binding cookie)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


@attrs.frozen
class Refusal:
    """How a connect was refused: python-socketio's message and the ``connect_error``
    data the gateway sent (``{"message": ..., "data": {"code": ..., "reason": ...}}``)."""

    message: str
    data: Any

    @property
    def code(self) -> str | None:
        """The refusal's ``code`` (``unauthenticated``, ``forbidden``, ...), if sent."""
        return self._detail("code")

    @property
    def reason(self) -> str | None:
        """The refusal's ``reason`` (``missing``, ``expired``, ...), if sent."""
        return self._detail("reason")

    def _detail(self, name: str) -> str | None:
        if isinstance(self.data, Mapping):
            detail = self.data.get("data")
            if isinstance(detail, Mapping):
                value = detail.get(name)
                return value if isinstance(value, str) else None
        return None


class TestClient:
    """A connected python-socketio client that records everything it receives.

    :meth:`receive` returns the next event of a name not yet returned (the first
    one, if it came before the call); :meth:`received` lists every one so far.
    ``sio`` is the python-socketio ``AsyncClient`` itself.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, sio: Any, *, transport: str, within: float) -> None:
        self.sio: Any = sio
        self.transport = transport
        self.within = within
        self._events: defaultdict[tuple[str, str], list[Any]] = defaultdict(list)
        self._read: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._arrived = asyncio.Event()
        self.disconnect_reasons: dict[str, Any] = {}
        """Why each namespace was disconnected, by namespace, once it was."""
        sio.on("*", self._record, namespace="*")
        sio.on("disconnect", self._record_disconnect, namespace="*")

    async def _record(self, event: str, namespace: str, *args: Any) -> None:
        self._events[(namespace, event)].append(_one(args))
        self._wake()

    async def _record_disconnect(self, namespace: str, reason: Any = None) -> None:
        self.disconnect_reasons[namespace] = reason
        self._wake()

    def _wake(self) -> None:
        self._arrived.set()
        self._arrived = asyncio.Event()

    def sid(self, namespace: str = "/") -> str:
        """The socket id of this client in ``namespace``."""
        sid: str | None = self.sio.get_sid(namespace)
        if sid is None:
            raise LookupError(f"not connected to {namespace}")
        return sid

    @property
    def connected(self) -> bool:
        """True while the client is connected."""
        return bool(self.sio.connected)

    def received(self, event: str, *, namespace: str = "/") -> list[Any]:
        """Every ``event`` received in ``namespace`` so far, oldest first (an event
        with several arguments is a tuple, one with none ``None``)."""
        return list(self._events[(namespace, event)])

    async def receive(
        self, event: str, *, namespace: str = "/", within: float | None = None
    ) -> Any:
        """The next ``event`` in ``namespace`` not yet returned, waiting at most
        ``within`` seconds for it; raises :class:`EventTimeout` otherwise."""
        key = (namespace, event)
        try:
            async with asyncio.timeout(self.within if within is None else within):
                while self._read[key] >= len(self._events[key]):
                    await self._arrived.wait()
        except TimeoutError:
            raise EventTimeout(f"no {event!r} event in {namespace} came") from None
        index = self._read[key]
        self._read[key] = index + 1
        return self._events[key][index]

    async def emit(self, event: str, data: Any = _NO_DATA, *, namespace: str = "/") -> None:
        """Send ``event`` (with ``data``, if given) without waiting for an ack."""
        if data is _NO_DATA:
            await self.sio.emit(event, namespace=namespace)
        else:
            await self.sio.emit(event, data, namespace=namespace)

    async def call(
        self,
        event: str,
        data: Any = _NO_DATA,
        *,
        namespace: str = "/",
        within: float | None = None,
    ) -> Any:
        """Send ``event`` and return its acknowledgement, waiting at most ``within`` seconds;
        raises :class:`EventTimeout` when none comes."""
        wait = self.within if within is None else within
        try:
            if data is _NO_DATA:
                return await self.sio.call(event, namespace=namespace, timeout=wait)
            return await self.sio.call(event, data, namespace=namespace, timeout=wait)
        except socketio.exceptions.TimeoutError:
            raise EventTimeout(f"no acknowledgement of {event!r} in {namespace} came") from None

    async def disconnected(self, *, namespace: str = "/", within: float | None = None) -> Any:
        """Wait until the server disconnects this client from ``namespace``; returns
        python-socketio's reason. Raises :class:`EventTimeout` if it stays connected."""
        try:
            async with asyncio.timeout(self.within if within is None else within):
                while namespace not in self.disconnect_reasons:
                    await self._arrived.wait()
        except TimeoutError:
            raise EventTimeout(f"still connected to {namespace}") from None
        return self.disconnect_reasons[namespace]

    async def disconnect(self) -> None:
        """Leave, as a well-behaved client does, within ``within`` seconds whatever the
        transport does; then the transport is dropped."""
        with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError):
            await asyncio.wait_for(self.sio.disconnect(), self.within)
        # python-engineio's client waits for its read loop, which a transport that
        # does not answer can hold; abort stops waiting and drops the session.
        await self.sio.eio.disconnect(abort=True)

    async def __aenter__(self) -> TestClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.disconnect()


async def connect(
    url: str,
    *,
    namespaces: Iterable[str] = ("/",),
    transport: str = "websocket",
    auth: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    socketio_path: str = "/socket.io",
    within: float = DEFAULT_TIMEOUT,
) -> TestClient:
    """A :class:`TestClient` connected to the gateway at ``url`` (one you started
    yourself, in another process say), with the kit's precautions; disconnect it
    yourself (``async with await connect(...) as client:``). A refusal raises
    python-socketio's ``ConnectionError``."""
    names = list(namespaces)
    client = TestClient(_sio(), transport=transport, within=within)
    try:
        await asyncio.wait_for(
            client.sio.connect(
                url,
                namespaces=names,
                transports=[transport],
                auth=None if auth is None else dict(auth),
                headers=dict(headers or {}),
                socketio_path=socketio_path.strip("/"),
                wait_timeout=within,
            ),
            within * 2,
        )
    except TimeoutError:
        await client.disconnect()
        raise EventTimeout(f"the connect to {', '.join(names)} was not answered") from None
    except BaseException:
        await client.disconnect()
        raise
    return client


def _sio() -> Any:
    # No reconnection: a test decides when a client comes back.
    return socketio.AsyncClient(reconnection=False, http_session=cookie_session)


def _one(args: Sequence[Any]) -> Any:
    if not args:
        return None
    return args[0] if len(args) == 1 else tuple(args)


def _signer(authenticator: object) -> SignedTokenAuthenticator | None:
    if isinstance(authenticator, SignedTokenAuthenticator):
        return authenticator
    if isinstance(authenticator, ChainAuthenticator):
        for each in authenticator.authenticators:
            found = _signer(each)
            if found is not None:
                return found
    return None


class GatewayTestServer:
    """A gateway served on 127.0.0.1 by :func:`serve`: its ``url``, and clients.

    Every client it opens is disconnected when the server stops. ``http`` is an
    aiohttp session for the host app's own routes (relative URLs, cookies kept).
    """

    def __init__(
        self,
        gateway: Gateway,
        url: str,
        kind: ServerKind,
        *,
        mint: Minter | None,
        within: float,
    ) -> None:
        self.gateway = gateway
        self.url = url
        self.kind = kind
        self.within = within
        self._mint = mint
        self._clients: list[TestClient] = []
        self._http: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        """An aiohttp session with ``url`` as its base and a cookie jar that keeps
        127.0.0.1's cookies; closed when the server stops."""
        if self._http is None:
            self._http = aiohttp.ClientSession(
                base_url=self.url,
                cookie_jar=aiohttp.CookieJar(unsafe=True),
                timeout=aiohttp.ClientTimeout(total=self.within),
            )
        return self._http

    async def token(self, identity: Identity | str, **fields: Any) -> str:
        """A credential for ``identity`` (a user id plus ``fields`` such as
        ``roles=[...]``): from ``mint`` if :func:`serve` was given one, else signed
        by the gateway's :class:`~realtime_gateway.SignedTokenAuthenticator`."""
        if isinstance(identity, str):
            identity = Identity(user_id=identity, **fields)
        elif fields:
            identity = attrs.evolve(identity, **fields)
        if self._mint is not None:
            minted = self._mint(identity)
            return await minted if inspect.isawaitable(minted) else minted
        signer = _signer(self.gateway.authenticator)
        if signer is None:
            raise ConfigurationError(
                "mint",
                "the gateway's authenticator issues no tokens: pass serve(..., mint=...)",
            )
        return signer.issue(identity)

    async def connect(
        self,
        identity: Identity | str | None = None,
        *,
        roles: Iterable[str] = (),
        permissions: Iterable[str] = (),
        namespaces: Iterable[str] = ("/",),
        transport: str = "websocket",
        auth: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        within: float | None = None,
    ) -> TestClient:
        """A client connected to ``namespaces`` over ``transport`` (``websocket`` or
        ``polling``) as ``identity`` (a user id with ``roles`` and ``permissions``, or
        an :class:`~realtime_gateway.Identity`), whose token goes in the ``auth``
        payload; with no identity, only ``auth`` and ``headers`` are sent. A refusal
        raises python-socketio's ``ConnectionError`` (see :meth:`refusal`)."""
        client = await connect(
            self.url,
            namespaces=namespaces,
            transport=transport,
            auth=await self._auth(identity, roles, permissions, auth),
            headers=headers,
            socketio_path=self.gateway.config.path,
            within=self.within if within is None else within,
        )
        self._clients.append(client)
        return client

    async def refusal(
        self,
        identity: Identity | str | None = None,
        *,
        roles: Iterable[str] = (),
        permissions: Iterable[str] = (),
        namespace: str = "/",
        transport: str = "websocket",
        auth: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Refusal:
        """Connect expecting a refusal and return what the client was told; raises
        ``AssertionError`` if the connect succeeds."""
        payload = await self._auth(identity, roles, permissions, auth)
        told: list[Any] = []
        sio = _sio()

        async def on_error(data: Any = None) -> None:
            told.append(data)

        sio.on("connect_error", on_error, namespace=namespace)
        try:
            await asyncio.wait_for(
                sio.connect(
                    self.url,
                    namespaces=[namespace],
                    transports=[transport],
                    auth=payload,
                    headers=dict(headers or {}),
                    socketio_path=self.gateway.config.path.strip("/"),
                    wait_timeout=self.within,
                ),
                self.within * 2,
            )
        except socketio.exceptions.ConnectionError as exc:
            # python-socketio's client leaves the transport open after a refused
            # namespace; this drops it without waiting.
            await sio.eio.disconnect(abort=True)
            return Refusal(message=str(exc), data=told[0] if told else None)
        except TimeoutError:
            await sio.eio.disconnect(abort=True)
            raise EventTimeout(f"the connect to {namespace} was not answered") from None
        await TestClient(sio, transport=transport, within=self.within).disconnect()
        raise AssertionError(f"the connect to {namespace} was accepted")

    async def _auth(
        self,
        identity: Identity | str | None,
        roles: Iterable[str],
        permissions: Iterable[str],
        auth: Mapping[str, Any] | None,
    ) -> dict[str, Any] | None:
        if identity is None:
            return None if auth is None else dict(auth)
        if isinstance(identity, str):
            identity = Identity(user_id=identity, roles=roles, permissions=permissions)
        return {"token": await self.token(identity), **(auth or {})}

    async def close_clients(self) -> None:
        """Disconnect every client this server opened (each within its ``within``)."""
        clients, self._clients = self._clients, []
        await asyncio.gather(*(client.disconnect() for client in clients))

    async def _close(self) -> None:
        await self.close_clients()
        if self._http is not None:
            await self._http.close()
            self._http = None


@contextlib.asynccontextmanager
async def serve(
    gateway: Gateway,
    app: Any = None,
    *,
    kind: ServerKind = "aiohttp",
    admin: AdminAPI | None = None,
    mint: Minter | None = None,
    within: float = DEFAULT_TIMEOUT,
) -> AsyncIterator[GatewayTestServer]:
    """Serve ``gateway`` on an ephemeral port of 127.0.0.1 until the block ends.

    ``kind="aiohttp"`` serves an aiohttp ``web.Application`` (``app``, or a new
    one); ``kind="asgi"`` serves an ASGI app with uvicorn (needs the ``asgi``
    extra). A gateway not yet mounted is mounted here: attached to ``app``
    (aiohttp), or wrapped around it with :meth:`Gateway.asgi_app` (ASGI; ``app``
    is then the host app, if any). A gateway already mounted is served by ``app``
    as it is, which must then be the app it was mounted in (what your app factory
    returns). ``admin`` is served at its prefix when the kit mounts the gateway.

    ``mint`` makes the credential for :meth:`GatewayTestServer.connect`'s
    identities; by default the gateway's :class:`SignedTokenAuthenticator` signs
    them. On the way out, clients leave first, then every transport is closed and
    the server stops, each step bounded by ``within`` seconds.
    """
    if kind not in ("aiohttp", "asgi"):
        raise ConfigurationError("kind", "must be 'aiohttp' or 'asgi'")
    mounted = gateway.state != "not_mounted"
    if mounted and app is None:
        raise ConfigurationError("app", "the gateway is mounted: pass the app it is mounted in")
    if mounted and admin is not None:
        raise ConfigurationError("admin", "the gateway is mounted: attach admin in your app")
    runner = _serve_aiohttp if kind == "aiohttp" else _serve_asgi
    async with runner(gateway, app, admin, mounted, within) as url:
        server = GatewayTestServer(gateway, url, kind, mint=mint, within=within)
        try:
            yield server
        finally:
            await server._close()
            await _close_transports(gateway, within)


async def _close_transports(gateway: Gateway, within: float) -> None:
    # So that no long-poll holds the web server open; a transport a client has
    # just dropped never drains its queue, so nothing waits for the queues.
    sockets = list(gateway.server.eio.sockets.values())
    closing = [sock.close(wait=False) for sock in sockets]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), within)


@contextlib.asynccontextmanager
async def _serve_aiohttp(
    gateway: Gateway, app: Any, admin: AdminAPI | None, mounted: bool, within: float
) -> AsyncIterator[str]:
    if app is None:
        app = web.Application()
    if not isinstance(app, web.Application):
        raise ConfigurationError("app", "kind='aiohttp' serves an aiohttp web.Application")
    if not mounted:
        gateway.attach(app)
        if admin is not None:
            admin.attach(app)
    runner = web.AppRunner(app, shutdown_timeout=min(within, 1.0))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await asyncio.wait_for(runner.cleanup(), gateway.config.shutdown_grace + within)


@contextlib.asynccontextmanager
async def _serve_asgi(
    gateway: Gateway, app: Any, admin: AdminAPI | None, mounted: bool, within: float
) -> AsyncIterator[str]:
    try:
        import uvicorn
        from uvicorn.config import WS_PROTOCOLS
    except ImportError:  # pragma: no cover (the asgi extra installs it)
        raise ConfigurationError("kind", "kind='asgi' needs uvicorn: the asgi extra") from None
    if not mounted:
        host_app = app if admin is None else _AdminRouter(admin, app)
        app = gateway.asgi_app(host_app)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level="warning",
        # websockets' legacy implementation, uvicorn's default, warns that it is deprecated.
        ws="websockets-sansio" if "websockets-sansio" in WS_PROTOCOLS else "auto",
        timeout_graceful_shutdown=max(1, int(within)),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(within):
            while not server.started:
                if task.done():
                    break
                await asyncio.sleep(0.01)
        if not server.started:
            await task  # raises what stopped it
            raise ConfigurationError("app", "uvicorn did not start (lifespan startup failed)")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, gateway.config.shutdown_grace + within * 2)
        sock.close()


class _AdminRouter:
    """The admin API at its prefix, everything else to the host app (or a 404)."""

    def __init__(self, admin: AdminAPI, host_app: Any) -> None:
        self.admin = admin
        self.admin_app = admin.asgi_app()
        self.host_app = host_app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        prefix = self.admin.prefix
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == prefix or path.startswith(prefix + "/")):
            await self.admin_app({**scope, "root_path": prefix}, receive, send)
        elif self.host_app is not None:
            await self.host_app(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        else:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"Not Found"})
