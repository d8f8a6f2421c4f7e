"""The admin HTTP API: one framework-agnostic core and two thin adapters.

:meth:`AdminAPI.handle` takes a request (method, path below the prefix, headers,
body) and returns an :class:`AdminResponse` (status and JSON); :meth:`AdminAPI.attach`
serves it from an aiohttp app and :meth:`AdminAPI.asgi_app` is an ASGI app to mount
in Starlette or FastAPI. Callers authenticate with the gateway's authenticator
(bearer token or session cookie); every endpoint but ``/health`` needs the
authorizer to allow action ``admin`` on the route (``/user/{userId}/status`` is
also open to that user).

Bodies are those of the Node service the library replaces: ``{"success": true,
"data": {...}}`` (actions add a ``message`` saying what was done, without ids) and
``{"success": false, "error": "...", "code": "..."}``; times are epoch milliseconds.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from aiohttp import web

from ._clock import epoch_ms
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
from ._identity import Handshake, Identity
from ._log import log
from ._protocol import BadJson, JsonCodec

if TYPE_CHECKING:
    from ._gateway import Gateway

__all__ = ["DEFAULT_ADMIN_PREFIX", "AdminAPI", "AdminResponse"]

DEFAULT_ADMIN_PREFIX = "/api/socket.io"
"""Where :class:`AdminAPI` serves its endpoints unless given another ``prefix``."""
JSON_TYPE = "application/json"
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_STATUS = {
    "invalid_payload": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "rate_limited": 429,
    "limit_exceeded": 429,
    "internal": 500,
    "unavailable": 503,
}


@attrs.frozen
class AdminResponse:
    """What an admin endpoint answers: a status, a JSON body (or text), headers."""

    status: int
    body: Mapping[str, Any] | str
    content_type: str = JSON_TYPE
    headers: Mapping[str, str] = attrs.field(factory=dict)

    def encode(self) -> bytes:
        """The body as bytes."""
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body, separators=(",", ":")).encode()


def _ok(data: Mapping[str, Any], message: str | None = None) -> AdminResponse:
    body: dict[str, Any] = {"success": True}
    if message is not None:
        body["message"] = message
    body["data"] = data
    return AdminResponse(200, body)


def _total(counts: object) -> int:
    return sum(counts.values()) if isinstance(counts, Mapping) else 0


# What /health reports for each lifecycle state of the gateway. SPEC's statuses are
# healthy, not_initialized and draining only (monitors switch on them): a process
# deaf to the cluster bus is not ready to serve, and ``state`` says why.
_HEALTH = {
    "running": "healthy",
    "not_mounted": "not_initialized",
    "stopped": "not_initialized",
    "degraded": "not_initialized",
}
_UNHEALTHY = {
    "not_mounted": "The gateway is not mounted",
    "stopped": "The gateway has stopped",
    "draining": "The gateway is shutting down",
    "degraded": "The gateway has lost its cluster",
}


def _error(error: GatewayError, status: int | None = None) -> AdminResponse:
    body: dict[str, Any] = {"success": False, "error": error.message, "code": error.code}
    if isinstance(error, InvalidPayload) and error.field is not None:
        body["field"] = error.field
    if isinstance(error, AuthenticationFailed):
        body["reason"] = error.reason
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, AuthenticationFailed) else {}
    return AdminResponse(status or _STATUS.get(error.code, 500), body, headers=headers)


Handler = Callable[["_Call"], Awaitable[AdminResponse]]


@attrs.frozen
class _Route:
    method: str
    template: str
    regex: re.Pattern[str]
    handler: str
    access: str  # "public", "admin", or "self" (the user in the path, or an admin)
    body: bool


def _route(
    method: str, template: str, handler: str, access: str = "admin", *, body: bool | None = None
) -> _Route:
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    takes_body = method == "POST" if body is None else body
    return _Route(method, template, re.compile(pattern), handler, access, takes_body)


# More specific templates come first: /notify/role/{role} before /notify/{userId}.
_ROUTES = (
    _route("GET", "/health", "_health", "public"),
    _route("GET", "/metrics", "_metrics"),
    _route("GET", "/metrics/prometheus", "_prometheus"),
    _route("GET", "/connections", "_connections"),
    _route("GET", "/user/{userId}/status", "_user_status", "self"),
    _route("POST", "/broadcast", "_broadcast"),
    _route("POST", "/notify/role/{role}", "_notify_role"),
    _route("POST", "/notify/{userId}", "_notify_user"),
    _route("POST", "/revoke/session/{sessionId}", "_revoke_session", body=False),
    _route("POST", "/revoke/user/{userId}", "_revoke_user", body=False),
    _route("DELETE", "/disconnect/user/{userId}", "_disconnect_user"),
    _route("DELETE", "/disconnect/{socketId}", "_disconnect_socket"),
)


@attrs.frozen
class _Call:
    params: Mapping[str, str]
    identity: Identity | None
    body: Mapping[str, Any]


class AdminAPI:
    """The admin HTTP API of ``gateway``.

    ``prefix`` is where :meth:`attach` serves it (default ``/api/socket.io``; with
    :meth:`asgi_app`, mount the app there). ``roles``, when given, are the roles
    ``/notify/role/{role}`` accepts. ``max_body_size`` bounds a request body (bytes).
    """

    def __init__(
        self,
        gateway: Gateway,
        *,
        prefix: str = DEFAULT_ADMIN_PREFIX,
        roles: Iterable[str] | None = None,
        max_body_size: int = 64 * 1024,
    ) -> None:
        if not prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError(f"prefix must start and not end with '/', got {prefix!r}")
        self.gateway = gateway
        self.prefix = prefix
        self.roles = None if roles is None else frozenset(roles)
        self.max_body_size = max_body_size
        self._json = JsonCodec(gateway.config.max_nesting_depth)

    # -- the core ------------------------------------------------------------------

    async def handle(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        body: bytes = b"",
        remote_address: str | None = None,
        scheme: str = "http",
    ) -> AdminResponse:
        """Answer one request; ``path`` is below the prefix (``/health``)."""
        try:
            route, params = self._match(method.upper(), path)
        except _MethodNotAllowed as exc:
            return AdminResponse(
                405,
                {"success": False, "error": "Method not allowed", "code": "not_found"},
                headers={"Allow": ", ".join(exc.allowed)},
            )
        except NotFound as exc:
            return _error(exc)
        try:
            if route.access != "public" and self.gateway.state != "running":
                raise GatewayNotRunning("The gateway is not running")
            identity = None
            if route.access != "public":
                handshake = Handshake.from_http(
                    path=self.prefix + route.template,  # the template: no ids in logs
                    headers=headers,
                    remote_address=remote_address,
                    scheme=scheme,
                )
                identity = await self._authenticate(handshake)
                await self._authorize(identity, route, params)
            parsed = self._parse_body(headers, body) if route.body else {}
            handler: Handler = getattr(self, route.handler)
            return await handler(_Call(params, identity, parsed))
        except GatewayError as exc:
            return _error(exc)
        except Exception as exc:
            log(
                logging.ERROR,
                "admin_handler_failed",
                route=route.template,
                error=type(exc).__name__,
            )
            return _error(GatewayError("Internal error"))

    def _match(self, method: str, path: str) -> tuple[_Route, dict[str, str]]:
        allowed: list[str] = []
        for route in _ROUTES:
            found = route.regex.fullmatch(path)
            if found is None:
                continue
            if route.method == method:
                return route, found.groupdict()
            allowed.append(route.method)
        if allowed:
            raise _MethodNotAllowed(allowed)
        raise NotFound("No such endpoint")

    async def _authenticate(self, handshake: Handshake) -> Identity:
        if handshake.cookies and not self.gateway._origins.credentials_allowed(
            handshake.origin,
            {"HTTP_HOST": handshake.host or "", "wsgi.url_scheme": handshake.scheme},
        ):
            # A cross-site page must not ride an admin's session cookie.
            self.gateway._refused(handshake, AuthenticationFailed(AuthFailureReason.ORIGIN))
            raise PermissionDenied("admin", None, "origin not allowed")
        return await self.gateway.authenticate(handshake)

    async def _authorize(
        self, identity: Identity, route: _Route, params: Mapping[str, str]
    ) -> None:
        if route.access == "self" and identity.user_id == params.get("userId"):
            await self.gateway.audit(identity, "admin", route.template, allowed=True, reason="self")
            return
        await self.gateway.authorize(identity, "admin", route.template)

    def _parse_body(self, headers: Mapping[str, str], body: bytes) -> Mapping[str, Any]:
        if len(body) > self.max_body_size:
            raise InvalidPayload(f"Body too large (limit {self.max_body_size} bytes)")
        content_type = next(
            (value for key, value in headers.items() if key.lower() == "content-type"), ""
        )
        if content_type.split(";")[0].strip().lower() != JSON_TYPE:
            # Also what keeps a cross-site form from posting here with a cookie.
            raise InvalidPayload("Content-Type must be application/json")
        try:
            parsed = self._json.loads(body or b"null")
        except BadJson:
            raise InvalidPayload(
                f"Body is not valid JSON nested at most {self._json.max_depth} deep"
            ) from None
        if not isinstance(parsed, dict):
            raise InvalidPayload("Body must be a JSON object")
        return parsed

    # -- endpoints -----------------------------------------------------------------

    async def _health(self, call: _Call) -> AdminResponse:
        gateway = self.gateway
        state = gateway.state
        users = await gateway.registry.users() if state != "not_mounted" else frozenset()
        if state == "running" and gateway.degraded:
            state = "degraded"
        status = _HEALTH.get(state, state)
        data = {
            "status": status,
            "state": state,
            "initialized": state in ("running", "degraded", "draining"),
            "activeConnections": len(gateway.connections),
            "connectedUsers": len(users),
            "timestamp": epoch_ms(),
        }
        if status == "healthy":
            return _ok(data)
        # A failure envelope that still carries the figures a monitor reads.
        error = {"success": False, "error": _UNHEALTHY.get(state, "Not running")}
        return AdminResponse(503, {**error, "code": "unavailable", "data": data})

    async def _metrics(self, call: _Call) -> AdminResponse:
        own = await self.gateway.stats()
        cluster = await self.gateway.cluster_stats()
        # With a cluster, the summary is the whole service's, as one Node process was.
        figures = own if cluster is None else cluster["total"]
        data: dict[str, Any] = {
            "connections": {
                "total": figures.get("connections_total", 0),
                "active": figures.get("connections_active", 0),
                "uniqueUsers": figures.get("users_connected", 0),
            },
            "authentication": {"failures": _total(figures.get("auth_failures"))},
            "messages": {"total": _total(figures.get("events_received"))},
            "reconnections": figures.get("reconnections", 0),
            "timestamp": epoch_ms(),
            "metrics": own,
        }
        if cluster is not None:
            data["process"] = self.gateway.process
            data["cluster"] = cluster
        return _ok(data)

    async def _prometheus(self, call: _Call) -> AdminResponse:
        try:
            from ._prometheus import exposition
        except ImportError:
            return AdminResponse(
                501,
                {
                    "success": False,
                    "error": "Prometheus exposition needs the realtime_gateway[prometheus] extra",
                    "code": "not_implemented",
                },
            )
        text = exposition(await self.gateway.stats())
        return AdminResponse(200, text, content_type=PROMETHEUS_TYPE)

    async def _connections(self, call: _Call) -> AdminResponse:
        infos = await self.gateway.registry.connections()
        return _ok({"count": len(infos), "connections": [info.to_json() for info in infos]})

    async def _user_status(self, call: _Call) -> AdminResponse:
        user_id = call.params["userId"]
        sockets = await self.gateway.user_sockets(user_id)
        return _ok(
            {
                "userId": user_id,
                "isConnected": bool(sockets),
                "connectionCount": len(sockets),
                "sockets": [info.to_json() for info in sockets],
            }
        )

    async def _broadcast(self, call: _Call) -> AdminResponse:
        body = call.body
        event = _required_text(body, "event")
        data = _optional_object(body, "data")
        namespace = _optional_text(body, "namespace") or "/"
        room = _optional_text(body, "room")
        if room is None:
            await self.gateway.broadcast(event, data, namespace=namespace)
            message = "Event broadcast to the namespace"
        else:
            await self.gateway.emit_to_room(room, event, data, namespace=namespace)
            message = "Event sent to the room"
        return _ok({"event": event, "namespace": namespace, "room": room}, message)

    async def _notify_user(self, call: _Call) -> AdminResponse:
        user_id = call.params["userId"]
        note = await self.gateway.notify_user(user_id, **_notification_fields(call.body))
        connected = await self.gateway.is_user_connected(user_id)
        return _ok(
            {"userId": user_id, "notification": note, "delivered": connected},
            "Notification sent to the user",
        )

    async def _notify_role(self, call: _Call) -> AdminResponse:
        role = call.params["role"]
        if self.roles is not None and role not in self.roles:
            raise InvalidPayload(
                f"Unknown role (known: {', '.join(sorted(self.roles))})", field="role"
            )
        note = await self.gateway.notify_role(role, **_notification_fields(call.body))
        return _ok({"role": role, "notification": note}, "Notification sent to the role")

    async def _disconnect_socket(self, call: _Call) -> AdminResponse:
        sid = call.params["socketId"]
        if not await self.gateway.disconnect_socket(sid):
            raise NotFound("No such socket")
        return _ok({"socketId": sid, "disconnected": 1}, "Socket disconnected")

    async def _disconnect_user(self, call: _Call) -> AdminResponse:
        user_id = call.params["userId"]
        count = await self.gateway.disconnect_user(user_id)
        if not count:
            raise NotFound("The user has no connected sockets")
        return _ok({"userId": user_id, "disconnected": count}, "User's sockets disconnected")

    async def _revoke_session(self, call: _Call) -> AdminResponse:
        count = await self.gateway.revoke_session(call.params["sessionId"])
        return _ok({"disconnected": count}, "Session revoked")

    async def _revoke_user(self, call: _Call) -> AdminResponse:
        count = await self.gateway.revoke_user(call.params["userId"])
        return _ok({"disconnected": count}, "User's sessions revoked")

    # -- adapters ------------------------------------------------------------------

    def attach(self, app: web.Application) -> None:
        """Serve the API from the aiohttp application ``app`` under ``prefix``; once
        per app and prefix (again raises :class:`ConfigurationError`)."""

        async def serve(request: web.Request) -> web.StreamResponse:
            body = bytearray()
            # read(n) returns what has arrived so far, so a body sent in pieces is
            # read piece by piece, up to one byte over the limit.
            while len(body) <= self.max_body_size:
                chunk = await request.content.read(self.max_body_size + 1 - len(body))
                if not chunk:
                    break
                body += chunk
            peer = request.transport.get_extra_info("peername") if request.transport else None
            answer = await self.handle(
                request.method,
                "/" + request.match_info["tail"],
                headers=request.headers,
                body=bytes(body),
                remote_address=peer[0] if peer else None,
                scheme=request.scheme,
            )
            return web.Response(
                status=answer.status,
                body=answer.encode(),
                headers={"Content-Type": answer.content_type, **answer.headers},
            )

        route = self.prefix + "/{tail:.*}"
        if any(
            resource.canonical == self.prefix + "/{tail}" for resource in app.router.resources()
        ):
            # aiohttp itself would only say "Added route will never be executed".
            raise ConfigurationError(
                "prefix", f"an admin API is already attached to this app at {self.prefix}"
            )
        app.router.add_route("*", route, serve)

    def asgi_app(self) -> Callable[..., Awaitable[None]]:
        """An ASGI app serving the API; mount it at ``prefix`` (Starlette's
        ``Mount(admin.prefix, app=admin.asgi_app())``)."""

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                raise RuntimeError("the admin API serves HTTP only")
            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            body = bytearray()
            more = True
            while more and len(body) <= self.max_body_size:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
            headers = {
                key.decode("latin-1"): value.decode("latin-1")
                for key, value in scope.get("headers", ())
            }
            client = scope.get("client")
            answer = await self.handle(
                scope["method"],
                path or "/",
                headers=headers,
                body=bytes(body),
                remote_address=client[0] if client else None,
                scheme=scope.get("scheme", "http"),
            )
            raw_headers = [(b"content-type", answer.content_type.encode())]
            raw_headers += [(k.lower().encode(), v.encode()) for k, v in answer.headers.items()]
            await send(
                {"type": "http.response.start", "status": answer.status, "headers": raw_headers}
            )
            await send({"type": "http.response.body", "body": answer.encode()})

        return app


class _MethodNotAllowed(Exception):
    def __init__(self, allowed: list[str]) -> None:
        super().__init__("method not allowed")
        self.allowed = allowed


def _required_text(body: Mapping[str, Any], field: str) -> str:
    value = body.get(field)
    if value is None:
        raise InvalidPayload(f"Missing field '{field}'", field=field)
    if not isinstance(value, str) or not value.strip():
        raise InvalidPayload(f"'{field}' must be non-empty text", field=field)
    return value


def _optional_text(body: Mapping[str, Any], field: str) -> str | None:
    if body.get(field) is None:
        return None
    return _required_text(body, field)


def _optional_object(body: Mapping[str, Any], field: str) -> dict[str, Any] | None:
    value = body.get(field)
    if value is not None and not isinstance(value, dict):
        raise InvalidPayload(f"'{field}' must be an object", field=field)
    return value


def _notification_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    kind = body.get("type", "info")
    if not isinstance(kind, str):
        raise InvalidPayload("'type' must be text", field="type")
    message = body.get("message", "")
    if not isinstance(message, str):
        raise InvalidPayload("'message' must be text", field="message")
    return {
        "title": _required_text(body, "title"),
        "message": message,
        "type": kind,
        "data": _optional_object(body, "data"),
    }
