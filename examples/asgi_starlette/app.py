"""The gateway composed into a Starlette app served by uvicorn.

The four built-in namespaces under the reference rules, the admin API mounted at
``/api/socket.io`` and the host's own routes next to socket.io: ``GET /`` describes
the app and ``GET /me`` authenticates the request with the gateway's own
authenticator (a bearer token or the ``rtg_session`` cookie).

Run with ``python examples/asgi_starlette/app.py [--host H] [--port P]
[--print-demo-token]``. The signing key comes from ``RTG_SECRET_KEY``; without it a
throwaway key is made and tokens only work until the process stops. uvicorn logs with
``uvicorn_log_config()``: no credentials in request lines.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import secrets
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from realtime_gateway import (
    AdminAPI,
    AuthenticationFailed,
    Gateway,
    Handshake,
    Identity,
    SignedTokenAuthenticator,
    default_namespaces,
    reference_rules,
    uvicorn_log_config,
)

# The salt `python -m realtime_gateway token` signs with by default.
SALT = "realtime_gateway.session"

log = logging.getLogger("asgi_starlette")


def secret_key() -> str:
    """The signing key from ``RTG_SECRET_KEY``, or a loudly announced throwaway one."""
    key = os.environ.get("RTG_SECRET_KEY")
    if key:
        return key
    print(
        "WARNING: RTG_SECRET_KEY is not set; using a throwaway key. "
        "Tokens signed with it stop working when this process exits.",
        file=sys.stderr,
    )
    return secrets.token_urlsafe(32)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[Mapping[str, Any]]:
    """The host's own startup and shutdown, which ``gateway.asgi_app`` keeps.

    The state yielded here reaches every request as ``request.state``.
    """
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    log.info("host app started")
    yield {"started_at": started_at}
    # The gateway has already shut down by now: asgi_app() runs its shutdown first.
    log.info("host app stopped")


def build_app(key: str) -> tuple[Any, SignedTokenAuthenticator]:
    """The ASGI app (socket.io around Starlette) and the authenticator minting its tokens."""
    authenticator = SignedTokenAuthenticator([key], salt=SALT, max_age=8 * 3600)
    gateway = Gateway(
        authenticator=authenticator,
        authorizer=reference_rules(),
        namespaces=default_namespaces(),
    )
    admin = AdminAPI(gateway)

    async def index(request: Request) -> JSONResponse:
        """What this app serves, for a curious visitor."""
        return JSONResponse(
            {
                "app": "realtime_gateway ASGI example (Starlette + uvicorn)",
                "startedAt": request.state.started_at,
                "socketio": {
                    "path": gateway.config.path,
                    "namespaces": sorted(gateway.namespaces),
                },
                "adminApi": admin.prefix,
                "routes": {
                    "GET /": "this page",
                    "GET /me": "who you are (Authorization: Bearer <token> or rtg_session)",
                },
            }
        )

    async def me(request: Request) -> JSONResponse:
        """The caller's identity, authenticated exactly as a socket would be."""
        handshake = Handshake.from_http(
            path=request.url.path,
            headers=request.headers,
            remote_address=request.client.host if request.client else None,
            scheme=request.url.scheme,
        )
        # No Origin check for the cookie: this GET changes nothing, and without CORS
        # headers a foreign page cannot read the answer.
        try:
            identity = await gateway.authenticate(handshake)
        except AuthenticationFailed as exc:
            return JSONResponse(
                {"success": False, "error": exc.message, "code": exc.code, "reason": exc.reason},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return JSONResponse(
            {
                "success": True,
                "userId": identity.user_id,
                "name": identity.name,
                "roles": sorted(identity.roles),
                "permissions": sorted(identity.permissions),
            }
        )

    host_app = Starlette(
        routes=[
            Route("/", index),
            Route("/me", me),
            Mount(admin.prefix, app=admin.asgi_app()),
        ],
        lifespan=lifespan,
    )
    # socket.io answers under /socket.io; every other request goes to Starlette.
    return gateway.asgi_app(host_app), authenticator


def main() -> None:
    """Parse the flags, print how to connect and serve with uvicorn."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--print-demo-token",
        action="store_true",
        help="print a live one-hour token for a demo doctor at start-up",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    app, authenticator = build_app(secret_key())
    base = f"http://{args.host}:{args.port}"
    print(f"Gateway on {base} (socket.io path /socket.io)")
    print(f"Health: {base}/api/socket.io/health   Who am I: {base}/me")
    if args.print_demo_token:  # a credential: off by default, start-up output gets shared
        doctor = Identity(
            user_id="demo-doctor",
            roles={"doctor"},
            permissions={"view:patient", "view:clinical_notes"},
            display_name="Doctor",
        )
        print("A token for a demo doctor (socket.io auth payload, or Authorization: Bearer):")
        print(f"  {authenticator.issue(doctor, ttl=3600)}")
    print(
        "Mint others with the same key: RTG_SECRET_KEY=... python -m realtime_gateway "
        "token --user-id u1 --role nurse --permission view:patient"
    )
    # Long-polling requests stay open up to the ping interval (25 s); do not let one
    # hold up Ctrl+C that long. The log config masks credentials in request lines.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        lifespan="on",
        timeout_graceful_shutdown=3,
        log_config=uvicorn_log_config(),
    )


if __name__ == "__main__":
    main()
