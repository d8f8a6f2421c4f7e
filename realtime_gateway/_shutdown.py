"""Graceful shutdown: the gateway's lifecycle state (:class:`Lifecycle`) and what
:meth:`Gateway.shutdown` does once it starts draining (:func:`drain`).

Tell every namespace ``server:shutdown``, wait (event-driven, up to the grace
period) for clients to leave, then disconnect the rest with every step bounded,
because a transport whose client has just dropped can make python-engineio wait
forever; whatever is still registered is forgotten by hand, so the registry ends
empty, and the process leaves its cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ._clock import epoch_ms
from ._log import log

if TYPE_CHECKING:
    from ._gateway import Gateway

__all__ = ["Lifecycle", "drain"]

# How long shutdown lets clients close their transports before closing them.
_TRANSPORT_CLOSE_WAIT = 1.0


class Lifecycle:
    """Whether a gateway runs (``state`` ``"running"``), drains or has stopped;
    :meth:`shut_down` drains once, and a second call waits for the first."""

    def __init__(self) -> None:
        self.state = "running"
        self._done: asyncio.Event | None = None

    async def shut_down(self, drain: Callable[[], Awaitable[None]]) -> None:
        """Run ``drain`` (once) while ``state`` is ``"draining"``, then stop."""
        if self._done is not None:
            await self._done.wait()
            return
        self._done = asyncio.Event()
        self.state = "draining"
        try:
            await drain()
        finally:
            self.state = "stopped"
            self._done.set()


async def drain(gateway: Gateway, grace: float, message: str) -> None:
    """Notify, wait up to ``grace`` seconds for clients to leave, disconnect the rest."""
    started = time.monotonic()
    log(logging.INFO, "shutdown_started", connections=len(gateway._live), grace_s=grace)
    try:
        notice = {"message": message, "timestamp": epoch_ms()}
        for namespace in gateway.namespaces:
            await gateway.server.emit("server:shutdown", notice, namespace=namespace)
        deadline = started + grace
        while gateway._live and (remaining := deadline - time.monotonic()) > 0:
            gateway._live.left.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gateway._live.left.wait(), remaining)
        await _disconnect_all(gateway)
    finally:
        log(logging.INFO, "shutdown_finished", ms=round((time.monotonic() - started) * 1000, 1))


async def _disconnect_all(gateway: Gateway) -> None:
    server = gateway.server
    disconnects = [
        server.disconnect(conn.sid, namespace=conn.namespace)
        for conn in list(gateway._live.values())
    ]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*disconnects, return_exceptions=True), 5)
    # A client told its last namespace is gone closes its transport itself; give
    # it a moment, so that a polling client's last request is still answered.
    deadline = time.monotonic() + _TRANSPORT_CLOSE_WAIT
    while server.environ and (remaining := deadline - time.monotonic()) > 0:
        server.transport_closed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.transport_closed.wait(), remaining)
    # Transports still open (no namespace joined, or the client is gone): close
    # without waiting for their queues, which a dead transport never drains.
    transports = [socket.close(wait=False) for socket in list(server.eio.sockets.values())]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*transports, return_exceptions=True), 2)
    server.eio.sockets = {}
    for sid in list(gateway._live):
        await gateway._forget(sid, reason="shutdown")
    await gateway._sessions.close()
    if gateway._recovery is not None:
        await gateway._recovery.close()
    await server.shutdown()
    if gateway._cluster is not None:
        await gateway._cluster.close()
