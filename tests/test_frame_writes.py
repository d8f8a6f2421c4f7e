"""Websocket frames written by the gateway itself (aiohttp, no compression): each
broadcast is framed once and every socket's frames of a loop turn go out in one
write, in the order they were sent; on both servers and with polling clients in
the same rooms, the client sees exactly what python-engineio's writer would send.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from engineio import packet as eio_packet

from realtime_gateway import (
    AllowAll,
    Connection,
    Gateway,
    GatewayNamespace,
    SignedTokenAuthenticator,
    event,
)
from realtime_gateway._engine import SizedPacket, _frame_of, websocket_frame

from .clinic import USERS
from .conftest import Clients, call, quick_config, socketio_client, until
from .rawio import RawSession


class Recorder(GatewayNamespace):
    """Records disconnect reasons; ``burst`` sends a room broadcast, a private
    emit and its own answer in one loop turn."""

    def __init__(self) -> None:
        super().__init__("/")
        self.disconnected: list[str] = []
        self.notes: list[tuple[int, int]] = []
        self.turns = 0  # loop turns counted by a test, when it counts them

    async def on_connected(self, conn: Connection) -> None:
        await self.join(conn, "lobby")

    async def on_disconnected(self, conn: Connection, reason: str) -> None:
        self.disconnected.append(reason)

    @event("note", payload=int)
    async def note(self, conn: Connection, n: int) -> None:
        self.notes.append((n, self.turns))

    @event("burst", payload=int)
    async def burst(self, conn: Connection, count: int) -> dict[str, Any]:
        for n in range(count):
            await self.gateway.emit_to_room("lobby", "tick", n)
            await self.gateway.server.emit("mine", n, to=conn.sid)
        return {"success": True, "sent": count}


def recorder_gateway(
    authenticator: SignedTokenAuthenticator, **settings: Any
) -> tuple[Gateway, Recorder]:
    recorder = Recorder()
    gateway = Gateway(
        authenticator=authenticator,
        authorizer=AllowAll(),
        config=quick_config(**settings),
        namespaces=[recorder],
    )
    return gateway, recorder


def test_frames_follow_rfc_6455_for_every_length_class() -> None:
    for length, header in ((0, b"\x81\x01"), (124, b"\x81\x7d"), (125, b"\x81\x7e\x00\x7e")):
        frame = websocket_frame(eio_packet.Packet(eio_packet.MESSAGE, "x" * length))
        assert frame == header + b"4" + b"x" * length
    frame = websocket_frame(eio_packet.Packet(eio_packet.MESSAGE, "y" * 65534))
    assert frame[:4] == b"\x81\x7e\xff\xff"
    assert len(frame) == 4 + 65535
    frame = websocket_frame(eio_packet.Packet(eio_packet.MESSAGE, "z" * 65535))
    assert frame[:2] == b"\x81\x7f"
    assert int.from_bytes(frame[2:10], "big") == 65536
    binary = websocket_frame(eio_packet.Packet(eio_packet.MESSAGE, b"\x00\xff"))
    assert binary == b"\x82\x02\x00\xff"  # binary frames carry the bytes alone
    text = websocket_frame(eio_packet.Packet(eio_packet.MESSAGE, "é"))
    assert text == b"\x81\x03" + "4é".encode()


def test_a_broadcast_packet_is_framed_once() -> None:
    pkt = SizedPacket(eio_packet.MESSAGE, '2["tick",1]')
    first = _frame_of(pkt)
    assert _frame_of(pkt) is first
    assert first == websocket_frame(pkt)


@pytest.mark.parametrize("size", [10, 125, 126, 65535, 65536, 300_000])
async def test_payloads_of_every_frame_length_arrive_whole(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str, size: int
) -> None:
    gateway, _ = recorder_gateway(authenticator, max_pending_output=4 * 1024 * 1024)
    async with clients.serve(gateway, server_kind) as server:
        got: asyncio.Queue[Any] = asyncio.Queue()
        client = socketio_client()
        client.on("big", got.put)
        clients.adopt(client)
        token = authenticator.issue(USERS["nurse"])
        await client.connect(server.url, auth={"token": token}, wait_timeout=5)
        text = "é" * (size // 2) + "a" * (size % 2)
        image = bytes(range(256)) * (size // 256 + 1)
        await gateway.emit_to_room("lobby", "big", {"text": text})
        await gateway.emit_to_room("lobby", "big", {"image": image[:size]})
        assert await asyncio.wait_for(got.get(), 10) == {"text": text}
        assert await asyncio.wait_for(got.get(), 10) == {"image": image[:size]}


async def test_one_loop_turn_keeps_the_order_of_broadcasts_private_emits_and_the_answer(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway, _ = recorder_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        order: list[Any] = []
        client = socketio_client()
        client.on("tick", lambda n: order.append(("tick", n)))
        client.on("mine", lambda n: order.append(("mine", n)))
        clients.adopt(client)
        token = authenticator.issue(USERS["nurse"])
        await client.connect(server.url, auth={"token": token}, wait_timeout=5)
        [socket] = gateway.server.eio.sockets.values()
        # aiohttp: the socket writes its frames itself; ASGI: python-engineio's writer.
        assert (socket._frames is not None) == (server_kind == "aiohttp")
        answer = await call(client, "burst", 100)
        order.append(("answer", answer["sent"]))
        expected = [(kind, n) for n in range(100) for kind in ("tick", "mine")]
        # The answer was sent after every emit: the client has them all by then.
        assert order == [*expected, ("answer", 100)]


async def test_polling_and_websocket_clients_in_one_room_get_the_same_stream(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway, _ = recorder_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        seen: dict[str, list[int]] = {"websocket": [], "polling": []}
        for transport, name in (("websocket", "nurse"), ("polling", "doctor")):
            client = socketio_client()
            client.on("tick", seen[transport].append)
            clients.adopt(client)
            token = authenticator.issue(USERS[name])
            await client.connect(
                server.url, auth={"token": token}, transports=[transport], wait_timeout=5
            )
        for start in range(0, 500, 50):
            # Bursts of 50 in one loop turn, as a busy publisher sends them.
            for n in range(start, start + 50):
                await gateway.emit_to_room("lobby", "tick", n)
            await asyncio.sleep(0)
        await until(lambda: all(len(ticks) == 500 for ticks in seen.values()), within=10)
        assert seen == {"websocket": list(range(500)), "polling": list(range(500))}


async def test_a_client_reading_slowly_through_a_small_buffer_gets_every_byte(
    authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    """The kernel takes a little at a time (partial writes): what the transport
    keeps is written as the client reads, whole and in order."""
    gateway, _ = recorder_gateway(authenticator, max_pending_output=4 * 1024 * 1024)
    async with Clients().serve(gateway, server_kind) as server:
        token = authenticator.issue(USERS["nurse"])
        async with RawSession.open(server.url, "websocket", receive_buffer=4096) as raw:
            await raw.connect_ns("/", {"token": token})
            chunk = "v" * 10_000
            for n in range(100):  # about 1 MB, far beyond what the socket buffers
                await gateway.emit_to_room("lobby", "vitals", {"n": n, "chunk": chunk})
            received: list[int] = []
            while len(received) < 100:
                packet = await raw.next_sio(timeout=10)
                assert packet is not None
                name, data = packet.data
                if name == "vitals":
                    assert data["chunk"] == chunk
                    received.append(data["n"])
                    await asyncio.sleep(0.005)  # a slow reader
            assert received == list(range(100))


async def test_a_websocket_client_that_never_answers_pings_is_ended_as_a_ping_timeout(
    authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway, recorder = recorder_gateway(authenticator, ping_interval=1, ping_timeout=1)
    async with Clients().serve(gateway, server_kind) as server:
        token = authenticator.issue(USERS["nurse"])
        async with RawSession.open(server.url, "websocket") as raw:
            await raw.connect_ns("/", {"token": token})
            await raw.stop_reading()  # so PINGs go unanswered, the socket still open
            await until(lambda: recorder.disconnected != [], within=5)
            assert recorder.disconnected == ["ping timeout"]
            assert not gateway.connections


async def test_a_client_sending_close_mid_burst_loses_nothing_for_the_others(
    clients: Clients, authenticator: SignedTokenAuthenticator
) -> None:
    gateway, _ = recorder_gateway(authenticator)
    async with clients.serve(gateway, "aiohttp") as server:
        token = authenticator.issue(USERS["nurse"])
        ticks: list[int] = []
        staying = socketio_client()
        staying.on("tick", ticks.append)
        clients.adopt(staying)
        await staying.connect(server.url, auth={"token": token}, wait_timeout=5)
        async with RawSession.open(server.url, "websocket") as raw:
            await raw.connect_ns("/", {"token": authenticator.issue(USERS["doctor"])})
            for n in range(200):
                await gateway.emit_to_room("lobby", "tick", n)
                if n == 100:
                    assert raw.ws is not None
                    await raw.ws.close()  # in the middle of the turn's frames
            await until(lambda: len(ticks) == 200, within=10)
            assert ticks == list(range(200))
            await until(lambda: len(gateway.connections) == 1, within=5)
        assert raw.ws is not None
        assert raw.ws.closed


async def test_a_compressed_connection_is_still_framed_by_aiohttp(
    authenticator: SignedTokenAuthenticator,
) -> None:
    gateway, _ = recorder_gateway(authenticator, websocket_compression=True)
    async with Clients().serve(gateway, "aiohttp") as server:
        token = authenticator.issue(USERS["nurse"])
        async with RawSession.open(server.url, "websocket", compress=15) as raw:
            await raw.connect_ns("/", {"token": token})
            [socket] = gateway.server.eio.sockets.values()
            assert socket._frames is None  # python-engineio's writer, with aiohttp's frames
            await gateway.emit_to_room("lobby", "tick", {"text": "a" * 5000})
            packet = await raw.next_sio()
            assert packet is not None
            assert packet.data == ["tick", {"text": "a" * 5000}]
            assert raw.ws is not None
            assert raw.ws.compress == 15


async def test_a_session_ended_by_the_server_closes_its_websocket_after_the_close_packet(
    authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    """The client is told (CLOSE), then the websocket closes: a client that would
    keep it open cannot hold the connection."""
    gateway, recorder = recorder_gateway(authenticator)
    async with Clients().serve(gateway, server_kind) as server:
        token = authenticator.issue(USERS["nurse"])
        async with RawSession.open(server.url, "websocket") as raw:
            _, reply = await raw.connect_ns("/", {"token": token})
            await gateway.server.disconnect(reply["sid"])
            frames = []
            while (frame := await raw.recv()) is not None:
                frames.append(frame)
            assert frames[-2:] == ["41", "1"]  # socket.io DISCONNECT, engine.io CLOSE
            assert raw.close_code == 1000
            assert recorder.disconnected == ["server disconnect"]


async def test_frames_that_arrive_together_are_read_one_per_loop_turn(
    authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    """A client sending without pause cannot keep the event loop: aiohttp hands
    over a frame already buffered without suspending, so the read loop yields
    after each frame itself."""
    gateway, recorder = recorder_gateway(authenticator, rate_limit=None, user_rate_limit=None)
    count = 300
    async with Clients().serve(gateway, server_kind) as server:
        token = authenticator.issue(USERS["nurse"])
        async with RawSession.open(server.url, "websocket") as raw:
            await raw.connect_ns("/", {"token": token})
            loop = asyncio.get_running_loop()
            counting = True

            def turn() -> None:
                recorder.turns += 1
                if counting:
                    loop.call_soon(turn)

            turn()
            # Masked text frames (a zero mask leaves the bytes as they are), in one
            # write: they reach the server together.
            frames = b""
            for n in range(count):
                payload = f'42["note",{n}]'.encode()
                frames += bytes((0x81, 0x80 | len(payload))) + b"\0\0\0\0" + payload
            assert raw.ws is not None
            transport = raw.ws._writer.transport  # the client's own socket
            transport.write(frames)
            await until(lambda: len(recorder.notes) == count, within=10)
            counting = False
            assert [n for n, _ in recorder.notes] == list(range(count))
            turns = {at for _, at in recorder.notes}
            # Read all at once, every handler would run in the same turn.
            assert len(turns) > count // 2


async def test_a_long_burst_in_one_loop_turn_is_written_as_it_goes(
    clients: Clients, authenticator: SignedTokenAuthenticator
) -> None:
    """Frames wait for the end of the loop turn only up to WRITE_AT bytes: the
    client reads while a long burst is still being sent, and no socket joins the
    whole burst into one buffer."""
    from realtime_gateway._engine import WRITE_AT

    gateway, _ = recorder_gateway(authenticator, max_pending_output=8 * 1024 * 1024)
    async with clients.serve(gateway, "aiohttp") as server:
        got: list[int] = []
        client = socketio_client()
        client.on("tick", lambda n, chunk: got.append(n))
        clients.adopt(client)
        token = authenticator.issue(USERS["nurse"])
        await client.connect(server.url, auth={"token": token}, wait_timeout=5)
        [socket] = gateway.server.eio.sockets.values()
        chunk = "c" * 1000
        most = 0
        for n in range(500):  # about 500 KB, without yielding to the loop
            await gateway.emit_to_room("lobby", "tick", (n, chunk))
            most = max(most, socket.queued_bytes)
        assert most < WRITE_AT + 1100
        assert socket._frames is not None
        assert sum(map(len, socket._frames)) < WRITE_AT
        await until(lambda: len(got) == 500, within=10)
        assert got == list(range(500))
