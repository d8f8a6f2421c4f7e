"""Faster delivery to many sockets, within python-socketio's and python-engineio's
own interfaces.

- :class:`FanOutManager`: python-socketio's ``AsyncManager`` creates one asyncio task
  per recipient for every emit. Here an emit without a callback encodes the packet
  once and hands it to each recipient's queue in turn: no task per recipient, each
  socket's order kept (one emit is queued everywhere before the next one starts),
  closed sockets skipped. Emits with callbacks take python-socketio's own path.
  The frames are :class:`SizedPacket`: each socket's pending-output bound counts
  them without measuring them again. With missed-message recovery on, an emit to
  a room gets its offset (one per emit) as its last argument and goes into the
  recovery log, encoded as sent; a socket being recovered has its deliveries
  held (see :mod:`._recover`).
- :class:`RoomIndex`: python-socketio's managers find a socket's rooms by looking
  through every room of its namespace (``basic_disconnect`` copies the namespace's
  whole room table for each disconnect), so ending n sockets together costs
  O(n^2); with 5,000 sockets connected, 100 disconnects took 0.6 s. The index
  keeps each socket's rooms, so a disconnect costs what the socket is in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import socketio
from engineio import packet as eio_packet
from socketio import packet

from ._engine import SizedPacket
from ._recovery import LogEntry, MemoryRecoveryStore, OffsetKey, offset_key

if TYPE_CHECKING:
    from ._recover import Recovery

__all__ = ["FanOutManager", "RoomIndex", "deliver", "encode_event"]


class RoomIndex:
    """Mixin for a python-socketio manager: each socket's rooms, by socket id (ids
    are unique across namespaces), kept as the manager enters and leaves rooms."""

    rooms: dict[str, dict[Any, Any]]
    callbacks: dict[str, Any]
    pending_connect: dict[str, list[str]]
    pending_disconnect: dict[str, list[str]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rooms_of: dict[str, list[Any]] = {}

    def basic_enter_room(self, sid: str, namespace: str, room: Any, eio_sid: Any = None) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)  # type: ignore[misc]
        rooms = self._rooms_of.setdefault(sid, [])
        if room not in rooms:
            rooms.append(room)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)  # type: ignore[misc]
        rooms = self._rooms_of.get(sid)
        if rooms is not None and room in rooms:
            rooms.remove(room)
            if not rooms:
                del self._rooms_of[sid]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        rooms = self._rooms_of.get(sid)
        if rooms is None or namespace not in self.rooms:
            super().basic_disconnect(sid, namespace, **kwargs)  # type: ignore[misc]
            return
        for room in list(rooms):
            self.basic_leave_room(sid, namespace, room)
        # The rest of python-socketio's basic_disconnect, which has no other hook.
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            waiting = pending.get(namespace)
            if waiting is not None and sid in waiting:
                waiting.remove(sid)
                if not waiting:
                    del pending[namespace]

    def get_rooms(self, sid: str, namespace: str) -> list[Any]:
        """The rooms ``sid`` is in, as python-socketio's ``get_rooms`` answers."""
        if namespace not in self.rooms:
            return []
        return [room for room in self._rooms_of.get(sid, ()) if room is not None]


class FanOutManager(RoomIndex, socketio.AsyncManager):  # type: ignore[misc]
    """python-socketio's in-process manager with a task-free fan-out.

    ``log`` and ``recovery`` are set by the gateway when recovery is on."""

    log: MemoryRecoveryStore | None = None
    recovery: Recovery | None = None

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        if callback is not None:
            await super().emit(
                event,
                data,
                namespace,
                room=room,
                skip_sid=skip_sid,
                callback=callback,
                to=to,
                **kwargs,
            )
            return
        room = to or room
        log = self.log
        if namespace not in self.rooms and log is None:
            return  # nobody to send to, and nothing to keep for later
        if isinstance(data, tuple):
            args = list(data)
        elif data is not None:
            args = [data]
        else:
            args = []
        skip = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
        offset = None
        if log is not None and not (isinstance(room, str) and self.is_sid_room(namespace, room)):
            # An event to a room (not a socket's private one): logged for recovery.
            offset = log.next_offset()
            args.append(offset)
        frames = encode_event(self.server, event, args, namespace)
        key = None
        if offset is not None:  # so the log is there
            assert log is not None
            log.append(
                namespace,
                LogEntry(
                    offset=offset,
                    rooms=tuple(room) if isinstance(room, list) else room,
                    skip=tuple(skip_sid) if isinstance(skip_sid, list) else skip_sid,
                    frames=tuple(frame.data for frame in frames),
                ),
            )
            key = offset_key(offset)
        await deliver(self, namespace, room, skip, frames, key)


def encode_event(
    server: Any, event: str, args: list[Any], namespace: str
) -> tuple[SizedPacket, ...]:
    """``event`` with ``args`` as engine.io MESSAGE frames, encoded once."""
    encoded = server.packet_class(packet.EVENT, namespace=namespace, data=[event, *args]).encode()
    parts = encoded if isinstance(encoded, list) else [encoded]
    return tuple(SizedPacket(eio_packet.MESSAGE, part) for part in parts)


async def deliver(
    manager: Any,
    namespace: str,
    room: Any,
    skip: set[Any],
    frames: tuple[SizedPacket, ...],
    key: OffsetKey | None,
) -> None:
    """Hand ``frames`` to every socket of ``manager`` in ``room`` but those in
    ``skip``, in turn and without a task each; a socket being recovered has them
    held instead (``key`` is the event's offset, if it has one). Shared by the
    in-process and the cluster managers."""
    recovery: Recovery | None = manager.recovery
    holding = recovery.holding if recovery is not None else None
    send = manager.server._send_eio_packet
    for sid, eio_sid in manager.get_participants(namespace, room):
        if sid in skip:
            continue
        if holding and sid in holding:
            recovery.hold(sid, key, frames)  # type: ignore[union-attr]
            continue
        for frame in frames:
            # Puts the frame on the socket's queue (EngineSocket.send, which
            # applies the pending-output bound), or skips a closed socket.
            await send(eio_sid, frame)
