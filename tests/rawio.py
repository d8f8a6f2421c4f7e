"""A raw engine.io v4 / socket.io v5 test client over aiohttp, without python-socketio.

It speaks the wire protocol directly so that tests can send anything, well-formed or
not, over websocket or HTTP long-polling, and see exactly what the server answers::

    async with RawSession.open(url, "polling") as s:
        kind, data = await s.connect_ns("/", {"token": token})
        assert kind == CONNECT
        assert await s.call("ping", 1) == ["pong"]
        await s.send_raw("x")            # one raw engine.io packet
        assert s.last_status == 400      # polling: the POST's HTTP status

Received engine.io packets are text (``"4..."``, ``"1"``, ...) or bytes (a binary
message; polling's ``b<base64>`` is decoded). Server PINGs are answered with PONGs in
the background. ``recv`` and ``next_sio`` raise :class:`TimeoutError` when nothing
arrives in time and return ``None`` once the server has closed the session.

A slow consumer: ``RawSession.open(url, receive_buffer=4096)`` keeps the client's
kernel receive buffer small, and :meth:`RawSession.stop_reading` stops taking what
the server sends (the session can still send, PONGs included).
"""

# ruff: noqa: ASYNC109 (a timeout argument per call keeps the tests short to read)

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import attrs
from yarl import URL

__all__ = [
    "ACK",
    "BINARY_ACK",
    "BINARY_EVENT",
    "CONNECT",
    "CONNECT_ERROR",
    "DISCONNECT",
    "EVENT",
    "RawSession",
    "SioPacket",
    "decode_sio",
    "encode_sio",
    "eio_url",
]

# socket.io v5 packet types.
CONNECT = 0
DISCONNECT = 1
EVENT = 2
ACK = 3
CONNECT_ERROR = 4
BINARY_EVENT = 5
BINARY_ACK = 6

_SEPARATOR = "\x1e"
Frame = str | bytes


@attrs.frozen
class SioPacket:
    """A decoded socket.io packet (binary attachments are not reassembled)."""

    type: int
    namespace: str
    id: int | None
    data: Any
    attachments: int = 0


def encode_sio(kind: int, data: Any = None, *, namespace: str = "/", id: int | None = None) -> str:
    """The text of a socket.io packet (without the engine.io ``4`` prefix)."""
    text = str(kind)
    if namespace != "/":
        text += namespace + ","
    if id is not None:
        text += str(id)
    if data is not None:
        text += json.dumps(data, separators=(",", ":"))
    return text


def decode_sio(text: str) -> SioPacket:
    """Decode a socket.io packet's text (without the engine.io ``4`` prefix)."""
    kind = int(text[0])
    rest = text[1:]
    attachments = 0
    if kind in (BINARY_EVENT, BINARY_ACK):
        count, _, rest = rest.partition("-")
        attachments = int(count)
    namespace = "/"
    if rest.startswith("/"):
        end = rest.find(",")
        namespace, rest = (rest, "") if end < 0 else (rest[:end], rest[end + 1 :])
    digits = "".join(itertools.takewhile(str.isdigit, rest))
    id = int(digits) if digits else None
    rest = rest[len(digits) :]
    data = json.loads(rest) if rest else None
    return SioPacket(type=kind, namespace=namespace, id=id, data=data, attachments=attachments)


def eio_url(url: str, transport: str, *, path: str = "/socket.io", sid: str | None = None) -> URL:
    """The engine.io endpoint URL of a server at ``url``."""
    base = URL(url)
    if transport == "websocket":
        base = base.with_scheme("wss" if base.scheme == "https" else "ws")
    query = {"EIO": "4", "transport": transport}
    if sid is not None:
        query["sid"] = sid
    return base.with_path(path.rstrip("/") + "/").with_query(query)


class RawSession:
    """One engine.io session opened by hand; see the module docstring."""

    def __init__(self, http: aiohttp.ClientSession, url: str, transport: str, path: str) -> None:
        self.http = http
        """The aiohttp session (its cookie jar holds the session's cookies)."""
        self.url = url
        self.transport = transport
        self.path = path
        self.sid = ""
        self.handshake: dict[str, Any] = {}
        self.last_status: int | None = None
        """The HTTP status of the last POST (polling)."""
        self.poll_status: int | None = None
        """The HTTP status of the last long-poll GET (polling)."""
        self.close_code: int | None = None
        """The websocket close code sent by the server (websocket)."""
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._incoming: asyncio.Queue[Frame | None] = asyncio.Queue()
        self._backlog: list[SioPacket] = []
        self._reader: asyncio.Task[None] | None = None
        self._ended = False
        self._closing = False
        self._ack_ids = itertools.count(1)
        self._upgraded = False
        self.compress = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        url: str,
        transport: str = "websocket",
        *,
        path: str = "/socket.io",
        headers: dict[str, str] | None = None,
        cookies: bool = True,
        compress: int = 0,
        receive_buffer: int | None = None,
    ) -> AsyncIterator[RawSession]:
        """Open an engine.io session on the server at ``url`` (``http://host:port``).

        ``cookies=False`` keeps no cookie at all (a client without a cookie jar);
        ``compress=15`` offers permessage-deflate on websockets; ``receive_buffer``
        sets the client sockets' ``SO_RCVBUF`` (bytes)."""
        jar: aiohttp.abc.AbstractCookieJar = (
            aiohttp.CookieJar(unsafe=True) if cookies else aiohttp.DummyCookieJar()
        )
        connector = None
        if receive_buffer is not None:
            connector = aiohttp.TCPConnector(socket_factory=_small_receive_buffer(receive_buffer))
        http = aiohttp.ClientSession(cookie_jar=jar, headers=headers, connector=connector)
        session = cls(http, url, transport, path)
        session.compress = compress
        try:
            await session._handshake()
            yield session
        finally:
            await session.close()
            await http.close()

    def endpoint(self, transport: str | None = None, *, sid: bool = True) -> URL:
        """This session's engine.io URL (with its sid unless ``sid=False``)."""
        return eio_url(
            self.url,
            transport or self.transport,
            path=self.path,
            sid=self.sid if sid and self.sid else None,
        )

    async def _handshake(self) -> None:
        if self.transport == "websocket":
            self.ws = await self.http.ws_connect(self.endpoint(), compress=self.compress)
            first = await self.ws.receive(timeout=5)
            if first.type != aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"no open packet: {first.type!r} {first.data!r}")
            opening: str = first.data
            self._reader = asyncio.create_task(self._read_websocket())
        elif self.transport == "polling":
            async with self.http.get(self.endpoint()) as response:
                self.poll_status = response.status
                body = await response.text()
            if response.status != 200:
                raise ConnectionError(f"handshake answered {response.status}: {body[:200]}")
            packets = body.split(_SEPARATOR)
            opening = packets[0]
            for extra in packets[1:]:
                self._incoming.put_nowait(_decode_polled(extra))
        else:
            raise ValueError(f"unknown transport {self.transport!r}")
        if not opening.startswith("0"):
            raise ConnectionError(f"no open packet: {opening[:200]!r}")
        self.handshake = json.loads(opening[1:])
        self.sid = self.handshake["sid"]
        if self.transport == "polling":
            self._reader = asyncio.create_task(self._read_polling())

    async def _read_websocket(self) -> None:
        assert self.ws is not None
        try:
            async for message in self.ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    frame: Frame = message.data
                elif message.type == aiohttp.WSMsgType.BINARY:
                    frame = message.data
                else:
                    break
                if frame == "2":
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await self.ws.send_str("3")
                    continue
                await self._incoming.put(frame)
        except (aiohttp.ClientError, ConnectionError):
            pass
        finally:
            self.close_code = self.ws.close_code
            self._end()

    async def _read_polling(self) -> None:
        try:
            while not self._closing and not self._upgraded:
                async with self.http.get(self.endpoint("polling")) as response:
                    self.poll_status = response.status
                    body = await response.text()
                if response.status != 200:
                    break
                for part in body.split(_SEPARATOR) if body else []:
                    frame = _decode_polled(part)
                    if frame == "6" and self._upgraded:
                        continue
                    if frame == "2":
                        await self.send_raw("3")
                        continue
                    await self._incoming.put(frame)
                    if frame == "1":
                        return
        except (aiohttp.ClientError, ConnectionError):
            pass
        finally:
            if not self._upgraded:
                self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._incoming.put_nowait(None)

    def cookie_header(self) -> str:
        """The ``Cookie`` header this session's client sends to the endpoint."""
        cookies = self.http.cookie_jar.filter_cookies(self.endpoint("polling"))
        return "; ".join(f"{name}={morsel.value}" for name, morsel in cookies.items())

    async def upgrade(self) -> None:
        """Upgrade a polling session to websocket (probe, then UPGRADE), as the
        official client does; the session's cookies go with the upgrade request."""
        assert self.ws is None
        assert self._reader is not None
        ws = await self.http.ws_connect(self.endpoint("websocket"), compress=self.compress)
        await ws.send_str("2probe")
        answer = await ws.receive(timeout=5)
        if answer.data != "3probe":
            await ws.close()
            raise ConnectionError(f"no probe answer: {answer.type!r} {answer.data!r}")
        self._upgraded = True
        await ws.send_str("5")
        # The server ends the pending long-poll with a NOOP; the poller then stops.
        await asyncio.wait_for(asyncio.shield(self._reader), 5)
        self.ws = ws
        self.transport = "websocket"
        self._reader = asyncio.create_task(self._read_websocket())

    async def stop_reading(self) -> None:
        """Stop taking what the server sends: the websocket is no longer read (the
        client's buffers fill, then TCP holds the server back), or no long-poll is
        made any more (one already waiting is dropped)."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    @property
    def closed(self) -> bool:
        """Whether the server has closed the session (or :meth:`close` was called)."""
        return self._ended or self._closing

    async def send_raw(self, frame: Frame) -> int | None:
        """Send one engine.io packet as-is: one websocket frame, or one POST body
        (returns and records its HTTP status in :attr:`last_status`)."""
        if self.ws is not None:
            if isinstance(frame, bytes):
                await self.ws.send_bytes(frame)
            else:
                await self.ws.send_str(frame)
            return None
        return await self.post(frame)

    async def post(self, body: Frame, *, headers: dict[str, str] | None = None) -> int:
        """POST ``body`` as-is to this session's polling endpoint."""
        content_type = (
            "text/plain;charset=UTF-8" if isinstance(body, str) else ("application/octet-stream")
        )
        all_headers = {"Content-Type": content_type, **(headers or {})}
        async with self.http.post(
            self.endpoint("polling"), data=body, headers=all_headers
        ) as response:
            await response.read()
            self.last_status = response.status
        return response.status

    async def send_binary(self, data: bytes) -> int | None:
        """Send a binary engine.io message (a socket.io attachment)."""
        if self.ws is not None:
            return await self.send_raw(data)
        return await self.send_raw("b" + base64.b64encode(data).decode())

    async def recv(self, timeout: float = 5) -> Frame | None:
        """The next engine.io packet; ``None`` once the server closed the session."""
        if self._ended and self._incoming.empty():
            return None
        async with asyncio.timeout(timeout):
            frame = await self._incoming.get()
        if frame is None:
            self._incoming.put_nowait(None)
        return frame

    async def send_sio(self, text: str) -> int | None:
        """Send a socket.io packet's text (``'421["e"]'``) as an engine.io message."""
        return await self.send_raw("4" + text)

    async def next_sio(self, timeout: float = 5) -> SioPacket | None:
        """The next socket.io packet (engine.io noops and attachments are skipped);
        ``None`` once the server closed the session."""
        if self._backlog:
            return self._backlog.pop(0)
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if frame is None:
                    return None
                if isinstance(frame, str) and frame.startswith("4"):
                    return decode_sio(frame[1:])

    async def _wait_for(
        self, namespace: str, kinds: tuple[int, ...], id: int | None, timeout: float
    ) -> SioPacket:
        async with asyncio.timeout(timeout):
            for index, held in enumerate(self._backlog):
                if _matches(held, namespace, kinds, id):
                    return self._backlog.pop(index)
            while True:
                frame = await self.recv(timeout)
                if frame is None:
                    raise ConnectionError("the server closed the session")
                if not (isinstance(frame, str) and frame.startswith("4")):
                    continue
                packet = decode_sio(frame[1:])
                if _matches(packet, namespace, kinds, id):
                    return packet
                self._backlog.append(packet)

    async def connect_ns(
        self, namespace: str = "/", auth: Any = None, *, timeout: float = 5
    ) -> tuple[int, Any]:
        """Send CONNECT; return the CONNECT or CONNECT_ERROR reply's type and data."""
        await self.send_sio(encode_sio(CONNECT, auth, namespace=namespace))
        reply = await self._wait_for(namespace, (CONNECT, CONNECT_ERROR), None, timeout)
        return reply.type, reply.data

    async def emit(
        self, event: str, *args: Any, namespace: str = "/", ack_id: int | None = None
    ) -> int | None:
        """Send an EVENT packet."""
        return await self.send_sio(
            encode_sio(EVENT, [event, *args], namespace=namespace, id=ack_id)
        )

    async def call(self, event: str, *args: Any, namespace: str = "/", timeout: float = 5) -> Any:
        """Send an EVENT asking for an ack; return the ACK's arguments (a list)."""
        ack_id = next(self._ack_ids)
        await self.emit(event, *args, namespace=namespace, ack_id=ack_id)
        reply = await self._wait_for(namespace, (ACK,), ack_id, timeout)
        return reply.data

    async def close(self) -> None:
        """Close the session from the client side (idempotent)."""
        if self._closing:
            return
        self._closing = True
        if not self._ended:
            with contextlib.suppress(aiohttp.ClientError, ConnectionError, RuntimeError):
                if self.ws is not None:
                    await self.ws.send_str("1")
                elif self.sid:
                    await asyncio.wait_for(self.post("1"), 2)
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


def _small_receive_buffer(size: int) -> Callable[[Any], socket.socket]:
    def make(addr_info: Any) -> socket.socket:
        family, kind, proto = addr_info[:3]
        sock = socket.socket(family, kind, proto)
        # Before connecting, so that the window the client offers stays small.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        return sock

    return make


def _decode_polled(part: str) -> Frame:
    if part.startswith("b"):
        return base64.b64decode(part[1:])
    return part


def _matches(packet: SioPacket, namespace: str, kinds: tuple[int, ...], id: int | None) -> bool:
    return (
        packet.namespace == namespace and packet.type in kinds and (id is None or packet.id == id)
    )
