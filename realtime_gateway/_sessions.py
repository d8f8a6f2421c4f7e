"""Session timers: a socket's credential ends the socket when it expires, and an
idle client connection is logged off.

:class:`SessionTimers` keeps, for every ready socket whose identity has
``expires_at``, two deadlines (no task and no timer handle per socket): one warns
the client ``auth:expiring`` ``refresh_ahead`` seconds before expiry, one ends the
socket at ``expires_at + expiry_grace``. With ``idle_timeout`` set, each client
connection (engine.io connection) has one more deadline and the time of its last
event; recording activity only writes that time, and the deadline, when it comes,
either moves to the new one or logs the connection off.

Deadlines are kept in buckets of ``_GRANULE`` seconds (:class:`_Buckets`), rounded
up, so never early: one ``loop.call_at`` handle per bucket that holds any, whatever
the number of sockets in it; cancelling a deadline deletes it from its bucket, and
a bucket left empty cancels its handle. When a bucket comes due, the whole bucket
goes onto the drain queue as one item, in one callback; the drain takes its entries
out one at a time.

The callbacks only queue work; one drain task emits and disconnects in slices of
half a millisecond and pauses between them nine times as long as the slice took, so
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
import contextvars
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

import attrs

from ._connection import Connection
from ._log import log

if TYPE_CHECKING:
    from ._gateway import Gateway

__all__ = ["SessionTimers"]

# Seconds the drain task works before it pauses: a budget of time, not a count of
# sockets, so the other clients wait behind at most one slice (and its ending
# socket). Short, since the sockets a slice ends close right after it, together.
_SLICE = 0.0005
# How long the drain pauses after a slice, in slices. Ending a socket also costs
# work outside the drain (its transport closing), so the other clients need far
# more than the drain's own time: 5,000 sockets expiring together end within about
# 4 s, the other clients' acknowledgement p50 barely moving (benchmarks, S6).
_PAUSE = 9.0
# The width of a deadline bucket, in seconds: how late a timer may come. Sockets
# whose credentials expire in the same bucket cost one loop callback between them,
# not one each (5,000 such callbacks held the loop for milliseconds at once).
_GRANULE = 0.01
# How long ending one socket may take before it is forgotten by hand: a
# transport whose client has just dropped can make python-engineio wait forever.
_END_TIMEOUT = 5.0


_T = TypeVar("_T")


class _Bucket(dict[str, _T]):
    """The entries (by key) whose deadline falls in one granule, and its timer."""

    __slots__ = ("handle",)

    handle: asyncio.TimerHandle


class _Buckets(Generic[_T]):
    """Deadlines on the loop's clock, by key, in buckets of ``_GRANULE`` seconds:
    ``fire`` is called with a bucket (all its entries at once) at the first granule
    boundary at or after their deadlines, so never before them and at most
    ``_GRANULE`` after."""

    def __init__(self, fire: Callable[[_Bucket[_T]], None]) -> None:
        self._fire = fire
        self._buckets: dict[int, _Bucket[_T]] = {}
        # One context for every timer rather than a copy of wherever a socket was
        # armed (an event handler's, say): the callbacks only queue, and the drain
        # task they start inherits this context. It also spares a copy per timer.
        self._context = contextvars.copy_context()

    def __len__(self) -> int:
        return len(self._buckets)

    def add(self, when: float, key: str, item: _T) -> int:
        """Keep ``item`` under ``key`` until ``when``; the bucket's tick, for
        :meth:`discard`."""
        tick = math.ceil(when / _GRANULE)
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = _Bucket()
            bucket.handle = asyncio.get_running_loop().call_at(
                tick * _GRANULE, self._due, tick, context=self._context
            )
        bucket[key] = item
        return tick

    def discard(self, tick: int | None, key: str, item: _T) -> None:
        """Drop ``item`` from the bucket of ``tick`` (nothing if it is not there)."""
        if tick is None:
            return
        bucket = self._buckets.get(tick)
        if bucket is not None and bucket.get(key) is item:
            del bucket[key]
            if not bucket:
                del self._buckets[tick]
                bucket.handle.cancel()

    def clear(self) -> None:
        """Drop every deadline and cancel the timers."""
        for bucket in self._buckets.values():
            bucket.handle.cancel()
        self._buckets.clear()

    def _due(self, tick: int) -> None:
        self._fire(self._buckets.pop(tick))


@attrs.define(eq=False)
class _Entry:
    """One socket's deadlines, made from the identity it was armed with (the ticks
    of their buckets); ``ended_for`` is set once the socket is being ended, for
    that reason."""

    conn: Connection
    expires_at: float  # Unix time
    warning: int | None = None
    ending: int | None = None
    warned: bool = False
    ended_for: str | None = None
    tell: bool = True  # whether the client hears auth:{reason} before the disconnect
    event: str | None = None  # what the client hears instead of auth:{reason}


@attrs.define(eq=False)
class _Idle:
    """One client connection's idle deadline (its bucket's tick): the loop time of
    its last activity and the sockets it has open."""

    eio_sid: str
    last: float
    sockets: set[str] = attrs.field(factory=set)
    tick: int | None = None


class SessionTimers:
    """The expiry timers of one gateway's sockets and the task that acts on them."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._entries: dict[str, _Entry] = {}
        self._idle: dict[str, _Idle] = {}  # by engine.io session id
        self._warnings: _Buckets[_Entry] = _Buckets(self._warn)
        self._endings: _Buckets[_Entry] = _Buckets(self._expire)
        self._idle_checks: _Buckets[_Idle] = _Buckets(self._idle_due)
        # Work by kind, each item a run of entries: a whole bucket queues as one. The
        # drain pops them one by one, so each is freed (the last reference to its
        # connection, often) once done with, not 5,000 together at the end.
        self._queue: deque[tuple[dict[str, _Entry] | dict[str, _Idle], str]] = deque()
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
        entry = _Entry(conn, expires.timestamp())
        # The buckets run on the loop's monotonic clock; expires_at is wall-clock time.
        ends_at = asyncio.get_running_loop().time() + (entry.expires_at - time.time())
        entry.warning = self._warnings.add(ends_at - config.refresh_ahead, conn.sid, entry)
        entry.ending = self._endings.add(ends_at + config.expiry_grace, conn.sid, entry)
        self._entries[conn.sid] = entry

    def rearm(self, conn: Connection) -> None:
        """Re-arm ``conn`` after its identity changed, if it is armed already."""
        if conn.sid in self._entries:
            self.arm(conn)

    def cancel(self, sid: str) -> None:
        """Drop ``sid``'s expiry timers; work already queued for it is skipped."""
        entry = self._entries.pop(sid, None)
        if entry is not None:
            self._warnings.discard(entry.warning, sid, entry)
            self._endings.discard(entry.ending, sid, entry)

    def forget(self, conn: Connection) -> None:
        """``conn`` left: drop its timers, and its connection's idle timer with the
        connection's last socket."""
        self.cancel(conn.sid)
        idle = self._idle.get(conn.eio_sid) if conn.eio_sid is not None else None
        if idle is not None:
            idle.sockets.discard(conn.sid)
            if not idle.sockets:
                del self._idle[idle.eio_sid]
                self._idle_checks.discard(idle.tick, idle.eio_sid, idle)

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
            idle = _Idle(conn.eio_sid, asyncio.get_running_loop().time())
            idle.tick = self._idle_checks.add(idle.last + timeout, idle.eio_sid, idle)
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
        for buckets in (self._warnings, self._endings, self._idle_checks):
            buckets.clear()
        self._entries.clear()
        self._idle.clear()
        self._queue.clear()
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
            self._drain = None

    # -- the bucket callbacks: they only queue, a bucket at a time --------------------

    def _warn(self, bucket: _Bucket[_Entry]) -> None:
        # The bucket left _Buckets as it came due: only the drain changes it now, and
        # an entry cancelled since is skipped by the drain.
        self._push_all(bucket, "expiring")

    def _expire(self, bucket: _Bucket[_Entry]) -> None:
        self._push_all(bucket, "expired")

    def _idle_due(self, bucket: _Bucket[_Idle]) -> None:
        now = asyncio.get_running_loop().time()
        timeout = self._gateway.config.idle_timeout
        assert timeout is not None
        idle_now: dict[str, _Idle] = {}
        for eio_sid, idle in bucket.items():
            idle.tick = None
            due = idle.last + timeout
            if now < due:  # there was activity since: wait for the new deadline
                idle.tick = self._idle_checks.add(due, eio_sid, idle)
            else:
                idle_now[eio_sid] = idle
        if idle_now:
            self._push_all(idle_now, "idle")

    def _push(self, entry: _Entry, what: str) -> None:
        self._push_all({entry.conn.sid: entry}, what)

    def _push_all(self, entries: dict[str, _Entry] | dict[str, _Idle], what: str) -> None:
        self._queue.append((entries, what))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_task(self._run())

    # -- the drain task ----------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            started = loop.time()
            while self._queue and loop.time() - started < _SLICE:
                entries, what = self._queue[0]
                if not entries:
                    self._queue.popleft()
                    continue
                _, entry = entries.popitem()
                try:
                    if isinstance(entry, _Idle):
                        if self._idle.get(entry.eio_sid) is entry:
                            await self._log_off(entry)
                        continue
                    if self._entries.get(entry.conn.sid) is not entry:
                        continue  # the socket left or was re-armed since
                    if not entry.warned:
                        # Expiring is heard once, and before expired, even when both
                        # fall due together.
                        entry.warned = True
                        await self._send_warning(entry)
                    if what != "expiring":
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
