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


async def run(redis: RedisServer, recovery: bool, args: argparse.Namespace) -> dict[str, Any]:
    tokens = SignedTokenAuthenticator([SECRET], salt=SALT, max_age=600)
    config = quick_config(
        redis_url=redis.url,
        recovery_window=120 if recovery else None,
        max_sockets_per_user=1000,
        handshake_rate=10_000,
        handshake_burst=10_000,
    )
    gateway = clinic_gateway(tokens, config=config)
    result: dict[str, Any] = {}
    async with serve(gateway, "aiohttp") as running:
        await emit_rate(gateway, 200, 1)  # warm-up
        result["emits/s, 1 at a time"] = statistics.median(
            [await emit_rate(gateway, args.emits, 1) for _ in range(3)]
        )
        result["emits/s, 32 at once"] = statistics.median(
            [await emit_rate(gateway, args.emits, 32) for _ in range(3)]
        )
        token = tokens.issue(USERS["nurse"])
        result[f"deliveries/s, {args.clients} clients"] = statistics.median(
            [await fan_out(gateway, running.url, token, args.clients, 500) for _ in range(3)]
        )
        if recovery:
            client = aioredis.Redis.from_url(redis.url)
            try:
                key = "rtg:recovery:log:/updates"
                length = await client.xlen(key)
                usage = await client.memory_usage(key, samples=0)
                result["Redis bytes per retained event"] = round((usage or 0) / length)
                result["retained events"] = length
            finally:
                await client.aclose()
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--emits", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        results = {}
        for recovery in (False, True):
            redis = RedisServer(redis_executable(), Path(directory), _free_port())
            redis.start()
            try:
                results[recovery] = await run(redis, recovery, args)
            finally:
                redis.stop()
    print(f"{'':40} {'recovery off':>14} {'recovery on':>14} {'on/off':>7}")
    for name, on in results[True].items():
        off = results[False].get(name)
        ratio = f"{on / off:.2f}" if off else ""
        off_text = "" if off is None else f"{off:,.0f}"
        print(f"{name:40} {off_text:>14} {on:>14,.0f} {ratio:>7}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
