"""Missed-message recovery's storage: the event log of each namespace and the
sessions of sockets that dropped, behind :class:`RecoveryStore`.

An *offset* names one event the gateway sent to a room. It is a string whose
order is that of the log: ``"17"`` in memory, a Redis stream id ``"1700000000000-3"``
on Redis; :func:`offset_key` turns either into a comparable key. The official
socket.io client keeps the offset of the last event it received and sends it
back when it reconnects.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import attrs

from ._identity import Identity

__all__ = [
    "LogEntry",
    "MemoryRecoveryStore",
    "OffsetLost",
    "RecoverySession",
    "RecoveryStore",
    "TooManyMissed",
    "offset_key",
]

_OFFSET = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")

OffsetKey = tuple[int, int]


def offset_key(offset: object) -> OffsetKey | None:
    """The sort key of ``offset`` (``"17"`` or ``"1700000000000-3"``), ``None`` for
    anything else: whatever a client sends is checked here first."""
    if not isinstance(offset, str) or len(offset) > 41:
        return None
    found = _OFFSET.fullmatch(offset)
    if found is None:
        return None
    return int(found[1]), int(found[2] or 0)


@attrs.define(slots=True, frozen=True)
class LogEntry:
    """One event sent to a room, as kept for the sockets that may miss it.

    ``rooms`` is the room it went to (a tuple for several, ``None`` for the whole
    namespace), ``skip`` the socket ids it was not sent to, ``frames`` the encoded
    engine.io message payloads (the socket.io packet and its binary attachments),
    the offset already in them."""

    offset: str
    rooms: str | tuple[str, ...] | None
    skip: str | tuple[str, ...] | None
    frames: tuple[str | bytes, ...]
    at: float = attrs.field(factory=time.monotonic)

    @property
    def size(self) -> int:
        """Bytes of its frames (what the log's byte bound counts)."""
        return sum(len(frame) for frame in self.frames)

    def reaches(self, rooms: frozenset[str] | set[str], sid: str) -> bool:
        """Whether a socket in ``rooms`` whose id was ``sid`` got this event."""
        skip = self.skip
        if skip is not None and (skip == sid if isinstance(skip, str) else sid in skip):
            return False
        target = self.rooms
        if target is None:
            return True
        if isinstance(target, str):
            return target in rooms
        return not rooms.isdisjoint(target)


@attrs.define(kw_only=True)
class RecoverySession:
    """What a socket that dropped leaves behind for the window.

    ``pid`` is the private id its client got in the CONNECT reply; ``sid`` the
    socket id it had (an event sent with it skipped was not for it);
    ``rooms`` the rooms it asked for, with the action that admitted it (the
    gateway's own rooms are recomputed from the fresh identity);
    ``offset`` the log's newest offset when the socket connected (a client that
    got no event since sends none); ``disconnected_at`` a Unix time;
    ``unannounced`` the rooms whose departure nobody announced, set by a store
    whose session was parked by another process (whose announcement, at the end
    of the window, a recovery pre-empts): coming back to them is not announced
    either."""

    pid: str
    namespace: str
    identity: Identity
    sid: str
    rooms: dict[str, str]
    offset: str
    disconnected_at: float = attrs.field(factory=time.time)
    unannounced: frozenset[str] = frozenset()


class TooManyMissed(Exception):
    """More events were missed than the recovery may replay."""


class OffsetLost(Exception):
    """The log no longer holds the events after the offset (or never had it)."""


@runtime_checkable
class RecoveryStore(Protocol):
    """Where the sessions of dropped sockets and the namespaces' event logs live.

    A store keeps sessions for the recovery window and events for at least as
    long; every method is safe to call with what a client sent (offsets are
    checked with :func:`offset_key` by the caller)."""

    async def head(self, namespace: str) -> str:
        """The newest offset of ``namespace``'s log (``"0"`` when empty)."""

    async def missed(
        self,
        namespace: str,
        after: str,
        wanted: Callable[[LogEntry], bool],
        limit: int,
    ) -> list[LogEntry]:
        """The ``wanted`` events of ``namespace`` after offset ``after``, oldest
        first. Raises :class:`TooManyMissed` past ``limit`` of them and
        :class:`OffsetLost` if events after ``after`` may be gone from the log."""

    async def opened(self, session: RecoverySession) -> None:
        """A socket with ``session.pid`` is live (connected or recovered)."""

    async def moved(self, session: RecoverySession) -> None:
        """The live socket of ``session.pid`` changed rooms."""

    async def closed(self, pid: str) -> None:
        """The socket of ``pid`` ended for good: nothing of it is kept."""

    async def park(self, session: RecoverySession, window: float) -> None:
        """The socket dropped: keep ``session`` for ``window`` seconds."""

    async def claim(self, pid: str) -> RecoverySession | None:
        """Take the session of ``pid`` (at most one caller gets it)."""

    async def settle(self, pid: str) -> bool:
        """The window of ``pid`` ended: drop its session; ``True`` if it was still
        there (nobody recovered it)."""


class _Log:
    """One namespace's events, oldest first."""

    __slots__ = ("entries", "lost_through", "size")

    def __init__(self) -> None:
        self.entries: deque[LogEntry] = deque()
        self.size = 0
        # The newest offset trimmed away: a client behind it may have lost events.
        self.lost_through: OffsetKey = (0, 0)


class MemoryRecoveryStore:
    """A :class:`RecoveryStore` in this process.

    Each namespace's log keeps the events of the last ``window`` seconds, and at
    most ``max_events`` of them; all logs together hold at most ``max_bytes`` of
    frames (the oldest go first). At most ``max_sessions`` dropped sockets are
    kept (the oldest go first). The gateway's fan-out appends to it without
    awaiting: :meth:`append` is synchronous.
    """

    def __init__(
        self,
        *,
        window: float,
        max_events: int = 100_000,
        max_bytes: int = 64 * 1024 * 1024,
        max_sessions: int = 10_000,
    ) -> None:
        self.window = window
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_sessions = max_sessions
        self._logs: dict[str, _Log] = {}
        self._size = 0
        self._counter = 0
        # pid -> (session, until when it may be recovered, whether its window was
        # settled); settled ones stay as long again, so a late claim is "expired".
        self._sessions: OrderedDict[str, tuple[RecoverySession, float, bool]] = OrderedDict()

    # -- the log ----------------------------------------------------------------------

    def next_offset(self) -> str:
        """A new offset, after every one handed out before (one counter for all
        namespaces, so an offset never names events of two logs)."""
        self._counter += 1
        return str(self._counter)

    def append(self, namespace: str, entry: LogEntry) -> None:
        """Add ``entry`` (whose offset came from :meth:`next_offset`) to the log."""
        log = self._logs.get(namespace)
        if log is None:
            log = self._logs[namespace] = _Log()
        log.entries.append(entry)
        size = entry.size
        log.size += size
        self._size += size
        self._trim(log, entry.at - self.window)
        if self._size > self.max_bytes:
            self._trim_bytes()

    def _trim(self, log: _Log, horizon: float) -> None:
        entries = log.entries
        while entries and (entries[0].at < horizon or len(entries) > self.max_events):
            self._drop_oldest(log)

    def _trim_bytes(self) -> None:
        while self._size > self.max_bytes:
            oldest = min(
                (log for log in self._logs.values() if log.entries),
                key=lambda log: log.entries[0].at,
            )
            self._drop_oldest(oldest)

    def _drop_oldest(self, log: _Log) -> None:
        entry = log.entries.popleft()
        size = entry.size
        log.size -= size
        self._size -= size
        key = offset_key(entry.offset)
        if key is not None:
            log.lost_through = key

    @property
    def size(self) -> int:
        """Bytes of frames held, in all logs."""
        return self._size

    def __len__(self) -> int:
        return sum(len(log.entries) for log in self._logs.values())

    async def head(self, namespace: str) -> str:
        return str(self._counter)

    async def missed(
        self,
        namespace: str,
        after: str,
        wanted: Callable[[LogEntry], bool],
        limit: int,
    ) -> list[LogEntry]:
        start = offset_key(after)
        if start is None or start > (self._counter, 0):
            raise OffsetLost(after)
        log = self._logs.get(namespace)
        if log is None:
            return []
        self._trim(log, time.monotonic() - self.window)
        if start < log.lost_through:
            raise OffsetLost(after)
        found: list[LogEntry] = []
        # Newest first until the offset: a short recovery reads only the log's end.
        for entry in reversed(log.entries):
            key = offset_key(entry.offset)
            if key is None or key <= start:
                break
            if wanted(entry):
                found.append(entry)
                if len(found) > limit:
                    raise TooManyMissed(after)
        found.reverse()
        return found

    # -- sessions ---------------------------------------------------------------------

    async def opened(self, session: RecoverySession) -> None:
        """Nothing to do: a live socket's state is in the process already."""

    async def moved(self, session: RecoverySession) -> None:
        """Nothing to do: a live socket's state is in the process already."""

    async def closed(self, pid: str) -> None:
        self._sessions.pop(pid, None)

    async def park(self, session: RecoverySession, window: float) -> None:
        now = time.monotonic()
        sessions = self._sessions
        sessions.pop(session.pid, None)
        sessions[session.pid] = (session, now + window, False)
        while sessions:
            pid, (_, until, _settled) = next(iter(sessions.items()))
            if until + self.window > now and len(sessions) <= self.max_sessions:
                break
            del sessions[pid]

    async def claim(self, pid: str) -> RecoverySession | None:
        found = self._sessions.pop(pid, None)
        return None if found is None else found[0]

    async def settle(self, pid: str) -> bool:
        found = self._sessions.get(pid)
        if found is None or found[2]:
            return False
        self._sessions[pid] = (found[0], found[1], True)
        return True

    def sessions(self) -> int:
        """How many dropped sockets are kept (those whose window ended included)."""
        return len(self._sessions)
