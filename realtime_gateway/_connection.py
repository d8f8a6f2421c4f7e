"""One client's connection to one namespace, and the token bucket of event budgets."""

from __future__ import annotations

import time

import attrs

from ._identity import Handshake, Identity

__all__ = ["Connection", "TokenBucket"]

# Refusals further apart than this (seconds) start a new streak of refusals: a
# client that only bursts now and then is never "continuously over budget".
STREAK_GAP = 1.0


@attrs.define(slots=True)
class TokenBucket:
    """A budget of events: up to ``burst`` at once, refilled at ``rate`` per second.
    A new bucket is full."""

    _tokens: float | None = None
    _refilled: float = attrs.field(factory=time.monotonic)

    def take(self, rate: float, burst: int, now: float | None = None) -> bool:
        """Spend one event (``now``: the monotonic time, if the caller has it)."""
        if now is None:
            now = time.monotonic()
        if self._tokens is None:
            tokens = float(burst)
        else:
            tokens = min(float(burst), self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True


@attrs.define(kw_only=True, eq=False)
class Connection:
    """A live socket: who it is, where it connected, and when it last spoke.

    ``sid`` is python-socketio's per-namespace socket id, the id clients see as
    ``socket.id``; ``eio_sid`` is its client connection's (one per browser tab,
    shared by the tab's namespaces). ``connected_at`` and ``last_activity`` are Unix
    times. ``rooms`` maps each room the socket is in to the action that admitted it there
    (``"join"``, ``"subscribe"``, ...) or ``None`` for the rooms the gateway puts
    every socket in (``user:{id}``, ``role:{role}``); reauthorization re-checks the
    former and the latter cannot be left.
    """

    sid: str
    namespace: str
    identity: Identity
    handshake: Handshake = attrs.field(repr=False)
    eio_sid: str | None = attrs.field(default=None, repr=False)
    connected_at: float = attrs.field(factory=time.time)
    last_activity: float = attrs.field(factory=time.time)
    rooms: dict[str, str | None] = attrs.field(factory=dict)
    _bucket: TokenBucket = attrs.field(factory=TokenBucket, repr=False)
    # The budget shared by the user's sockets in this process (set on admission).
    _user_bucket: TokenBucket | None = attrs.field(default=None, repr=False, init=False)
    # Room joins under way that will count against max_rooms_per_socket.
    _joining: int = attrs.field(default=0, repr=False, init=False)
    # (pid, offset) for missed-message recovery: the private id the client got in
    # its CONNECT reply and the log's offset when the socket connected.
    recovery: tuple[str, str] | None = attrs.field(default=None, repr=False, init=False)
    _refused_since: float | None = attrs.field(default=None, repr=False, init=False)
    _last_refused: float = attrs.field(default=0.0, repr=False, init=False)

    def touch(self) -> None:
        """Record activity now."""
        self.last_activity = time.time()

    def take_token(self, rate: float, burst: int, now: float | None = None) -> bool:
        """Spend one event from a token bucket of ``burst`` refilled at ``rate``/s."""
        return self._bucket.take(rate, burst, now)

    def share_user_budget(self, bucket: TokenBucket) -> None:
        """Spend events also from ``bucket``, the budget of every socket of the user
        in this process (the gateway sets it on admission)."""
        self._user_bucket = bucket

    def take_user_token(self, rate: float, burst: int, now: float | None = None) -> bool:
        """Spend one event from the user's shared budget (``True`` without one)."""
        return self._user_bucket is None or self._user_bucket.take(rate, burst, now)

    def reserve_room(self, limit: int) -> bool:
        """Hold a place for one more room the client asked for, unless the rooms it
        asked for and the joins under way already number ``limit``. The gateway's
        own rooms (action ``None``) do not count. Pair with :meth:`release_room`."""
        asked = sum(1 for action in self.rooms.values() if action is not None)
        if asked + self._joining >= limit:
            return False
        self._joining += 1
        return True

    def release_room(self) -> None:
        """Give back a place taken by :meth:`reserve_room` (the room was entered in
        :attr:`rooms`, or the join failed)."""
        self._joining -= 1

    def refused_for(self, now: float) -> tuple[float, bool]:
        """Record that an event was refused for its budget at monotonic time ``now``:
        how long the socket has been refused without a pause of ``STREAK_GAP``
        seconds, and whether this refusal starts such a streak."""
        since = self._refused_since
        started = since is None or now - self._last_refused > STREAK_GAP
        if since is None or started:
            since = self._refused_since = now
        self._last_refused = now
        return now - since, started
