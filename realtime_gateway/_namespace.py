"""The base class of every namespace a gateway serves.

Subclasses declare handlers with :func:`event`; each handler gets the socket's
:class:`Connection` and the validated payload, and returns the fields of a
success acknowledgement (or ``None``). Raising a :class:`GatewayError` answers
``{"success": false, "error": ..., "code": ...}``; any other exception answers
``internal`` without details and leaves the connection up.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import socketio

from ._connection import Connection
from ._exceptions import GatewayError, GatewayNotRunning, InvalidPayload, NotFound, RateLimited
from ._identity import Identity
from ._log import log
from ._payload import PayloadSpec, encoded_size, parse_payload

if TYPE_CHECKING:
    from ._gateway import Gateway

__all__ = ["GatewayNamespace", "event", "failure", "success"]

Ack = dict[str, Any]
Handler = Callable[..., Awaitable[Mapping[str, Any] | None]]
H = TypeVar("H", bound=Handler)

_EVENT_SPEC = "__rtg_event__"
# Names socket.io reserves for its own use.
_RESERVED = frozenset({"connect", "disconnect", "connect_error"})


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
    type, an attrs class, or a parsing callable); ``max_size`` overrides the
    gateway's ``max_event_size`` for this event. Names may contain ``:``.
    """
    if not isinstance(name, str) or not name or name in _RESERVED:
        raise ValueError(f"invalid event name {name!r}")

    def decorate(handler: H) -> H:
        setattr(handler, _EVENT_SPEC, _EventSpec(name, payload, max_size))
        return handler

    return decorate


def success(fields: Mapping[str, Any] | None = None) -> Ack:
    """A success acknowledgement: ``{"success": true, **fields}``."""
    return {"success": True, **(fields or {})}


def failure(error: GatewayError) -> Ack:
    """A failure acknowledgement for ``error``."""
    ack: Ack = {"success": False, "error": error.message, "code": error.code}
    if isinstance(error, InvalidPayload) and error.field is not None:
        ack["field"] = error.field
    return ack


class GatewayNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """A socket.io namespace whose every socket is authenticated.

    Register instances with :meth:`Gateway.add_namespace`. Override
    :meth:`on_connected` / :meth:`on_disconnected` for per-socket set-up and
    clean-up, and declare events with :func:`event`.
    """

    _events: dict[str, tuple[str, _EventSpec]] = {}  # noqa: RUF012 (rebuilt per subclass)

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

    @property
    def event_names(self) -> frozenset[str]:
        """The events this namespace handles."""
        return frozenset(self._events)

    def identity(self, sid: str) -> Identity:
        """The identity of socket ``sid`` in this namespace."""
        return self.connection(sid).identity

    def connection(self, sid: str) -> Connection:
        """The :class:`Connection` of socket ``sid`` in this namespace."""
        conn = self.gateway.connection(sid)
        if conn is None or conn.namespace != self.namespace:
            raise NotFound("No such connection")
        return conn

    async def on_connected(self, conn: Connection) -> None:
        """Hook: the socket authenticated and was admitted. Raising refuses it."""

    async def on_disconnected(self, conn: Connection, reason: str) -> None:
        """Hook: the socket left, for any reason."""

    async def trigger_event(self, event_name: str, *args: Any) -> Any:
        """Route python-socketio's events; not for application use."""
        if event_name == "connect":
            await self._connect(*args)
            return None
        if event_name == "disconnect":
            await self._disconnect(args[0], args[1] if len(args) > 1 else "unknown")
            return None
        return await self._dispatch(event_name, args[0], args[1:])

    async def _connect(self, sid: str, environ: Mapping[str, Any], auth: Any = None) -> None:
        conn = await self.gateway._admit(sid, self.namespace, environ, auth)
        try:
            await self.on_connected(conn)
        except Exception as exc:
            await self.gateway._forget(sid, reason="setup failed")
            log(
                logging.ERROR,
                "connect_hook_failed",
                sid=sid,
                namespace=self.namespace,
                error=type(exc).__name__,
            )
            raise socketio.exceptions.ConnectionRefusedError(
                "Connection setup failed", {"code": "internal"}
            ) from None

    async def _disconnect(self, sid: str, reason: str) -> None:
        conn = await self.gateway._forget(sid, reason=str(reason))
        if conn is None:
            return
        try:
            await self.on_disconnected(conn, str(reason))
        except Exception as exc:
            log(
                logging.ERROR,
                "disconnect_hook_failed",
                sid=sid,
                namespace=self.namespace,
                error=type(exc).__name__,
            )

    async def _dispatch(self, event_name: str, sid: str, args: tuple[Any, ...]) -> Ack:
        metrics = self.gateway.metrics
        metrics.events_received[self.namespace] += 1
        try:
            conn = self.connection(sid)
            conn.touch()
            config = self.gateway.config
            if config.rate_limit is not None and not conn.take_token(
                config.rate_limit, config.rate_burst
            ):
                raise RateLimited("Too many events, slow down")
            attr, spec = self._lookup(event_name)
            payload = args[0] if len(args) == 1 else (list(args) if args else None)
            limit = spec.max_size if spec.max_size is not None else config.max_event_size
            if encoded_size(payload) > limit:
                raise InvalidPayload(f"Payload too large (limit {limit} bytes)")
            value = parse_payload(spec.payload, payload)
            result = await getattr(self, attr)(conn, value)
            return success(result)
        except GatewayError as exc:
            metrics.events_refused[exc.code] += 1
            return failure(exc)
        except Exception as exc:
            metrics.events_refused["internal"] += 1
            log(
                logging.ERROR,
                "handler_failed",
                sid=sid,
                namespace=self.namespace,
                event=event_name if event_name in self._events else None,
                error=type(exc).__name__,
            )
            return failure(GatewayError("Internal error"))

    def _lookup(self, event_name: str) -> tuple[str, _EventSpec]:
        found = self._events.get(event_name) if isinstance(event_name, str) else None
        if found is None:
            raise NotFound("Unknown event")
        return found
