"""How a process of a cluster publishes to the others: through an ordered queue
that one task drains, pipelining what waits, so that an emit never waits for a
Redis round trip.

Two gateways A and B in this process, each on its own web server, on one real
redis-server; real python-socketio clients on either. A emits; clients on A (local
delivery) and on B (through Redis) show what arrived, in what order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import redis.asyncio as aioredis
import socketio

from realtime_gateway import Gateway, SignedTokenAuthenticator

from .clinic import USERS, clinic_gateway
from .conftest import SALT, SECRET, Clients, RunningServer, quick_config, serve
from .redis_server import RedisServer, redis_server_fixture  # noqa: F401 (the fixture)

UPDATES = "/updates"
ROOM = "patient:p1"
WITHIN = 15.0

pytestmark = pytest.mark.timeout(60)


@attrs.define
class Pair:
    a: RunningServer
    b: RunningServer
    token: str
    redis: RedisServer


def _gateway(tokens: SignedTokenAuthenticator, redis_url: str, **settings: Any) -> Gateway:
    return clinic_gateway(
        tokens,
        config=quick_config(redis_url=redis_url, cluster_canary_interval=0.2, **settings),
    )


@pytest.fixture
async def pair(redis_server: RedisServer) -> AsyncIterator[Pair]:
    tokens = SignedTokenAuthenticator([SECRET], salt=SALT, max_age=600)
    a = _gateway(tokens, redis_server.url, cluster_publish_queue=8)
    b = _gateway(tokens, redis_server.url)
    async with serve(a, "aiohttp") as on_a, serve(b, "aiohttp") as on_b:
        yield Pair(on_a, on_b, tokens.issue(USERS["nurse"]), redis_server)


@contextlib.asynccontextmanager
async def opened() -> AsyncIterator[Clients]:
    """Clients, all disconnected at the end."""
    pool = Clients()
    try:
        yield pool
    finally:
        await pool.close()


class Watcher:
    """A client in the patient room, keeping the ``n`` of every update."""

    def __init__(self) -> None:
        self.numbers: list[int] = []
        self._changed = asyncio.Event()

    def got(self, data: dict[str, Any], *more: Any) -> None:
        self.numbers.append(data["n"])
        self._changed.set()

    async def has(self, count: int, within: float = WITHIN) -> list[int]:
        async with asyncio.timeout(within):
            while len(self.numbers) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.numbers


async def watch(clients: Clients, server: RunningServer, token: str) -> Watcher:
    watcher = Watcher()
    client = socketio.AsyncClient(reconnection=False)
    client.on("patient:update", watcher.got, namespace=UPDATES)
    clients.adopt(client)
    await client.connect(
        server.url, namespaces=[UPDATES], auth={"token": token}, transports=["websocket"]
    )
    answer = await client.call("subscribe:patient", {"patientId": "p1"}, namespace=UPDATES)
    assert answer["success"] is True, answer
    return watcher


async def emit(gateway: Gateway, n: int) -> None:
    await gateway.emit_to_room(ROOM, "patient:update", {"n": n}, namespace=UPDATES)


async def bus_ready(pair: Pair) -> None:
    """Until B hears A (both subscribed): a marker emit from A reaches a client on B."""
    async with opened() as clients:
        probe = await watch(clients, pair.b, pair.token)
        for _ in range(100):
            await emit(pair.a.gateway, -1)
            try:
                await probe.has(1, within=0.1)
                return
            except TimeoutError:
                continue
    raise AssertionError("B never heard A")


async def test_many_emits_reach_the_other_process_in_order_without_a_round_trip_each(
    pair: Pair,
) -> None:
    await bus_ready(pair)
    async with opened() as clients:
        on_a = await watch(clients, pair.a, pair.token)
        on_b = await watch(clients, pair.b, pair.token)
        loop_turned = asyncio.Event()
        asyncio.get_running_loop().call_soon(loop_turned.set)
        gateway = pair.a.gateway
        # The queue bound is 8: the first 8 emits cannot have waited for Redis.
        for n in range(8):
            await emit(gateway, n)
        assert not loop_turned.is_set(), "an emit waited for the event loop (a round trip)"
        for n in range(8, 500):
            await emit(gateway, n)
        assert await on_b.has(500) == list(range(500))
        assert await on_a.has(500) == list(range(500))
    metrics = gateway.metrics.snapshot()
    assert metrics["cluster_messages_unsent"] == 0
    assert metrics["cluster_publish_waits"] >= 1  # 500 emits went past the bound of 8


async def test_with_redis_paused_emits_wait_for_room_and_nothing_is_lost(pair: Pair) -> None:
    await bus_ready(pair)
    async with opened() as clients:
        on_a = await watch(clients, pair.a, pair.token)
        on_b = await watch(clients, pair.b, pair.token)
        admin = aioredis.Redis.from_url(pair.redis.url)
        try:
            waits = pair.a.gateway.metrics.cluster_publish_waits
            # Redis holds every write (PUBLISH included) for 0.5 s: slower than A.
            await admin.client_pause(500, all=False)
            for n in range(40):
                await emit(pair.a.gateway, n)
            assert pair.a.gateway.metrics.cluster_publish_waits > waits
            assert await on_b.has(40) == list(range(40))
            assert await on_a.has(40) == list(range(40))
        finally:
            await admin.aclose()
    assert pair.a.gateway.metrics.cluster_messages_unsent == 0


async def test_with_redis_down_local_delivery_goes_on_and_the_rest_is_counted(
    pair: Pair,
) -> None:
    await bus_ready(pair)
    async with opened() as clients:
        on_a = await watch(clients, pair.a, pair.token)
        pair.redis.stop()
        async with asyncio.timeout(WITHIN):  # no emit hangs on the dead Redis
            for n in range(200):
                await emit(pair.a.gateway, n)
        assert await on_a.has(200) == list(range(200))
        metrics = pair.a.gateway.metrics.snapshot()
        assert metrics["cluster_messages_unsent"] >= 1
        # Every emit is either published or counted: none is stuck in the queue.
        manager = pair.a.gateway.server.manager
        assert await manager.flush(WITHIN)
        pair.redis.start()


async def test_a_clean_stop_publishes_what_is_still_queued(redis_server: RedisServer) -> None:
    tokens = SignedTokenAuthenticator([SECRET], salt=SALT, max_age=600)
    a = _gateway(tokens, redis_server.url)
    b = _gateway(tokens, redis_server.url)
    token = tokens.issue(USERS["nurse"])
    async with serve(b, "aiohttp") as on_b:
        async with serve(a, "aiohttp") as on_a:
            await bus_ready(Pair(on_a, on_b, token, redis_server))
            async with opened() as clients:
                watcher = await watch(clients, on_b, token)
                for n in range(3000):
                    await emit(a, n)
                manager = a.server.manager
                assert len(manager._outbox) > 0  # still queued when the stop begins
                await a.shutdown(grace=0)
                assert await watcher.has(3000) == list(range(3000))
        assert a.metrics.cluster_messages_unsent == 0
