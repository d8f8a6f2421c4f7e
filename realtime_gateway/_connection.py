"""One client's connection to one namespace."""

from __future__ import annotations

import time

import attrs

from ._identity import Handshake, Identity

__all__ = ["Connection"]


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
    _tokens: float | None = attrs.field(default=None, repr=False)
    _refilled: float = attrs.field(factory=time.monotonic, repr=False)

    def touch(self) -> None:
        """Record activity now."""
        self.last_activity = time.time()

    def take_token(self, rate: float, burst: int) -> bool:
        """Spend one event from a token bucket of ``burst`` refilled at ``rate``/s."""
        now = time.monotonic()
        if self._tokens is None:  # a new connection starts with a full bucket
            tokens = float(burst)
        else:
            tokens = min(float(burst), self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True
