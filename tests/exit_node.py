"""A small gateway app as its own OS process, for tests/test_process_exit.py::

    python tests/exit_node.py --grace SECONDS [--server aiohttp|uvicorn]
        [--graceful-timeout SECONDS]

Serves the built-in namespaces (tokens as in tests/conftest.py), the admin API and
``GET /big`` (a response of several megabytes, for a client that stops reading it)
with :meth:`Gateway.run_aiohttp`, or with uvicorn (``timeout_graceful_shutdown`` set
to ``--graceful-timeout`` as README's "Graceful shutdown" advises). Prints its URL
once it serves; SIGTERM shuts it down.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
from collections.abc import AsyncIterator

import uvicorn
from aiohttp import web
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Mount, Route

from realtime_gateway import (
    AdminAPI,
    Gateway,
    GatewayConfig,
    SignedTokenAuthenticator,
    default_namespaces,
    reference_rules,
)

SECRET = "test-secret-key-0123456789abcdef"  # tests/conftest.py's
SALT = "tests.session"
CHUNK = b"x" * 65536
CHUNKS = 400


def build_gateway(grace: float) -> Gateway:
    return Gateway(
        authenticator=SignedTokenAuthenticator([SECRET], salt=SALT, max_age=600),
        authorizer=reference_rules(),
        namespaces=default_namespaces(),
        config=GatewayConfig(shutdown_grace=grace, rate_limit=None),
    )


async def serve_aiohttp(gateway: Gateway) -> None:
    app = web.Application()
    gateway.attach(app)
    AdminAPI(gateway).attach(app)

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(CHUNKS):
            await response.write(CHUNK)
        return response

    app.router.add_get("/big", big)
    await gateway.run_aiohttp(
        app, host="127.0.0.1", port=0, started=lambda url: print(url, flush=True)
    )


async def serve_uvicorn(gateway: Gateway, graceful_timeout: int | None) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(CHUNKS):
            yield CHUNK

    async def big(request: Request) -> StreamingResponse:
        return StreamingResponse(chunks())

    admin = AdminAPI(gateway)
    host_app = Starlette(routes=[Route("/big", big), Mount(admin.prefix, app=admin.asgi_app())])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        gateway.asgi_app(host_app),
        lifespan="on",
        ws="websockets-sansio",
        timeout_graceful_shutdown=graceful_timeout,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    await task


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grace", type=float, required=True)
    parser.add_argument("--server", choices=("aiohttp", "uvicorn"), default="aiohttp")
    parser.add_argument("--graceful-timeout", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    gateway = build_gateway(args.grace)
    if args.server == "aiohttp":
        await serve_aiohttp(gateway)
    else:
        await serve_uvicorn(gateway, args.graceful_timeout)


if __name__ == "__main__":
    asyncio.run(main())
