"""One gateway process of a cluster, for tests/test_cluster.py, run as its own OS
process so that the test can kill it::

    python tests/cluster_node.py --port P --redis-url URL --secret KEY [--ttl T]
        [--max-age SECONDS] [--idle-timeout SECONDS] [--canary-interval SECONDS]
        [--max-sockets-per-user N] [--recovery-window SECONDS]

Serves the reference clinic gateway (built-in namespaces, reference rules, tokens
signed with ``--secret`` and accepted for ``--max-age`` seconds, idle logoff after
``--idle-timeout`` seconds and missed-message recovery for ``--recovery-window``
seconds if given) with its admin API, plus two test-only routes:
``POST /test/emit`` ``{kind, target, event, data, namespace, identity?}`` calls the
gateway's emit_to_user / emit_to_role / emit_to_room / broadcast / reauthorize, and
``GET /test/process`` answers this process's cluster name. Prints ``ready`` once it
serves; SIGTERM stops it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from typing import Any

from aiohttp import web

from realtime_gateway import (
    AdminAPI,
    Gateway,
    GatewayConfig,
    SignedTokenAuthenticator,
    default_namespaces,
    reference_rules,
)
from realtime_gateway._cluster import identity_from_json

SALT = "tests.session"  # the salt of tests/conftest.py's tokens


def build_app(args: argparse.Namespace) -> tuple[web.Application, Gateway]:
    gateway = Gateway(
        authenticator=SignedTokenAuthenticator([args.secret], salt=args.salt, max_age=args.max_age),
        authorizer=reference_rules(),
        namespaces=default_namespaces(),
        config=GatewayConfig(
            redis_url=args.redis_url,
            cluster_ttl=args.ttl,
            ping_interval=1,
            ping_timeout=1,
            connect_timeout=1,
            rate_limit=None,
            shutdown_grace=0.5,
            idle_timeout=args.idle_timeout,
            cluster_canary_interval=args.canary_interval,
            max_sockets_per_user=args.max_sockets_per_user,
            recovery_window=args.recovery_window,
        ),
    )
    app = web.Application()
    gateway.attach(app)
    AdminAPI(gateway).attach(app)

    async def emit(request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        kind = body["kind"]
        target = str(body.get("target"))
        event = body.get("event", "")
        data = body.get("data")
        namespace = body.get("namespace") or "/"
        if kind == "user":
            await gateway.emit_to_user(target, event, data, namespace=namespace)
        elif kind == "role":
            await gateway.emit_to_role(target, event, data, namespace=namespace)
        elif kind == "room":
            await gateway.emit_to_room(target, event, data, namespace=namespace)
        elif kind == "broadcast":
            await gateway.broadcast(event, data, namespace=namespace)
        elif kind == "reauthorize":
            identity = body.get("identity")
            revoked = await gateway.reauthorize(
                target, None if identity is None else identity_from_json(identity)
            )
            return web.json_response({"ok": True, "revoked": revoked})
        else:
            raise web.HTTPBadRequest(text=f"unknown kind {kind!r}")
        return web.json_response({"ok": True})

    async def process(request: web.Request) -> web.Response:
        return web.json_response({"process": gateway.process})

    app.router.add_post("/test/emit", emit)
    app.router.add_get("/test/process", process)
    return app, gateway


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--salt", default=SALT)
    parser.add_argument("--ttl", type=float, default=15.0)
    parser.add_argument("--max-age", type=float, default=600.0)
    parser.add_argument("--idle-timeout", type=float, default=None)
    parser.add_argument("--canary-interval", type=float, default=2.0)
    parser.add_argument("--max-sockets-per-user", type=int, default=50)
    parser.add_argument("--recovery-window", type=float, default=None)
    args = parser.parse_args()
    # Warnings go to stderr, which the test keeps in a file and reads.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    app, _ = build_app(args)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", args.port).start()
        print("ready", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
