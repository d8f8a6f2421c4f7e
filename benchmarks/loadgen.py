"""The load generator of the benchmarks: many socket.io clients in one asyncio process.

It speaks just enough Engine.IO v4 / Socket.IO v5 over websockets (aiohttp's client,
offering permessage-deflate as the official JavaScript client does) to drive the
benchmark protocol the same way on every server:

- the Engine.IO open packet ``0{...}``, pings ``2`` answered with pongs ``3``;
- the namespace connect ``40{"token": ...}``, answered ``40{...}`` or refused ``44{...}``;
- events ``42[...]``, with acknowledgement ids ``42<id>[...]`` answered ``43<id>[...]``.

Every ``bench:msg`` ``seq, payload`` a client receives is counted and checked: the
sequence numbers of a run must arrive complete and in order, each payload of the
announced size (an offset after the payload, as missed-message recovery appends,
is counted and the last one kept). :class:`Delivery` follows one run over many clients. Other events
(the gateway's ``auth:expiring``, ``auth:expired``) are counted by name with the
time the first of each arrived. A server disconnect (``41``) closes the websocket,
as the official client does when its last namespace is disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import SimpleNamespace
from typing import Any

import aiohttp
import attrs

MSG_PREFIX = '42["bench:msg",'
"""How every ``bench:msg`` frame starts (all three servers encode compact JSON)."""
OFFSET_TAIL = 48
"""Characters at the end of a ``bench:msg`` frame that hold its offset, if any."""
MAX_ERRORS = 5
"""Delivery errors kept per run (the count of all of them is kept too)."""


class ProtocolError(Exception):
    """The server said something the load generator did not expect."""


class ConnectRefused(ProtocolError):
    """The server refused the namespace connect (``44``)."""


@attrs.define
class Delivery:
    """One run of ``bench:msg`` messages: each of ``clients`` clients expects ``count``
    messages, sequence numbers ``0 .. count - 1`` in order, each payload ``size``
    characters long."""

    clients: int
    count: int
    size: int
    remaining: int = 0
    received: int = 0
    out_of_order: int = 0
    wrong_size: int = 0
    unexpected: int = 0
    errors: list[str] = attrs.field(factory=list)
    started: float = attrs.field(factory=time.perf_counter)
    finished: float | None = None
    done: asyncio.Event = attrs.field(factory=asyncio.Event)

    def __attrs_post_init__(self) -> None:
        self.remaining = self.clients
        if self.clients == 0 or self.count == 0:
            self.finished = self.started
            self.done.set()

    @property
    def expected(self) -> int:
        return self.clients * self.count

    @property
    def complete(self) -> bool:
        """Every client got every message."""
        return self.remaining == 0 and self.received == self.expected

    @property
    def in_order(self) -> bool:
        """Complete, in order, the right sizes and nothing else."""
        return (
            self.complete
            and self.out_of_order == 0
            and self.wrong_size == 0
            and self.unexpected == 0
        )

    @property
    def elapsed(self) -> float:
        """Seconds from the start to the last delivery (so far)."""
        end = self.finished if self.finished is not None else time.perf_counter()
        return end - self.started

    def error(self, text: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(text)

    def client_done(self) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.finished = time.perf_counter()
            self.done.set()

    async def wait(self, within: float) -> bool:
        """Wait up to ``within`` seconds for every client to have every message."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), within)
        return self.done.is_set()

    def summary(self) -> dict[str, Any]:
        return {
            "expected": self.expected,
            "received": self.received,
            "in_order": self.in_order,
            "out_of_order": self.out_of_order,
            "wrong_size": self.wrong_size,
            "unexpected": self.unexpected,
            "errors": list(self.errors),
        }


class Client:
    """One socket.io connection to namespace ``/`` over a websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, name: str) -> None:
        self.ws = ws
        self.name = name
        self.sid: str | None = None
        self.closed = asyncio.Event()
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._next_ack = 0
        self._reader: asyncio.Task[None] | None = None
        self._delivery: Delivery | None = None
        self._next_seq = 0
        self._got = 0
        self.stray = 0  # bench:msg frames outside any run
        self.offsets = 0  # bench:msg frames that carried a recovery offset
        self.last_offset: str | None = None  # the last of those offsets
        self.events: Counter[str] = Counter()  # other events received, by name
        self.first_seen: dict[str, float] = {}  # perf_counter of each one's first
        self.disconnected_at: float | None = None  # perf_counter of a server disconnect

    # -- the handshake -----------------------------------------------------------

    async def handshake(self, token: str | None) -> None:
        """Read the open packet, connect to ``/`` (with ``{"token": token}``), then
        start reading in the background."""
        opened = await self._receive_text()
        if not opened.startswith("0"):
            raise ProtocolError(f"expected the Engine.IO open packet, got {opened[:40]!r}")
        auth = "" if token is None else json.dumps({"token": token}, separators=(",", ":"))
        await self.ws.send_str("40" + auth)
        while True:
            answer = await self._receive_text()
            if answer == "2":
                await self.ws.send_str("3")
                continue
            break
        if answer.startswith("44"):
            raise ConnectRefused(answer[2:200])
        if not answer.startswith("40"):
            raise ProtocolError(f"expected the namespace connect, got {answer[:40]!r}")
        self.sid = json.loads(answer[2:]).get("sid") if len(answer) > 2 else None
        self._reader = asyncio.create_task(self._read(), name=f"read-{self.name}")

    async def _receive_text(self) -> str:
        message = await self.ws.receive()
        if message.type is not aiohttp.WSMsgType.TEXT:
            raise ProtocolError(f"connection ended during the handshake ({message.type.name})")
        text: str = message.data
        return text

    # -- calls ----------------------------------------------------------------------

    async def call(self, event: str, data: Any, *, within: float) -> Any:
        """Emit ``event`` with ``data`` and return the acknowledgement's first value
        (waiting up to ``within`` seconds for it)."""
        ack_id = self._next_ack
        self._next_ack += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = future
        try:
            await self.ws.send_str(f"42{ack_id}" + json.dumps([event, data], separators=(",", ":")))
            return await asyncio.wait_for(future, within)
        finally:
            self._acks.pop(ack_id, None)

    # -- deliveries ---------------------------------------------------------------

    def expect(self, delivery: Delivery) -> None:
        """Count and check the ``bench:msg`` frames of ``delivery`` from now on."""
        self._delivery = delivery
        self._next_seq = 0
        self._got = 0

    def _message(self, seq: int, size: int) -> None:
        delivery = self._delivery
        if delivery is None or self._got >= delivery.count:
            self.stray += 1
            if delivery is not None:
                delivery.unexpected += 1
                delivery.error(f"{self.name}: unexpected bench:msg {seq}")
            return
        if seq != self._next_seq:
            delivery.out_of_order += 1
            delivery.error(f"{self.name}: got seq {seq}, expected {self._next_seq}")
        if size != delivery.size:
            delivery.wrong_size += 1
            delivery.error(f"{self.name}: payload of {size} characters, not {delivery.size}")
        self._next_seq = seq + 1
        self._got += 1
        delivery.received += 1
        if self._got == delivery.count:
            delivery.client_done()

    # -- the reader -----------------------------------------------------------------

    async def _read(self) -> None:
        ws = self.ws
        text_type = aiohttp.WSMsgType.TEXT
        prefix = MSG_PREFIX
        start = len(prefix)
        try:
            while True:
                message = await ws.receive()
                if message.type is not text_type:
                    break
                data: str = message.data
                if data.startswith(prefix):
                    # 42["bench:msg",<seq>,"<payload>"], or with missed-message
                    # recovery on 42["bench:msg",<seq>,"<payload>","<offset>"]: the
                    # payload starts after the comma that ends the sequence number.
                    # Payloads have no quotes or commas, and offsets are at most 41
                    # characters: a '",' near the end is where an offset begins.
                    comma = data.find(",", start)
                    end = data.rfind('",', max(comma, len(data) - OFFSET_TAIL))
                    if end < 0:
                        self._message(int(data[start:comma]), len(data) - comma - 4)
                    else:
                        self.offsets += 1
                        self.last_offset = data[end + 3 : -2]
                        self._message(int(data[start:comma]), end - comma - 2)
                elif data == "2":
                    await ws.send_str("3")
                elif data.startswith("43"):
                    self._ack(data)
                elif data.startswith('42["'):
                    self._event(data[4 : data.find('"', 4)])
                elif data.startswith("41"):
                    self.disconnected_at = time.perf_counter()
                    await ws.close()
                    break
                elif data == "1":
                    break  # the server closed the connection
        except (aiohttp.ClientError, ConnectionError):
            pass
        finally:
            self.closed.set()
            for future in self._acks.values():
                if not future.done():
                    future.set_exception(ProtocolError("connection closed"))

    def _event(self, name: str) -> None:
        self.events[name] += 1
        self.first_seen.setdefault(name, time.perf_counter())

    def _ack(self, data: str) -> None:
        bracket = data.find("[")
        if bracket < 0:
            return
        future = self._acks.get(int(data[2:bracket]))
        if future is not None and not future.done():
            values = json.loads(data[bracket:])
            future.set_result(values[0] if values else None)

    async def stop_reading(self) -> None:
        """Stop reading what the server sends, as a stalled client does: the client's
        buffers fill, then TCP holds the server back."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader

    async def close(self) -> None:
        """Leave: close the websocket (the server sees the transport go)."""
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader


class LoadGenerator:
    """Opens clients to one server; records the websocket extensions offered and
    those the server answered with (``Sec-WebSocket-Extensions``). Clients are made
    by ``client_class``; ``receive_buffer`` sets their sockets' ``SO_RCVBUF``
    (bytes), as a slow reader's would be."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float = 15.0,
        client_class: type[Client] = Client,
        receive_buffer: int | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/socket.io/?EIO=4&transport=websocket"
        self.connect_timeout = connect_timeout
        self.client_class = client_class
        self.receive_buffer = receive_buffer
        self.extensions: set[str] = set()
        self.offered: set[str] = set()
        self._session: aiohttp.ClientSession | None = None
        self._count = 0

    async def __aenter__(self) -> LoadGenerator:
        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(self._record_extensions)
        factory = None if self.receive_buffer is None else _receive_buffer(self.receive_buffer)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, socket_factory=factory),
            trace_configs=[trace],
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def _record_extensions(
        self,
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        self.offered.add(params.headers.get("Sec-WebSocket-Extensions", "(none)"))
        self.extensions.add(params.response.headers.get("Sec-WebSocket-Extensions", "(none)"))

    async def connect(self, token: str | None) -> Client:
        """Open one client and connect it to namespace ``/``."""
        assert self._session is not None, "use the load generator as a context manager"
        self._count += 1
        name = f"c{self._count}"
        async with asyncio.timeout(self.connect_timeout):
            ws = await self._session.ws_connect(self.url, compress=15, max_msg_size=0)
            client = self.client_class(ws, name)
            try:
                await client.handshake(token)
            except BaseException:
                await client.close()
                raise
        return client

    async def connect_many(
        self, tokens: Sequence[str | None], *, concurrency: int
    ) -> tuple[list[Client], float]:
        """Connect one client per token, ``concurrency`` at a time; returns the
        clients (in token order) and the seconds it took. If any fails, those
        opened are closed and the error is raised."""
        clients: list[Client | None] = [None] * len(tokens)
        indexes = iter(range(len(tokens)))

        async def worker() -> None:
            for index in indexes:
                clients[index] = await self.connect(tokens[index])

        started = time.perf_counter()
        workers = [asyncio.create_task(worker()) for _ in range(max(1, concurrency))]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await close_all([client for client in clients if client is not None])
            raise
        elapsed = time.perf_counter() - started
        return [client for client in clients if client is not None], elapsed


def _receive_buffer(size: int) -> Callable[[Any], socket.socket]:
    def make(addr_info: Any) -> socket.socket:
        family, kind, proto = addr_info[:3]
        sock = socket.socket(family, kind, proto)
        # Before connecting, so that the window the client offers stays small.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        return sock

    return make


async def close_all(clients: Iterable[Client], *, within: float = 20.0) -> None:
    """Close every client, 200 at a time, within ``within`` seconds overall."""
    pending = list(clients)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            for start in range(0, len(pending), 200):
                await asyncio.gather(*(client.close() for client in pending[start : start + 200]))


async def call_all(
    clients: Sequence[Client],
    event: str,
    data: Callable[[int], Any],
    *,
    within: float,
    check: Callable[[Any], bool] | None = None,
) -> None:
    """Have every client call ``event`` with ``data(index)``; raise if any answer
    fails ``check``."""

    async def one(index: int, client: Client) -> None:
        answer = await client.call(event, data(index), within=within)
        if check is not None and not check(answer):
            raise ProtocolError(f"{event} answered {answer!r}")

    await gather_bounded([one(index, client) for index, client in enumerate(clients)], 200)


async def gather_bounded(calls: Sequence[Awaitable[None]], limit: int) -> None:
    """Await ``calls`` with at most ``limit`` of them running at once."""
    gate = asyncio.Semaphore(limit)

    async def run(call: Awaitable[None]) -> None:
        async with gate:
            await call

    await asyncio.gather(*(run(call) for call in calls))
