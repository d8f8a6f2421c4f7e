"""The example clinic gateway on aiohttp: the four built-in namespaces under the
reference rules.

Run with ``make demo`` or ``python examples/aiohttp_clinic/app.py [--host H] [--port P]``.
The signing key comes from ``RTG_SECRET_KEY``; without it a throwaway key is made
and printed tokens only work until the process stops.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys

from aiohttp import web

from realtime_gateway import (
    AdminAPI,
    Gateway,
    Identity,
    SignedTokenAuthenticator,
    default_namespaces,
    reference_rules,
)

SALT = "realtime_gateway.session"


def secret_key() -> str:
    key = os.environ.get("RTG_SECRET_KEY")
    if key:
        return key
    print(
        "WARNING: RTG_SECRET_KEY is not set; using a throwaway key. "
        "Tokens signed with it stop working when this process exits.",
        file=sys.stderr,
    )
    return secrets.token_urlsafe(32)


def build_app(key: str) -> tuple[web.Application, SignedTokenAuthenticator]:
    authenticator = SignedTokenAuthenticator([key], salt=SALT, max_age=8 * 3600)
    gateway = Gateway(
        authenticator=authenticator,
        authorizer=reference_rules(),
        namespaces=default_namespaces(),
    )
    app = web.Application()
    gateway.attach(app)
    AdminAPI(gateway).attach(app)

    async def index(request: web.Request) -> web.Response:
        return web.Response(text="realtime_gateway example clinic: connect with socket.io\n")

    app.router.add_get("/", index)
    return app, authenticator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    key = secret_key()
    app, authenticator = build_app(key)
    nurse = Identity(
        user_id="demo-nurse", roles={"nurse"}, permissions={"view:patient"}, display_name="Nurse"
    )
    token = authenticator.issue(nurse, ttl=3600)
    print(f"Gateway on http://{args.host}:{args.port} (socket.io path /socket.io)")
    print(f"Health: http://{args.host}:{args.port}/api/socket.io/health")
    print("Connect with a token in the socket.io auth payload, e.g. for a demo nurse:")
    print(f"  {token}")
    print(
        "Mint others with the same key: RTG_SECRET_KEY=... python -m realtime_gateway "
        "token --user-id u1 --role doctor"
    )
    web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
