"""This process's admitted sockets, kept in step with the registry.

:class:`LiveConnections` is the gateway's table of :class:`Connection` objects by
socket id. Adding one records it in the registry (which says whether it is a
reconnection); :meth:`LiveConnections.admitted` counts and logs a connect once the
namespace has set the socket up; removing one takes it out of the registry and
logs the disconnect with its reason and duration. :attr:`LiveConnections.left` is
set whenever a socket goes, for whoever waits for the table to empty.

It also keeps, per user with a socket here, how many sockets they have (so that
``max_sockets_per_user`` is checked and reserved in one step, with no await in
between) and the event budget those sockets share; a user's entry goes with their
last socket, so the table never outgrows the connected users. A registry that can
count the user's sockets cluster-wide (:class:`CappedRegistry`) checks the cap
there too, atomically.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Mapping

import attrs

from ._connection import Connection, TokenBucket
from ._log import log
from ._metrics import Metrics
from ._registry import CappedRegistry, Registry

__all__ = ["LiveConnections"]


@attrs.define(eq=False)
class _User:
    """One user's sockets in this process and the event budget they share."""

    sockets: int = 0
    bucket: TokenBucket = attrs.field(factory=TokenBucket)


class LiveConnections(Mapping[str, Connection]):
    """The live connections of one gateway by socket id (a read-only mapping)."""

    def __init__(self, registry: Registry, metrics: Metrics, *, max_sockets_per_user: int) -> None:
        self._registry = registry
        self._capped = registry if isinstance(registry, CappedRegistry) else None
        self._metrics = metrics
        self._max_per_user = max_sockets_per_user
        self._by_sid: dict[str, Connection] = {}
        self._users: dict[str, _User] = {}
        self._reconnecting: set[str] = set()
        self._admit_started: dict[str, float] = {}
        self.left = asyncio.Event()

    def __getitem__(self, sid: str) -> Connection:
        return self._by_sid[sid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_sid)

    def __len__(self) -> int:
        return len(self._by_sid)

    async def add(self, conn: Connection, *, started: float) -> bool:
        """Record ``conn``, whose admission began at ``started`` (monotonic time);
        ``False`` (and nothing recorded) if its user has ``max_sockets_per_user``
        sockets already."""
        user_id = conn.identity.user_id
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = _User()
        elif user.sockets >= self._max_per_user:
            return False
        user.sockets += 1
        conn.share_user_budget(user.bucket)
        self._by_sid[conn.sid] = conn
        if self._capped is not None:
            reconnecting = await self._capped.add_within(conn, self._max_per_user)
        else:
            reconnecting = await self._registry.add(conn)
        if reconnecting is None:  # the cluster has the user's sockets
            self._by_sid.pop(conn.sid, None)
            self._release(user_id)
            self.left.set()
            return False
        if reconnecting:
            self._reconnecting.add(conn.sid)
        self._admit_started[conn.sid] = started
        return True

    def full(self, user_id: str) -> bool:
        """Whether ``user_id`` has ``max_sockets_per_user`` sockets here already (a
        check before admission's costlier steps; :meth:`add` checks again)."""
        user = self._users.get(user_id)
        return user is not None and user.sockets >= self._max_per_user

    def _release(self, user_id: str) -> None:
        user = self._users.get(user_id)
        if user is not None:
            user.sockets -= 1
            if user.sockets <= 0:
                del self._users[user_id]

    @property
    def users(self) -> int:
        """How many users have a socket here (the size of the per-user table)."""
        return len(self._users)

    def admitted(self, conn: Connection) -> None:
        """The namespace finished setting ``conn`` up: count and log the connect."""
        self._metrics.connections_total += 1
        if conn.sid in self._reconnecting:
            self._reconnecting.discard(conn.sid)
            self._metrics.reconnections += 1
        started = self._admit_started.pop(conn.sid, time.monotonic())
        log(
            logging.INFO,
            "connect",
            sid=conn.sid,
            user=conn.identity.user_id,
            namespace=conn.namespace,
            ms=round((time.monotonic() - started) * 1000, 1),
        )

    async def remove(
        self, sid: str, *, reason: str, departed: bool = True
    ) -> tuple[Connection, frozenset[str]] | None:
        """Drop ``sid`` here and from the registry; returns the connection and the
        rooms its user is no longer present in, or ``None`` if it was unknown.
        ``departed=False``: the socket never finished connecting, so its going is no
        departure a later connect could be a reconnection after."""
        conn = self._by_sid.pop(sid, None)
        if conn is None:
            return None
        self._release(conn.identity.user_id)
        self.left.set()
        self._reconnecting.discard(sid)
        self._admit_started.pop(sid, None)
        gone = await self._registry.remove(sid, departed=departed)
        log(
            logging.INFO,
            "disconnect",
            sid=sid,
            user=conn.identity.user_id,
            namespace=conn.namespace,
            reason=reason,
            duration_s=round(time.time() - conn.connected_at, 3),
        )
        return conn, gone
