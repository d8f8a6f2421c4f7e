"""Slow consumers: a connection whose pending output (engine.io queue plus websocket
transport buffer) goes over ``max_pending_output`` is disconnected with reason
``slow_consumer``; a client that keeps up sees no difference. On real servers, with
raw clients that stop reading."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvicorn

from realtime_gateway import Gateway, SignedTokenAuthenticator, user_room
from realtime_gateway._engine import EngineSocket
from realtime_gateway._prometheus import exposition

from .clinic import USERS, Inbox, clinic_gateway, connect_as
from .conftest import Clients, RunningServer, quick_config, until
from .rawio import CONNECT, RawSession

BOUND = 64 * 1024
BLOB = "x" * 8000
# One broadcast frame as the bound counts it: engine.io and socket.io headers, the
# event name and the JSON around the blob, with room to spare.
FRAME = len(BLOB) + 100
PER_ROUND = 4  # 32 KB a round: a client that keeps up never holds the bound
MAX_ROUNDS = 600  # ~19 MB: far more than the client's and the kernel's buffers
SLOW = USERS["nurse"]
GOOD = USERS["doctor"]


def slow_config() -> Any:
    # Pings far apart: an eviction here is the bound's, never a ping timeout.
    return quick_config(max_pending_output=BOUND, ping_interval=5, ping_timeout=5)


def rss() -> int:
    """This process's resident set size in bytes."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * 4096


@contextlib.asynccontextmanager
async def slow_client(
    url: str, token: str, transport: str, *, pongs: bool
) -> AsyncIterator[RawSession]:
    """A raw client in two namespaces that stops reading (and, with ``pongs``, sends
    a PONG every 0.3 s all the same)."""
    async with RawSession.open(url, transport, receive_buffer=4096) as raw:
        for namespace in ("/", "/notifications"):
            kind, _ = await raw.connect_ns(namespace, {"token": token})
            assert kind == CONNECT
        await raw.stop_reading()
        beat = asyncio.create_task(_pong_every(raw, 0.3)) if pongs else None
        try:
            yield raw
        finally:
            if beat is not None:
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat


async def _pong_every(raw: RawSession, period: float) -> None:
    while True:
        await asyncio.sleep(period)
        try:
            status = await raw.send_raw("3")
        except Exception:
            return  # the server dropped the connection
        if status is not None and status != 200:
            return


async def flood(gateway: Gateway, good: Inbox, *, stop: Callable[[], bool]) -> int:
    """Broadcasts to both users' rooms, a round at a time, each round received by the
    good client before the next; until ``stop()``. Returns the rounds sent."""
    sent = 0
    for rounds in range(1, MAX_ROUNDS + 1):
        for _ in range(PER_ROUND):
            for user in (SLOW, GOOD):
                await gateway.emit_to_user(user.user_id, "tick", {"n": sent, "blob": BLOB})
            sent += 1
        ticks = await good.wait("tick", count=sent, within=10)
        assert [tick["n"] for tick in ticks[-PER_ROUND:]] == list(range(sent - PER_ROUND, sent))
        if stop():
            return rounds
    return MAX_ROUNDS


async def check_evicted(
    gateway: Gateway,
    engine: EngineSocket,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The slow client's connection is gone everywhere, and was never let past the
    bound by more than one frame."""
    assert gateway.metrics.slow_consumers == 1
    await until(lambda: engine.closed)
    assert engine.evicted
    assert BOUND < engine.peak_pending <= BOUND + FRAME
    assert engine.pending_output <= FRAME  # the queue was let go
    # python-socketio heard it: every namespace socket left the registry.
    assert await gateway.registry.user_sockets(SLOW.user_id) == []
    assert not await gateway.is_user_connected(SLOW.user_id)
    assert await gateway.presence(user_room(SLOW.user_id)) == frozenset()
    assert await gateway.presence(user_room(SLOW.user_id), namespace="/notifications") == (
        frozenset()
    )
    for namespace in ("/", "/notifications"):
        assert gateway.server.manager.sid_from_eio_sid(engine.sid, namespace) is None
    # The websocket loop (reader and writer) has ended on the server.
    await until(lambda: engine._driver is None)
    fields = [record.rtg for record in caplog.records if hasattr(record, "rtg")]
    evictions = [f for f in fields if f["what"] == "slow_consumer"]
    assert len(evictions) == 1
    assert evictions[0]["limit"] == BOUND
    assert BOUND < evictions[0]["pending_bytes"] <= BOUND + FRAME
    assert engine.sid not in str(evictions[0])  # the session id stays out of the logs
    assert set(evictions[0]["sid"].split(",")) == {
        f["sid"] for f in fields if f["what"] == "disconnect" and f["reason"] == "slow_consumer"
    }
    assert len(evictions[0]["sid"].split(",")) == 2
    stats = await gateway.stats()
    assert stats["slow_consumers"] == 1
    assert "rtg_slow_consumers_total 1.0" in exposition(stats)


@contextlib.asynccontextmanager
async def serving(clients: Clients, gateway: Gateway, kind: str) -> AsyncIterator[RunningServer]:
    """``clients.serve``, or with ``kind="asgi-wrapped"`` uvicorn behind an ASGI
    middleware that wraps ``send`` (as many do): the gateway cannot see the
    server's transport there."""
    if kind != "asgi-wrapped":
        async with clients.serve(gateway, kind) as server:
            yield server
        return
    app = gateway.asgi_app()

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        async def send_on(message: Any) -> None:
            await send(message)

        await app(scope, receive, send_on)

    config = uvicorn.Config(wrapped, lifespan="on", log_level="warning", ws="websockets-sansio")
    config.timeout_graceful_shutdown = 1
    web = uvicorn.Server(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    task = asyncio.create_task(web.serve(sockets=[sock]))
    await until(lambda: web.started or task.done())
    try:
        yield RunningServer(
            url=f"http://127.0.0.1:{sock.getsockname()[1]}", gateway=gateway, kind=kind
        )
    finally:
        await clients.close()
        closing = [engine.close(wait=False) for engine in gateway.server.eio.sockets.values()]
        await asyncio.wait_for(asyncio.gather(*closing), 2)
        web.should_exit = True
        await task
        sock.close()


@pytest.fixture
def log_records(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="realtime_gateway")
    return caplog


@pytest.mark.parametrize("pongs", [False, True], ids=["silent", "pongs"])
@pytest.mark.parametrize("kind", ["aiohttp", "asgi", "asgi-wrapped"])
async def test_a_websocket_client_that_stops_reading_is_disconnected_over_the_bound(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    kind: str,
    pongs: bool,
    log_records: pytest.LogCaptureFixture,
) -> None:
    gateway = clinic_gateway(authenticator, config=slow_config())
    async with serving(clients, gateway, kind) as server:
        good, inbox = await connect_as(
            clients, server.url, authenticator.issue(GOOD), namespaces=("/",)
        )
        async with slow_client(
            server.url, authenticator.issue(SLOW), "websocket", pongs=pongs
        ) as raw:
            engine = gateway.server.eio.sockets[raw.sid]
            # Under uvicorn the gateway finds the server's transport, unless a
            # middleware hides it.
            sees_transport = getattr(engine._driver, "_transport", None) is not None
            assert sees_transport == (kind != "asgi-wrapped")
            before = rss()
            rounds = await flood(gateway, inbox, stop=lambda: engine.evicted)
            assert engine.evicted, f"not evicted after {rounds} rounds"
            grown = rss() - before
            await check_evicted(gateway, engine, log_records)
        # Coarse: the broadcasts the slow client did not take are not held.
        assert grown < 16 * 1024 * 1024, grown
        # The good client is untouched and still served.
        assert good.connected
        await gateway.emit_to_user(GOOD.user_id, "after", {"ok": True})
        assert await inbox.wait("after") == [{"ok": True}]
        assert gateway.metrics.slow_consumers == 1


async def test_a_polling_client_that_never_polls_again_is_disconnected_over_the_bound(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    log_records: pytest.LogCaptureFixture,
) -> None:
    gateway = clinic_gateway(authenticator, config=slow_config())
    async with clients.serve(gateway, server_kind) as server:
        good, inbox = await connect_as(
            clients, server.url, authenticator.issue(GOOD), namespaces=("/",), transport="polling"
        )
        # It keeps POSTing PONGs, so engine.io's ping timeout never ends it.
        async with slow_client(server.url, authenticator.issue(SLOW), "polling", pongs=True) as raw:
            engine = gateway.server.eio.sockets[raw.sid]
            assert not engine.upgraded
            rounds = await flood(gateway, inbox, stop=lambda: engine.evicted)
            assert engine.evicted, f"not evicted after {rounds} rounds"
            await check_evicted(gateway, engine, log_records)
            # Its next request names a session that is gone.
            assert await raw.post("3") == 400
        assert good.connected
        await gateway.emit_to_user(GOOD.user_id, "after", {"ok": True})
        assert await inbox.wait("after") == [{"ok": True}]


async def test_clients_that_keep_up_are_untouched_by_the_bound(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str, transport: str
) -> None:
    gateway = clinic_gateway(authenticator, config=quick_config(max_pending_output=BOUND))
    async with clients.serve(gateway, server_kind) as server:
        good, inbox = await connect_as(
            clients, server.url, authenticator.issue(GOOD), namespaces=("/",), transport=transport
        )
        # A raw client that reads everything, as fast as it comes.
        async with RawSession.open(server.url, transport, receive_buffer=4096) as raw:
            kind, _ = await raw.connect_ns("/", {"token": authenticator.issue(SLOW)})
            assert kind == CONNECT
            engine = gateway.server.eio.sockets[raw.sid]
            rounds = 40  # 1.3 MB in all, twenty times the bound
            sent = 0
            for _ in range(rounds):
                for _ in range(PER_ROUND):
                    for user in (SLOW, GOOD):
                        await gateway.emit_to_user(user.user_id, "tick", {"n": sent, "blob": BLOB})
                    sent += 1
                await inbox.wait("tick", count=sent, within=10)
                for n in range(sent - PER_ROUND, sent):
                    packet = await raw.next_sio()
                    while packet is not None and packet.data[0] != "tick":
                        packet = await raw.next_sio()  # the gateway's own events
                    assert packet is not None
                    assert packet.data == ["tick", {"n": n, "blob": BLOB}]
            assert not engine.evicted
            assert engine.peak_pending <= BOUND
            assert gateway.metrics.slow_consumers == 0
            assert good.connected
            assert await gateway.is_user_connected(SLOW.user_id)
