"""The load generator's ceiling: a server that costs next to nothing per delivery, so
that S1 against it measures how many deliveries per second the load generator can
take, not the server.

    BENCH_SECRET=... python benchmarks/servers/ceiling_server.py --port 0

Just enough Engine.IO v4 / Socket.IO v5 over websockets, on plain asyncio (no web
framework, no authentication, no pings): the websocket upgrade, the open packet, the
namespace connect to ``/``, and the benchmark protocol's ``bench:join`` and
``bench:fanout`` (see ``bench_common``). A fan-out encodes each message once, down to
its websocket frame, and writes one buffer per socket per burst of
:data:`BURST` messages (the frames concatenated), waiting between bursts for every
socket whose buffer is full to drain. Not a server to copy: it trusts its clients.
Prints ``ready <port>``; runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import signal
import struct
from collections import defaultdict
from typing import Any

from bench_common import announce, fanout_request, make_payload, parse_args, room_name

BURST = 50  # messages per write to each socket
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# No pings for 10 minutes: a run is far shorter.
OPEN = json.dumps(
    {
        "sid": "ceiling",
        "upgrades": [],
        "pingInterval": 600_000,
        "pingTimeout": 600_000,
        "maxPayload": 1_000_000,
    }
)
MAX_HEAD = 16384  # bytes of an upgrade request
MAX_FRAME = 1_000_000  # bytes of a client frame


def frame(text: str) -> bytes:
    """An unmasked, final websocket text frame."""
    data = text.encode()
    size = len(data)
    if size < 126:
        return bytes((0x81, size)) + data
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size) + data
    return struct.pack("!BBQ", 0x81, 127, size) + data


class Connection(asyncio.Protocol):
    def __init__(self, server: CeilingServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget(self)
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded and not self._upgrade():
            return
        while self._frame():
            pass

    def _upgrade(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self.close()
            return False
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[: end + 4]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        key = headers.get("sec-websocket-key")
        if key is None:
            self.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.close()
            return False
        digest = hashlib.sha1(key.encode() + GUID).digest()  # noqa: S324 (RFC 6455's)
        accept = base64.b64encode(digest).decode()
        self.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
            + frame("0" + OPEN)
        )
        self.upgraded = True
        return True

    def _frame(self) -> bool:
        """Handle one client frame from the buffer, if it is all there."""
        buffer = self.buffer
        if len(buffer) < 2:
            return False
        opcode, size = buffer[0] & 0x0F, buffer[1] & 0x7F
        at = 2
        if size == 126:
            if len(buffer) < 4:
                return False
            size, at = struct.unpack_from("!H", buffer, 2)[0], 4
        elif size == 127:
            if len(buffer) < 10:
                return False
            size, at = struct.unpack_from("!Q", buffer, 2)[0], 10
        if size > MAX_FRAME:
            self.close()
            return False
        masked = buffer[1] & 0x80
        if len(buffer) < at + (4 if masked else 0) + size:
            return False
        if masked:
            mask = buffer[at : at + 4]
            at += 4
            payload = bytes(buffer[at + i] ^ mask[i % 4] for i in range(size))
        else:
            payload = bytes(buffer[at : at + size])
        del buffer[: at + size]
        if opcode == 0x1:
            self._packet(payload.decode())
        elif opcode == 0x8:
            self.write(b"\x88\x00")
            self.close()
        elif opcode == 0x9:
            self.write(bytes((0x8A, len(payload))) + payload)
        return True

    def _packet(self, text: str) -> None:
        if text.startswith("40"):
            self.write(frame('40{"sid":"' + secrets.token_urlsafe(12) + '"}'))
        elif text.startswith("41") or text == "1":
            self.close()
        elif text.startswith("42"):
            bracket = text.find("[")
            ack = int(text[2:bracket]) if bracket > 2 else None
            event, *args = json.loads(text[bracket:])
            self.server.event(self, event, args, ack)

    def answer(self, ack: int | None, value: Any) -> None:
        if ack is not None:
            self.write(frame(f"43{ack}" + json.dumps([value], separators=(",", ":"))))


class CeilingServer:
    def __init__(self) -> None:
        self.rooms: defaultdict[str, set[Connection]] = defaultdict(set)
        self.tasks: set[asyncio.Task[None]] = set()

    def forget(self, conn: Connection) -> None:
        for members in self.rooms.values():
            members.discard(conn)

    def event(self, conn: Connection, event: str, args: list[Any], ack: int | None) -> None:
        if event == "bench:join":
            room = room_name(args[0] if args else None)
            self.rooms[room].add(conn)
            conn.answer(ack, {"success": True, "room": room})
        elif event == "bench:echo":
            conn.answer(ack, {"success": True, "payload": args[0] if args else None})
        elif event == "bench:fanout":
            task = asyncio.create_task(self.fanout(conn, args[0] if args else None, ack))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        else:
            conn.answer(ack, {"success": False, "error": "Unknown event"})

    async def fanout(self, conn: Connection, request: object, ack: int | None) -> None:
        room, count, size = fanout_request(request)
        payload = make_payload(size)
        frames = [frame(f'42["bench:msg",{seq},"{payload}"]') for seq in range(count)]
        members = list(self.rooms.get(room, ()))
        for start in range(0, count, BURST):
            blob = b"".join(frames[start : start + BURST])
            for member in members:
                member.write(blob)
            for member in members:
                if not member.writable.is_set():
                    await member.writable.wait()
        conn.answer(ack, {"success": True, "sent": count})


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server = CeilingServer()
    listener = await loop.create_server(lambda: Connection(server), "127.0.0.1", port)
    announce(listener.sockets[0].getsockname()[1])
    await stop.wait()
    listener.close()


def main() -> None:
    args = parse_args(__doc__ or "")
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
