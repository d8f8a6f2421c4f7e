"""The base class of every namespace a gateway serves.

Subclasses declare handlers with :func:`event` (or :meth:`GatewayNamespace.add_event`
for names known only at run time); each handler gets the socket's
:class:`Connection` and the validated payload, and returns the fields of a
success acknowledgement (or ``None``). Raising a :class:`GatewayError` answers
``{"success": false, "error": ..., "code": ...}``; any other exception answers
``internal`` without details and leaves the connection up.

Every socket is put in its user's room ``user:{id}`` and a ``role:{role}`` room per
role when it connects, so the gateway can reach a user or a role in any namespace.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

import attrs
import socketio

from ._clock import epoch_ms
from ._connection import Connection
from ._denials import DenialSummary
from ._exceptions import (
    AuthenticationFailed,
    GatewayError,
    GatewayNotRunning,
    InvalidPayload,
    LimitExceeded,
    NotFound,
    RateLimited,
)
from ._identity import Identity
from ._log import log, log_stack
from ._payload import PayloadSpec, check_spec, encoded_size, parse_payload

if TYPE_CHECKING:
    from ._gateway import Gateway

__all__ = [
    "GatewayNamespace",
    "UpdatePublisher",
    "event",
    "failure",
    "role_room",
    "success",
    "user_room",
]

Ack = dict[str, Any]
Handler = Callable[..., Awaitable[Mapping[str, Any] | None]]
H = TypeVar("H", bound=Handler)

_EVENT_SPEC = "__rtg_event__"
# Names socket.io reserves for its own use, and the session events every namespace
# of the gateway answers itself.
_RESERVED = frozenset(
    {"connect", "disconnect", "connect_error", "auth:refresh", "session:activity"}
)
# Events that are no sign of a person at the keyboard: a client's keep-alive and
# its automatic credential refresh do not hold off automatic logoff.
_NOT_ACTIVITY = frozenset({"ping", "auth:refresh"})


@attrs.frozen
class _EventSpec:
    name: str
    payload: PayloadSpec
    max_size: int | None


def event(
    name: str, *, payload: PayloadSpec = None, max_size: int | None = None
) -> Callable[[H], H]:
    """Declare the decorated coroutine method as the handler of event ``name``.

    ``payload`` is what the event accepts (see :func:`parse_payload`'s specs: a JSON
    type or an annotation of them, an attrs class, a pydantic model, or a parsing
    callable); ``max_size`` overrides the gateway's ``max_event_size`` for this
    event. Names may contain ``:``. A handler that is not a coroutine function, or
    a spec that is a string (``payload="str"``), raises ``TypeError`` here.
    """
    if not isinstance(name, str) or not name or name in _RESERVED:
        raise ValueError(f"invalid event name {name!r}")
    check_spec(payload, resolve=False)

    def decorate(handler: H) -> H:
        _check_handler(name, handler)
        setattr(handler, _EVENT_SPEC, _EventSpec(name, payload, max_size))
        return handler

    return decorate


def _check_handler(name: str, handler: object) -> None:
    """A handler must be a coroutine function: a plain one would answer every event
    with ``internal`` (its result cannot be awaited)."""
    call = getattr(handler, "__call__", None)  # noqa: B004 (an async __call__ counts)
    # A decorator made with functools.wraps around a coroutine function counts too.
    unwrapped = inspect.unwrap(handler) if callable(handler) else handler
    if not any(map(inspect.iscoroutinefunction, (handler, call, unwrapped))):
        raise TypeError(
            f"the handler of event {name!r} must be a coroutine function (async def),"
            f" got {handler!r}"
        )


def user_room(user_id: str) -> str:
    """The room every socket of ``user_id`` is in, in every namespace."""
    return f"user:{user_id}"


def role_room(role: str) -> str:
    """The room every socket of a user holding ``role`` is in, in every namespace."""
    return f"role:{role}"


def success(fields: Mapping[str, Any] | None = None) -> Ack:
    """A success acknowledgement: ``{"success": true, **fields}``."""
    return {"success": True, **(fields or {})}


def failure(error: GatewayError) -> Ack:
    """A failure acknowledgement for ``error``."""
    ack: Ack = {"success": False, "error": error.message, "code": error.code}
    if isinstance(error, InvalidPayload) and error.field is not None:
        ack["field"] = error.field
    if isinstance(error, AuthenticationFailed | LimitExceeded):
        ack["reason"] = error.reason
    return ack


def _refresh_token(payload: object) -> str:
    if not isinstance(payload, Mapping) or not isinstance(payload.get("token"), str):
        raise InvalidPayload("auth:refresh takes {token}", field="token")
    token: str = payload["token"]
    if not token:
        raise InvalidPayload("token must be a non-empty string", field="token")
    return token


@runtime_checkable
class UpdatePublisher(Protocol):
    """A namespace that publishes resource updates (:class:`UpdatesNamespace`): what
    :meth:`Gateway.publish_update` asks for the event, room and payload of one."""

    def update(
        self, resource_type: str, resource_id: str | int, update_type: str, data: Any
    ) -> tuple[str, str, dict[str, Any]]: ...


class GatewayNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """A socket.io namespace whose every socket is authenticated.

    Register instances with :meth:`Gateway.add_namespace`. Override the hooks
    :meth:`on_connected` (admission; raising refuses), :meth:`on_ready` (the client
    knows it is connected: welcome events go here), :meth:`on_disconnected` and
    :meth:`on_presence`; declare events with :func:`event`; put sockets in rooms
    with :meth:`join` and take them out with :meth:`leave`.

    ``announce_presence``: when true, a room hears ``presence:join`` /
    ``presence:leave`` ``{room, userId, userName, timestamp}`` when a user's first
    socket joins it or their last socket leaves it (never for the ``user:`` and
    ``role:`` rooms every socket is in).
    """

    announce_presence: ClassVar[bool] = False
    _events: ClassVar[dict[str, tuple[str, _EventSpec]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        events: dict[str, tuple[str, _EventSpec]] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                spec = getattr(value, _EVENT_SPEC, None)
                if isinstance(spec, _EventSpec):
                    events[spec.name] = (attr, spec)
        cls._events = events

    def __init__(self, namespace: str = "/") -> None:
        if not isinstance(namespace, str) or not namespace.startswith("/"):
            raise ValueError(f"a namespace starts with '/', got {namespace!r}")
        super().__init__(namespace)
        self._gateway: Gateway | None = None
        self._handlers: dict[str, tuple[Handler, _EventSpec]] = {
            name: (getattr(self, attr), spec) for name, (attr, spec) in self._events.items()
        }
        for _, spec in self._handlers.values():
            # Annotations are resolved here rather than by @event, when the classes
            # a payload class names may not all be defined yet.
            check_spec(spec.payload)
        self._handlers["auth:refresh"] = (
            self._refresh_session,
            _EventSpec("auth:refresh", _refresh_token, None),
        )
        self._handlers["session:activity"] = (
            self._session_activity,
            _EventSpec("session:activity", None, None),
        )

    @property
    def gateway(self) -> Gateway:
        """The gateway this namespace is registered with."""
        if self._gateway is None:
            raise GatewayNotRunning("namespace is not registered with a gateway")
        return self._gateway

    def bind(self, gateway: Gateway) -> None:
        """Called by :meth:`Gateway.add_namespace`; not for application use."""
        if self._gateway is not None and self._gateway is not gateway:
            raise ValueError(f"namespace {self.namespace} is already bound to another gateway")
        self._gateway = gateway

    def add_event(
        self,
        name: str,
        handler: Handler,
        *,
        payload: PayloadSpec = None,
        max_size: int | None = None,
    ) -> None:
        """Handle event ``name`` with the coroutine ``handler(conn, value)`` on this
        instance only, like a method decorated with :func:`event` (and refused the
        same way: ``TypeError`` for a plain function or a string spec,
        :class:`ConfigurationError` for annotations a payload cannot satisfy)."""
        if not isinstance(name, str) or not name or name in _RESERVED:
            raise ValueError(f"invalid event name {name!r}")
        if name in self._handlers:
            raise ValueError(f"event {name!r} already has a handler")
        _check_handler(name, handler)
        check_spec(payload)
        self._handlers[name] = (handler, _EventSpec(name, payload, max_size))

    @property
    def event_names(self) -> frozenset[str]:
        """The events this namespace handles."""
        return frozenset(self._handlers)

    def identity(self, sid: str) -> Identity:
        """The identity of socket ``sid`` in this namespace."""
        return self.connection(sid).identity

    def connection(self, sid: str) -> Connection:
        """The :class:`Connection` of socket ``sid`` in this namespace."""
        conn = self.gateway.connection(sid)
        if conn is None or conn.namespace != self.namespace:
            raise NotFound("No such connection")
        return conn

    # -- rooms ------------------------------------------------------------------

    async def join(
        self,
        conn: Connection,
        room: str,
        *,
        action: str | None = "join",
        announce: bool = True,
    ) -> bool:
        """Put ``conn`` in ``room``, first asking the authorizer for ``action`` on the
        room (raising :class:`PermissionDenied`); ``action=None`` skips the check and
        makes the room one the client cannot leave. Joining a room twice is a no-op.
        A socket already in ``max_rooms_per_socket`` rooms joined with an action
        gets :class:`LimitExceeded` (``too_many_rooms``) before the authorizer is
        asked. Returns ``True`` if the socket's user became present in the room
        (announced through :meth:`on_presence` unless ``announce`` is false: a
        recovered socket coming back to a room whose departure was never told)."""
        server = self.gateway.server
        if server.manager.is_sid_room(self.namespace, room):
            # Every socket has a room named by its sid: its private channel.
            raise await self.gateway.refuse(
                conn.identity, action or "join", room, "a socket's own room"
            )
        reserved = action is not None and room not in conn.rooms
        if reserved and not conn.reserve_room(self.gateway.config.max_rooms_per_socket):
            refusal = LimitExceeded(LimitExceeded.TOO_MANY_ROOMS, "Too many rooms for this socket")
            self.gateway._limit_exceeded(conn.identity, refusal, self.namespace)
            raise refusal
        try:
            if action is not None:
                await self.gateway.authorize(conn.identity, action, room)
            if room in conn.rooms:
                return False
            await server.enter_room(conn.sid, room, namespace=self.namespace)
            if reserved:
                reserved = False
                conn.release_room()
            conn.rooms[room] = action
        finally:
            if reserved:
                conn.release_room()
        present = await self.gateway.registry.join(conn.sid, room)
        if present and announce:
            await self._announce(conn, room, joined=True)
        if action is not None and self.gateway._recovery is not None:
            await self.gateway._recovery.moved(conn)
        return present

    async def leave(self, conn: Connection, room: str) -> bool:
        """Take ``conn`` out of ``room``. Raises :class:`NotFound` if the socket is not
        in it and :class:`PermissionDenied` for a room it cannot leave (its user and
        role rooms), so a bad request changes nothing. Returns ``True`` if the
        socket's user is no longer present in the room."""
        if room not in conn.rooms:
            raise NotFound("Not in that room")
        if conn.rooms[room] is None:
            raise await self.gateway.refuse(
                conn.identity, "leave", room, "the gateway's own rooms cannot be left"
            )
        return await self._remove_from(conn, room)

    async def _remove_from(self, conn: Connection, room: str) -> bool:
        action = conn.rooms.pop(room)
        await self.gateway.server.leave_room(conn.sid, room, namespace=self.namespace)
        gone = await self.gateway.registry.leave(conn.sid, room)
        if gone:
            await self._announce(conn, room, joined=False)
        if action is not None and self.gateway._recovery is not None:
            await self.gateway._recovery.moved(conn)
        return gone

    async def reauthorize(self, conn: Connection, *, reason: str = "reauthorized") -> list[str]:
        """Re-check every room ``conn`` is in against its (possibly new) identity:
        leave the rooms no longer allowed, telling the client ``access:revoked``
        ``{room, reason}``, and join role rooms for roles newly held. Returns the
        rooms left."""
        identity = conn.identity
        revoked: list[str] = []
        for room, action in list(conn.rooms.items()):
            if action is None:
                allowed = not room.startswith("role:") or room[5:] in identity.roles
            else:
                allowed = await self.gateway.is_allowed(identity, action, room)
            if not allowed:
                await self._remove_from(conn, room)
                revoked.append(room)
                await self.gateway.server.emit(
                    "access:revoked",
                    {"room": room, "reason": reason},
                    to=conn.sid,
                    namespace=self.namespace,
                )
        await self._join_own_rooms(conn)
        return revoked

    async def _join_own_rooms(self, conn: Connection) -> None:
        """The user's room and a room per role held (joining twice is a no-op)."""
        rooms = [user_room(conn.identity.user_id), *map(role_room, sorted(conn.identity.roles))]
        join_all = getattr(self.gateway.registry, "join_all", None)
        if join_all is None:
            for room in rooms:
                await self.join(conn, room, action=None)
            return
        # A registry in a shared store records them in one call (RedisRegistry).
        new = [room for room in rooms if room not in conn.rooms]
        for room in new:
            await self.gateway.server.enter_room(conn.sid, room, namespace=self.namespace)
            conn.rooms[room] = None
        present = await join_all(conn.sid, new) if new else {}
        for room in new:
            if present.get(room):
                await self._announce(conn, room, joined=True)

    async def _announce(self, conn: Connection, room: str, *, joined: bool) -> None:
        try:
            await self.on_presence(conn, room, joined=joined)
        except Exception as exc:
            self._failed("presence_hook_failed", conn.sid, exc)

    def _failed(self, what: str, sid: str, exc: Exception, **fields: Any) -> None:
        """Log that a hook or handler failed: which, where and the error's type only;
        at DEBUG also where in the code (``<what>_traceback``, no values)."""
        log(
            logging.ERROR,
            what,
            sid=sid,
            namespace=self.namespace,
            **fields,
            error=type(exc).__name__,
        )
        log_stack(f"{what}_traceback", exc, sid=sid, namespace=self.namespace, **fields)

    def _system_room(self, conn: Connection, room: str) -> bool:
        return room == user_room(conn.identity.user_id) or room.startswith("role:")

    # -- hooks ------------------------------------------------------------------

    async def on_connected(self, conn: Connection) -> None:
        """Hook: the socket authenticated and was admitted. Raising refuses it."""

    async def on_ready(self, conn: Connection) -> None:
        """Hook: the client has been told it is connected; events emitted here reach it."""

    async def on_disconnected(self, conn: Connection, reason: str) -> None:
        """Hook: the socket left, for any reason."""

    async def on_presence(self, conn: Connection, room: str, *, joined: bool) -> None:
        """Hook: ``conn``'s user became present in ``room`` (``joined``) or is no
        longer there. By default announces it to the room when
        ``announce_presence`` is set."""
        if not self.announce_presence or self._system_room(conn, room):
            return
        await self.gateway.server.emit(
            "presence:join" if joined else "presence:leave",
            {
                "room": room,
                "userId": conn.identity.user_id,
                "userName": conn.identity.name,
                "timestamp": epoch_ms(),
            },
            room=room,
            skip_sid=conn.sid,
            namespace=self.namespace,
        )

    # -- python-socketio's entry points ------------------------------------------

    async def trigger_event(self, event_name: str, *args: Any) -> Any:
        """python-socketio's lifecycle entry point (``connect``, ``disconnect``); not
        for application use. Client events never come this way: the gateway's
        server hands them to the declared handlers only."""
        if event_name == "connect":
            await self._connect(*args)
            return None
        if event_name == "disconnect":
            await self._disconnect(args[0], args[1] if len(args) > 1 else "unknown")
            return None
        return failure(NotFound("Unknown event"))

    @property
    def largest_event_size(self) -> int:
        """The most bytes any event of this namespace accepts (``max_event_size`` or
        a larger per-event ``max_size``); also the budget of a packet's binary
        attachments."""
        limit: int = self.gateway.config.max_event_size
        for _, spec in self._handlers.values():
            if spec.max_size is not None:
                limit = max(limit, spec.max_size)
        return limit

    async def _connect(self, sid: str, environ: Mapping[str, Any], auth: Any = None) -> None:
        conn = await self.gateway._admit(sid, self.namespace, environ, auth)
        recovery = self.gateway._recovery
        try:
            request = None if recovery is None else recovery.begin(conn, auth)
            await self._join_own_rooms(conn)
            if recovery is not None:
                await recovery.connect(self, conn, request)
            await self.on_connected(conn)
        except Exception as exc:
            if recovery is not None:
                recovery.abandon(sid)
            await self.gateway._forget(sid, reason="setup failed", departed=False)
            self._failed("connect_hook_failed", sid, exc)
            raise socketio.exceptions.ConnectionRefusedError(
                "Connection setup failed", {"code": "internal"}
            ) from None
        if not self.gateway.server.transport_open(sid, self.namespace):
            # The client went away while it was being admitted; python-socketio does
            # not report the disconnect of a socket that never finished connecting.
            if recovery is not None:
                recovery.abandon(sid)
            await self.gateway._forget(sid, reason="transport closed", departed=False)
            raise socketio.exceptions.ConnectionRefusedError("Transport closed")
        self.gateway._admitted(conn)

    async def _ready(self, sid: str) -> None:
        conn = self.gateway.connection(sid)
        if conn is None:
            return
        self.gateway._ready(conn)
        if self.gateway._recovery is not None:
            await self.gateway._recovery.ready(conn)
        try:
            await self.on_ready(conn)
        except Exception as exc:
            self._failed("ready_hook_failed", sid, exc)

    async def _disconnect(self, sid: str, reason: str) -> None:
        found = await self.gateway._forget(sid, reason=str(reason))
        if found is None:
            return
        conn, gone = found
        recovery = self.gateway._recovery
        if recovery is not None and recovery.keeps(conn, str(reason)):
            # Its rooms wait for the window: a recovered socket must not be seen
            # leaving and coming back.
            await recovery.park(self, conn, gone)
        else:
            if recovery is not None:
                await recovery.closed(conn)
            for room in sorted(gone):
                await self._announce(conn, room, joined=False)
        try:
            await self.on_disconnected(conn, str(reason))
        except Exception as exc:
            self._failed("disconnect_hook_failed", sid, exc)

    async def _dispatch(self, event_name: str | None, sid: str, args: tuple[Any, ...]) -> Ack:
        """Answer one client event; ``event_name`` ``None`` is a packet that was not
        ``[name, ...args]``."""
        metrics = self.gateway.metrics
        metrics.events_received[self.namespace] += 1
        try:
            conn = self.connection(sid)
            config = self.gateway.config
            now = time.monotonic()
            if config.rate_limit is not None and not conn.take_token(
                config.rate_limit, config.rate_burst, now
            ):
                raise self._over_budget(conn, now, "socket")
            if config.user_rate_limit is not None and not conn.take_user_token(
                config.user_rate_limit, config.user_rate_burst, now
            ):
                raise self._over_budget(conn, now, "user")
            if event_name is None:
                raise InvalidPayload("An event is a list whose first item is its name")
            handler, spec = self._lookup(event_name)
            conn.touch()
            if event_name not in _NOT_ACTIVITY:
                self.gateway._sessions.touch(conn.eio_sid)
            payload = args[0] if len(args) == 1 else (list(args) if args else None)
            limit = spec.max_size if spec.max_size is not None else config.max_event_size
            if encoded_size(payload) > limit:
                raise InvalidPayload(f"Payload too large (limit {limit} bytes)")
            value = parse_payload(spec.payload, payload)
            with DenialSummary(conn.identity):
                result = await handler(conn, value)
            return success(result)
        except GatewayError as exc:
            metrics.events_refused[exc.code] += 1
            return failure(exc)
        except Exception as exc:
            metrics.events_refused["internal"] += 1
            self._failed(
                "handler_failed",
                sid,
                exc,
                event=event_name if event_name in self._handlers else None,
            )
            return failure(GatewayError("Internal error"))

    def _over_budget(self, conn: Connection, now: float, budget: str) -> RateLimited:
        """An event of ``conn`` was refused by the ``budget`` (``"socket"`` or
        ``"user"``) rate limit: log the start of a streak of refusals, and end the
        socket once the streak has lasted ``rate_limit_disconnect_after``."""
        gateway = self.gateway
        if budget == "user":
            gateway.metrics.limits_exceeded["user_rate_limit"] += 1
        lasted, started = conn.refused_for(now)
        if started:
            log(
                logging.WARNING,
                "rate_limited",
                sid=conn.sid,
                user=conn.identity.user_id,
                namespace=self.namespace,
                budget=budget,
            )
        after = gateway.config.rate_limit_disconnect_after
        if (
            after is not None
            and lasted >= after
            and gateway._sessions.end(conn, "rate_limited", event="limit:exceeded")
        ):
            gateway.metrics.limits_exceeded["rate_limit_sustained"] += 1
        return RateLimited("Too many events, slow down")

    async def _refresh_session(self, conn: Connection, token: str) -> Ack:
        """``auth:refresh`` ``{token}``: a new credential for the whole client connection."""
        return await self.gateway._refresh(conn, token)

    async def _session_activity(self, conn: Connection, value: None) -> None:
        """``session:activity``: the person is still there (holds off automatic logoff)."""

    def _lookup(self, event_name: str) -> tuple[Handler, _EventSpec]:
        # Only declared handlers: never a hook or any other attribute by name.
        found = self._handlers.get(event_name) if isinstance(event_name, str) else None
        if found is None:
            raise NotFound("Unknown event")
        return found
