"""This process's admitted sockets, kept in step with the registry.

:class:`LiveConnections` is the gateway's table of :class:`Connection` objects by
socket id. Adding one records it in the registry (which says whether it is a
reconnection); :meth:`LiveConnections.admitted` counts and logs a connect once the
namespace has set the socket up; removing one takes it out of the registry and
logs the disconnect with its reason and duration. :attr:`LiveConnections.left` is
set whenever a socket goes, for whoever waits for the table to empty.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Mapping

from ._connection import Connection
from ._log import log
from ._metrics import Metrics
from ._registry import Registry

__all__ = ["LiveConnections"]


class LiveConnections(Mapping[str, Connection]):
    """The live connections of one gateway by socket id (a read-only mapping)."""

    def __init__(self, registry: Registry, metrics: Metrics) -> None:
        self._registry = registry
        self._metrics = metrics
        self._by_sid: dict[str, Connection] = {}
        self._reconnecting: set[str] = set()
        self._admit_started: dict[str, float] = {}
        self.left = asyncio.Event()

    def __getitem__(self, sid: str) -> Connection:
        return self._by_sid[sid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_sid)

    def __len__(self) -> int:
        return len(self._by_sid)

    async def add(self, conn: Connection, *, started: float) -> None:
        """Record ``conn``, whose admission began at ``started`` (monotonic time)."""
        self._by_sid[conn.sid] = conn
        if await self._registry.add(conn):
            self._reconnecting.add(conn.sid)
        self._admit_started[conn.sid] = started

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
