"""Session timers: a socket's credential ends the socket when it expires, and an
idle client connection is logged off.

:class:`SessionTimers` keeps, for every ready socket whose identity has
``expires_at``, two ``loop.call_at`` handles (no task per socket): one warns the
client ``auth:expiring`` ``refresh_ahead`` seconds before expiry, one ends the
socket at ``expires_at + expiry_grace``. With ``idle_timeout`` set, each client
connection (engine.io connection) has one more handle and the time of its last
event; recording activity only writes that time, and the handle, when it fires,
either moves itself to the new deadline or logs the connection off.

The callbacks only queue work; one drain task emits and disconnects in slices of
a few milliseconds and pauses between them nine times as long as the slice took, so
thousands of sockets expiring in the same second do not stall the other clients'
traffic: they are ended over a longer time instead.

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

# Seconds the drain task works before it pauses: a budget of time, not a count of
# sockets, so the other clients wait behind at most one slice.
_SLICE = 0.002
# How long the drain pauses after a slice, in slices. Ending a socket also costs
# work outside the drain (its transport closing), so the other clients need far
# more than the drain's own time: 5,000 sockets expiring together end within about
# 4 s, the other clients' acknowledgement p50 barely moving (benchmarks, S6).
_PAUSE = 9.0
# How long ending one socket may take before it is forgotten by hand: a
# transport whose client has just dropped can make python-engineio wait forever.
_END_TIMEOUT = 5.0


@attrs.define(eq=False)
class _Entry:
    """One socket's timers, made from the identity it was armed with; ``ending`` is
    set once the socket is being ended, for that reason."""

    conn: Connection
    expires_at: float  # Unix time
    warning: asyncio.TimerHandle | None = None
    ending: asyncio.TimerHandle | None = None
    warned: bool = False
    ended_for: str | None = None
    tell: bool = True  # whether the client hears auth:{reason} before the disconnect
    event: str | None = None  # what the client hears instead of auth:{reason}

    def cancel(self) -> None:
        for handle in (self.warning, self.ending):
            if handle is not None:
                handle.cancel()


@attrs.define(eq=False)
class _Idle:
    """One client connection's idle timer: the loop time of its last activity and
    the sockets it has open."""

    eio_sid: str
    last: float
    sockets: set[str] = attrs.field(factory=set)
    handle: asyncio.TimerHandle | None = None

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class SessionTimers:
    """The expiry timers of one gateway's sockets and the task that acts on them."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._entries: dict[str, _Entry] = {}
        self._idle: dict[str, _Idle] = {}  # by engine.io session id
        self._queue: deque[tuple[_Entry | _Idle, str]] = deque()
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
        """Drop ``sid``'s expiry timers; work already queued for it is skipped."""
        entry = self._entries.pop(sid, None)
        if entry is not None:
            entry.cancel()

    def forget(self, conn: Connection) -> None:
        """``conn`` left: drop its timers, and its connection's idle timer with the
        connection's last socket."""
        self.cancel(conn.sid)
        idle = self._idle.get(conn.eio_sid) if conn.eio_sid is not None else None
        if idle is not None:
            idle.sockets.discard(conn.sid)
            if not idle.sockets:
                del self._idle[idle.eio_sid]
                idle.cancel()

    def end(
        self, conn: Connection, reason: str, *, tell: bool = True, event: str | None = None
    ) -> bool:
        """End ``conn``'s session for ``reason``: ``auth:{reason}`` (or ``event``)
        ``{reason}`` (unless ``tell`` is false), then a server disconnect, soon (by
        the drain task). A socket already being ended keeps its first reason;
        ``False`` then."""
        current = self._entries.get(conn.sid)
        if current is not None and current.ended_for is not None:
            return False
        self.cancel(conn.sid)
        entry = _Entry(conn, 0.0, warned=True, ended_for=reason, tell=tell, event=event)
        self._entries[conn.sid] = entry
        self._push(entry, reason)
        return True

    def watch(self, conn: Connection) -> None:
        """Log ``conn``'s client connection off after ``idle_timeout`` without
        activity (nothing without the setting)."""
        timeout = self._gateway.config.idle_timeout
        if timeout is None or conn.eio_sid is None:
            return
        idle = self._idle.get(conn.eio_sid)
        if idle is None:
            loop = asyncio.get_running_loop()
            idle = _Idle(conn.eio_sid, loop.time())
            idle.handle = loop.call_at(idle.last + timeout, self._idle_due, idle)
            self._idle[conn.eio_sid] = idle
        idle.sockets.add(conn.sid)

    def touch(self, eio_sid: str | None) -> None:
        """The client connection ``eio_sid`` sent an event that counts as activity."""
        idle = self._idle.get(eio_sid) if eio_sid is not None else None
        if idle is not None:
            idle.last = asyncio.get_running_loop().time()

    def idle_for(self, eio_sid: str) -> float | None:
        """Seconds since the client connection's last activity (``None`` unwatched)."""
        idle = self._idle.get(eio_sid)
        return None if idle is None else asyncio.get_running_loop().time() - idle.last

    async def close(self) -> None:
        """Cancel every timer and the drain task (the gateway stopped)."""
        for entry in self._entries.values():
            entry.cancel()
        self._entries.clear()
        for idle in self._idle.values():
            idle.cancel()
        self._idle.clear()
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

    def _idle_due(self, idle: _Idle) -> None:
        idle.handle = None
        if self._idle.get(idle.eio_sid) is not idle:
            return
        loop = asyncio.get_running_loop()
        timeout = self._gateway.config.idle_timeout
        assert timeout is not None
        due = idle.last + timeout
        if loop.time() < due:  # there was activity since: wait for the new deadline
            idle.handle = loop.call_at(due, self._idle_due, idle)
        else:
            self._push(idle, "idle")

    def _push(self, entry: _Entry | _Idle, what: str) -> None:
        self._queue.append((entry, what))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_task(self._run())

    # -- the drain task ----------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            started = loop.time()
            while self._queue and loop.time() - started < _SLICE:
                entry, what = self._queue.popleft()
                try:
                    if isinstance(entry, _Idle):
                        if self._idle.get(entry.eio_sid) is entry:
                            await self._log_off(entry)
                        continue
                    if self._entries.get(entry.conn.sid) is not entry:
                        continue  # the socket left or was re-armed since
                    if what == "expiring":
                        await self._send_warning(entry)
                    else:
                        await self._end(entry, what)
                except Exception as exc:
                    log(logging.ERROR, "session_timer_failed", error=type(exc).__name__)
            if self._queue:
                await asyncio.sleep(_PAUSE * (loop.time() - started))

    async def _send_warning(self, entry: _Entry) -> None:
        conn = entry.conn
        left = max(0, round(entry.expires_at - time.time()))
        await self._gateway.server.emit(
            "auth:expiring",
            {"expiresAt": round(entry.expires_at * 1000), "secondsLeft": left},
            to=conn.sid,
            namespace=conn.namespace,
        )

    async def _log_off(self, idle: _Idle) -> None:
        """End every socket of an idle client connection and revoke their sessions."""
        gateway = self._gateway
        conns = [conn for sid in sorted(idle.sockets) if (conn := gateway.connection(sid))]
        for conn in conns:
            self.end(conn, "idle")
        sessions = {
            c.identity.session_id: c.identity.user_id
            for c in conns
            if c.identity.session_id is not None
        }
        for session_id, user_id in sorted(sessions.items()):
            await gateway.revoke_session(session_id, user_id=user_id)

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
                if entry.tell:
                    await server.emit(
                        entry.event or f"auth:{reason}",
                        {"reason": reason},
                        to=conn.sid,
                        namespace=conn.namespace,
                    )
                await server.disconnect(conn.sid, namespace=conn.namespace)
        finally:
            namespace = gateway._namespaces.get(conn.namespace)
            if gateway.connection(conn.sid) is conn and namespace is not None:
                # The disconnect did not go through: forget the socket by hand,
                # telling its rooms, as python-socketio's disconnect would have.
                await namespace._disconnect(conn.sid, reason)
            self.cancel(conn.sid)
