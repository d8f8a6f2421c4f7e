"""The caller of an HTTP route (FastAPI or Starlette), identified as a socket is.

:meth:`Gateway.identity_dependency` returns the coroutine function built here. It
needs Starlette (FastAPI brings it), which is why the gateway imports this module
only when asked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from ._exceptions import AuthenticationFailed, AuthFailureReason
from ._identity import Handshake, Identity

if TYPE_CHECKING:
    from ._gateway import Gateway

__all__ = ["IdentityDependency", "identity_dependency"]

IdentityDependency = Callable[[HTTPConnection], Awaitable[Identity]]
"""A FastAPI dependency (or a coroutine a Starlette endpoint awaits) giving the
caller's :class:`Identity`."""

# One answer for every refusal: the reason is counted and logged, never told.
_UNAUTHENTICATED = "Not authenticated"


def identity_dependency(gateway: Gateway) -> IdentityDependency:
    """See :meth:`Gateway.identity_dependency`."""

    async def current_identity(connection: HTTPConnection) -> Identity:
        scope = connection.scope
        # The route's template, not the URL: a path may carry resource ids.
        route = getattr(scope.get("route"), "path", None)
        handshake = Handshake.from_http(
            path=route if isinstance(route, str) else "http",
            headers=connection.headers,
            query=dict(connection.query_params),
            remote_address=connection.client.host if connection.client else None,
            scheme=connection.url.scheme,
        )
        try:
            if handshake.cookies and not gateway._origins.credentials_allowed(
                handshake.origin,
                {"HTTP_HOST": handshake.host or "", "wsgi.url_scheme": handshake.scheme},
            ):
                # As for a socket: another site's page must not ride the session cookie.
                refusal = AuthenticationFailed(AuthFailureReason.ORIGIN)
                gateway._refused(handshake, refusal)
                raise refusal
            return await gateway.authenticate(handshake)
        except AuthenticationFailed:
            raise HTTPException(
                401, detail=_UNAUTHENTICATED, headers={"WWW-Authenticate": "Bearer"}
            ) from None

    return current_identity
