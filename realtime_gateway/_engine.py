"""The gateway's engine.io layer: python-engineio's server, socket and websocket
drivers, made strict where a hostile client could otherwise wedge or hijack them.

- :class:`EngineServer` (python-socketio builds it through
  ``_GatewayServer._engineio_server_class``) screens every HTTP request before
  python-engineio sees it:

  - *session binding*: the polling handshake sets a cookie ``rtg_eio_<sid>`` whose
    value is an HMAC of the sid under a per-process key (``HttpOnly``,
    ``SameSite=Strict``, ``Path`` = the socket.io path, ``Secure`` over https).
    Every later request naming that sid (polling GET and POST, websocket upgrade)
    must carry it, or is refused with 403 and counted in
    ``Metrics.session_binding_refused``; a session opened over websocket has no
    cookie, so no HTTP request may name it. A handshake expires the binding
    cookies of sessions that are gone, so a browser does not collect them;
  - *polling bodies*: a POST must declare its length (411 otherwise, 400 when it is
    not a number), and one over ``maxPayload`` is answered 413 without reading
    it and its session closed; each of these refusals closes the HTTP connection,
    so its unread body is never read and the connection never lingers;
  - an unknown sid is answered 400 without echoing the sid (python-engineio puts
    it in the answer);
  - *handshakes* (a request without a sid) spend from a token bucket per remote
    address (``handshake_rate``, ``handshake_burst``; see ``_handshakes``) and are
    answered 429 past it; while ``max_pending_sessions`` sessions have not yet
    completed a socket.io CONNECT, new ones are answered 503. Neither creates a
    session; both are counted in ``Metrics.handshakes_refused``. Over websocket
    the refusal is the same HTTP answer to the upgrade request (under ASGI where
    the server offers the denial-response extension; otherwise the upgrade is
    refused with the server's own 403).

- :class:`EngineSocket` decodes frames strictly (:func:`decode_frame`): an empty,
  unknown or undecodable frame, a frame a client may not send, or invalid UTF-8
  closes the session at once (websocket: close code 1002; polling: 400), so
  python-socketio reports the disconnect and the registry forgets the socket.
  python-engineio raises inside its receive loop instead, dropping the websocket
  without a close frame (or wedging an upgrade), and answers an undecodable
  polling body 200 while the session stays open.
- :class:`AiohttpWebSocket` and :class:`AsgiWebSocket` accept messages of up to
  ``maxPayload`` bytes inclusive and close with 1009 above it.
- *Frames written once*: under aiohttp, on a websocket without compression, the
  socket writes websocket frames to its transport itself: a broadcast packet is
  framed once for all its recipients (:class:`SizedPacket`), and the frames sent to
  a socket in one loop turn go out in one write when the turn's callbacks have run
  (:meth:`EngineServer.frames_waiting`), in the order they were sent, acks and
  PINGs included. No writer task, and no task or timer per frame read: the read
  loop ends when a PONG is overdue or the connection is evicted. Elsewhere (ASGI,
  a compressed connection) python-engineio's writer task sends packet by packet.
- *Pending output*: each :class:`EngineSocket` keeps a running count of the bytes
  queued for its client (added when a packet is queued, taken off when it is
  written to the transport or a long-poll has taken it), plus what the websocket
  transport still buffers. A packet that takes the sum over
  ``max_pending_output`` evicts the connection (see :meth:`EngineSocket.send`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import inspect
import logging
import math
import re
import secrets
import struct
import time
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import engineio
from aiohttp import WebSocketError, WSMsgType
from aiohttp.web import WebSocketResponse
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_drivers.aiohttp import WebSocket as _UpstreamAiohttpWebSocket
from engineio.async_drivers.asgi import WebSocket as _UpstreamAsgiWebSocket
from engineio.async_socket import AsyncSocket

from ._handshakes import AddressBudget, bucket_key, client_address
from ._log import log
from ._metrics import Metrics
from ._outbox import Outbox

__all__ = [
    "COOKIE_PREFIX",
    "AiohttpWebSocket",
    "AsgiWebSocket",
    "BadFrame",
    "EngineServer",
    "EngineSocket",
    "SizedPacket",
    "decode_frame",
    "packet_size",
]

COOKIE_PREFIX = "rtg_eio_"
_POSTED_TO = "realtime_gateway.socket"  # the environ key of a polling POST's session
_CLOSED_POLL_DELAY = 0.1  # seconds from a polling client's CLOSE to ending its long-poll
_WS_PROTOCOL_ERROR = 1002
_WS_MESSAGE_TOO_BIG = 1009
# Frames a client may send once its session is open; it never sends OPEN or, in
# engine.io v4, PING (the upgrade probe is checked on its own).
_CLIENT_PACKETS = frozenset(
    {eio_packet.CLOSE, eio_packet.PONG, eio_packet.MESSAGE, eio_packet.UPGRADE, eio_packet.NOOP}
)
_COOKIE_NAME = re.compile(rf"{COOKIE_PREFIX}[A-Za-z0-9_-]{{1,64}}")
# Stale binding cookies expired per handshake; a browser sends only so many.
_MAX_EXPIRED_COOKIES = 32
# Bytes of frames a socket keeps for the end of the loop turn, at most: past them
# they are written at once.
WRITE_AT = 16 * 1024
SLOW_CONSUMER = "slow_consumer"
"""The disconnect reason of a connection evicted for its pending output."""


class BadFrame(eio_exceptions.EngineIOError):  # type: ignore[misc]
    """A frame or polling body that is not valid engine.io v4 from a client."""


class _TooBig(OSError):
    """A websocket message over ``maxPayload``; the driver has closed with 1009."""


def decode_frame(frame: str | bytes, *, upgrade_probe: bool = False) -> Any:
    """Decode one engine.io frame into a ``engineio.packet.Packet`` or raise
    :class:`BadFrame`.

    A text message keeps its data as text: python-engineio would JSON-decode
    ``4{...}`` (and recurse without bound on ``4[[[[...``), while engine.io
    message data is opaque text. ``upgrade_probe`` allows the ``2probe`` ping a
    client sends on a websocket it is upgrading to.
    """
    if isinstance(frame, bytes | bytearray):
        return eio_packet.Packet(eio_packet.MESSAGE, bytes(frame))
    if not frame:
        raise BadFrame("empty frame")
    kind = frame[0]
    if kind == "b":
        try:
            data = base64.b64decode(frame[1:], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadFrame("bad base64") from exc
        return eio_packet.Packet(eio_packet.MESSAGE, data)
    if kind not in "0123456":
        raise BadFrame("unknown packet type")
    packet_type = int(kind)
    rest = frame[1:]
    if packet_type == eio_packet.PING and upgrade_probe and rest == "probe":
        return eio_packet.Packet(eio_packet.PING, rest)
    if packet_type not in _CLIENT_PACKETS:
        raise BadFrame("packet type not sent by clients")
    return eio_packet.Packet(packet_type, rest or None)


# Packets in one polling POST. Clients send everything they have buffered in one
# body (the official client and python-socketio's alike), so python-engineio's
# 16 closed well-behaved clients that emitted 17 events at once; the body's bytes
# are bounded by max_payload_size, and this bounds the events one request starts.
MAX_PACKETS_PER_BODY = 256
# Packets in one long-poll response: python-engineio's client refuses a payload of
# more than 16 (its Payload.max_decode_packets) and drops the connection.
MAX_PACKETS_PER_RESPONSE = 16


def decode_body(body: bytes) -> list[Any]:
    """Decode a polling POST body into packets or raise :class:`BadFrame`."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadFrame("invalid UTF-8") from exc
    if not text:
        raise BadFrame("empty body")
    parts = text.split("\x1e")
    if len(parts) > MAX_PACKETS_PER_BODY:
        raise BadFrame("too many packets")
    return [decode_frame(part) for part in parts]


def packet_size(pkt: Any) -> int:
    """The bytes of an engine.io packet as a websocket frame (type digit included;
    polling sends binary data base64-encoded, a third more)."""
    data = pkt.data
    if isinstance(data, str):
        # CPython knows whether a str is ASCII without scanning it, and JSON text
        # (python-socketio's encoding) is ASCII unless told otherwise.
        return 1 + (len(data) if data.isascii() else len(data.encode("utf-8")))
    if isinstance(data, bytes | bytearray):
        return len(data)
    if data is None:
        return 1
    return len(str(pkt.encode()))


class SizedPacket(eio_packet.Packet):  # type: ignore[misc]
    """An engine.io packet that knows its :func:`packet_size`, and builds its
    websocket frame once: a broadcast frame queued to many sockets is measured and
    framed once."""

    frame: bytes | None = None
    """The websocket frame, once a socket that writes frames itself has wanted it."""

    def __init__(self, packet_type: int, data: Any) -> None:
        super().__init__(packet_type, data)
        self.size = packet_size(self)


def websocket_frame(pkt: Any) -> bytes:
    """``pkt`` as one unmasked, uncompressed websocket frame from the server
    (RFC 6455 section 5.2): text for a text packet, binary for bytes, as
    python-engineio's drivers send them."""
    data = pkt.encode()
    if isinstance(data, str):
        payload = data.encode()
        opcode = 0x81  # FIN, text
    else:
        payload = bytes(data)
        opcode = 0x82  # FIN, binary
    length = len(payload)
    if length < 126:
        header = bytes((opcode, length))
    elif length < 65536:
        header = struct.pack("!BBH", opcode, 126, length)
    else:
        header = struct.pack("!BBQ", opcode, 127, length)
    return header + payload


def _frame_of(pkt: Any) -> bytes:
    if type(pkt) is SizedPacket:
        frame = pkt.frame
        if frame is None:
            frame = pkt.frame = websocket_frame(pkt)
        return frame
    return websocket_frame(pkt)


class _Driver(Protocol):
    def buffered(self) -> int: ...
    def abort(self) -> bool: ...


class EngineSocket(AsyncSocket):  # type: ignore[misc]
    """python-engineio's socket with strict decoding, clean closes and bounded
    pending output."""

    bound = False
    """Whether the session was opened over polling and so has a binding cookie."""
    connected: bool
    upgrading: bool
    upgraded: bool
    closing: bool
    closed: bool
    last_ping: float | None
    queued_bytes = 0
    """Bytes of the packets queued for the client and not yet handed to its transport."""
    transport_bytes = 0
    """What the websocket transport still buffered when the writer last looked."""
    peak_pending = 0
    """The most :attr:`pending_output` has been when a packet was queued."""
    evicted = False
    """Whether the connection was closed for going over ``max_pending_output``."""
    closed_by_client = False
    """Whether a polling client sent CLOSE (its waiting long-poll is then ended)."""
    _driver: _Driver | None = None
    _writer: asyncio.Task[None] | None = None
    _eviction: asyncio.Task[None] | None = None
    _ping_timer: asyncio.TimerHandle | None = None
    # While the websocket loop reads: its deadline, which stops the read when due
    # (set to now by _stop_reading), and the reason the loop then gives.
    _reading: asyncio.Timeout | None = None
    _in_read = False
    _stop_reason: str | None = None
    # Frames not yet written, when this socket writes websocket frames to its
    # transport itself (see _write_frames); None otherwise.
    _frames: list[bytes] | None = None
    _transport: asyncio.WriteTransport | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Outbox()  # python-engineio's asyncio.Queue costs about 3 KB

    def schedule_ping(self) -> None:
        """Send the next PING ``ping_interval`` from now (python-engineio's, but with
        a timer handle: upstream starts a task per connection that sleeps the whole
        interval, and outlives the connection by up to that long)."""
        if self.last_ping:
            self.last_ping = None
            if self._ping_timer is not None:
                self._ping_timer.cancel()
            loop = asyncio.get_running_loop()
            self._ping_timer = loop.call_later(self.server.ping_interval, self._ping_due)

    def _ping_due(self) -> None:
        self._ping_timer = None
        if not self.closing and not self.closed and not self.evicted:
            self.last_ping = time.time()
            self._enqueue(eio_packet.Packet(eio_packet.PING))
            if self._reading is not None:
                # A websocket client that does not answer in time is gone: its read
                # ends then (python-engineio times out every read instead, which
                # costs a task and a timer per frame).
                loop = asyncio.get_running_loop()
                self._ping_timer = loop.call_later(self.server.ping_timeout, self._pong_overdue)

    def _pong_overdue(self) -> None:
        self._ping_timer = None
        self._stop_reading(self.server.reason.PING_TIMEOUT)

    def _stop_reading(self, reason: str) -> None:
        """End the websocket loop (it then closes the session): its read at once,
        or, while it handles a frame, before it reads the next."""
        if self._stop_reason is None:
            self._stop_reason = reason
        reading = self._reading
        if self._in_read and reading is not None and not reading.expired():
            reading.reschedule(asyncio.get_running_loop().time())

    @property
    def pending_output(self) -> int:
        """Bytes waiting for the client: queued plus in the transport's buffer."""
        return self.queued_bytes + self.transport_bytes

    async def send(self, pkt: Any) -> None:
        """Queue ``pkt`` for the client (python-engineio's ``send``), evicting the
        connection when its pending output goes over ``max_pending_output``; a
        packet alone in an idle connection's queue is let through whatever its size.
        """
        if self.evicted or not await self.check_ping_timeout():
            return
        # Upstream: python-engineio's per-socket queue is unbounded and never refuses.
        size = pkt.size if type(pkt) is SizedPacket else packet_size(pkt)
        queued = self.queued_bytes + size
        self.queued_bytes = queued
        frames = self._frames
        if frames is not None:
            if not frames:
                self.server.frames_waiting(self)
            frames.append(_frame_of(pkt))
            transport = self._transport
            assert transport is not None
            if queued >= WRITE_AT:
                # A long burst in one loop turn: what waits goes out now, so the
                # client reads while the rest is being sent (and the joined
                # buffer stays small).
                self.write_frames()
                queued = 0
            pending = queued + transport.get_write_buffer_size()
        else:
            self.queue.put_nowait(pkt)
            pending = queued + self.transport_bytes
        if pending > self.peak_pending:
            self.peak_pending = pending
        if pending > self.server.max_pending_output and pending != size:
            self._evict(pending)

    def _enqueue(self, pkt: Any) -> None:
        self.queued_bytes += packet_size(pkt)
        frames = self._frames
        if frames is not None:
            if not frames:
                self.server.frames_waiting(self)
            frames.append(_frame_of(pkt))
        else:
            self.queue.put_nowait(pkt)

    def end_transport(self) -> None:
        """Close the websocket once what was sent (the CLOSE packet) is out, so a
        close frame follows it; a polling client gets the CLOSE packet on its next
        request."""
        if self._frames is not None:
            self.write_frames()
            self._stop_reading(self.server.reason.SERVER_DISCONNECT)  # then it closes
        else:
            self.queue.put_nowait(None)  # ends python-engineio's writer, which closes

    def write_frames(self) -> None:
        """Write the frames waiting for this socket's websocket in one go (the
        server calls this once per loop turn for every socket that has some):
        nothing waits for the client; what its transport keeps counts in the
        pending output, whose bound evicts a client that stops reading."""
        frames = self._frames
        if not frames:
            return
        self._frames = []
        self.queued_bytes = 0
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
        self.transport_bytes = transport.get_write_buffer_size()

    def _sent(self, pkt: Any) -> None:
        self.queued_bytes -= pkt.size if type(pkt) is SizedPacket else packet_size(pkt)

    async def poll(self) -> list[Any]:
        """The queued packets for a long-poll, as python-engineio's ``poll`` but at
        most :data:`MAX_PACKETS_PER_RESPONSE` (the rest wait for the next one); they
        leave the pending output as they go into the HTTP response."""
        try:
            first = await asyncio.wait_for(
                self.queue.get(), self.server.ping_interval + self.server.ping_timeout
            )
            self.queue.task_done()
        except (TimeoutError, asyncio.CancelledError):
            raise eio_exceptions.QueueEmpty() from None
        if first is None:
            return []
        packets: list[Any] = [first]
        while len(packets) < MAX_PACKETS_PER_RESPONSE and not self.queue.empty():
            pkt = self.queue.get_nowait()
            self.queue.task_done()
            if pkt is None:
                self.queue.put_nowait(None)  # for whoever reads next, as upstream does
                break
            packets.append(pkt)
        for pkt in packets:
            self._sent(pkt)
        return packets

    def _evict(self, pending: int) -> None:
        self.evicted = True
        # What is queued will never reach the client: let it go now.
        while not self.queue.empty():
            self.queue.get_nowait()
            self.queue.task_done()
        if self._frames is not None:
            self._frames = []
        self.queued_bytes = 0
        self.server.slow_consumer(self, pending)
        # Held here: the event loop keeps only a weak reference to a task.
        self._eviction = self.server.start_background_task(self._close_evicted)

    async def _close_evicted(self) -> None:
        # python-socketio hears the disconnect (every namespace socket of the
        # connection) before this returns.
        await self.close(wait=False, abort=True, reason=SLOW_CONSUMER)
        if not self.upgraded:
            # For a long-poll that is waiting, if any; no later request reaches a
            # closed session.
            self.queue.put_nowait(eio_packet.Packet(eio_packet.CLOSE))
        self.queue.put_nowait(None)  # ends the websocket writer or a waiting long-poll
        if self._driver is not None:
            if not self._driver.abort() and self._writer is not None:
                # The server's send may wait for the client forever.
                self._writer.cancel()
            self.transport_bytes = 0
        self._stop_reading(SLOW_CONSUMER)

    async def receive(self, pkt: Any) -> None:
        if self.evicted:
            # A client that only sends PONGs would keep the websocket loop reading.
            raise eio_exceptions.SocketIsClosedError()
        if pkt.packet_type == eio_packet.NOOP:
            return
        await super().receive(pkt)
        if pkt.packet_type == eio_packet.CLOSE and not self.upgraded:
            self.closed_by_client = True

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        self.server.session_joined(self.sid)  # no longer pending, whatever happens next
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        await super().close(wait=False, abort=abort, reason=reason)
        if self._frames is not None:
            # The websocket closes after the CLOSE packet: a client that would not
            # close it cannot keep the connection (nothing times its reads out).
            self.end_transport()
        elif wait:
            # python-engineio waits for the queue to drain, forever when no long-poll
            # comes to take the CLOSE packet (a client that went away).
            server = self.server
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.queue.join(), server.ping_interval + server.ping_timeout
                )

    async def handle_post_request(self, environ: dict[str, Any]) -> None:
        # The server checked Content-Length against maxPayload before this.
        length = int(environ["CONTENT_LENGTH"])
        stream = environ["wsgi.input"]
        try:
            if hasattr(stream, "readexactly"):
                # aiohttp's read(n) returns what has arrived so far, up to n bytes;
                # python-engineio would decode the first chunk of a long body alone.
                body = await stream.readexactly(length)
            else:
                body = await stream.read(length)
        except asyncio.IncompleteReadError as exc:
            await self._protocol_error("engineio_frame")
            raise BadFrame("truncated body") from exc
        try:
            packets = decode_body(body)
        except BadFrame:
            await self._protocol_error("engineio_frame")
            raise
        for pkt in packets:
            await self.receive(pkt)

    async def _protocol_error(self, reason: str) -> None:
        self.server.count_protocol_error(reason)
        await self.close(wait=False, reason=self.server.reason.TRANSPORT_ERROR)

    async def _websocket_handler(self, ws: Any) -> None:
        """python-engineio's websocket loop, closing cleanly on a bad frame."""
        server = self.server

        async def next_frame(*, upgrade_probe: bool = False) -> Any:
            # None: the client closed (or sent too much: the driver closed with 1009).
            try:
                data = await ws.wait()
            except _TooBig:
                server.count_protocol_error("payload_too_large")
                return None
            except OSError:
                return None
            return decode_frame(data, upgrade_probe=upgrade_probe)

        if self.connected:
            # An upgrade from polling: the probe, then UPGRADE.
            self.upgrading = True
            try:
                probe = await next_frame(upgrade_probe=True)
                if probe is None or probe.packet_type != eio_packet.PING:
                    self.upgrading = False
                    await ws.close(_WS_PROTOCOL_ERROR if probe is not None else 1000)
                    return
                await ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
                self._enqueue(eio_packet.Packet(eio_packet.NOOP))  # ends the long-poll
                upgrade = await next_frame()
            except BadFrame:
                self.upgrading = False
                await self._close_websocket(ws, "engineio_frame")
                return
            if upgrade is None or upgrade.packet_type != eio_packet.UPGRADE:
                self.upgrading = False
                await ws.close(_WS_PROTOCOL_ERROR if upgrade is not None else 1000)
                return
            self.upgraded = True
            self.upgrading = False
        else:
            self.connected = True
            self.upgraded = True

        transport = ws.frame_transport()
        writer_task = None
        if transport is not None:
            # Frames go to the transport from here on, in the order they are sent:
            # first what was queued during the upgrade.
            self._transport = transport
            self._frames = []
            while not self.queue.empty():
                pkt = self.queue.get_nowait()
                self.queue.task_done()
                self.queued_bytes -= packet_size(pkt)
                self._enqueue(pkt)
        else:
            writer_task = asyncio.ensure_future(self._write_queued(ws))
        self._driver = ws
        self._writer = writer_task
        self._stop_reason = None
        try:
            # One deadline for the whole loop, due only when _stop_reading asks for
            # it during a read (a PONG overdue, an eviction): no timer per frame,
            # and a frame being handled is never interrupted.
            async with asyncio.timeout(None) as reading:
                self._reading = reading
                while self._stop_reason is None:
                    self._in_read = True
                    try:
                        pkt = await next_frame()
                    except BadFrame:
                        pkt = BadFrame
                    finally:
                        self._in_read = False
                    if self._stop_reason is not None:
                        reading.reschedule(None)  # it may have been asked just now
                        break
                    if pkt is BadFrame:
                        await self._close_websocket(ws, "engineio_frame")
                        break
                    if pkt is None:
                        break
                    try:
                        await self.receive(pkt)
                    except eio_exceptions.SocketIsClosedError:
                        break
                    # One frame per loop turn: a frame already buffered is read
                    # without suspending, and a client sending without pause would
                    # otherwise keep the loop from every other connection.
                    await asyncio.sleep(0)
        except (TimeoutError, asyncio.CancelledError):
            pass  # as the client going away: the session is closed below
        finally:
            self._reading = None
        reason = self._stop_reason or server.reason.TRANSPORT_CLOSE
        if writer_task is not None:
            await self.queue.put(None)  # lets the writer finish
            await asyncio.wait({writer_task})
        else:
            self.write_frames()  # a CLOSE packet, if the session was ended
            self._frames = None
            with contextlib.suppress(Exception):
                await ws.close()
        self._driver = self._writer = None
        await self.close(wait=False, abort=True, reason=reason)

    async def _write_queued(self, ws: Any) -> None:
        """The websocket writer of a driver that cannot take frames (ASGI, or a
        compressed connection): python-engineio's, packet by packet from the queue."""
        while True:
            try:
                # python-engineio's poll: a batch counts as pending until written.
                packets = await AsyncSocket.poll(self)
            except eio_exceptions.QueueEmpty:
                break
            if not packets:
                break
            try:
                for pkt in packets:
                    # Sampled before the frame goes in: the frame itself is
                    # still counted in queued_bytes while its send waits.
                    self.transport_bytes = ws.buffered()
                    await ws.send(pkt.encode())
                    self._sent(pkt)
                self.transport_bytes = ws.buffered()
            except Exception:
                break
        with contextlib.suppress(Exception):
            await ws.close()

    async def _close_websocket(self, ws: Any, reason: str) -> None:
        self.server.count_protocol_error(reason)
        # The session first, so the registry has forgotten it once the client sees
        # the close frame; during an upgrade, its long-poll is told (CLOSE).
        await self.close(wait=False, abort=self.upgraded, reason=self.server.reason.TRANSPORT_ERROR)
        self.write_frames()  # what was sent before the close frame
        await ws.close(_WS_PROTOCOL_ERROR)


class AiohttpWebSocket(_UpstreamAiohttpWebSocket):  # type: ignore[misc]
    """python-engineio's aiohttp websocket driver with exact size semantics and an
    optional permessage-deflate.

    python-engineio accepts permessage-deflate whenever a client offers it; the
    server's ``websocket_compression`` decides here.
    """

    def __init__(self, handler: Callable[..., Any], server: Any) -> None:
        super().__init__(handler, server)
        self._close_sent = False
        self._transport: asyncio.Transport | None = None

    async def __call__(self, environ: dict[str, Any]) -> Any:
        request = environ["aiohttp.request"]
        self._transport = request.transport
        # aiohttp refuses a frame of exactly max_msg_size bytes (its limit is
        # exclusive); the decompressed size is checked in wait().
        self._sock = WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size + 1,
            compress=self.server.websocket_compression,
        )
        await self._sock.prepare(request)
        self.environ = environ
        await self.handler(self)
        return self._sock

    async def wait(self) -> str | bytes:
        msg = await self._sock.receive()
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            data: str | bytes = msg.data
            if _too_big(data, self.server.max_http_buffer_size):
                await self.close(_WS_MESSAGE_TOO_BIG)
                raise _TooBig()
            return data
        if isinstance(msg.data, WebSocketError) and msg.data.code == _WS_MESSAGE_TOO_BIG:
            raise _TooBig()  # aiohttp has closed with 1009
        raise OSError()

    async def close(self, code: int = 1000) -> None:
        if not self._close_sent:
            self._close_sent = True
            await self._sock.close(code=code)

    def buffered(self) -> int:
        """Bytes the connection's transport has not yet written to the socket."""
        transport = self._transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def frame_transport(self) -> asyncio.WriteTransport | None:
        """The transport the socket may write its websocket frames to itself: the
        connection's, unless it compresses (each frame is then aiohttp's to make)."""
        if self._sock.compress:
            return None
        transport = self._transport
        return transport if isinstance(transport, asyncio.WriteTransport) else None

    def abort(self) -> bool:
        """Drop the connection without a closing handshake (the client is not reading)."""
        if self._transport is not None:
            self._transport.abort()
        return True


class AsgiWebSocket(_UpstreamAsgiWebSocket):  # type: ignore[misc]
    """python-engineio's ASGI websocket driver, closing with 1009 above ``maxPayload``
    (it only drops the socket there) and with a code of the gateway's choosing.

    The ASGI server's own limit (uvicorn's ``ws_max_size``, 16 MiB by default)
    applies first when it is lower.

    ASGI hides the server's write buffer. A frame whose ``send`` has not returned
    is still counted in the socket's queued bytes (uvicorn's ``send`` waits, before
    writing, while its transport is over the high-water mark). When ``send`` is a
    method of an object holding an asyncio transport (uvicorn's websocket
    protocols), that transport's buffer is counted too and an evicted connection
    is aborted; otherwise the server's own buffer (uvicorn: up to its high-water
    mark plus one frame) is not counted, and an evicted connection is closed as
    the server closes a finished websocket.
    """

    def __init__(self, handler: Callable[..., Any], server: Any) -> None:
        super().__init__(handler, server)
        self.server = server
        self._close_sent = False
        self._transport: Any = None

    async def __call__(self, environ: dict[str, Any]) -> Any:
        transport = getattr(getattr(environ["asgi.send"], "__self__", None), "transport", None)
        if callable(getattr(transport, "get_write_buffer_size", None)) and callable(
            getattr(transport, "abort", None)
        ):
            self._transport = transport
        return await super().__call__(environ)

    async def wait(self) -> str | bytes:
        data: str | bytes = await super().wait()
        if _too_big(data, self.server.max_http_buffer_size):
            await self.close(_WS_MESSAGE_TOO_BIG)
            raise _TooBig()
        return data

    async def close(self, code: int = 1000) -> None:
        if not self._close_sent:
            self._close_sent = True
            # The client may be gone already.
            with contextlib.suppress(Exception):
                await self.asgi_send({"type": "websocket.close", "code": code})

    def frame_transport(self) -> asyncio.WriteTransport | None:
        """None: under ASGI the server makes the frames (python-engineio's writer)."""
        return None

    def buffered(self) -> int:
        """Bytes the ASGI server's transport has not yet written, when it is known."""
        transport = self._transport
        return 0 if transport is None else int(transport.get_write_buffer_size())

    def abort(self) -> bool:
        """Drop the connection when its transport is known (and say whether it
        could); otherwise the connection closes when the websocket handler ends."""
        if self._transport is None:
            return False
        self._transport.abort()
        return True


def _too_big(data: str | bytes, limit: int) -> bool:
    if isinstance(data, str):
        # A character is one to four bytes of UTF-8: encode only when it matters.
        if len(data) * 4 <= limit:
            return False
        if len(data) > limit:
            return True
        return len(data.encode("utf-8")) > limit
    return len(data) > limit


class _Translated:
    """A request python-engineio's handle_request gets already translated."""

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ


def _already_translated(translated: _Translated) -> dict[str, Any]:
    return translated.environ


class _Refusal:
    def __init__(
        self,
        status: str,
        message: str,
        *,
        close_connection: bool = False,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.status = status
        self.message = message
        self.close_connection = close_connection
        self.headers = headers


class EngineServer(engineio.AsyncServer):  # type: ignore[misc]
    """python-engineio's server with bound sessions, strict polling bodies and the
    gateway's socket and websocket driver classes (see the module docstring).

    Extra keyword arguments: ``websocket_compression`` (permessage-deflate under
    aiohttp), ``cookie_path`` (the binding cookie's ``Path``), ``metrics``,
    ``handshake_rate`` (``None``: no per-address budget) and ``handshake_burst``,
    ``trusted_proxy_header``, ``max_pending_sessions`` (``None``: no cap).
    """

    _async: dict[str, Any]
    start_service_task: bool

    def __init__(
        self,
        *,
        websocket_compression: bool = False,
        cookie_path: str = "/",
        metrics: Metrics | None = None,
        max_pending_output: int = 1_048_576,
        handshake_rate: float | None = None,
        handshake_burst: int = 100,
        trusted_proxy_header: str | None = None,
        max_pending_sessions: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.websocket_compression = websocket_compression
        self.cookie_path = cookie_path
        self.metrics = metrics
        self.max_pending_output = max_pending_output
        self.on_slow_consumer: Callable[[EngineSocket, int], None] | None = None
        """Told of each connection evicted for its pending output (the socket and
        the pending bytes), after it is counted."""
        self.handshakes = (
            AddressBudget(handshake_rate, handshake_burst) if handshake_rate is not None else None
        )
        self.trusted_proxy_header = trusted_proxy_header
        self.max_pending_sessions = max_pending_sessions
        self.pending: set[str] = set()
        """Sessions that have not completed a socket.io CONNECT yet."""
        # Sockets with frames to write at the end of this loop turn (write_frames).
        self._writing: list[EngineSocket] = []
        self._refusing: set[str] = set()
        self._binding_key = secrets.token_bytes(32)
        self._translate = self._async["translate_request"]
        driver: type[Any] | None = {"aiohttp": AiohttpWebSocket, "asgi": AsgiWebSocket}.get(
            self.async_mode
        )
        # An instance-level copy of the driver table: other python-engineio servers
        # in the process keep theirs.
        self._async = {
            **self._async,
            "translate_request": _already_translated,
            "websocket": driver or self._async["websocket"],
        }

    # -- requests --------------------------------------------------------------

    async def handle_request(self, *args: Any, **kwargs: Any) -> Any:
        if self.async_mode == "asgi" and len(args) == 3 and args[0].get("type") == "http":
            # python-engineio awaits the first body message before anything else, and
            # an ASGI server's receive() waits for the body to arrive: a refusal
            # could never be sent before the whole body (or forever, if none comes).
            scope, receive, send = args
            args = (scope, _body_read_later(receive), send)
        environ = self._translate(*args, **kwargs)
        if inspect.isawaitable(environ):
            environ = await environ
        if not environ:
            # ASGI: the client left before its request arrived.
            return None
        refusal = await self._screen(environ)
        if isinstance(refusal, list):
            return await self._make_response(self._ok(refusal), environ)
        if refusal is not None:
            return await self._refuse(refusal, environ)
        answer = await super().handle_request(_Translated(environ))
        socket = environ.get(_POSTED_TO)
        if socket is not None and socket.closed_by_client:
            # Upstream: python-engineio leaves a waiting long-poll hanging for
            # ping_interval + ping_timeout after the client's CLOSE, and
            # python-engineio's client waits for it in disconnect(); a NOOP ends it.
            # A moment later: that client closes its HTTP session as soon as the
            # long-poll ends, dropping this POST's answer if its body (a separate
            # write under uvicorn) has not arrived yet.
            asyncio.get_running_loop().call_later(
                _CLOSED_POLL_DELAY, socket.queue.put_nowait, eio_packet.Packet(eio_packet.NOOP)
            )
        return answer

    async def _screen(self, environ: dict[str, Any]) -> _Refusal | list[Any] | None:
        """A refusal, the last packets of a closed polling session, or ``None`` to
        let python-engineio answer."""
        method = environ.get("REQUEST_METHOD")
        if method not in ("GET", "POST"):
            return None
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        sids = query.get("sid")
        if sids is None:
            return self._screen_handshake(environ) if method == "GET" else None
        post = method == "POST"
        socket = self.sockets.get(sids[0])
        if socket is not None and socket.closed and not post and self._is_bound(socket, environ):
            leftover = _leftover(socket)
            if leftover:
                return leftover
        if socket is None or socket.closed:
            return _Refusal("400 BAD REQUEST", "Invalid session", close_connection=post)
        if not self._is_bound(socket, environ):
            if self.metrics is not None:
                self.metrics.session_binding_refused += 1
            return _Refusal("403 FORBIDDEN", "Forbidden", close_connection=post)
        if not post:
            return None
        environ[_POSTED_TO] = socket
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            return _Refusal("411 LENGTH REQUIRED", "Length Required", close_connection=True)
        declared = environ.get("CONTENT_LENGTH")
        if declared is None:
            return _Refusal("411 LENGTH REQUIRED", "Length Required", close_connection=True)
        if not declared.isascii() or not declared.isdigit():
            return _Refusal("400 BAD REQUEST", "Bad Content-Length", close_connection=True)
        if int(declared) > self.max_http_buffer_size:
            self.count_protocol_error("payload_too_large")
            await socket.close(wait=False, reason=self.reason.TRANSPORT_ERROR)
            return _Refusal("413 PAYLOAD TOO LARGE", "Payload Too Large", close_connection=True)
        return None

    def _screen_handshake(self, environ: dict[str, Any]) -> _Refusal | None:
        if self.handshakes is not None:
            address = client_address(environ, self.trusted_proxy_header)
            if not self.handshakes.take(bucket_key(address)):
                retry = max(1, math.ceil(1 / self.handshakes.rate))
                return self._refuse_handshake(
                    "rate_limited", "429 TOO MANY REQUESTS", "Too Many Requests", retry
                )
        if self.max_pending_sessions is not None and len(self.pending) >= self.max_pending_sessions:
            return self._refuse_handshake(
                "too_many_pending", "503 SERVICE UNAVAILABLE", "Service Unavailable", 1
            )
        self._refusing.clear()
        return None

    def _refuse_handshake(self, reason: str, status: str, message: str, retry: int) -> _Refusal:
        if self.metrics is not None:
            self.metrics.handshakes_refused[reason] += 1
        if reason not in self._refusing:
            # One record per run of refusals (until a handshake passes again): a
            # flood of handshakes must not become a flood of log records.
            self._refusing.add(reason)
            log(logging.WARNING, "handshake_refused", reason=reason)
        return _Refusal(status, message, headers=(("Retry-After", str(retry)),))

    def frames_waiting(self, socket: EngineSocket) -> None:
        """``socket`` has its first frame to write in this loop turn: all such
        sockets write theirs together once the turn's other callbacks have run, so
        a burst of emits costs one write per socket (as Node's ``ws`` corks)."""
        writing = self._writing
        if not writing:
            asyncio.get_running_loop().call_soon(self._write_frames)
        writing.append(socket)

    def _write_frames(self) -> None:
        writing, self._writing = self._writing, []
        for socket in writing:
            try:
                socket.write_frames()
            except Exception as exc:  # a transport that fails is that socket's end only
                log(logging.ERROR, "websocket_write_failed", error=type(exc).__name__)

    def session_joined(self, sid: str) -> None:
        """Session ``sid`` has completed a socket.io CONNECT (or has ended): it no
        longer counts against ``max_pending_sessions``."""
        self.pending.discard(sid)

    async def _refuse(self, refusal: _Refusal, environ: dict[str, Any]) -> Any:
        headers = [("Content-Type", "text/plain"), *refusal.headers]
        scope = environ.get("asgi.scope")
        if scope is not None and scope.get("type") == "websocket":
            return await _deny_asgi_websocket(refusal, headers, environ, scope)
        asgi = "asgi.scope" in environ
        if refusal.close_connection and asgi:
            headers.append(("Connection", "close"))
        message = refusal.message.encode()
        response = await self._make_response(
            {"status": refusal.status, "headers": headers, "response": message}, environ
        )
        if refusal.close_connection and not asgi:
            # aiohttp reads and drops an unread body for up to 10 s (its lingering
            # close) before closing, even with Connection: close: send the answer,
            # then close the connection at once.
            request = environ["aiohttp.request"]
            response.force_close()
            await response.prepare(request)
            await response.write_eof()
            request.protocol.force_close()
        return response

    # -- session binding -------------------------------------------------------

    def _tag(self, sid: str) -> str:
        digest = hmac.new(self._binding_key, sid.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def _is_bound(self, socket: Any, environ: dict[str, Any]) -> bool:
        if not getattr(socket, "bound", False):
            return False
        wanted = self._tag(socket.sid)
        name = COOKIE_PREFIX + socket.sid
        return any(
            hmac.compare_digest(value.encode(), wanted.encode())
            for key, value in _cookies(environ)
            if key == name
        )

    def _binding_cookies(self, sid: str, environ: dict[str, Any]) -> list[tuple[str, str]]:
        attributes = f"; Path={self.cookie_path}; HttpOnly; SameSite=Strict"
        if _is_https(environ):
            attributes += "; Secure"
        headers = [("Set-Cookie", f"{COOKIE_PREFIX}{sid}={self._tag(sid)}{attributes}")]
        stale = {
            key
            for key, _ in _cookies(environ)
            if _COOKIE_NAME.fullmatch(key)
            and not _live(self.sockets.get(key[len(COOKIE_PREFIX) :]))
        }
        for key in sorted(stale)[:_MAX_EXPIRED_COOKIES]:
            headers.append(("Set-Cookie", f"{key}=; Max-Age=0{attributes}"))
        return headers

    # -- python-engineio overrides ---------------------------------------------

    async def _handle_connect(
        self, environ: dict[str, Any], transport: str, jsonp_index: int | None = None
    ) -> Any:
        """python-engineio's handshake, with the gateway's socket class (upstream
        names its own class in this method) and the binding cookie."""
        if self.start_service_task:
            self.start_service_task = False
            self.service_task_handle = self.start_background_task(self._service_task)

        sid = self.generate_id()
        socket = EngineSocket(self, sid)
        socket.bound = transport == "polling"
        self.sockets[sid] = socket
        self.pending.add(sid)

        open_packet = eio_packet.Packet(
            eio_packet.OPEN,
            {
                "sid": sid,
                "upgrades": self._upgrades(sid, transport),
                "pingTimeout": int(self.ping_timeout * 1000),
                "pingInterval": int(self.ping_interval + self.ping_interval_grace_period) * 1000,
                "maxPayload": self.max_http_buffer_size,
            },
        )
        await socket.send(open_packet)

        accepted = await self._trigger_event("connect", sid, environ, run_async=False)
        if accepted is not None and accepted is not True:
            del self.sockets[sid]
            self.pending.discard(sid)
            return self._unauthorized(accepted or None)

        socket.schedule_ping()

        if transport == "websocket":
            response = await socket.handle_get_request(environ)
            if socket.closed and sid in self.sockets:
                del self.sockets[sid]
            return response
        socket.connected = True
        try:
            return self._ok(
                await socket.poll(),
                headers=self._binding_cookies(sid, environ),
                jsonp_index=jsonp_index,
            )
        except eio_exceptions.QueueEmpty:
            return self._bad_request()

    def slow_consumer(self, socket: EngineSocket, pending: int) -> None:
        """Count (and report) a connection evicted for its pending output."""
        if self.metrics is not None:
            self.metrics.slow_consumers += 1
        if self.on_slow_consumer is not None:
            self.on_slow_consumer(socket, pending)

    def count_protocol_error(self, reason: str) -> None:
        """Count a frame or body refused for breaking the protocol."""
        if self.metrics is not None:
            self.metrics.protocol_errors[reason] += 1


def _leftover(socket: Any) -> list[Any]:
    """What a closed polling session still had queued (its last packets and the
    CLOSE packet); the session is forgotten once they are taken.

    The gateway closes a session right after its last answer (a refused CONNECT's
    CONNECT_ERROR), and a client whose long-poll was not waiting at that moment
    would otherwise get 400 for its next one and never see the answer."""
    packets: list[Any] = []
    if socket.upgraded:
        return packets
    while True:
        try:
            pkt = socket.queue.get_nowait()
        except asyncio.QueueEmpty:
            break
        socket.queue.task_done()
        if pkt is not None:
            packets.append(pkt)
    if packets:
        socket.server.sockets.pop(socket.sid, None)
    return packets


async def _deny_asgi_websocket(
    refusal: _Refusal, headers: list[tuple[str, str]], environ: dict[str, Any], scope: Any
) -> None:
    """Refuse an ASGI websocket handshake with ``refusal``'s HTTP answer where the
    server offers the denial-response extension (uvicorn does), otherwise by
    closing before accepting (the server answers 403)."""
    send = environ["asgi.send"]
    with contextlib.suppress(Exception):  # the client may be gone already
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": int(refusal.status.split(" ", 1)[0]),
                    "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
                }
            )
            await send({"type": "websocket.http.response.body", "body": refusal.message.encode()})
        else:
            await send({"type": "websocket.close"})


def _body_read_later(receive: Callable[[], Any]) -> Callable[[], Any]:
    """An ASGI ``receive`` whose first message is an empty body part announcing more,
    so that python-engineio reads the real body only when it needs it."""
    started = False

    async def deferred() -> Any:
        nonlocal started
        if not started:
            started = True
            return {"type": "http.request", "body": b"", "more_body": True}
        return await receive()

    return deferred


def _cookies(environ: dict[str, Any]) -> Iterable[tuple[str, str]]:
    for part in environ.get("HTTP_COOKIE", "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            yield key.strip(), value.strip().strip('"')


def _live(socket: Any) -> bool:
    return socket is not None and not socket.closed


def _is_https(environ: dict[str, Any]) -> bool:
    if environ.get("wsgi.url_scheme") == "https":
        return True
    request = environ.get("aiohttp.request")
    if request is not None:
        return bool(request.secure)
    scope = environ.get("asgi.scope")
    return scope is not None and scope.get("scheme") in ("https", "wss")
