"""One gateway process of a cluster: run two of them on two ports against one Redis.

    redis-server --port 6379 &
    RTG_SECRET_KEY=... python examples/redis_cluster/app.py --port 8001 &
    RTG_SECRET_KEY=... python examples/redis_cluster/app.py --port 8002 &
    RTG_SECRET_KEY=... python examples/redis_cluster/try_it.py

Both processes must share ``RTG_SECRET_KEY``: it signs the users' tokens and, under
another salt, every message the processes exchange through Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from aiohttp import web

from realtime_gateway import (
    AdminAPI,
    Gateway,
    GatewayConfig,
    SignedTokenAuthenticator,
    default_namespaces,
    reference_rules,
)

# The salt `python -m realtime_gateway token` signs with by default.
SALT = "realtime_gateway.session"


def build_app(key: str, redis_url: str) -> tuple[web.Application, Gateway]:
    """An aiohttp app serving one cluster member with its admin API, and its gateway."""
    gateway = Gateway(
        authenticator=SignedTokenAuthenticator([key], salt=SALT, max_age=8 * 3600),
        authorizer=reference_rules(),
        namespaces=default_namespaces(),
        config=GatewayConfig(redis_url=redis_url, cluster_ttl=15.0),
    )
    app = web.Application()
    gateway.attach(app)  # startup connects to Redis and fails fast if it cannot
    AdminAPI(gateway).attach(app)
    return app, gateway


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    key = os.environ.get("RTG_SECRET_KEY")
    if not key:
        sys.exit("Set RTG_SECRET_KEY (the same on every process of the cluster).")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    print(f"Cluster member on http://{args.host}:{args.port}, Redis {args.redis_url}")
    app, gateway = build_app(key, args.redis_url)
    # Shuts the gateway down before the web server, and logs requests without
    # their credentials (sid and token query values, Authorization, Cookie).
    asyncio.run(gateway.run_aiohttp(app, host=args.host, port=args.port))


if __name__ == "__main__":
    main()
