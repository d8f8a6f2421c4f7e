"""What missed-message recovery costs on the cluster emit path, on a real redis-server.

    python benchmarks/recovery_redis.py [--emits 3000] [--clients 100]

One gateway process (aiohttp, the clinic namespaces) on a fresh redis-server, with
recovery off (the emit is PUBLISHed) and on (one script XADDs it to the stream and
PUBLISHes it; the process delivers it when it hears it back). For each: emits to a
room per second, one at a time and 32 at once, with nobody in the room; the time
until ``--clients`` python-socketio clients in the room have every one of 500
emits; and, with recovery on, the Redis memory per retained event.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import socketio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realtime_gateway import SignedTokenAuthenticator
from tests.clinic import USERS, clinic_gateway
from tests.conftest import SALT, SECRET, quick_config, serve
from tests.redis_server import RedisServer, _free_port, redis_executable

PAYLOAD = {"n": 0, "text": "x" * 80}  # about 100 B on the wire


async def emit_rate(gateway: Any, count: int, concurrency: int) -> float:
    async def one(n: int) -> None:
        await gateway.emit_to_room(
            "patient:none", "patient:update", {**PAYLOAD, "n": n}, namespace="/updates"
        )

    started = time.perf_counter()
    for first in range(0, count, concurrency):
        await asyncio.gather(*(one(n) for n in range(first, min(first + concurrency, count))))
    return count / (time.perf_counter() - started)


async def fan_out(gateway: Any, url: str, token: str, clients: int, emits: int) -> float:
    done = asyncio.Event()
    got = [0] * clients
    complete = 0
    pool: list[socketio.AsyncClient] = []
    try:
        for i in range(clients):
            client = socketio.AsyncClient(reconnection=False)

            def on_update(*args: Any, i: int = i) -> None:
                nonlocal complete
                got[i] += 1
                if got[i] == emits:
                    complete += 1
                    if complete == clients:
                        done.set()

            client.on("patient:update", on_update, namespace="/updates")
            await client.connect(
                url, namespaces=["/updates"], auth={"token": token}, transports=["websocket"]
            )
            await client.call("subscribe:patient", {"patientId": "p1"}, namespace="/updates")
            pool.append(client)
        started = time.perf_counter()
        for n in range(emits):
            await gateway.emit_to_room(
                "patient:p1", "patient:update", {**PAYLOAD, "n": n}, namespace="/updates"
            )
        await asyncio.wait_for(done.wait(), 120)
        return clients * emits / (time.perf_counter() - started)
    finally:
        await asyncio.gather(*(client.disconnect() for client in pool))


async def measure(
    gateways: dict[bool, Any], urls: dict[bool, str], token: str, args: argparse.Namespace
) -> dict[str, dict[bool, float]]:
    """Each figure for both gateways in turn, ``--rounds`` times: the medians."""
    samples: dict[str, dict[bool, list[float]]] = {}

    def add(name: str, recovery: bool, value: float) -> None:
        samples.setdefault(name, {False: [], True: []})[recovery].append(value)

    for _ in range(args.rounds):
        for recovery in (False, True):
            gateway = gateways[recovery]
            add("emits/s, 1 at a time", recovery, await emit_rate(gateway, args.emits, 1))
            add("emits/s, 32 at once", recovery, await emit_rate(gateway, args.emits, 32))
            delivered = await fan_out(gateway, urls[recovery], token, args.clients, 500)
            add(f"deliveries/s, {args.clients} clients", recovery, delivered)
    return {
        name: {recovery: statistics.median(values) for recovery, values in by.items()}
        for name, by in samples.items()
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--emits", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    tokens = SignedTokenAuthenticator([SECRET], salt=SALT, max_age=600)
    with tempfile.TemporaryDirectory() as directory:
        redis = RedisServer(redis_executable(), Path(directory), _free_port())
        redis.start()
        try:
            gateways = {
                # Both on one Redis, each with its own keys and channel, measured in
                # turn so that the machine's drift hits both alike.
                recovery: clinic_gateway(
                    tokens,
                    config=quick_config(
                        redis_url=redis.url,
                        redis_prefix="on" if recovery else "off",
                        recovery_window=120 if recovery else None,
                        max_sockets_per_user=1000,
                        handshake_rate=10_000,
                        handshake_burst=10_000,
                    ),
                )
                for recovery in (False, True)
            }
            async with (
                serve(gateways[False], "aiohttp") as off,
                serve(gateways[True], "aiohttp") as on,
            ):
                for gateway in gateways.values():
                    await emit_rate(gateway, 200, 1)  # warm-up
                token = tokens.issue(USERS["nurse"])
                figures = await measure(gateways, {False: off.url, True: on.url}, token, args)
                client = aioredis.Redis.from_url(redis.url)
                try:
                    key = "on:recovery:log:/updates"
                    length = await client.xlen(key)
                    usage = await client.memory_usage(key, samples=0) or 0
                    info = await client.info("commandstats")
                finally:
                    await client.aclose()
        finally:
            redis.stop()
    print(f"{'':40} {'recovery off':>14} {'recovery on':>14} {'on/off':>7}")
    for name, by in figures.items():
        print(f"{name:40} {by[False]:>14,.0f} {by[True]:>14,.0f} {by[True] / by[False]:>7.2f}")
    print(f"Redis bytes per retained event: {usage / length:.0f} ({length:,} retained)")
    for command in ("publish", "evalsha"):
        stats = info.get(f"cmdstat_{command}")
        if stats:
            print(f"Redis CPU per {command.upper()}: {stats['usec_per_call']} us")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
