"""The library's errors, all rooted at :class:`GatewayError`.

Exception hierarchy::

    GatewayError                    code "internal"
     +-- ConfigurationError         a bad setting, raised at construction
     +-- AuthenticationFailed       code "unauthenticated", carries a reason category
     +-- PermissionDenied           code "forbidden", carries action, target and reason
     +-- InvalidPayload             code "invalid_payload", names the offending field
     +-- NotFound                   code "not_found"
     +-- RateLimited                code "rate_limited"
     +-- LimitExceeded              code "limit_exceeded", carries a reason category
     +-- GatewayNotRunning          code "unavailable", the gateway is not mounted yet

Every error has a machine ``code`` and a human message that is safe to show a
client: messages never contain tokens, cookies or payload values.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AuthFailureReason",
    "AuthenticationFailed",
    "ConfigurationError",
    "GatewayError",
    "GatewayNotRunning",
    "InvalidPayload",
    "LimitExceeded",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
]


class GatewayError(Exception):
    """Root of every error the library raises on purpose."""

    code: ClassVar[str] = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(GatewayError, ValueError):
    """A setting is invalid; ``field`` names it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class AuthFailureReason:
    """Reason categories for refused authentication, safe to log and count."""

    MISSING = "missing"
    """No credential was presented."""
    MALFORMED = "malformed"
    """A credential was presented but is not shaped like one."""
    BAD_SIGNATURE = "bad_signature"
    """The signature does not verify: tampered, signed with an unknown key or salt."""
    EXPIRED = "expired"
    """The credential verified but is older than allowed."""
    REJECTED = "rejected"
    """An application lookup did not recognise the credential."""
    REVOKED = "revoked"
    """The credential verified but its session or user was revoked."""
    ORIGIN = "origin"
    """A cookie-carrying handshake came from an origin that is not allowed."""
    ERROR = "error"
    """The authenticator itself failed unexpectedly."""

    ALL: ClassVar[frozenset[str]] = frozenset(
        {MISSING, MALFORMED, BAD_SIGNATURE, EXPIRED, REJECTED, REVOKED, ORIGIN, ERROR}
    )


_REASON_MESSAGES = {
    AuthFailureReason.MISSING: "Authentication required",
    AuthFailureReason.MALFORMED: "Authentication failed: malformed credentials",
    AuthFailureReason.BAD_SIGNATURE: "Authentication failed: invalid credentials",
    AuthFailureReason.EXPIRED: "Authentication failed: credentials expired",
    AuthFailureReason.REJECTED: "Authentication failed: credentials not recognised",
    AuthFailureReason.REVOKED: "Authentication failed: session revoked",
    AuthFailureReason.ORIGIN: "Authentication failed: origin not allowed",
    AuthFailureReason.ERROR: "Authentication failed: authentication unavailable",
}


class AuthenticationFailed(GatewayError):
    """The caller could not be authenticated; ``reason`` is an :class:`AuthFailureReason`."""

    code = "unauthenticated"

    def __init__(self, reason: str, message: str | None = None) -> None:
        if reason not in AuthFailureReason.ALL:
            raise ValueError(f"unknown authentication failure reason {reason!r}")
        super().__init__(message or _REASON_MESSAGES[reason])
        self.reason = reason


class PermissionDenied(GatewayError):
    """The authorizer refused ``action`` on ``target``."""

    code = "forbidden"

    def __init__(
        self, action: str, target: str | None = None, reason: str = "no rule allows it"
    ) -> None:
        super().__init__(f"Not allowed to {action}" + (f" {target}" if target else ""))
        self.action = action
        self.target = target
        self.reason = reason


class InvalidPayload(GatewayError):
    """An event payload or request body failed validation; ``field`` names where."""

    code = "invalid_payload"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(GatewayError):
    """The named thing (event, socket, user, resource type) does not exist."""

    code = "not_found"


class RateLimited(GatewayError):
    """The connection sent more events than its budget allows."""

    code = "rate_limited"


class LimitExceeded(GatewayError):
    """A bound on what one client may hold was reached; ``reason`` says which, as
    one of the categories below (safe to log, count and show the client)."""

    code = "limit_exceeded"

    TOO_MANY_ROOMS: ClassVar[str] = "too_many_rooms"
    """The socket is in ``GatewayConfig.max_rooms_per_socket`` rooms already."""
    TOO_MANY_CONNECTIONS: ClassVar[str] = "too_many_connections"
    """The user has ``GatewayConfig.max_sockets_per_user`` sockets already."""

    REASONS: ClassVar[frozenset[str]] = frozenset({TOO_MANY_ROOMS, TOO_MANY_CONNECTIONS})

    def __init__(self, reason: str, message: str) -> None:
        if reason not in self.REASONS:
            raise ValueError(f"unknown limit reason {reason!r}")
        super().__init__(message)
        self.reason = reason


class GatewayNotRunning(GatewayError):
    """The gateway has not been mounted on a server yet, or is shutting down."""

    code = "unavailable"
