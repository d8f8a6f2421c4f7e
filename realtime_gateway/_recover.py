"""Missed-message recovery: the official socket.io client's connection state
recovery, with every room re-authorized (SPEC "Missed-message recovery").

- A socket's CONNECT reply carries a private id (``pid``). When the socket drops
  without anyone ending it (transport closed or failed, ping timeout), what it
  was in is parked in the :class:`RecoveryStore` for ``recovery_window`` seconds
  and the departures from its rooms wait as long.
- A CONNECT carrying ``{pid, offset}`` is authenticated as any other. If the
  session is there, in time, of the same user and not revoked, the socket
  rejoins each room the authorizer still allows, then gets every event of its
  rooms after ``offset``, in order and once, before any newer one: deliveries to
  it are held from the moment it is admitted until the missed events are out,
  and a held event the replay already carried is dropped. Anything else is a
  fresh connection.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
from engineio import packet as eio_packet

from ._engine import SizedPacket
from ._exceptions import GatewayError
from ._identity import Handshake
from ._log import log
from ._recovery import (
    LogEntry,
    OffsetKey,
    OffsetLost,
    RecoverySession,
    RecoveryStore,
    TooManyMissed,
    offset_key,
)

if TYPE_CHECKING:
    from ._connection import Connection
    from ._gateway import Gateway
    from ._namespace import GatewayNamespace

__all__ = ["RECOVERABLE", "Recovery"]

# python-socketio's reasons for a socket that went without anyone ending it.
RECOVERABLE = frozenset({"transport close", "transport error", "ping timeout"})

_PID = re.compile(r"[A-Za-z0-9_-]{16,64}")
# Deliveries held for one socket while it is being recovered; past this the
# socket is ended rather than let a burst pile up behind a slow recovery.
HOLD_LIMIT = 10_000
# How long a recovered socket's deliveries stay held, at most, for this process to
# hear on the bus the events its replay carried (see Recovery._caught_up).
BUS_WAIT = 5.0


class Recovery:
    """The recovery of one gateway: pids, parking, restoring and the replay."""

    def __init__(self, gateway: Gateway, store: RecoveryStore, *, window: float) -> None:
        self._gateway = gateway
        self.store = store
        self.window = window
        self.max_packets: int = gateway.config.recovery_max_packets
        # Deliveries waiting for a socket being recovered, by socket id: the
        # gateway's fan-out appends (offset key, frames) here instead of sending.
        self.holding: dict[str, list[tuple[OffsetKey | None, tuple[SizedPacket, ...]]]] = {}
        self._overflowed: set[str] = set()
        # What a socket being recovered gets once its CONNECT reply is out.
        self._replays: dict[str, tuple[list[LogEntry], OffsetKey | None]] = {}
        # Parked here: the namespace, the connection and the rooms whose departure waits.
        self._parked: dict[str, tuple[GatewayNamespace, Connection, frozenset[str]]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- holding deliveries -------------------------------------------------------------

    def hold(self, sid: str, key: OffsetKey | None, frames: tuple[SizedPacket, ...]) -> None:
        """Keep a delivery to ``sid`` until its recovery is done (the fan-out calls
        this for every socket in :attr:`holding`)."""
        held = self.holding[sid]
        if len(held) < HOLD_LIMIT:
            held.append((key, frames))
        else:
            self._overflowed.add(sid)

    # -- connect ------------------------------------------------------------------------

    def begin(self, conn: Connection, auth: object) -> tuple[str, str | None] | None:
        """Admission passed: if the CONNECT asks to recover, hold the socket's
        deliveries from now on, before it enters any room (what reaches it before
        its replay is out would otherwise come twice). Returns the request."""
        request = _request(auth)
        if request is not None:
            self.holding[conn.sid] = []
        return request

    async def connect(
        self,
        namespace: GatewayNamespace,
        conn: Connection,
        request: tuple[str, str | None] | None,
    ) -> None:
        """The socket is in its own rooms: recover it if its CONNECT asked to
        (``request``, from :meth:`begin`), else give it a fresh ``pid``."""
        if request is None:
            conn.recovery = (new_pid(), await self._head(conn.namespace))
            return
        pid, offset = request
        result, dropped = await self._restore(namespace, conn, pid, offset)
        self._gateway.metrics.recoveries[result] += 1
        log(
            logging.INFO,
            "recovery",
            sid=conn.sid,
            user=conn.identity.user_id,
            namespace=conn.namespace,
            result=result,
            dropped=len(dropped),
        )
        await self._gateway.audit(
            conn.identity,
            "recover",
            conn.namespace,
            allowed=result == "recovered",
            reason=None if result == "recovered" else result,
            dropped=tuple(dropped),
        )
        if result != "recovered":
            conn.recovery = (new_pid(), await self._head(conn.namespace))

    async def _restore(
        self, namespace: GatewayNamespace, conn: Connection, pid: str, offset: str | None
    ) -> tuple[str, list[str]]:
        session = await self._claim(pid)
        if session is None:
            return "unknown", []
        left = session.disconnected_at + self.window - time.time()
        if left <= 0:
            return "expired", []
        if session.namespace != conn.namespace:
            await self._repark(session, left)
            return "unknown", []
        if session.identity.user_id != conn.identity.user_id or await self._revoked(session):
            await self._repark(session, left)
            return "denied", []
        after = session.offset if offset is None else offset
        if offset_key(after) is None:
            await self._repark(session, left)
            return "unknown", []
        self._unpark(pid)  # parked by this process: its window is over either way
        waiting = session.gone
        dropped: list[str] = []
        restored: list[str] = []
        for room, action in session.rooms.items():
            try:
                await namespace.join(conn, room, action=action, announce=room not in waiting)
            except GatewayError:
                dropped.append(room)
                continue
            restored.append(room)
        rooms = frozenset(conn.rooms)
        old = session.sid
        try:
            missed = await self.store.missed(
                conn.namespace,
                after,
                lambda entry: entry.reaches(rooms, old),
                self.max_packets,
            )
            if sum(entry.size for entry in missed) > self._gateway.config.max_pending_output // 2:
                # Sent at once, they would take the socket over its pending-output bound.
                raise TooManyMissed()
        except Exception as exc:
            # A fresh connection after all: out of the rooms it was given back (the
            # departures are told), and the other departures are told now too.
            for room in restored:
                if room in conn.rooms:
                    await namespace._remove_from(conn, room)
            await self._announce_gone(namespace, conn, waiting - set(restored))
            if isinstance(exc, TooManyMissed):
                return "too_many", []
            if isinstance(exc, OffsetLost):
                return "expired", []
            log(logging.ERROR, "recovery_store_failed", error=type(exc).__name__)
            return "unknown", []
        # The rooms it did not get back are departures now.
        await self._announce_gone(namespace, conn, waiting - rooms)
        conn.recovery = (pid, missed[-1].offset if missed else after)
        self._replays[conn.sid] = (missed, offset_key(conn.recovery[1]))
        return "recovered", dropped

    async def ready(self, conn: Connection) -> None:
        """The CONNECT reply is out: send what the socket missed, then what was held."""
        sid = conn.sid
        replay, last = self._replays.pop(sid, ([], None))
        server = self._gateway.server
        send = server._send_eio_packet
        eio_sid = conn.eio_sid
        for entry in replay:
            for part in entry.frames:
                await send(eio_sid, SizedPacket(eio_packet.MESSAGE, part))
        if replay:
            self._gateway.metrics.recovered_events += len(replay)
        if last is not None and sid in self.holding:
            await self._caught_up(conn, last)
            if sid not in self.holding:
                return  # it went meanwhile
        held = self.holding.pop(sid, None)
        for key, frames in held or ():
            if key is not None and last is not None and key <= last:
                continue  # the replay carried it
            for frame in frames:
                await send(eio_sid, frame)
        if sid in self._overflowed:
            self._overflowed.discard(sid)
            log(logging.WARNING, "recovery_overflow", sid=sid, namespace=conn.namespace)
            await server.disconnect(sid, namespace=conn.namespace)
            return
        await self._store_call(self.store.opened(self._session(conn)))

    async def _caught_up(self, conn: Connection, last: OffsetKey) -> None:
        """Keep holding until this process has itself delivered the offset ``last``.

        On a cluster, the replay is read from the stream and the client's own
        offset may come from another process, while this process delivers an event
        only when it hears it on the bus, a little later: an event up to ``last``
        heard after the hold ended would reach the socket a second time. The
        in-process log is written as events are delivered, so it never waits."""
        heard = getattr(self._gateway.server.manager, "heard", None)
        if heard is None:
            return
        if not await heard(conn.namespace, last, BUS_WAIT):
            # The bus is that far behind: an event it still brings up to ``last``
            # may come twice (the canary shows the bus's health).
            log(logging.WARNING, "recovery_bus_behind", sid=conn.sid, namespace=conn.namespace)

    def abandon(self, sid: str) -> None:
        """The socket will not be connected after all: forget what waits for it."""
        self.holding.pop(sid, None)
        self._replays.pop(sid, None)
        self._overflowed.discard(sid)

    async def moved(self, conn: Connection) -> None:
        """``conn`` joined or left a room the client asked for."""
        if conn.recovery is not None and conn.sid not in self.holding:
            await self._store_call(self.store.moved(self._session(conn)))

    # -- disconnect ----------------------------------------------------------------------

    def keeps(self, conn: Connection, reason: str) -> bool:
        """Whether ``conn``, leaving for ``reason``, is parked for recovery."""
        return (
            reason in RECOVERABLE
            and conn.recovery is not None
            and conn.sid not in self.holding
            and self._gateway._lifecycle.state == "running"
        )

    async def park(
        self, namespace: GatewayNamespace, conn: Connection, gone: frozenset[str]
    ) -> None:
        """``conn`` dropped: keep its session for the window; the departures from
        ``gone`` are announced when the window ends without a recovery."""
        session = self._session(conn)
        session.disconnected_at = time.time()
        session.gone = gone
        pid = session.pid
        await self._store_call(self.store.park(session, self.window))
        self._unpark(pid)
        # Kept for the departures' announcement; without its handshake (headers,
        # cookies), which nothing needs any more and which holds credentials.
        kept = attrs.evolve(conn, handshake=Handshake(namespace=conn.namespace))
        self._parked[pid] = (namespace, kept, gone)
        loop = asyncio.get_running_loop()
        self._timers[pid] = loop.call_later(self.window, self._window_ended, pid)
        limit = getattr(self.store, "max_sessions", 10_000)
        while len(self._parked) > limit:
            oldest = next(iter(self._parked))
            self._window_ended(oldest)

    async def closed(self, conn: Connection) -> None:
        """``conn`` was ended (or left): nothing of it may be recovered."""
        self.abandon(conn.sid)
        if conn.recovery is not None:
            await self._store_call(self.store.closed(conn.recovery[0]))

    def _window_ended(self, pid: str) -> None:
        parked = self._unpark(pid)
        if parked is None:
            return
        task = asyncio.get_running_loop().create_task(self._settle(pid, parked))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle(
        self, pid: str, parked: tuple[GatewayNamespace, Connection, frozenset[str]]
    ) -> None:
        settled = await self._store_call(self.store.settle(pid))
        if settled is not False:  # a store that cannot say: announce rather than not
            await self._announce_gone(*parked)

    async def _announce_gone(
        self, namespace: GatewayNamespace, conn: Connection, gone: frozenset[str]
    ) -> None:
        """Tell the departures of ``conn``'s user from ``gone``, where the user has
        not come back meanwhile."""
        for room in sorted(gone):
            try:
                present = await self._gateway.registry.presence(conn.namespace, room)
            except Exception:
                present = frozenset()
            if conn.identity.user_id not in present:
                await namespace._announce(conn, room, joined=False)

    def _unpark(self, pid: str) -> tuple[GatewayNamespace, Connection, frozenset[str]] | None:
        timer = self._timers.pop(pid, None)
        if timer is not None:
            timer.cancel()
        return self._parked.pop(pid, None)

    async def close(self) -> None:
        """Stop the timers (the gateway is going away)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._parked.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- helpers ------------------------------------------------------------------------

    def _session(self, conn: Connection) -> RecoverySession:
        assert conn.recovery is not None
        pid, offset = conn.recovery
        return RecoverySession(
            pid=pid,
            namespace=conn.namespace,
            identity=conn.identity,
            sid=conn.sid,
            rooms={room: action for room, action in conn.rooms.items() if action is not None},
            offset=offset,
        )

    async def _head(self, namespace: str) -> str:
        head = await self._store_call(self.store.head(namespace))
        return head if isinstance(head, str) else "0"

    async def _claim(self, pid: str) -> RecoverySession | None:
        found = await self._store_call(self.store.claim(pid))
        return found if isinstance(found, RecoverySession) else None

    async def _repark(self, session: RecoverySession, left: float) -> None:
        # Still the owner's to recover: a wrong claim must not take it away.
        await self._store_call(self.store.park(session, left))

    async def _revoked(self, session: RecoverySession) -> bool:
        try:
            return await self._gateway._is_revoked(session.identity)
        except GatewayError:
            return True

    async def _store_call(self, call: Any) -> Any:
        """Await a store call; a store that fails is logged, never the socket's end."""
        try:
            return await call
        except Exception as exc:
            log(logging.ERROR, "recovery_store_failed", error=type(exc).__name__)
            return None


def new_pid() -> str:
    """A private id for a socket's session: unguessable, never logged."""
    return secrets.token_urlsafe(18)


def _request(auth: object) -> tuple[str, str | None] | None:
    """``(pid, offset)`` from a CONNECT's auth payload, if it asks to recover."""
    if not isinstance(auth, Mapping):
        return None
    pid = auth.get("pid")
    if not isinstance(pid, str) or _PID.fullmatch(pid) is None:
        return None
    offset = auth.get("offset")
    if offset is None:
        return pid, None
    # An offset that is no offset (a private event's string payload, or anything a
    # client made up) is kept as "", which recovers nothing: a fresh connection.
    return pid, offset if isinstance(offset, str) and offset_key(offset) is not None else ""
