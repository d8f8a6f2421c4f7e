"""The :class:`Gateway`: one python-socketio server, authenticated and authorized."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import socketio
from aiohttp import web
from itsdangerous import URLSafeSerializer
from socketio.packet import ACK, BINARY_ACK, BINARY_EVENT, CONNECT, CONNECT_ERROR, DISCONNECT, EVENT

from ._accesslog import RedactingAccessLogger, request_error_logger
from ._audit import AuditRecord, AuditSink, target_kind
from ._auth import Authenticator, SignedTokenAuthenticator
from ._authz import NO_RULE, REQUIREMENT_NOT_MET, Authorizer
from ._clock import iso_timestamp
from ._cluster import (
    CLUSTER_SALT,
    ClusterManager,
    RedisRegistry,
    identity_from_json,
    identity_to_json,
)
from ._config import GatewayConfig
from ._connection import Connection
from ._engine import EngineServer
from ._exceptions import (
    AuthenticationFailed,
    AuthFailureReason,
    ConfigurationError,
    GatewayError,
    GatewayNotRunning,
    InvalidPayload,
    NotFound,
    PermissionDenied,
)
from ._fanout import FanOutManager
from ._identity import Handshake, Identity
from ._log import log, set_log_key
from ._metrics import Metrics
from ._namespace import GatewayNamespace, role_room, user_room
from ._namespaces import UpdatesNamespace, make_notification
from ._protocol import GatewayPacket, ProtocolViolation, packet_class
from ._registry import ConnectionInfo, MemoryRegistry, Registry

__all__ = ["Gateway"]

# Denial reasons the library's own authorizers give; others are not logged verbatim.
_LIBRARY_REASONS = frozenset(
    {
        NO_RULE,
        REQUIREMENT_NOT_MET,
        "no rule allows it",
        "deny all",
        "the authorizer failed",
        "a socket's own room",
        "the gateway's own rooms cannot be left",
        "join the conversation first",
    }
)

# How long shutdown lets clients close their transports before closing them.
_TRANSPORT_CLOSE_WAIT = 1.0

# Events socket.io clients reserve for themselves.
_RESERVED_EVENTS = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)

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


class _UpstreamLog(logging.Logger):
    """The logger the gateway gives python-socketio and python-engineio.

    Their messages interpolate session ids, ``Origin`` headers and exception text,
    and given ``False`` they attach a stream handler of their own to their global
    loggers; here a warning or worse becomes a library record that names only its
    source and the exception's type.
    """

    def __init__(self, source: str) -> None:
        super().__init__(f"realtime_gateway.{source}", logging.WARNING)
        self.source = source

    def handle(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        log(
            record.levelno,
            "upstream_log",
            source=self.source,
            error=None if error is None else type(error).__name__,
        )


class _GatewayServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server with the gateway's protocol checks.

    - The connect timeout socket.io servers have: a transport that joins no
      namespace within ``connect_timeout`` is closed.
    - Every packet is decoded by the gateway's :class:`GatewayPacket` and checked
      before python-socketio acts on it; one the gateway cannot answer (a bad
      header, an inconsistent binary packet) closes the client's connection at once.
    - Client events reach a :class:`GatewayNamespace` only through its declared
      handlers: python-socketio passes them to the same ``trigger_event`` as its
      own ``connect`` and ``disconnect``, so an event named ``connect`` would
      re-run admission.
    """

    def __init__(self, *, connect_timeout: float, gateway: Gateway, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._connect_timeout = connect_timeout
        self._gateway = gateway
        self._event_tasks: set[asyncio.Task[None]] = set()
        self.transport_closed = asyncio.Event()

    def _engineio_server_class(self) -> type[EngineServer]:
        return EngineServer

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any = None) -> None:
        await super()._handle_eio_disconnect(eio_sid, reason)
        self.transport_closed.set()

    async def _handle_eio_connect(self, eio_sid: str, environ: Any) -> Any:
        result = await super()._handle_eio_connect(eio_sid, environ)
        # A timer handle is far lighter than a task per connection.
        asyncio.get_running_loop().call_later(self._connect_timeout, self._check_joined, eio_sid)
        return result

    async def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        await super()._handle_connect(eio_sid, namespace, data)
        # The client now has its CONNECT packet: events emitted from here on reach it.
        namespace = namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        handler = self.namespace_handlers.get(namespace)
        if (
            sid is not None
            and isinstance(handler, GatewayNamespace)
            and self.manager.is_connected(sid, namespace)
        ):
            await handler._ready(sid)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        if eio_sid not in self.environ:
            return  # the connection is closing: nothing more is read from it
        try:
            pending = self._binary_packet.get(eio_sid)
            if pending is not None:
                if pending.take_attachment(data, self._attachment_budget(pending.namespace)):
                    del self._binary_packet[eio_sid]
                    await self._handle_packet(eio_sid, pending)
                return
            pkt = self.packet_class(encoded_packet=data)
            if pkt.packet_type in (BINARY_EVENT, BINARY_ACK) and not pkt.malformed:
                if self.manager.sid_from_eio_sid(eio_sid, pkt.namespace or "/") is None:
                    raise ProtocolViolation("binary packet outside a namespace")
                self._binary_packet[eio_sid] = pkt
                return
            await self._handle_packet(eio_sid, pkt)
        except ProtocolViolation as exc:
            await self._close_for(eio_sid, exc.reason)

    async def _handle_packet(self, eio_sid: str, pkt: GatewayPacket) -> None:
        kind = pkt.packet_type
        if kind == CONNECT:
            if pkt.malformed:
                await self._refuse_malformed_connect(eio_sid, pkt.namespace or "/")
            else:
                await self._handle_connect(eio_sid, pkt.namespace, pkt.data)
        elif kind == DISCONNECT:
            await self._handle_disconnect(eio_sid, pkt.namespace, self.reason.CLIENT_DISCONNECT)
        elif kind in (EVENT, BINARY_EVENT):
            await self._handle_event(eio_sid, pkt.namespace, pkt.id, pkt.data)
        elif kind in (ACK, BINARY_ACK):
            if isinstance(pkt.data, list):
                await self._handle_ack(eio_sid, pkt.namespace, pkt.id, pkt.data)
        else:
            raise ProtocolViolation("unexpected packet type")

    async def _refuse_malformed_connect(self, eio_sid: str, namespace: str) -> None:
        refusal = AuthenticationFailed(AuthFailureReason.MALFORMED)
        self._gateway.metrics.auth_failures[refusal.reason] += 1
        log(logging.WARNING, "auth_failed", namespace=namespace, reason=refusal.reason)
        error = {
            "message": refusal.message,
            "data": {"code": refusal.code, "reason": refusal.reason},
        }
        await self._send_packet(
            eio_sid, self.packet_class(CONNECT_ERROR, data=error, namespace=namespace)
        )

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: Any, data: Any) -> None:
        namespace = namespace or "/"
        handler = self.namespace_handlers.get(namespace)
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None or not self.manager.is_connected(sid, namespace):
            return  # as python-socketio: no events outside a connected namespace
        if not isinstance(handler, GatewayNamespace):
            if isinstance(data, list) and data and isinstance(data[0], str):
                await super()._handle_event(eio_sid, namespace, id, data)
            return
        task = self.start_background_task(self._answer, handler, sid, eio_sid, id, data)
        self._event_tasks.add(task)
        task.add_done_callback(self._event_tasks.discard)

    async def _answer(
        self, handler: GatewayNamespace, sid: str, eio_sid: str, id: Any, data: Any
    ) -> None:
        if isinstance(data, list) and data and isinstance(data[0], str):
            ack = await handler._dispatch(data[0], sid, tuple(data[1:]))
        else:
            ack = await handler._dispatch(None, sid, ())
        if id is not None:
            await self._send_packet(
                eio_sid, self.packet_class(ACK, namespace=handler.namespace, id=id, data=[ack])
            )

    def _attachment_budget(self, namespace: str | None) -> int:
        handler = self.namespace_handlers.get(namespace or "/")
        if isinstance(handler, GatewayNamespace):
            return handler.largest_event_size
        return int(self._gateway.config.max_event_size)

    async def _close_for(self, eio_sid: str, reason: str) -> None:
        """Close a client's connection that broke the protocol, at once and without
        waiting for its queue: python-socketio hears the disconnect now, so every
        namespace socket of it leaves the registry before this returns."""
        self._gateway.metrics.protocol_errors[reason] += 1
        log(logging.WARNING, "protocol_error", reason=reason)
        self._binary_packet.pop(eio_sid, None)
        socket = self.eio.sockets.get(eio_sid)
        if socket is None or socket.closed:
            return
        await socket.close(wait=False, reason=self.reason.SERVER_DISCONNECT)
        # End the websocket writer once the CLOSE packet is out, so a close frame
        # follows it; a polling client gets the CLOSE packet on its next request.
        socket.queue.put_nowait(None)

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
    any ASGI app). ``registry`` records the live sockets (a
    :class:`MemoryRegistry` by default).

    The publish API (:meth:`broadcast`, :meth:`emit_to_room`, :meth:`emit_to_user`,
    :meth:`emit_to_role`, :meth:`notify_user`, :meth:`notify_role`,
    :meth:`publish_update`) raises :class:`NotFound` for a namespace the gateway
    does not serve and :class:`InvalidPayload` for a bad argument, naming it.
    """

    def __init__(
        self,
        *,
        authenticator: Authenticator,
        authorizer: Authorizer,
        config: GatewayConfig | None = None,
        namespaces: Iterable[GatewayNamespace] = (),
        registry: Registry | None = None,
        audit: AuditSink | None = None,
    ) -> None:
        if not isinstance(authenticator, Authenticator):
            raise ConfigurationError("authenticator", "must have an async authenticate()")
        if not isinstance(authorizer, Authorizer):
            raise ConfigurationError("authorizer", "must have an async authorize()")
        if registry is not None and not isinstance(registry, Registry):
            raise ConfigurationError("registry", "must implement the Registry protocol")
        if audit is not None and not callable(audit):
            raise ConfigurationError("audit", "must be callable with an AuditRecord")
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.config = config or GatewayConfig()
        self._manager: ClusterManager | None = None
        self._cluster: RedisRegistry | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._started = False
        if self.config.redis_url is not None:
            self._manager, self._cluster = self._join_cluster(self.config.redis_url)
        self.registry: Registry = (
            registry
            or self._cluster
            or MemoryRegistry(reconnect_window=self.config.reconnect_window)
        )
        self.metrics = Metrics()
        self._audit = audit
        self._state = "running"
        self._shutdown_done: asyncio.Event | None = None
        self._left = asyncio.Event()
        self._reconnecting: set[str] = set()
        self._admit_started: dict[str, float] = {}
        if self.config.log_key is not None:
            set_log_key(self.config.log_key)
        self._origins = _OriginPolicy(self.config.allowed_origins)
        self._namespaces: dict[str, GatewayNamespace] = {}
        self._connections: dict[str, Connection] = {}
        self._server: Any = None
        for namespace in namespaces:
            self.add_namespace(namespace)

    def _join_cluster(self, url: str) -> tuple[ClusterManager, RedisRegistry]:
        try:
            import redis.asyncio as aioredis
            from redis.backoff import NoBackoff
            from redis.exceptions import ConnectionError as RedisConnectionError
            from redis.retry import Retry
        except ImportError:
            raise ConfigurationError(
                "redis_url", "needs the redis extra: pip install 'realtime_gateway[redis]'"
            ) from None
        config = self.config
        if config.cluster_key is not None:
            keys: list[bytes] = [config.cluster_key.encode()]
        elif isinstance(self.authenticator, SignedTokenAuthenticator):
            keys = list(self.authenticator.secret_keys())
        else:
            raise ConfigurationError(
                "cluster_key",
                "is required with redis_url unless the authenticator is a "
                "SignedTokenAuthenticator, whose keys then sign cluster messages",
            )
        signer = URLSafeSerializer(keys, salt=CLUSTER_SALT)

        def dropped() -> None:
            self.metrics.cluster_messages_dropped += 1
            if self.metrics.cluster_messages_dropped == 1:
                log(logging.WARNING, "cluster_message_dropped")

        # One retry on a dropped connection: after a Redis restart the first command
        # on each pooled connection fails although Redis is back.
        options: dict[str, Any] = {
            "socket_connect_timeout": 2,
            "retry": Retry(NoBackoff(), 1),
            "retry_on_error": [RedisConnectionError],
        }
        manager = ClusterManager(
            url,
            channel=config.redis_prefix,
            signer=signer,
            dropped=dropped,
            control=self._on_control,
            redis_options=options,
        )
        client = aioredis.Redis.from_url(url, socket_timeout=5, **options)
        registry = RedisRegistry(
            client,
            prefix=config.redis_prefix,
            ttl=config.cluster_ttl,
            reconnect_window=config.reconnect_window,
        )
        registry.on_swept(self._announce_swept)
        return manager, registry

    @property
    def process(self) -> str | None:
        """This process's name in the cluster (``None`` without ``redis_url``)."""
        return None if self._cluster is None else self._cluster.process

    async def start(self) -> None:
        """Connect to the cluster, if there is one: fails fast when Redis is
        unreachable. Run by the aiohttp app's startup and by ASGI lifespan startup;
        call it yourself when serving otherwise."""
        if self._started:
            return
        if self._cluster is not None:
            try:
                await asyncio.wait_for(self._cluster.ping(), 5)
            except Exception as exc:
                raise ConfigurationError(
                    "redis_url", f"Redis is unreachable ({type(exc).__name__})"
                ) from None
            await self._beat()
            self._heartbeat_task = asyncio.create_task(self._heartbeat())
            server = self._server
            if server is not None and not server.manager_initialized:
                # python-socketio would subscribe only when the first client
                # connects; a process must hear the others from the start.
                server.manager_initialized = True
                server.manager.initialize()
        self._started = True

    async def _heartbeat(self) -> None:
        assert self._cluster is not None
        while True:
            await asyncio.sleep(self.config.cluster_ttl / 3)
            try:
                await self._beat()
            except Exception as exc:
                log(logging.ERROR, "heartbeat_failed", error=type(exc).__name__)

    async def _beat(self) -> None:
        assert self._cluster is not None
        await self._cluster.heartbeat()
        await self._cluster.publish_stats(await self.stats())

    async def cluster_stats(self) -> dict[str, Any] | None:
        """``{"processes": {name: figures}, "total": figures}`` over every live
        process (the total's ``users_connected`` counts each user once), or ``None``
        without a cluster."""
        if self._cluster is None:
            return None
        processes = await self._cluster.cluster_stats()
        processes[self._cluster.process] = await self.stats()
        total: dict[str, Any] = {}
        for figures in processes.values():
            for name, value in figures.items():
                if isinstance(value, dict):
                    merged = total.setdefault(name, {})
                    for label, count in value.items():
                        merged[label] = merged.get(label, 0) + count
                else:
                    total[name] = total.get(name, 0) + value
        total["users_connected"] = len(await self.registry.users())
        return {"processes": processes, "total": total}

    async def _on_control(self, message: dict[str, Any]) -> None:
        if message.get("op") == "reauthorize" and isinstance(message.get("userId"), str):
            identity = message.get("identity")
            await self._reauthorize_here(
                message["userId"], None if identity is None else identity_from_json(identity)
            )

    async def _announce_swept(self, swept: list[tuple[ConnectionInfo, frozenset[str]]]) -> None:
        """Tell the rooms that the users of a dead process have left."""
        for info, rooms in swept:
            namespace = self._namespaces.get(info.namespace)
            if namespace is None or not rooms:
                continue
            conn = Connection(
                sid=info.sid,
                namespace=info.namespace,
                identity=info.identity,
                handshake=Handshake(namespace=info.namespace),
            )
            for room in sorted(rooms):
                await namespace._announce(conn, room, joined=False)

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
        """Serve socket.io from the aiohttp application ``app`` at ``config.path``;
        the app's shutdown runs :meth:`shutdown` while connections are still open."""
        server = self._build_server("aiohttp")
        server.attach(app, socketio_path=self.config.path.strip("/"))

        async def start(app: web.Application) -> None:
            await self.start()

        async def shut_down(app: web.Application) -> None:
            await self.shutdown()

        app.on_startup.append(start)
        app.on_shutdown.append(shut_down)

    async def run_aiohttp(
        self,
        app: web.Application,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        started: Callable[[str], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Serve ``app`` (with this gateway attached) until SIGINT or SIGTERM, or
        until ``stop`` is set, then shut the gateway down *before* the web server.

        Prefer it to ``web.run_app``: once aiohttp's own shutdown begins it reads
        nothing more from open connections, so clients told ``server:shutdown``
        could not be heard leaving and the gateway would wait out its whole grace
        period. ``started`` gets the URL once the server listens.

        Requests are logged without credentials: the access log is a
        :class:`RedactingAccessLogger` (no ``sid``/``token`` query values, no
        ``Authorization`` or ``Cookie``), and a malformed request's error on
        ``aiohttp.server`` leaves out the bytes aiohttp quotes from it.
        """
        runner = web.AppRunner(
            app, access_log_class=RedactingAccessLogger, logger=request_error_logger()
        )
        await runner.setup()
        loop = asyncio.get_running_loop()
        signals: list[signal.Signals] = []
        try:
            await web.TCPSite(runner, host, port).start()
            bound_host, bound_port = runner.addresses[0][:2]
            if started is not None:
                started(f"http://{bound_host}:{bound_port}")
            if stop is None:
                stop = asyncio.Event()
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(signum, stop.set)
                    signals.append(signum)
            await stop.wait()
            await self.shutdown()
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
            await runner.cleanup()

    def asgi_app(self, other_asgi_app: ASGIApp | None = None) -> ASGIApp:
        """An ASGI app serving socket.io at ``config.path`` and everything else with
        ``other_asgi_app`` (a Starlette or FastAPI app, say), whose lifespan is kept;
        lifespan shutdown runs :meth:`shutdown` first."""
        server = self._build_server("asgi")
        app = socketio.ASGIApp(
            server, other_asgi_app=other_asgi_app, socketio_path=self.config.path.strip("/")
        )
        return _ShutdownOnLifespan(app, other_asgi_app, self)

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
            gateway=self,
            serializer=packet_class(
                max_depth=config.max_nesting_depth, max_attachments=config.max_attachments
            ),
            async_mode=async_mode,
            cors_allowed_origins=self._origins.transport_allows,
            cors_credentials=True,
            ping_interval=config.ping_interval,
            ping_timeout=config.ping_timeout,
            max_http_buffer_size=config.max_payload_size,
            http_compression=config.compression,
            transports=list(config.transports),
            logger=_UpstreamLog("socketio"),
            engineio_logger=_UpstreamLog("engineio"),
            always_connect=False,
            client_manager=self._manager or FanOutManager(),
            websocket_compression=config.websocket_compression,
            cookie_path=config.path,
            metrics=self.metrics,
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
        """Ask the authorizer; a refusal raises :class:`PermissionDenied` (counted,
        logged). An authorizer that fails is a refusal. Every decision goes to the
        audit sink."""
        try:
            try:
                await self.authorizer.authorize(identity, action, target)
            except PermissionDenied:
                raise
            except Exception as exc:
                log(logging.ERROR, "authorizer_failed", action=action, error=type(exc).__name__)
                raise PermissionDenied(action, target, "the authorizer failed") from None
        except PermissionDenied as exc:
            await self._denied(identity, action, target, exc.reason)
            raise
        await self.audit(identity, action, target, allowed=True)

    async def refuse(
        self, identity: Identity, action: str, target: str, reason: str
    ) -> PermissionDenied:
        """A refusal decided outside the authorizer (a namespace's own rule, such as
        "join the conversation first"), counted, logged and audited like the
        authorizer's own; raise what it returns."""
        await self._denied(identity, action, target, reason)
        return PermissionDenied(action, target, reason)

    async def _denied(self, identity: Identity, action: str, target: str, reason: str) -> None:
        self.metrics.access_denied[action] += 1
        log(
            logging.INFO,
            "access_denied",
            user=identity.user_id,
            action=action,
            target=target,
            # An application's reasons are free text that may name things.
            reason=reason if reason in _LIBRARY_REASONS else "application",
        )
        await self.audit(identity, action, target, allowed=False, reason=reason)

    async def audit(
        self,
        identity: Identity,
        action: str,
        target: str,
        *,
        allowed: bool,
        reason: str | None = None,
    ) -> None:
        """Send an authorization decision to the audit sink, if there is one. A sink
        that fails is logged and counted; the decision stands."""
        if self._audit is None:
            return
        record = AuditRecord(
            user_id=identity.user_id,
            session_id=identity.session_id,
            action=action,
            target=target,
            target_kind="admin" if action == "admin" else target_kind(target),
            allowed=allowed,
            reason=reason,
            timestamp=iso_timestamp(),
        )
        try:
            result = self._audit(record)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            self.metrics.audit_failures += 1
            log(logging.ERROR, "audit_sink_failed", action=action, error=type(exc).__name__)

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
            if self._state != "running":
                raise GatewayNotRunning("The server is shutting down")
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
        if await self.registry.add(conn):
            self._reconnecting.add(sid)
        self._admit_started[sid] = started
        return conn

    def _admitted(self, conn: Connection) -> None:
        """The namespace finished setting ``conn`` up: count and log the connect."""
        self.metrics.connections_total += 1
        if conn.sid in self._reconnecting:
            self._reconnecting.discard(conn.sid)
            self.metrics.reconnections += 1
        started = self._admit_started.pop(conn.sid, time.monotonic())
        log(
            logging.INFO,
            "connect",
            sid=conn.sid,
            user=conn.identity.user_id,
            namespace=conn.namespace,
            ms=round((time.monotonic() - started) * 1000, 1),
        )

    async def _forget(
        self, sid: str, *, reason: str, departed: bool = True
    ) -> tuple[Connection, frozenset[str]] | None:
        """Drop ``sid`` from the gateway and its registry; returns the connection and
        the rooms its user is no longer present in, or ``None`` if it was unknown.
        ``departed=False``: the socket never finished connecting, so its going is no
        departure a later connect could be a reconnection after."""
        conn = self._connections.pop(sid, None)
        if conn is None:
            return None
        self._left.set()
        self._reconnecting.discard(sid)
        self._admit_started.pop(sid, None)
        gone = await self.registry.remove(sid, departed=departed)
        log(
            logging.INFO,
            "disconnect",
            sid=sid,
            user=conn.identity.user_id,
            namespace=conn.namespace,
            reason=reason,
            duration_s=round(time.time() - conn.connected_at, 3),
        )
        return conn, gone

    def _transport_open(self, sid: str, namespace: str) -> bool:
        server = self.server
        try:
            eio_sid = server.manager.eio_sid_from_sid(sid, namespace)
        except KeyError:
            return False
        return eio_sid is not None and eio_sid in server.environ

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``"not_mounted"``, ``"running"``, ``"draining"`` (shutting down) or ``"stopped"``."""
        return "not_mounted" if self._server is None else self._state

    async def shutdown(
        self, grace: float | None = None, *, message: str = "The server is shutting down"
    ) -> None:
        """Shut down gracefully: refuse new connections, send every socket in every
        namespace ``server:shutdown`` ``{message, timestamp}``, wait up to ``grace``
        seconds (default ``config.shutdown_grace``) for clients to leave, then
        disconnect the rest. Afterwards the registry holds none of this gateway's
        sockets. Calling it again waits for the first call to finish."""
        if self._server is None:
            return
        if self._shutdown_done is not None:
            await self._shutdown_done.wait()
            return
        self._shutdown_done = asyncio.Event()
        self._state = "draining"
        grace = self.config.shutdown_grace if grace is None else grace
        started = time.monotonic()
        log(logging.INFO, "shutdown_started", connections=len(self._connections), grace_s=grace)
        try:
            notice = {"message": message, "timestamp": iso_timestamp()}
            for namespace in self._namespaces:
                await self._server.emit("server:shutdown", notice, namespace=namespace)
            deadline = started + grace
            while self._connections and (remaining := deadline - time.monotonic()) > 0:
                self._left.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._left.wait(), remaining)
            await self._disconnect_all()
        finally:
            self._state = "stopped"
            log(
                logging.INFO,
                "shutdown_finished",
                ms=round((time.monotonic() - started) * 1000, 1),
            )
            self._shutdown_done.set()

    async def _disconnect_all(self) -> None:
        server = self._server
        # A transport the client has just dropped can make python-engineio wait
        # forever, so every step is bounded; what is left is forgotten by hand.
        disconnects = [
            server.disconnect(conn.sid, namespace=conn.namespace)
            for conn in list(self._connections.values())
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*disconnects, return_exceptions=True), 5)
        # A client told its last namespace is gone closes its transport itself; give
        # it a moment, so that a polling client's last request is still answered.
        deadline = time.monotonic() + _TRANSPORT_CLOSE_WAIT
        while server.environ and (remaining := deadline - time.monotonic()) > 0:
            server.transport_closed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.transport_closed.wait(), remaining)
        # Transports still open (no namespace joined, or the client is gone): close
        # without waiting for their queues, which a dead transport never drains.
        transports = [socket.close(wait=False) for socket in list(server.eio.sockets.values())]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*transports, return_exceptions=True), 2)
        server.eio.sockets = {}
        for sid in list(self._connections):
            await self._forget(sid, reason="shutdown")
        await server.shutdown()
        await self._leave_cluster()

    async def _leave_cluster(self) -> None:
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
        if self._manager is not None and getattr(self._manager, "thread", None) is not None:
            self._manager.thread.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._manager.thread
        if self._manager is not None:
            await self._manager.close()
        if self._cluster is not None:
            await self._cluster.close()

    async def stats(self) -> dict[str, Any]:
        """The metrics counters plus the live figures ``connections_active`` and
        ``users_connected`` (sockets and users of this process)."""
        users = self._cluster.local if self._cluster is not None else self.registry
        return {
            **self.metrics.snapshot(),
            "connections_active": len(self._connections),
            "users_connected": len(await users.users()),
        }

    # -- the registry's view ------------------------------------------------------

    async def is_user_connected(self, user_id: str) -> bool:
        """True if ``user_id`` has at least one connected socket."""
        return bool(await self.registry.user_sockets(user_id))

    async def user_sockets(self, user_id: str) -> list[ConnectionInfo]:
        """The connected sockets of ``user_id``, in every namespace."""
        return await self.registry.user_sockets(user_id)

    async def connection_info(self, sid: str) -> ConnectionInfo | None:
        """What the registry knows of socket ``sid``: identity, namespace, rooms, times."""
        return await self.registry.get(sid)

    async def presence(self, room: str, *, namespace: str = "/") -> frozenset[str]:
        """The ids of the users present in ``room`` of ``namespace`` (a user with
        several sockets there counts once)."""
        return await self.registry.presence(namespace, room)

    # -- publishing ----------------------------------------------------------------

    async def broadcast(self, event: str, data: Any = None, *, namespace: str = "/") -> None:
        """Send ``event`` to every socket of ``namespace``."""
        await self._emit("broadcast", event, data, namespace=namespace)

    async def emit_to_room(
        self,
        room: str,
        event: str,
        data: Any = None,
        *,
        namespace: str = "/",
        skip_sid: str | None = None,
    ) -> None:
        """Send ``event`` to every socket in ``room`` of ``namespace``."""
        _require_text(room, "room")
        await self._emit("room", event, data, namespace=namespace, room=room, skip_sid=skip_sid)

    async def emit_to_user(
        self, user_id: str, event: str, data: Any = None, *, namespace: str = "/"
    ) -> None:
        """Send ``event`` to every socket ``user_id`` has in ``namespace``."""
        _require_text(user_id, "userId")
        await self._emit("user", event, data, namespace=namespace, room=user_room(user_id))

    async def emit_to_role(
        self, role: str, event: str, data: Any = None, *, namespace: str = "/"
    ) -> None:
        """Send ``event`` to every socket in ``namespace`` of a user holding ``role``."""
        _require_text(role, "role")
        await self._emit("role", event, data, namespace=namespace, room=role_room(role))

    async def notify_user(
        self,
        user_id: str,
        title: str,
        message: str,
        *,
        type: str = "info",
        data: Mapping[str, Any] | None = None,
        namespace: str = "/notifications",
    ) -> dict[str, Any]:
        """Send a ``notification`` ``{id, type, title, message, data, timestamp}`` to
        every socket of ``user_id`` in ``namespace``; returns the notification."""
        _require_text(user_id, "userId")
        return await self._notify(user_room(user_id), title, message, type, data, namespace)

    async def notify_role(
        self,
        role: str,
        title: str,
        message: str,
        *,
        type: str = "info",
        data: Mapping[str, Any] | None = None,
        namespace: str = "/notifications",
    ) -> dict[str, Any]:
        """Send a ``notification`` to every socket in ``namespace`` of a user holding
        ``role``; returns the notification."""
        _require_text(role, "role")
        return await self._notify(role_room(role), title, message, type, data, namespace)

    async def _notify(
        self,
        room: str,
        title: str,
        message: str,
        type: str,
        data: Mapping[str, Any] | None,
        namespace: str,
    ) -> dict[str, Any]:
        note = make_notification(title, message, type=type, data=data)
        await self._emit("notification", "notification", note, namespace=namespace, room=room)
        return note

    async def publish_update(
        self,
        resource_type: str,
        resource_id: str | int,
        update_type: str,
        data: Any = None,
        *,
        namespace: str = "/updates",
    ) -> dict[str, Any]:
        """Send ``{type}:update`` ``{{type}Id, updateType, data, timestamp}`` to the
        subscribers of that resource in ``namespace`` (an :class:`UpdatesNamespace`);
        returns the update."""
        updates = self._namespaces.get(namespace)
        if not isinstance(updates, UpdatesNamespace):
            raise NotFound(f"No updates namespace at {namespace}")
        event, room, update = updates.update(resource_type, resource_id, update_type, data)
        await self._emit("update", event, update, namespace=namespace, room=room)
        return update

    async def _emit(
        self,
        kind: str,
        event: str,
        data: Any,
        *,
        namespace: str,
        room: str | None = None,
        skip_sid: str | None = None,
    ) -> None:
        if not isinstance(event, str) or not event or event in _RESERVED_EVENTS:
            raise InvalidPayload("event must be a non-reserved, non-empty string", field="event")
        if namespace not in self._namespaces:
            raise NotFound(f"Unknown namespace {namespace}")
        await self.server.emit(event, data, to=room, skip_sid=skip_sid, namespace=namespace)
        self.metrics.emits[kind] += 1

    # -- control ---------------------------------------------------------------------

    async def disconnect_socket(self, sid: str) -> bool:
        """Disconnect socket ``sid`` (the client is told, and does not reconnect on its
        own), on whichever process it lives; ``False`` if no such socket is known."""
        conn = self._connections.get(sid)
        if conn is not None:
            namespace = conn.namespace
        elif self._manager is not None and (info := await self.registry.get(sid)) is not None:
            namespace = info.namespace  # on another process: the manager passes it on
        else:
            return False
        await self.server.disconnect(sid, namespace=namespace)
        return True

    async def disconnect_user(self, user_id: str) -> int:
        """Disconnect every socket of ``user_id``; returns how many there were."""
        # The registry already says where each socket is: no second lookup per socket.
        sockets = await self.registry.user_sockets(user_id)
        for info in sockets:
            await self.server.disconnect(info.sid, namespace=info.namespace)
        return len(sockets)

    async def reauthorize(
        self, user_id: str, identity: Identity | None = None
    ) -> dict[str, list[str]]:
        """Re-run authorization for every socket of ``user_id``, with ``identity`` if
        given (after a role change, say). A socket that may no longer connect to its
        namespace, or whose identity has expired, is disconnected; otherwise it
        leaves every room it may no longer be in and its client gets
        ``access:revoked`` ``{room}``. Returns the rooms left, by socket id, on this
        process; in a cluster the other processes do the same for their sockets."""
        if identity is not None and identity.user_id != user_id:
            raise ValueError("identity is of another user")
        revoked = await self._reauthorize_here(user_id, identity)
        if self._manager is not None:
            await self._manager.publish_control(
                {
                    "op": "reauthorize",
                    "userId": user_id,
                    "identity": None if identity is None else identity_to_json(identity),
                }
            )
        return revoked

    async def _reauthorize_here(
        self, user_id: str, identity: Identity | None
    ) -> dict[str, list[str]]:
        revoked: dict[str, list[str]] = {}
        for info in await self.registry.user_sockets(user_id):
            conn = self._connections.get(info.sid)
            namespace = self._namespaces.get(info.namespace)
            if conn is None or namespace is None:
                continue  # on another process, which gets the control message
            if identity is not None:
                conn.identity = identity
            if conn.identity.is_expired() or not await self.is_allowed(
                conn.identity, "connect", conn.namespace
            ):
                await self.disconnect_socket(conn.sid)
                revoked[conn.sid] = sorted(conn.rooms)
                continue
            left = await namespace.reauthorize(conn)
            if left:
                revoked[conn.sid] = left
        return revoked


def _require_text(value: object, field: str) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidPayload(f"{field} must be a non-empty string", field=field)


class _ShutdownOnLifespan:
    """python-socketio's ASGI app, with the gateway's graceful shutdown run when the
    ASGI server announces lifespan shutdown, before the host app's own shutdown."""

    def __init__(self, app: ASGIApp, host_app: ASGIApp | None, gateway: Gateway) -> None:
        self.app = app
        self.host_app = host_app
        self.gateway = gateway

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def receive_then_shut_down() -> Any:
            message = await receive()
            if message.get("type") == "lifespan.startup":
                await self.gateway.start()
            elif message.get("type") == "lifespan.shutdown":
                await self.gateway.shutdown()
            return message

        if self.host_app is not None:
            await self.host_app(scope, receive_then_shut_down, send)
            return
        while True:
            try:
                message = await receive_then_shut_down()
            except ConfigurationError as exc:
                await send({"type": "lifespan.startup.failed", "message": exc.message})
                return
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
