"""Mounting a gateway in a host's web server: aiohttp and ASGI.

:meth:`Gateway.attach`, :meth:`Gateway.run_aiohttp` and :meth:`Gateway.asgi_app` are
the public entry points; they call the functions here, which wire the gateway's
start and graceful shutdown into each framework's lifecycle.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import socketio
from aiohttp import web

from ._accesslog import RedactingAccessLogger, request_error_logger
from ._exceptions import GatewayError
from ._log import log, log_stack

if TYPE_CHECKING:
    from ._gateway import Gateway

__all__ = ["ASGIApp", "asgi_app", "attach", "run_aiohttp"]

# How long aiohttp's own shutdown waits for request handlers still running once the
# gateway has drained (the grace period is over by then) before cancelling them, and
# again for the cancelled ones; aiohttp's default (60 s each) lets a client that
# stops reading hold the process for minutes.
_HANDLER_WAIT = 1.0
# How long past the grace period the gateway's own shutdown may take in run_aiohttp.
_DRAIN_MARGIN = 5.0

ASGIApp = Any  # an ASGI application callable; kept loose to avoid an ASGI typing dependency


def attach(gateway: Gateway, app: web.Application) -> None:
    """Serve ``gateway`` from the aiohttp ``app``; the app's startup runs
    :meth:`Gateway.start` and its shutdown :meth:`Gateway.shutdown`."""
    server = gateway._build_server("aiohttp")
    server.attach(app, socketio_path=gateway.config.path.strip("/"))

    async def start(app: web.Application) -> None:
        await gateway.start()

    async def shut_down(app: web.Application) -> None:
        await gateway.shutdown()

    app.on_startup.append(start)
    app.on_shutdown.append(shut_down)


async def run_aiohttp(
    gateway: Gateway,
    app: web.Application,
    *,
    host: str,
    port: int,
    started: Callable[[str], None] | None,
    stop: asyncio.Event | None,
) -> None:
    """Serve ``app`` until SIGINT, SIGTERM or ``stop``, shutting ``gateway`` down
    before aiohttp's own shutdown (see :meth:`Gateway.run_aiohttp`), each bounded
    so that no client can keep the process alive."""
    runner = web.AppRunner(
        app,
        access_log_class=RedactingAccessLogger,
        logger=request_error_logger(),
        shutdown_timeout=_HANDLER_WAIT,
    )
    await runner.setup()
    loop = asyncio.get_running_loop()
    signals: list[signal.Signals] = []
    try:
        await web.TCPSite(runner, host, port).start()
        bound_host, bound_port = runner.addresses[0][:2]
        if started is not None:
            started(f"http://{bound_host}:{bound_port}")
        if stop is None:
            stop = asyncio.Event()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
                signals.append(signum)
        await stop.wait()
        bound = gateway.config.shutdown_grace + _DRAIN_MARGIN
        try:
            await asyncio.wait_for(gateway.shutdown(), bound)
        except TimeoutError:
            log(logging.WARNING, "shutdown_overran", bound_s=bound)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        await runner.cleanup()


def asgi_app(gateway: Gateway, other_asgi_app: ASGIApp | None) -> ASGIApp:
    """python-socketio's ASGI app for ``gateway`` around ``other_asgi_app``, with the
    gateway's start and shutdown on lifespan."""
    server = gateway._build_server("asgi")
    app = socketio.ASGIApp(
        server, other_asgi_app=other_asgi_app, socketio_path=gateway.config.path.strip("/")
    )
    return ShutdownOnLifespan(app, other_asgi_app, gateway)


class ShutdownOnLifespan:
    """python-socketio's ASGI app, with the gateway started on lifespan startup
    before the host app (a gateway that cannot start answers
    ``lifespan.startup.failed`` and the host app is not started), and its graceful
    shutdown run on lifespan shutdown before the host app's own, or as soon as the
    host app's startup fails."""

    def __init__(self, app: ASGIApp, host_app: ASGIApp | None, gateway: Gateway) -> None:
        self.app = app
        self.host_app = host_app
        self.gateway = gateway

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        message = await receive()
        if message.get("type") == "lifespan.startup":
            failure = await self._start()
            if failure is not None:
                # Said in a message rather than raised: an exception here would make
                # uvicorn's lifespan "auto" take the app for one without lifespan
                # support and serve anyway. The host app is never started.
                await send({"type": "lifespan.startup.failed", "message": failure})
                return
        if self.host_app is not None:
            first: Any = message

            async def receive_then_shut_down() -> Any:
                nonlocal first
                if first is not None:
                    replay, first = first, None
                    return replay
                message = await receive()
                if message.get("type") == "lifespan.shutdown":
                    await self.gateway.shutdown()
                return message

            async def send_after_shutdown(message: Any) -> None:
                if message.get("type") == "lifespan.startup.failed":
                    # The host app did not start: nothing will be served, so the
                    # gateway (its Redis connections, its timers) stops first.
                    await self.gateway.shutdown()
                await send(message)

            await self.host_app(scope, receive_then_shut_down, send_after_shutdown)
            return
        while True:
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.gateway.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return
            message = await receive()

    async def _start(self) -> str | None:
        """Start the gateway; what went wrong, in words safe to log, if it failed."""
        try:
            await self.gateway.start()
        except GatewayError as exc:
            return exc.message
        except Exception as exc:
            log(logging.ERROR, "gateway_start_failed", error=type(exc).__name__)
            log_stack("gateway_start_failed_traceback", exc)
            return f"the gateway failed to start ({type(exc).__name__})"
        return None
