"""The :class:`Gateway`: one python-socketio server, authenticated and authorized."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import socketio
from aiohttp import web

from . import _control as control
from ._audit import AuditRecord, AuditSink, deliver
from ._auth import Authenticator
from ._authz import NO_RULE, REQUIREMENT_NOT_MET, Authorizer
from ._cluster import Cluster
from ._config import GatewayConfig, redis_address
from ._connection import Connection
from ._denials import log_denial
from ._exceptions import (
    AuthenticationFailed,
    AuthFailureReason,
    ConfigurationError,
    GatewayError,
    GatewayNotRunning,
    InvalidPayload,
    LimitExceeded,
    NotFound,
    PermissionDenied,
)
from ._identity import Handshake, Identity
from ._live import LiveConnections
from ._log import log, set_log_key, set_log_limit
from ._metrics import Metrics
from ._mount import ASGIApp
from ._mount import asgi_app as mount_asgi
from ._mount import attach as mount_aiohttp
from ._mount import run_aiohttp as serve_aiohttp
from ._namespace import GatewayNamespace, UpdatePublisher, role_room, user_room
from ._notification import make_notification
from ._recover import Recovery
from ._recovery import MemoryRecoveryStore, RecoveryStore
from ._recovery_redis import RedisRecoveryStore
from ._registry import ConnectionInfo, MemoryRegistry, Registry
from ._revocation import MemoryRevocationStore, RedisRevocationStore, RevocationStore
from ._server import OriginPolicy, build_server
from ._sessions import SessionTimers
from ._shutdown import Lifecycle, drain

if TYPE_CHECKING:
    from ._dependency import IdentityDependency

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
        "another user's credential",
    }
)

# Events socket.io clients reserve for themselves.
_RESERVED_EVENTS = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)


class Gateway:
    """An authenticated, authorized socket.io gateway to compose into a host app.

    Every namespace connection is authenticated by ``authenticator`` and then
    authorized (action ``connect``, target the namespace) by ``authorizer``.
    Mount with :meth:`attach` (aiohttp) or :meth:`asgi_app` (Starlette, FastAPI,
    any ASGI app). ``registry`` records the live sockets (a
    :class:`MemoryRegistry` by default, the cluster's with ``redis_url``);
    ``revocations`` remembers revoked sessions and users (a
    :class:`MemoryRevocationStore` by default, a :class:`RedisRevocationStore` with
    ``redis_url``). ``recovery`` keeps what missed-message recovery needs when
    ``config.recovery_window`` is set (a :class:`MemoryRecoveryStore` by default).

    The gateway composes namespaces, admits sockets (authenticate, authorize,
    audit) and publishes; it wires the rest, each in a module of its own:
    ``_server`` (python-socketio's server subclass, origin policy, drivers),
    ``_engine`` (the engine.io layer: session binding, strict frames, limits),
    ``_protocol`` (what socket.io packets are accepted), ``_live`` (this process's
    connection table), ``_mount`` (aiohttp and ASGI wiring), ``_shutdown``
    (draining), ``_sessions`` (expiry and idle timers), ``_revocation`` (revoked
    sessions and users), ``_recover`` and ``_recovery`` (missed-message recovery),
    ``_cluster``
    (membership over Redis) and ``_control`` (disconnects and reauthorization
    across the cluster).

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
        revocations: RevocationStore | None = None,
        recovery: RecoveryStore | None = None,
    ) -> None:
        _check_plug_ins(authenticator, authorizer, registry, audit, revocations, recovery)
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.config = config or GatewayConfig()
        self.metrics = Metrics()
        self._started = False
        self._cluster: Cluster | None = None
        if self.config.redis_url is not None:
            self._cluster = Cluster(
                self.config,
                keys=Cluster.keys_for(self.config, self.authenticator),
                metrics=self.metrics,
                stats=self.stats,
                control=partial(control.on_control, self),
                swept=partial(control.announce_swept, self),
            )
        # "is not None", never "or": a store with a __len__ is falsy while empty.
        if registry is None:
            registry = (
                self._cluster.registry
                if self._cluster is not None
                else MemoryRegistry(reconnect_window=self.config.reconnect_window)
            )
        self.registry: Registry = registry
        # What this process has revoked or heard revoked: checked, without I/O, once
        # a socket is in the connection table, so that no revocation slips between
        # a handshake's store lookup and the socket being there to be ended.
        self._revoked_here = MemoryRevocationStore()
        if revocations is None:
            revocations = (
                RedisRevocationStore(self._cluster.registry.redis, prefix=self.config.redis_prefix)
                if self._cluster is not None
                else self._revoked_here
            )
        self.revocations: RevocationStore = revocations
        self._audit = audit
        self._lifecycle = Lifecycle()
        if self.config.log_key is not None:
            set_log_key(self.config.log_key)
        set_log_limit(self.config.log_repeat_limit, self.config.log_repeat_interval)
        self._origins = OriginPolicy(self.config.allowed_origins)
        self._namespaces: dict[str, GatewayNamespace] = {}
        self._live = LiveConnections(
            self.registry, self.metrics, max_sockets_per_user=self.config.max_sockets_per_user
        )
        self._sessions = SessionTimers(self)
        self._recovery: Recovery | None = None
        if self.config.recovery_window is not None:
            self._recovery = Recovery(
                self,
                recovery if recovery is not None else self._recovery_store(),
                window=self.config.recovery_window,
            )
        self._server: Any = None
        for namespace in namespaces:
            self.add_namespace(namespace)

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
            await self._cluster.start(self._server)
        self._started = True
        self._log_started()

    def _log_started(self) -> None:
        """One INFO record saying the gateway is up and how it is set up."""
        config = self.config
        recovery = config.recovery_window
        log(
            logging.INFO,
            "gateway_started",
            path=config.path,
            namespaces=",".join(sorted(self._namespaces)) or "none",
            authenticator=type(self.authenticator).__qualname__,
            authorizer=type(self.authorizer).__qualname__,
            cluster=self._cluster is not None,
            redis=None if config.redis_url is None else redis_address(config.redis_url),
            process=self.process,
            recovery="on" if recovery else "off",
        )

    async def cluster_stats(self) -> dict[str, Any] | None:
        """``{"processes": {name: figures}, "total": figures}`` over every live
        process (the total's ``users_connected`` counts each user once), or ``None``
        without a cluster."""
        if self._cluster is None:
            return None
        return await self._cluster.cluster_stats(await self.stats())

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
        the app's shutdown runs :meth:`shutdown` while connections are still open. A
        gateway is mounted once (:meth:`attach` or :meth:`asgi_app`)."""
        mount_aiohttp(self, app)

    async def run_aiohttp(
        self,
        app: web.Application,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        started: Callable[[str], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Serve ``app`` (this gateway attached) until SIGINT, SIGTERM or ``stop``,
        then shut the gateway down *before* the web server: once aiohttp's own
        shutdown begins it reads nothing more, so clients told ``server:shutdown``
        could not be heard leaving. ``started`` gets the URL once the server
        listens. Requests are logged without credentials: a
        :class:`RedactingAccessLogger`, and no request bytes in bad-request errors.
        It returns within ``shutdown_grace`` plus at most 7 s (the gateway's own
        steps, then 1 s twice for request handlers still running, which are then
        cancelled) and the host's ``on_shutdown`` / ``on_cleanup`` hooks, whatever
        clients do (one that stops reading or half-closes its connection included).
        """
        await serve_aiohttp(self, app, host=host, port=port, started=started, stop=stop)

    def asgi_app(self, other_asgi_app: ASGIApp | None = None) -> ASGIApp:
        """An ASGI app serving socket.io at ``config.path`` and everything else with
        ``other_asgi_app`` (a Starlette or FastAPI app, say), whose lifespan is kept;
        lifespan shutdown runs :meth:`shutdown` first."""
        return mount_asgi(self, other_asgi_app)

    @property
    def server(self) -> Any:
        """The underlying ``socketio.AsyncServer``, once mounted."""
        if self._server is None:
            raise GatewayNotRunning("the gateway is not mounted: call attach() or asgi_app()")
        return self._server

    def _build_server(self, async_mode: str) -> Any:
        """The server for ``async_mode``, built once (by the mounting functions)."""
        if self._server is not None:
            raise ConfigurationError(
                "gateway",
                "this gateway is already mounted (attach() or asgi_app() was called"
                " before); mount a gateway once, and build one Gateway per app",
            )
        manager = None if self._cluster is None else self._cluster.manager
        self._server = build_server(self, async_mode, origins=self._origins, client_manager=manager)
        if self._recovery is not None:
            fanout = self._server.manager
            fanout.recovery = self._recovery
            if isinstance(self._recovery.store, MemoryRecoveryStore):
                fanout.log = self._recovery.store
        return self._server

    def _recovery_store(self) -> RecoveryStore:
        """The default store: in this process, or on Redis with ``redis_url``."""
        config = self.config
        assert config.recovery_window is not None
        if self._cluster is not None:
            return RedisRecoveryStore(
                self._cluster, window=config.recovery_window, max_events=config.recovery_log_events
            )
        return MemoryRecoveryStore(
            window=config.recovery_window,
            max_events=config.recovery_log_events,
            max_bytes=config.recovery_log_bytes,
        )

    # -- authentication and authorization -------------------------------------

    async def authenticate(self, handshake: Handshake) -> Identity:
        """Authenticate ``handshake`` (a socket or an HTTP caller) or raise
        :class:`AuthenticationFailed`; failures are counted and logged by reason. A
        credential whose session or user was revoked is refused (``revoked``)."""
        try:
            try:
                identity = await self.authenticator.authenticate(handshake)
            except AuthenticationFailed:
                raise
            except Exception as exc:
                log(logging.ERROR, "authenticator_failed", error=type(exc).__name__)
                raise AuthenticationFailed(AuthFailureReason.ERROR) from None
            if await self._is_revoked(identity):
                raise AuthenticationFailed(AuthFailureReason.REVOKED)
            return identity
        except AuthenticationFailed as exc:
            self._refused(handshake, exc)
            raise

    def identity_dependency(self) -> IdentityDependency:
        """A FastAPI dependency giving a route its caller's :class:`Identity`,
        authenticated as a socket's handshake is: the same authenticator over a
        :class:`Handshake` built from the request (``Authorization: Bearer``, the
        cookies; no ``auth`` payload), revocations and the cookie origin check
        included. Any refusal is HTTP 401 ``Not authenticated`` with
        ``WWW-Authenticate: Bearer``; why is counted and logged, never told.

        ``Annotated[Identity, Depends(gateway.identity_dependency())]`` in FastAPI;
        in Starlette, ``await dependency(request)`` in an endpoint (the 401 is a
        Starlette ``HTTPException``). Needs Starlette (FastAPI brings it).
        """
        from ._dependency import identity_dependency

        return identity_dependency(self)

    async def _is_revoked(self, identity: Identity) -> bool:
        if self._revoked_here.revoked_now(identity):
            return True
        if self.revocations is self._revoked_here:
            return False
        try:
            return await self.revocations.is_revoked(identity)
        except Exception as exc:
            # Refuse rather than let a revoked credential in while the store cannot say.
            log(logging.ERROR, "revocation_check_failed", error=type(exc).__name__)
            raise AuthenticationFailed(AuthFailureReason.ERROR) from None

    def _refused(self, handshake: Handshake, refusal: AuthenticationFailed) -> None:
        _count_refusal(self.metrics, handshake, refusal)

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
        _count_denial(self.metrics, identity, action, target, reason)
        await self.audit(identity, action, target, allowed=False, reason=reason)

    async def audit(
        self,
        identity: Identity,
        action: str,
        target: str,
        *,
        allowed: bool,
        reason: str | None = None,
        dropped: tuple[str, ...] = (),
    ) -> None:
        """Send an authorization decision to the audit sink, if there is one. A sink
        that fails is logged and counted; the decision stands."""
        if self._audit is None:
            return
        record = AuditRecord.of(
            identity, action, target, allowed=allowed, reason=reason, dropped=dropped
        )
        if not await deliver(self._audit, record):
            self.metrics.audit_failures += 1

    def _too_many_connections(self, identity: Identity, namespace: str) -> LimitExceeded:
        refusal = LimitExceeded(
            LimitExceeded.TOO_MANY_CONNECTIONS, "Too many connections for this user"
        )
        self._limit_exceeded(identity, refusal, namespace)
        return refusal

    def _limit_exceeded(self, identity: Identity, refusal: LimitExceeded, namespace: str) -> None:
        """Count and log a refusal for a bound (:class:`LimitExceeded`) before it is
        raised or answered."""
        self.metrics.limits_exceeded[refusal.reason] += 1
        log(
            logging.WARNING,
            "limit_exceeded",
            user=identity.user_id,
            namespace=namespace,
            reason=refusal.reason,
        )

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
        return self._live.get(sid)

    @property
    def connections(self) -> Mapping[str, Connection]:
        """Live connections by socket id (a read-only view)."""
        return dict(self._live)

    async def _admit(
        self, sid: str, namespace: str, environ: Mapping[str, Any], auth: object
    ) -> Connection:
        """Authenticate and authorize a namespace connect; the one place where a
        refusal becomes python-socketio's ``ConnectionRefusedError``."""
        started = time.monotonic()
        handshake = Handshake.from_environ(namespace, environ, auth)
        try:
            if self._lifecycle.state != "running":
                raise GatewayNotRunning("The server is shutting down")
            if handshake.cookies and not self._origins.credentials_allowed(
                handshake.origin, environ
            ):
                refusal = AuthenticationFailed(AuthFailureReason.ORIGIN)
                self._refused(handshake, refusal)
                raise refusal
            identity = await self.authenticate(handshake)
            if self._live.full(identity.user_id):  # spare the authorizer and the audit
                raise self._too_many_connections(identity, namespace)
            await self.authorize(identity, "connect", namespace)
        except (AuthenticationFailed, LimitExceeded) as exc:
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {"code": exc.code, "reason": exc.reason}
            ) from None
        except GatewayError as exc:
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {"code": exc.code}
            ) from None
        conn = Connection(
            sid=sid,
            namespace=namespace,
            identity=identity,
            handshake=handshake,
            eio_sid=self.server.manager.eio_sid_from_sid(sid, namespace),
        )
        if not await self._live.add(conn, started=started):
            refused = self._too_many_connections(identity, namespace)
            raise socketio.exceptions.ConnectionRefusedError(
                refused.message, {"code": refused.code, "reason": refused.reason}
            )
        if self._revoked_here.revoked_now(identity):
            # Revoked while it was being admitted, before the revocation could see it.
            await self._live.remove(sid, reason="revoked", departed=False)
            refusal = AuthenticationFailed(AuthFailureReason.REVOKED)
            self._refused(handshake, refusal)
            raise socketio.exceptions.ConnectionRefusedError(
                refusal.message, {"code": refusal.code, "reason": refusal.reason}
            )
        return conn

    def _admitted(self, conn: Connection) -> None:
        """The namespace finished setting ``conn`` up: count and log the connect."""
        self._live.admitted(conn)

    def _ready(self, conn: Connection) -> None:
        """The client knows ``conn`` is connected: arm its session and idle timers."""
        self._sessions.arm(conn)
        self._sessions.watch(conn)

    async def _forget(
        self, sid: str, *, reason: str, departed: bool = True
    ) -> tuple[Connection, frozenset[str]] | None:
        """Drop ``sid`` (see :meth:`LiveConnections.remove`) and its session timers."""
        conn = self._live.get(sid)
        if conn is not None:
            self._sessions.forget(conn)
        return await self._live.remove(sid, reason=reason, departed=departed)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def degraded(self) -> bool:
        """True while this process does not hear the cluster: its own canary has
        not come back over Redis for three ``cluster_canary_interval`` periods."""
        return self._cluster is not None and self._cluster.bus_deaf()

    @property
    def state(self) -> str:
        """``"not_mounted"``, ``"running"``, ``"draining"`` (shutting down) or ``"stopped"``."""
        return "not_mounted" if self._server is None else self._lifecycle.state

    async def shutdown(
        self, grace: float | None = None, *, message: str = "The server is shutting down"
    ) -> None:
        """Shut down gracefully: refuse new connections, send every socket in every
        namespace ``server:shutdown`` ``{message, timestamp}`` (epoch ms), wait up to ``grace``
        seconds (default ``config.shutdown_grace``) for clients to leave, then
        disconnect the rest. Afterwards the registry holds none of this gateway's
        sockets. Calling it again waits for the first call to finish."""
        if self._server is not None:
            grace = self.config.shutdown_grace if grace is None else grace
            await self._lifecycle.shut_down(partial(drain, self, grace, message))

    async def stats(self) -> dict[str, Any]:
        """The metrics counters plus the live figures ``connections_active`` and
        ``users_connected`` (sockets and users of this process)."""
        users = self._cluster.registry.local if self._cluster is not None else self.registry
        return {
            **self.metrics.snapshot(),
            "connections_active": len(self._live),
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
        """Send a ``notification`` ``{id, type, title, message, data, timestamp}``
        (``timestamp`` in epoch milliseconds) to every socket of ``user_id`` in
        ``namespace``; returns the notification."""
        _require_text(user_id, "userId")
        note = make_notification(title, message, type=type, data=data)
        await self._emit(
            "notification", "notification", note, namespace=namespace, room=user_room(user_id)
        )
        return note

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
        note = make_notification(title, message, type=type, data=data)
        await self._emit(
            "notification", "notification", note, namespace=namespace, room=role_room(role)
        )
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
        """Send ``{type}:update`` ``{{type}Id, updateType, data, timestamp}``
        (``timestamp`` in epoch milliseconds) to the subscribers of that resource in
        ``namespace`` (an :class:`UpdatesNamespace`); returns the update."""
        updates = self._namespaces.get(namespace)
        if not isinstance(updates, UpdatePublisher):
            raise NotFound(f"No updates namespace at {namespace}")
        built: tuple[str, str, dict[str, Any]] = updates.update(
            resource_type, resource_id, update_type, data
        )
        event, room, update = built
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
        return await control.disconnect_socket(self, sid)

    async def disconnect_user(self, user_id: str) -> int:
        """Disconnect every socket of ``user_id``; returns how many there were."""
        return await control.disconnect_user(self, user_id)

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
        return await control.reauthorize(self, user_id, identity)

    async def _refresh(self, conn: Connection, token: str) -> dict[str, Any]:
        """A client's ``auth:refresh`` (see :func:`control.refresh`)."""
        return await control.refresh(self, conn, token)

    async def revoke_session(self, session_id: str, *, user_id: str | None = None) -> int:
        """Revoke the session ``session_id`` everywhere in the cluster: its live
        sockets get ``auth:revoked`` ``{reason: "revoked"}`` and are disconnected, and
        the handshake refuses its credentials (reason ``revoked``) for as long as
        they could otherwise live. Returns how many sockets it had. Pass the
        session's ``user_id`` when you know it (a logout does): only that user's
        sockets are then looked up to count them, not every socket of the cluster."""
        _require_text(session_id, "sessionId")
        if user_id is not None:
            _require_text(user_id, "userId")
        return await control.revoke_session(self, session_id, user_id)

    async def revoke_user(self, user_id: str) -> int:
        """Revoke every credential of ``user_id`` issued until now, as
        :meth:`revoke_session` does a session's (credentials issued afterwards,
        at the next login, are accepted). Returns how many sockets the user had."""
        _require_text(user_id, "userId")
        return await control.revoke_user(self, user_id)


def _count_refusal(metrics: Metrics, handshake: Handshake, refusal: AuthenticationFailed) -> None:
    metrics.auth_failures[refusal.reason] += 1
    log(
        logging.WARNING,
        "auth_failed",
        namespace=handshake.namespace,
        reason=refusal.reason,
        remote=handshake.remote_address,
    )


def _count_denial(
    metrics: Metrics, identity: Identity, action: str, target: str, reason: str
) -> None:
    metrics.access_denied[action] += 1
    # An application's reasons are free text that may name things.
    log_denial(identity, action, target, reason if reason in _LIBRARY_REASONS else "application")


def _check_plug_ins(
    authenticator: object,
    authorizer: object,
    registry: object,
    audit: object,
    revocations: object,
    recovery: object,
) -> None:
    if not isinstance(authenticator, Authenticator):
        raise ConfigurationError("authenticator", "must have an async authenticate()")
    if not isinstance(authorizer, Authorizer):
        raise ConfigurationError("authorizer", "must have an async authorize()")
    if registry is not None and not isinstance(registry, Registry):
        raise ConfigurationError("registry", "must implement the Registry protocol")
    if audit is not None and not callable(audit):
        raise ConfigurationError("audit", "must be callable with an AuditRecord")
    if revocations is not None and not isinstance(revocations, RevocationStore):
        raise ConfigurationError("revocations", "must implement the RevocationStore protocol")
    if recovery is not None and not isinstance(recovery, RecoveryStore):
        raise ConfigurationError("recovery", "must implement the RecoveryStore protocol")


def _require_text(value: object, field: str) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidPayload(f"{field} must be a non-empty string", field=field)
