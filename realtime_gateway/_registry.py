"""The connection registry: who is connected, where, and in which rooms.

A :class:`Registry` indexes the live sockets: socket -> identity, namespace,
rooms, connected at, last activity; user -> sockets; room -> present users. The
gateway calls it on every connect, disconnect, join and leave, so no entry
outlives its socket. :class:`MemoryRegistry` serves one process; a shared
implementation (Redis) gives several processes one view.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from typing import Any, Protocol, runtime_checkable

import attrs

from ._connection import Connection
from ._identity import Identity

__all__ = ["ConnectionInfo", "MemoryRegistry", "Registry"]


@attrs.frozen(kw_only=True)
class ConnectionInfo:
    """A snapshot of one socket as the registry knows it. Times are Unix times;
    ``process`` names the gateway process the socket lives on (cluster registries)."""

    sid: str
    namespace: str
    identity: Identity
    rooms: frozenset[str]
    connected_at: float
    last_activity: float
    process: str | None = None

    @property
    def user_id(self) -> str:
        """The socket's user."""
        return self.identity.user_id

    def to_json(self) -> dict[str, Any]:
        """The snapshot as JSON data, in the wire protocol's camelCase: ``role`` is
        the first role in sorted order (``None`` without roles), ``roles`` all of
        them; ``connectedAt`` and ``lastActivity`` are epoch milliseconds."""
        roles = sorted(self.identity.roles)
        return {
            "socketId": self.sid,
            "namespace": self.namespace,
            "userId": self.identity.user_id,
            "role": roles[0] if roles else None,
            "roles": roles,
            "rooms": sorted(self.rooms),
            "connectedAt": round(self.connected_at * 1000),
            "lastActivity": round(self.last_activity * 1000),
            **({"process": self.process} if self.process is not None else {}),
        }


@runtime_checkable
class Registry(Protocol):
    """Where the gateway records its sockets. Every method is a coroutine so that an
    implementation may live in a shared store.

    Presence is per user: :meth:`join` returns ``True`` only when the socket is the
    user's first in that room, :meth:`leave` only when it was the last. Calls about
    a socket the registry no longer holds do nothing.
    """

    async def add(self, conn: Connection) -> bool:
        """Record a new socket; ``True`` if it counts as a reconnection (the same user
        left the same namespace within the reconnection window)."""
        ...

    async def remove(self, sid: str, *, departed: bool = True) -> frozenset[str]:
        """Forget a socket; returns the rooms its user is no longer present in.
        ``departed=False`` for a socket whose connect failed: its going is not a
        departure that a later connect could be a reconnection after."""
        ...

    async def join(self, sid: str, room: str) -> bool:
        """Record ``sid`` in ``room`` (of its namespace); ``True`` if its user became present."""
        ...

    async def leave(self, sid: str, room: str) -> bool:
        """Record ``sid`` leaving ``room``; ``True`` if its user is no longer present."""
        ...

    async def get(self, sid: str) -> ConnectionInfo | None:
        """The socket ``sid``, if connected."""
        ...

    async def connections(self) -> list[ConnectionInfo]:
        """Every connected socket."""
        ...

    async def user_sockets(self, user_id: str) -> list[ConnectionInfo]:
        """Every connected socket of ``user_id``, in every namespace."""
        ...

    async def users(self) -> frozenset[str]:
        """The ids of the users with at least one connected socket."""
        ...

    async def presence(self, namespace: str, room: str) -> frozenset[str]:
        """The ids of the users with a socket in ``room`` of ``namespace``."""
        ...


@runtime_checkable
class CappedRegistry(Protocol):
    """A registry that can check a user's socket count where it keeps it (the whole
    cluster, for :class:`RedisRegistry`) and record a socket only under a cap, in one
    atomic step. Optional: without it the cap holds per process."""

    async def add_within(self, conn: Connection, limit: int) -> bool | None:
        """:meth:`Registry.add` unless the user has ``limit`` sockets recorded
        already: then record nothing and return ``None``."""
        ...


class MemoryRegistry:
    """A :class:`Registry` for one process, in plain dictionaries.

    ``reconnect_window`` is how long (seconds) after a user's socket leaves a
    namespace a new socket of theirs there counts as a reconnection.
    """

    def __init__(self, *, reconnect_window: float = 60.0) -> None:
        self.reconnect_window = reconnect_window
        self._sockets: dict[str, Connection] = {}
        self._rooms: dict[str, set[str]] = {}
        self._by_user: dict[str, set[str]] = {}
        # (namespace, room) -> user id -> how many of the user's sockets are in it
        self._present: dict[tuple[str, str], Counter[str]] = {}
        # (user id, namespace) -> when their last socket there left, oldest first
        self._departed: OrderedDict[tuple[str, str], float] = OrderedDict()

    async def add(self, conn: Connection) -> bool:
        self._sockets[conn.sid] = conn
        self._rooms[conn.sid] = set()
        self._by_user.setdefault(conn.identity.user_id, set()).add(conn.sid)
        self._expire_departures()
        return self._departed.pop((conn.identity.user_id, conn.namespace), None) is not None

    async def remove(self, sid: str, *, departed: bool = True) -> frozenset[str]:
        conn = self._sockets.pop(sid, None)
        if conn is None:
            return frozenset()
        gone = frozenset(room for room in self._rooms.pop(sid) if self._discount(conn, room))
        user_id = conn.identity.user_id
        sockets = self._by_user[user_id]
        sockets.discard(sid)
        if not sockets:
            del self._by_user[user_id]
        if departed:
            key = (user_id, conn.namespace)
            self._departed.pop(key, None)
            self._departed[key] = time.monotonic()
        self._expire_departures()
        return gone

    async def join(self, sid: str, room: str) -> bool:
        conn = self._sockets.get(sid)
        rooms = self._rooms.get(sid)
        if conn is None or rooms is None or room in rooms:
            return False
        rooms.add(room)
        present = self._present.setdefault((conn.namespace, room), Counter())
        present[conn.identity.user_id] += 1
        return present[conn.identity.user_id] == 1

    async def leave(self, sid: str, room: str) -> bool:
        conn = self._sockets.get(sid)
        rooms = self._rooms.get(sid)
        if conn is None or rooms is None or room not in rooms:
            return False
        rooms.discard(room)
        return self._discount(conn, room)

    async def get(self, sid: str) -> ConnectionInfo | None:
        conn = self._sockets.get(sid)
        return None if conn is None else self._info(conn)

    async def connections(self) -> list[ConnectionInfo]:
        return [self._info(conn) for conn in self._sockets.values()]

    async def user_sockets(self, user_id: str) -> list[ConnectionInfo]:
        return [self._info(self._sockets[sid]) for sid in self._by_user.get(user_id, ())]

    async def users(self) -> frozenset[str]:
        return frozenset(self._by_user)

    async def presence(self, namespace: str, room: str) -> frozenset[str]:
        return frozenset(self._present.get((namespace, room), ()))

    def _discount(self, conn: Connection, room: str) -> bool:
        key = (conn.namespace, room)
        present = self._present[key]
        user_id = conn.identity.user_id
        present[user_id] -= 1
        if present[user_id] > 0:
            return False
        del present[user_id]
        if not present:
            del self._present[key]
        return True

    def _expire_departures(self) -> None:
        horizon = time.monotonic() - self.reconnect_window
        while self._departed:
            key, when = next(iter(self._departed.items()))
            if when > horizon:
                break
            del self._departed[key]

    def _info(self, conn: Connection) -> ConnectionInfo:
        return ConnectionInfo(
            sid=conn.sid,
            namespace=conn.namespace,
            identity=conn.identity,
            rooms=frozenset(self._rooms.get(conn.sid, ())),
            connected_at=conn.connected_at,
            last_activity=conn.last_activity,
        )

    def __len__(self) -> int:
        return len(self._sockets)
