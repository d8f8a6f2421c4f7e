"""A gateway served by uvicorn with its default ``lifespan="auto"``, as its own process.

``python tests/lifespan_node.py [REDIS_URL] [--host-app | --failing-host-app]``:
serves on an ephemeral port of 127.0.0.1 until stopped; ``--host-app`` mounts the
gateway around a Starlette app, ``--failing-host-app`` around one whose startup
raises. The gateway's log records go to standard error.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import AsyncIterator

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


@contextlib.asynccontextmanager
async def failing_startup(app: Starlette) -> AsyncIterator[None]:
    raise RuntimeError("the host app cannot start")
    yield


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("redis_url", nargs="?")
    parser.add_argument("--host-app", action="store_true")
    parser.add_argument("--failing-host-app", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    gateway = Gateway(
        authenticator=SignedTokenAuthenticator([SECRET], salt=SALT, max_age=60),
        authorizer=AllowAll(),
        config=GatewayConfig(redis_url=args.redis_url),
        namespaces=default_namespaces(),
    )
    host = None
    if args.host_app:
        host = Starlette()
    elif args.failing_host_app:
        host = Starlette(lifespan=failing_startup)
    app = gateway.asgi_app(host)
    uvicorn.run(app, host="127.0.0.1", port=0, lifespan="auto")


if __name__ == "__main__":
    main()
