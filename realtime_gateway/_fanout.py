"""Faster delivery to many sockets, within python-socketio's and python-engineio's
own interfaces.

- :class:`FanOutManager`: python-socketio's ``AsyncManager`` creates one asyncio task
  per recipient for every emit. Here an emit without a callback encodes the packet
  once and hands it to each recipient's queue in turn: no task per recipient, each
  socket's order kept (one emit is queued everywhere before the next one starts),
  closed sockets skipped. Emits with callbacks take python-socketio's own path.
  The frames are :class:`SizedPacket`: each socket's pending-output bound counts
  them without measuring them again.
"""

from __future__ import annotations

from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet

from ._engine import SizedPacket

__all__ = ["FanOutManager"]


class FanOutManager(socketio.AsyncManager):  # type: ignore[misc]
    """python-socketio's in-process manager with a task-free fan-out."""

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
        if namespace not in self.rooms:
            return
        if isinstance(data, tuple):
            args = list(data)
        elif data is not None:
            args = [data]
        else:
            args = []
        skip = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
        encoded = self.server.packet_class(
            packet.EVENT, namespace=namespace, data=[event, *args]
        ).encode()
        frames = [
            SizedPacket(eio_packet.MESSAGE, part)
            for part in (encoded if isinstance(encoded, list) else [encoded])
        ]
        send = self.server._send_eio_packet
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid in skip:
                continue
            for frame in frames:
                # Puts the frame on the socket's queue (EngineSocket.send, which
                # applies the pending-output bound), or skips a closed socket.
                await send(eio_sid, frame)
