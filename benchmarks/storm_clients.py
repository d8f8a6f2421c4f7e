"""S6's expiring sockets in a load-generator process of their own (the harness runs
it with ``BENCH_STORM_APART`` set), so that handling their ``auth:expired``, server
disconnects and websocket closes does not delay the steady clients' calls, which the
harness times in its own process.

Reads one JSON object from stdin: ``url``, ``tokens`` (one client per token),
``concurrency`` (connects at a time) and ``until`` (a ``time.perf_counter`` value:
the clock is the same in every process). Connects every client, prints
``connected``, waits until each has been closed or ``until`` has passed (the cyclic
garbage collector off meanwhile, as in the harness), then prints one JSON line, per
client: ``[name, events by name, first_seen by name, disconnected_at]``, closes
what is left and ends when stdin does.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import sys
import time

from loadgen import LoadGenerator, close_all


async def main() -> None:
    request = json.loads(sys.stdin.readline())
    async with LoadGenerator(request["url"]) as gen:
        clients, _ = await gen.connect_many(request["tokens"], concurrency=request["concurrency"])
        print("connected", flush=True)
        gc.collect()
        gc.disable()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(1.0, request["until"] - time.perf_counter())):
                    await asyncio.gather(*(client.closed.wait() for client in clients))
        finally:
            gc.enable()
        report = [
            [client.name, dict(client.events), client.first_seen, client.disconnected_at]
            for client in clients
        ]
        print(json.dumps(report, separators=(",", ":")), flush=True)
        await close_all(clients)
    sys.stdin.readline()  # stay until the harness is done sampling this process's CPU


if __name__ == "__main__":
    asyncio.run(main())
