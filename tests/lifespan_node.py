"""A gateway served by uvicorn with its default ``lifespan="auto"``, as its own process.

``python tests/lifespan_node.py REDIS_URL [--host-app]``: serves on an ephemeral port
of 127.0.0.1 until stopped; ``--host-app`` mounts the gateway around a Starlette app.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette

from realtime_gateway import (
    AllowAll,
    Gateway,
    GatewayConfig,
    SignedTokenAuthenticator,
    default_namespaces,
)
from tests.conftest import SALT, SECRET


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("redis_url")
    parser.add_argument("--host-app", action="store_true")
    args = parser.parse_args()
    gateway = Gateway(
        authenticator=SignedTokenAuthenticator([SECRET], salt=SALT, max_age=60),
        authorizer=AllowAll(),
        config=GatewayConfig(redis_url=args.redis_url),
        namespaces=default_namespaces(),
    )
    app = gateway.asgi_app(Starlette() if args.host_app else None)
    uvicorn.run(app, host="127.0.0.1", port=0, lifespan="auto")


if __name__ == "__main__":
    main()
