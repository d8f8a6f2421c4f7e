"""Session timers: a socket's credential ends the socket when it expires.

:class:`SessionTimers` keeps, for every ready socket whose identity has
``expires_at``, two ``loop.call_at`` handles (no task per socket): one warns the
client ``auth:expiring`` ``refresh_ahead`` seconds before expiry, one ends the
socket at ``expires_at + expiry_grace``. The callbacks only queue work; one drain
task emits and disconnects in batches and yields to the loop between them, so
thousands of sockets expiring in the same second do not stall it.

:meth:`SessionTimers.arm` (re)arms a socket from its current identity, so
whatever replaces a socket's identity re-arms it; :meth:`SessionTimers.end`
ends a socket for any reason (the client gets ``auth:{reason}``), audited,
counted and logged as one session end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

import attrs

from ._connection import Connection
from ._log import log

if TYPE_CHECKING:
    from ._gateway import Gateway

__all__ = ["SessionTimers"]

# Sockets handled between two yields to the event loop.
_BATCH = 100
# How long ending one socket may take before it is forgotten by hand: a
# transport whose client has just dropped can make python-engineio wait forever.
_END_TIMEOUT = 5.0


@attrs.define(eq=False)
class _Entry:
    """One socket's timers, made from the identity it was armed with."""

    conn: Connection
    expires_at: float  # Unix time
    warning: asyncio.TimerHandle | None = None
    ending: asyncio.TimerHandle | None = None
    warned: bool = False

    def cancel(self) -> None:
        for handle in (self.warning, self.ending):
            if handle is not None:
                handle.cancel()


class SessionTimers:
    """The expiry timers of one gateway's sockets and the task that acts on them."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._entries: dict[str, _Entry] = {}
        self._queue: deque[tuple[_Entry, str]] = deque()
        self._drain: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, sid: object) -> bool:
        return sid in self._entries

    def arm(self, conn: Connection) -> None:
        """Start (or restart) ``conn``'s timers from its identity's ``expires_at``;
        an identity without one has none."""
        self.cancel(conn.sid)
        expires = conn.identity.expires_at
        if expires is None:
            return
        config = self._gateway.config
        loop = asyncio.get_running_loop()
        entry = _Entry(conn, expires.timestamp())
        # call_at runs on the loop's monotonic clock; expires_at is wall-clock time.
        ends_at = loop.time() + (entry.expires_at - time.time())
        entry.warning = loop.call_at(ends_at - config.refresh_ahead, self._warn, entry)
        entry.ending = loop.call_at(ends_at + config.expiry_grace, self._expire, entry)
        self._entries[conn.sid] = entry

    def rearm(self, conn: Connection) -> None:
        """Re-arm ``conn`` after its identity changed, if it is armed already."""
        if conn.sid in self._entries:
            self.arm(conn)

    def cancel(self, sid: str) -> None:
        """Drop ``sid``'s timers (it left); work already queued for it is skipped."""
        entry = self._entries.pop(sid, None)
        if entry is not None:
            entry.cancel()

    def end(self, conn: Connection, reason: str) -> None:
        """End ``conn``'s session for ``reason``: ``auth:{reason}`` ``{reason}``, then
        a server disconnect, soon (by the drain task)."""
        self.cancel(conn.sid)
        entry = _Entry(conn, 0.0, warned=True)
        self._entries[conn.sid] = entry
        self._push(entry, reason)

    async def close(self) -> None:
        """Cancel every timer and the drain task (the gateway stopped)."""
        for entry in self._entries.values():
            entry.cancel()
        self._entries.clear()
        self._queue.clear()
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
            self._drain = None

    # -- the timer callbacks: they only queue -------------------------------------

    def _warn(self, entry: _Entry) -> None:
        entry.warning = None
        if not entry.warned:
            entry.warned = True
            self._push(entry, "expiring")

    def _expire(self, entry: _Entry) -> None:
        entry.ending = None
        # Expiring is always heard before expired, even when both fall due together.
        self._warn(entry)
        self._push(entry, "expired")

    def _push(self, entry: _Entry, what: str) -> None:
        self._queue.append((entry, what))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_task(self._run())

    # -- the drain task ----------------------------------------------------------------

    async def _run(self) -> None:
        while self._queue:
            for _ in range(min(_BATCH, len(self._queue))):
                entry, what = self._queue.popleft()
                if self._entries.get(entry.conn.sid) is not entry:
                    continue  # the socket left or was re-armed since
                try:
                    if what == "expiring":
                        await self._send_warning(entry)
                    else:
                        await self._end(entry, what)
                except Exception as exc:
                    log(logging.ERROR, "session_timer_failed", error=type(exc).__name__)
            await asyncio.sleep(0)

    async def _send_warning(self, entry: _Entry) -> None:
        conn = entry.conn
        left = max(0, round(entry.expires_at - time.time()))
        await self._gateway.server.emit(
            "auth:expiring",
            {"expiresAt": round(entry.expires_at * 1000), "secondsLeft": left},
            to=conn.sid,
            namespace=conn.namespace,
        )

    async def _end(self, entry: _Entry, reason: str) -> None:
        gateway = self._gateway
        conn = entry.conn
        gateway.metrics.sessions_ended[reason] += 1
        log(
            logging.INFO,
            "session_ended",
            sid=conn.sid,
            user=conn.identity.user_id,
            namespace=conn.namespace,
            reason=reason,
        )
        await gateway.audit(conn.identity, "session", conn.namespace, allowed=False, reason=reason)
        server = gateway.server
        try:
            async with asyncio.timeout(_END_TIMEOUT):
                await server.emit(
                    f"auth:{reason}", {"reason": reason}, to=conn.sid, namespace=conn.namespace
                )
                await server.disconnect(conn.sid, namespace=conn.namespace)
        finally:
            namespace = gateway._namespaces.get(conn.namespace)
            if gateway.connection(conn.sid) is conn and namespace is not None:
                # The disconnect did not go through: forget the socket by hand,
                # telling its rooms, as python-socketio's disconnect would have.
                await namespace._disconnect(conn.sid, reason)
            self.cancel(conn.sid)
