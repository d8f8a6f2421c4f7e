"""Missed-message recovery on Redis: the :class:`RecoveryStore` of a cluster, so
that a client recovers on any process, also after the one it was on died.

Keys, all under ``redis_prefix`` (``{p}``):

- ``{p}:recovery:log:{namespace}``: a Redis Stream per namespace, one entry per
  event sent to a room. The entry's id is the event's offset; its fields are the
  cluster message as signed for the bus (``m``) and, to filter without checking
  every signature, the room (``r``) and the skipped socket ids (``s``). Each XADD
  trims it with ``MAXLEN ~ recovery_log_events`` and ``MINID ~`` now minus the
  window. ``{p}:recovery:origin:{namespace}`` is the id of the first entry of the
  stream as it is (a stream created afresh, after Redis lost its data, makes
  every older offset "lost"); ``{p}:recovery:gap:{namespace}`` the id of the first
  event logged after events a process sent but could not log (Redis unreachable):
  every older offset is "lost" too, rather than replayed without them.
- ``{p}:recovery:parked:{digest}``: the session of a socket that dropped (a hash: the
  session's JSON and the process that parked it), with a TTL of twice the window
  (a claim after the window still finds it, and is told "expired").
- ``{p}:recovery:live:{process}``: the sessions of the live sockets of one process
  (digest -> JSON), written on connect and on room changes; its TTL (cluster_ttl +
  window) is refreshed by the process's heartbeat, so the sockets of a process
  that was killed stay recoverable for the window and then vanish.
- ``{p}:recovery:hosts``: the processes that keep such records (a sorted set
  scored by their last heartbeat).

A pid is never written to Redis: keys and fields name it by its SHA-256 digest
(whoever reads Redis learns no pid to recover with), as revocations name sessions.

Events are appended by :class:`~._cluster.ClusterManager` in the script that also
publishes them (see there); this store reads, and keeps sessions.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from ._log import log
from ._outage import Outage
from ._recovery import (
    LogEntry,
    OffsetLost,
    RecoverySession,
    TooManyMissed,
    offset_key,
)

if TYPE_CHECKING:
    from ._cluster import Cluster

__all__ = ["RecoveryUnavailable", "RedisRecoveryStore"]

PAGE = 500  # stream entries read per XRANGE
CLAIMED_LIMIT = 10_000  # claimed sessions remembered until opened or put back

# KEYS: stream, origin, gap. ARGV: max entries, window (ms), signed message, room
# JSON, skip JSON, channel, "1" if this process sent events of the namespace it could
# not log. XADD and PUBLISH in one script: the order of the stream is the order in
# which every process hears the events. The id is outside the signed message (Redis
# assigns it), appended to the message's JSON object.
_APPEND = """
local fresh = redis.call('EXISTS', KEYS[1]) == 0
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
                      'm', ARGV[3], 'r', ARGV[4], 's', ARGV[5])
if fresh then redis.call('SET', KEYS[2], id) end
if ARGV[7] == '1' then redis.call('SET', KEYS[3], id) end
local ms = tonumber(string.match(id, '^(%d+)'))
local oldest = ms - tonumber(ARGV[2])
if oldest > 0 then redis.call('XTRIM', KEYS[1], 'MINID', '~', oldest) end
redis.call('PUBLISH', ARGV[6], string.sub(ARGV[3], 1, -2) .. ',"offset":"' .. id .. '"}')
return id
"""

# KEYS: parked, live. ARGV: pid, session JSON, process, ttl (ms).
_PARK = """
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'session', ARGV[2], 'process', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS: parked. ARGV: process. 1 once, if the session is still there, parked by
# this process and not settled before.
_SETTLE = """
if redis.call('HGET', KEYS[1], 'process') ~= ARGV[1] then return 0 end
return redis.call('HSETNX', KEYS[1], 'settled', '1')
"""

# KEYS: parked, live. ARGV: pid, process. The socket ended for good: its live
# record goes, and its parked session if this process parked it (a session another
# process parked since is that process's).
_CLOSE = """
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('HGET', KEYS[1], 'process') == ARGV[2] then redis.call('DEL', KEYS[1]) end
return 1
"""


class RecoveryUnavailable(ConnectionError):
    """Redis is unreachable (recently failed; retried with backoff)."""


def _session_json(session: RecoverySession) -> str:
    from ._cluster import identity_to_json

    return json.dumps(
        {
            "namespace": session.namespace,
            "identity": identity_to_json(session.identity),
            "sid": session.sid,
            "rooms": session.rooms,
            "offset": session.offset,
            "gone": sorted(session.gone),
            "disconnectedAt": session.disconnected_at,
        },
        separators=(",", ":"),
    )


def _session_from_json(
    raw: bytes | str, pid: str, disconnected_at: float | None = None
) -> RecoverySession:
    from ._cluster import identity_from_json

    data = json.loads(raw)
    return RecoverySession(
        pid=pid,
        namespace=data["namespace"],
        identity=identity_from_json(data["identity"]),
        sid=data["sid"],
        rooms={str(room): str(action) for room, action in data["rooms"].items()},
        offset=data["offset"],
        gone=frozenset(str(room) for room in data.get("gone", ())),
        disconnected_at=data["disconnectedAt"] if disconnected_at is None else disconnected_at,
    )


def _digest(pid: str) -> str:
    """How Redis names ``pid``."""
    return hashlib.sha256(pid.encode()).hexdigest()[:32]


def _room_field(value: Any) -> str:
    """A room or skip argument as the stream keeps it (JSON)."""
    return json.dumps(value, separators=(",", ":"))


def _as_target(value: Any) -> str | tuple[str, ...] | None:
    if isinstance(value, list):
        return tuple(str(item) for item in value)
    return None if value is None else str(value)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _lost(start: tuple[int, int], info: dict[str, Any], origin: Any) -> bool:
    """Whether events after ``start`` may be missing from the stream ``info``
    describes (XINFO STREAM; ``origin`` the id its first entry had). Redis 7.0
    does not record what trimming removed (``max-deleted-entry-id`` counts XDEL
    only), so an offset older than the oldest entry left is lost once anything
    was removed: the client's last event is then out of the log too."""
    last = offset_key(_text(info["last-generated-id"]))
    if last is None or start > last:
        return True  # ahead of the log: not one of its offsets
    entry = info.get("first-entry")
    oldest = offset_key(_text(entry[0])) if entry else None
    if oldest is not None and start >= oldest:
        return False
    if start == last:
        return False  # the newest, and nothing after it
    if int(info.get("entries-added", 0)) > int(info.get("length", 0)):
        return True  # trimmed after it
    first = offset_key(_text(origin)) if origin is not None else None
    # A stream created after the offset was given: Redis lost the one it was from.
    return start != (0, 0) and (first is None or start < first)


class RedisRecoveryStore:
    """A :class:`RecoveryStore` on the cluster's Redis (``Gateway`` builds it when
    both ``redis_url`` and ``recovery_window`` are set); see the module's docstring
    for its keys. It attaches itself to ``cluster``: its manager appends each event
    sent to a room to the namespace's stream, its heartbeat keeps this process's
    live sessions.

    Taking over a live session: a claim that finds no parked session looks for a
    live one on another process (a process killed with ``kill -9`` parks nothing).
    It takes it whether that process is dead or still thinks the socket is
    connected (a network failure is noticed by the server only at the ping
    timeout): the claimant holds the unguessable pid, which only that socket's
    client was given, and the gateway then requires a fresh credential of the same
    user and re-authorizes every room, so the claimant gets nothing it could not
    get by subscribing anew, except the events it missed. The claimed record's
    window starts at that process's last heartbeat, never later than the socket's
    last sign of life there. A claim for a socket still live on *this* process
    finds nothing, as in memory.
    """

    def __init__(
        self,
        cluster: Cluster,
        *,
        window: float,
        max_events: int,
    ) -> None:
        registry = cluster.registry
        self.redis: Any = registry.redis
        self.prefix = registry.prefix
        self.process = cluster.process
        self.window = window
        self.max_events = max_events
        self._ttl = cluster.config.cluster_ttl
        self._manager = cluster.manager
        self._outage = Outage("recovery")
        # This process's live sessions as written to Redis (pid -> JSON): the
        # heartbeat writes them again when Redis lost them (restarted, or down
        # when they were written).
        self._live: dict[str, str] = {}
        # The parker of each session this process claimed, until it is opened here
        # or put back (a claim the gateway then refused).
        self._claimed: dict[str, str] = {}
        self._park_script = self.redis.register_script(_PARK)
        self._settle_script = self.redis.register_script(_SETTLE)
        self._close_script = self.redis.register_script(_CLOSE)
        self.append_script = self.redis.register_script(_APPEND)
        cluster.manager.stream = self
        cluster.on_beat(self.refresh)

    # -- keys -----------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, "recovery", *parts))

    def log_key(self, namespace: str) -> str:
        """The stream of ``namespace``."""
        return self._key("log", namespace)

    def origin_key(self, namespace: str) -> str:
        """Where the id of the first entry of ``namespace``'s stream is kept."""
        return self._key("origin", namespace)

    def gap_key(self, namespace: str) -> str:
        """Where the first offset after events that could not be logged is kept."""
        return self._key("gap", namespace)

    def _live_key(self, process: str) -> str:
        return self._key("live", process)

    async def _call(self, operation: Callable[[], Any]) -> Any:
        """Run a Redis operation; fail at once while Redis is known to be down."""
        if not self._outage.may_try():
            raise RecoveryUnavailable("redis")
        try:
            result = await operation()
        except Exception as exc:
            self._outage.failed(exc)
            raise
        self._outage.succeeded()
        return result

    # -- appending (called by ClusterManager) ------------------------------------------

    def append_args(
        self, namespace: str, signed: str, room: Any, skip: Any, *, gap: bool
    ) -> dict[str, Any]:
        """The keys and arguments of the append script for one event; ``gap``: this
        process sent events of ``namespace`` it could not log since its last append,
        so no recovery may replay across them (it would skip them silently)."""
        return {
            "keys": [self.log_key(namespace), self.origin_key(namespace), self.gap_key(namespace)],
            "args": [
                self.max_events,
                int(self.window * 1000),
                signed,
                _room_field(room),
                _room_field(skip),
                self._manager.channel,
                "1" if gap else "0",
            ],
        }

    # -- the log ----------------------------------------------------------------------

    async def head(self, namespace: str) -> str:
        """The newest offset this process delivered in ``namespace`` (anything newer
        still reaches a socket connecting now through the bus); one XREVRANGE the
        first time."""
        seen = self._manager.heads.get(namespace)
        if seen is not None:
            return seen[0]
        key = self.log_key(namespace)
        newest = await self._call(lambda: self.redis.xrevrange(key, count=1))
        offset = _text(newest[0][0]) if newest else "0"
        self._manager.saw(namespace, offset)
        return offset

    async def missed(
        self,
        namespace: str,
        after: str,
        wanted: Callable[[LogEntry], bool],
        limit: int,
    ) -> list[LogEntry]:
        start = offset_key(after)
        if start is None:
            raise OffsetLost(after)
        key = self.log_key(namespace)

        async def inspect() -> tuple[Any, Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.exists(key)
                pipe.get(self.origin_key(namespace))
                pipe.get(self.gap_key(namespace))
                exists, origin, gap = await pipe.execute()
            gap_key = offset_key(_text(gap)) if gap is not None else None
            if gap_key is not None and start < gap_key:
                return False, origin  # events between were sent but not logged
            if not exists:
                return None, origin
            return await self.redis.xinfo_stream(key), origin

        info, origin = await self._call(inspect)
        if info is False:
            raise OffsetLost(after)
        if info is None:
            if start == (0, 0):
                return []
            raise OffsetLost(after)
        if _lost(start, info, origin):
            raise OffsetLost(after)
        found: list[LogEntry] = []
        cursor = after
        while True:
            read = functools.partial(self.redis.xrange, key, min=f"({cursor}", count=PAGE)
            page = await self._call(read)
            for raw_id, fields in page:
                entry = self._entry(namespace, _text(raw_id), fields, wanted)
                if entry is not None:
                    found.append(entry)
                    if len(found) > limit:
                        raise TooManyMissed(after)
            if len(page) < PAGE:
                return found
            cursor = _text(page[-1][0])

    def _entry(
        self,
        namespace: str,
        offset: str,
        fields: dict[bytes, bytes],
        wanted: Callable[[LogEntry], bool],
    ) -> LogEntry | None:
        """The stream entry as a :class:`LogEntry`, if ``wanted``: its room from the
        unsigned field first (cheap), then the signed message checked and encoded."""
        try:
            rooms = _as_target(json.loads(fields[b"r"]))
            skip = _as_target(json.loads(fields[b"s"]))
        except (KeyError, ValueError):
            return None
        probe = LogEntry(offset=offset, rooms=rooms, skip=skip, frames=())
        if not wanted(probe):
            return None
        manager = self._manager
        message = manager._decode(fields.get(b"m", b""))
        if (
            message is None
            or message.get("namespace") != namespace
            or _as_target(message.get("room")) != rooms
            or _as_target(message.get("skip_sid")) != skip
        ):
            manager._dropped()
            return None
        frames = manager.frames_of(message, offset)
        return attrs.evolve(probe, frames=tuple(frame.data for frame in frames))

    # -- sessions ---------------------------------------------------------------------

    async def opened(self, session: RecoverySession) -> None:
        live = self._live_key(self.process)
        ttl = int((self._ttl + self.window) * 1000)
        name = _digest(session.pid)
        self._claimed.pop(name, None)
        record = self._live[name] = _session_json(session)

        async def write() -> None:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(live, name, record)
                pipe.pexpire(live, ttl)
                await pipe.execute()

        await self._call(write)

    async def moved(self, session: RecoverySession) -> None:
        live = self._live_key(self.process)
        name = _digest(session.pid)
        record = self._live[name] = _session_json(session)
        await self._call(lambda: self.redis.hset(live, name, record))

    async def closed(self, pid: str) -> None:
        name = _digest(pid)
        self._live.pop(name, None)
        keys = [self._key("parked", name), self._live_key(self.process)]
        await self._call(lambda: self._close_script(keys=keys, args=[name, self.process]))

    async def park(self, session: RecoverySession, window: float) -> None:
        name = _digest(session.pid)
        self._live.pop(name, None)
        keys = [self._key("parked", name), self._live_key(self.process)]
        # A session put back after a claim that failed stays its parker's to settle.
        owner = self._claimed.pop(name, self.process)
        # Kept as long again after the window, so that a late claim is "expired".
        args = [name, _session_json(session), owner, int((window + self.window) * 1000)]
        await self._call(lambda: self._park_script(keys=keys, args=args))

    async def claim(self, pid: str) -> RecoverySession | None:
        parked = self._key("parked", _digest(pid))

        async def take() -> Any:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hmget(parked, ["session", "process"])
                pipe.delete(parked)
                found, _ = await pipe.execute()
            return found

        raw, owner = await self._call(take)
        if raw is not None:
            session = _session_from_json(raw, pid)
            claimed = self._claimed
            claimed[_digest(pid)] = _text(owner)
            if len(claimed) > CLAIMED_LIMIT:
                del claimed[next(iter(claimed))]
            # Its rooms' departures (session.gone) wait for the parking process's
            # window end, which this claim pre-empts. (A taken-over live session's
            # rooms were told of its departure by the sweep of its dead process,
            # if at all: it has none.)
            return session
        taken: RecoverySession | None = await self._call(lambda: self._take_over(pid))
        return taken

    async def _take_over(self, pid: str) -> RecoverySession | None:
        """The live session of ``pid`` on another process (see the class docstring)."""
        hosts = await self.redis.zrange(self._key("hosts"), 0, -1, withscores=True)
        name = _digest(pid)
        others = [(_text(host), float(beat)) for host, beat in hosts if _text(host) != self.process]
        if not others:
            return None
        async with self.redis.pipeline(transaction=False) as pipe:
            for host, _ in others:
                pipe.hget(self._live_key(host), name)
            found = await pipe.execute()
        for (host, beat), raw in zip(others, found, strict=True):
            # HDEL answers 1 to one claimant only.
            if raw is not None and await self.redis.hdel(self._live_key(host), name):
                log(logging.INFO, "recovery_take_over")
                return _session_from_json(raw, pid, disconnected_at=min(beat, time.time()))
        return None

    async def settle(self, pid: str) -> bool:
        parked = self._key("parked", _digest(pid))
        settled = await self._call(lambda: self._settle_script(keys=[parked], args=[self.process]))
        return bool(settled)

    # -- heartbeat --------------------------------------------------------------------

    async def refresh(self) -> None:
        """Called by the cluster's heartbeat: this process keeps live sessions; its
        record and theirs outlive it by ``cluster_ttl`` + the window."""
        now = time.time()
        keep = self._ttl + self.window

        live = self._live_key(self.process)

        async def beat() -> None:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zadd(self._key("hosts"), {self.process: now})
                pipe.hlen(live)
                pipe.pexpire(live, int(keep * 1000))
                pipe.zremrangebyscore(self._key("hosts"), "-inf", now - keep)
                _, recorded, _, _ = await pipe.execute()
            if not int(recorded) and self._live:
                # Redis lost them (restarted), or was unreachable when they came.
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.hset(live, mapping=dict(self._live))
                    pipe.pexpire(live, int(keep * 1000))
                    await pipe.execute()

        await self._call(beat)
