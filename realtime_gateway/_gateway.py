"""The :class:`Gateway`: one python-socketio server, authenticated and authorized."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import socketio
from aiohttp import web

from ._auth import Authenticator
from ._authz import Authorizer
from ._config import GatewayConfig
from ._connection import Connection
from ._exceptions import (
    AuthenticationFailed,
    AuthFailureReason,
    ConfigurationError,
    GatewayError,
    GatewayNotRunning,
    PermissionDenied,
)
from ._identity import Handshake, Identity
from ._log import log
from ._metrics import Metrics
from ._namespace import GatewayNamespace

__all__ = ["Gateway"]

ASGIApp = Any  # an ASGI application callable; kept loose to avoid an ASGI typing dependency


class _OriginPolicy:
    """Which browser origins may reach the gateway.

    python-engineio asks :meth:`transport_allows` on every request that carries an
    ``Origin`` header; the gateway asks :meth:`credentials_allowed` of handshakes
    that carry cookies, which a wildcard does not cover.
    """

    def __init__(self, allowed: tuple[str, ...] | None) -> None:
        self.wildcard = allowed is not None and "*" in allowed
        self.listed = frozenset(origin.rstrip("/") for origin in allowed or () if origin != "*")

    def transport_allows(self, origin: str | None, environ: Mapping[str, Any]) -> bool:
        if origin is None or self.wildcard:
            return True
        return self.credentials_allowed(origin, environ)

    def credentials_allowed(self, origin: str | None, environ: Mapping[str, Any]) -> bool:
        if origin is None:
            # Browsers send Origin on every cross-site request and WebSocket handshake;
            # its absence means a same-origin GET or a non-browser client.
            return True
        return origin in self.listed or origin == _own_origin(environ)


def _own_origin(environ: Mapping[str, Any]) -> str | None:
    host = environ.get("HTTP_HOST")
    if not host:
        return None
    return f"{environ.get('wsgi.url_scheme', 'http')}://{host}"


class _GatewayServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server plus the connect timeout socket.io servers have:
    a transport that joins no namespace within ``connect_timeout`` is closed."""

    def __init__(self, *, connect_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._connect_timeout = connect_timeout

    async def _handle_eio_connect(self, eio_sid: str, environ: Any) -> Any:
        result = await super()._handle_eio_connect(eio_sid, environ)
        # A timer handle is far lighter than a task per connection.
        asyncio.get_running_loop().call_later(self._connect_timeout, self._check_joined, eio_sid)
        return result

    def _check_joined(self, eio_sid: str) -> None:
        if eio_sid not in self.environ:
            return
        for namespace in list(self.manager.get_namespaces()):
            if self.manager.sid_from_eio_sid(eio_sid, namespace) is not None:
                return
        log(logging.INFO, "connect_timeout")
        self.start_background_task(self.eio.disconnect, eio_sid)


class Gateway:
    """An authenticated, authorized socket.io gateway to compose into a host app.

    Every namespace connection is authenticated by ``authenticator`` and then
    authorized (action ``connect``, target the namespace) by ``authorizer``.
    Mount with :meth:`attach` (aiohttp) or :meth:`asgi_app` (Starlette, FastAPI,
    any ASGI app).
    """

    def __init__(
        self,
        *,
        authenticator: Authenticator,
        authorizer: Authorizer,
        config: GatewayConfig | None = None,
        namespaces: Iterable[GatewayNamespace] = (),
    ) -> None:
        if not isinstance(authenticator, Authenticator):
            raise ConfigurationError("authenticator", "must have an async authenticate()")
        if not isinstance(authorizer, Authorizer):
            raise ConfigurationError("authorizer", "must have an async authorize()")
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.config = config or GatewayConfig()
        self.metrics = Metrics()
        self._origins = _OriginPolicy(self.config.allowed_origins)
        self._namespaces: dict[str, GatewayNamespace] = {}
        self._connections: dict[str, Connection] = {}
        self._server: Any = None
        for namespace in namespaces:
            self.add_namespace(namespace)

    # -- composition -----------------------------------------------------------

    def add_namespace(self, namespace: GatewayNamespace) -> None:
        """Serve ``namespace``; each namespace path may be registered once."""
        if not isinstance(namespace, GatewayNamespace):
            raise ConfigurationError("namespace", "must be a GatewayNamespace instance")
        if namespace.namespace in self._namespaces:
            raise ConfigurationError("namespace", f"{namespace.namespace} is already registered")
        namespace.bind(self)
        self._namespaces[namespace.namespace] = namespace
        if self._server is not None:
            self._server.register_namespace(namespace)

    @property
    def namespaces(self) -> Mapping[str, GatewayNamespace]:
        """The registered namespaces by path."""
        return dict(self._namespaces)

    def attach(self, app: web.Application) -> None:
        """Serve socket.io from the aiohttp application ``app`` at ``config.path``."""
        server = self._build_server("aiohttp")
        server.attach(app, socketio_path=self.config.path.strip("/"))

    def asgi_app(self, other_asgi_app: ASGIApp | None = None) -> ASGIApp:
        """An ASGI app serving socket.io at ``config.path`` and everything else with
        ``other_asgi_app`` (a Starlette or FastAPI app, say), lifespan included."""
        server = self._build_server("asgi")
        return socketio.ASGIApp(
            server, other_asgi_app=other_asgi_app, socketio_path=self.config.path.strip("/")
        )

    @property
    def server(self) -> Any:
        """The underlying ``socketio.AsyncServer``, once mounted."""
        if self._server is None:
            raise GatewayNotRunning("the gateway is not mounted: call attach() or asgi_app()")
        return self._server

    def _build_server(self, async_mode: str) -> Any:
        if self._server is not None:
            raise ConfigurationError("async_mode", "the gateway is already mounted")
        config = self.config
        server = _GatewayServer(
            connect_timeout=config.connect_timeout,
            async_mode=async_mode,
            cors_allowed_origins=self._origins.transport_allows,
            cors_credentials=True,
            ping_interval=config.ping_interval,
            ping_timeout=config.ping_timeout,
            max_http_buffer_size=config.max_payload_size,
            http_compression=config.compression,
            transports=list(config.transports),
            logger=False,
            engineio_logger=False,
            always_connect=False,
        )
        for namespace in self._namespaces.values():
            server.register_namespace(namespace)
        self._server = server
        return server

    # -- authentication and authorization -------------------------------------

    async def authenticate(self, handshake: Handshake) -> Identity:
        """Authenticate ``handshake`` (a socket or an HTTP caller) or raise
        :class:`AuthenticationFailed`; failures are counted and logged by reason."""
        try:
            try:
                return await self.authenticator.authenticate(handshake)
            except AuthenticationFailed:
                raise
            except Exception as exc:
                log(logging.ERROR, "authenticator_failed", error=type(exc).__name__)
                raise AuthenticationFailed(AuthFailureReason.ERROR) from None
        except AuthenticationFailed as exc:
            self._refused(handshake, exc)
            raise

    def _refused(self, handshake: Handshake, refusal: AuthenticationFailed) -> None:
        self.metrics.auth_failures[refusal.reason] += 1
        log(
            logging.WARNING,
            "auth_failed",
            namespace=handshake.namespace,
            reason=refusal.reason,
            remote=handshake.remote_address,
        )

    async def authorize(self, identity: Identity, action: str, target: str) -> None:
        """Ask the authorizer; a refusal raises :class:`PermissionDenied` (counted, logged)."""
        try:
            await self.authorizer.authorize(identity, action, target)
        except PermissionDenied:
            self.metrics.access_denied[action] += 1
            log(logging.INFO, "access_denied", user=identity.user_id, action=action)
            raise

    async def is_allowed(self, identity: Identity, action: str, target: str) -> bool:
        """True if the authorizer allows; a refusal is counted and logged like any other."""
        try:
            await self.authorize(identity, action, target)
        except PermissionDenied:
            return False
        return True

    # -- connections ----------------------------------------------------------

    def connection(self, sid: str) -> Connection | None:
        """The live connection with socket id ``sid``, if any."""
        return self._connections.get(sid)

    @property
    def connections(self) -> Mapping[str, Connection]:
        """Live connections by socket id (a read-only view)."""
        return dict(self._connections)

    async def _admit(
        self, sid: str, namespace: str, environ: Mapping[str, Any], auth: object
    ) -> Connection:
        """Authenticate and authorize a namespace connect; the one place where a
        refusal becomes python-socketio's ``ConnectionRefusedError``."""
        started = time.monotonic()
        handshake = Handshake.from_environ(namespace, environ, auth)
        try:
            if handshake.cookies and not self._origins.credentials_allowed(
                handshake.origin, environ
            ):
                refusal = AuthenticationFailed(AuthFailureReason.ORIGIN)
                self._refused(handshake, refusal)
                raise refusal
            identity = await self.authenticate(handshake)
            await self.authorize(identity, "connect", namespace)
        except AuthenticationFailed as exc:
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {"code": exc.code, "reason": exc.reason}
            ) from None
        except GatewayError as exc:
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {"code": exc.code}
            ) from None
        conn = Connection(sid=sid, namespace=namespace, identity=identity, handshake=handshake)
        self._connections[sid] = conn
        self.metrics.connections_total += 1
        log(
            logging.INFO,
            "connect",
            sid=sid,
            user=identity.user_id,
            namespace=namespace,
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        return conn

    async def _forget(self, sid: str, *, reason: str) -> Connection | None:
        conn = self._connections.pop(sid, None)
        if conn is not None:
            log(
                logging.INFO,
                "disconnect",
                sid=sid,
                user=conn.identity.user_id,
                namespace=conn.namespace,
                reason=reason,
                duration_s=round(time.time() - conn.connected_at, 3),
            )
        return conn
