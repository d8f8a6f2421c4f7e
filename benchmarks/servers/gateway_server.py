"""Server A of the benchmarks: a realtime_gateway ``Gateway`` on aiohttp, as an
application would run it: signed-token authentication, the reference rules plus one
rule for the benchmark rooms, the connection registry on (the default) and the
benchmark protocol in a small namespace on ``/``. Only the per-connection rate limit
is off, since the benchmark clients send far more than people do.

    BENCH_SECRET=... python benchmarks/servers/gateway_server.py --port 0

Tokens are ``SignedTokenAuthenticator([secret], salt=SALT)`` tokens. Prints
``ready <port>`` once listening; on SIGTERM or SIGINT shuts the gateway down, then
the web server. With ``BENCH_TRACEMALLOC`` set to a folder, Python's allocations are
traced and each SIGUSR1 writes a snapshot there (``snapshot-<n>.tracemalloc``): the
harness uses it to explain the memory a connection takes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tracemalloc
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from bench_common import (
    announce,
    bench_room,
    fanout_request,
    make_payload,
    parse_args,
    require_secret,
    room_name,
    rooms_request,
)

from realtime_gateway import (
    Connection,
    Gateway,
    GatewayConfig,
    GatewayNamespace,
    Rule,
    RuleAuthorizer,
    SignedTokenAuthenticator,
    event,
    reference_rules,
)

SALT = "realtime_gateway.bench"
TOKEN_MAX_AGE = 3600.0


class BenchNamespace(GatewayNamespace):
    """The benchmark protocol (see ``bench_common``) on the gateway's ``/``: every
    event goes through the gateway's dispatch (payload checks, acknowledgement
    envelope, metrics), joins through the authorizer and the registry, emits
    through :meth:`Gateway.emit_to_room`."""

    @event("bench:join", payload=room_name)
    async def bench_join(self, conn: Connection, room: str) -> dict[str, Any]:
        await self.join(conn, room)
        return {"room": room}

    @event("bench:echo")
    async def bench_echo(self, conn: Connection, payload: object) -> dict[str, Any]:
        return {"payload": payload}

    @event("bench:fanout", payload=fanout_request)
    async def bench_fanout(self, conn: Connection, request: tuple[str, int, int]) -> dict[str, Any]:
        room, count, size = request
        payload = make_payload(size)
        for seq in range(count):
            await self.gateway.emit_to_room(
                room, "bench:msg", (seq, payload), namespace=self.namespace
            )
        return {"sent": count}

    @event("bench:rooms", payload=rooms_request)
    async def bench_rooms(self, conn: Connection, request: tuple[int, int, int]) -> dict[str, Any]:
        room_count, count, size = request
        payload = make_payload(size)
        names = [bench_room(index) for index in range(room_count)]
        for seq in range(count):
            for name in names:
                await self.gateway.emit_to_room(
                    name, "bench:msg", (seq, payload), namespace=self.namespace
                )
        return {"sent": count * room_count}


def make_gateway(secret: str) -> Gateway:
    return Gateway(
        authenticator=SignedTokenAuthenticator([secret], salt=SALT, max_age=TOKEN_MAX_AGE),
        # Any user may join the benchmark rooms; everything else is the reference rules.
        authorizer=reference_rules()
        + RuleAuthorizer([Rule(actions="join", target="bench:{room}")]),
        # Every load-generator client comes from one address: no handshake budget.
        config=GatewayConfig(rate_limit=None, handshake_rate=None, shutdown_grace=0.5),
        namespaces=[BenchNamespace("/")],
    )


def snapshot_on_sigusr1(folder: Path) -> None:
    """Trace allocations; on each SIGUSR1 write a snapshot into ``folder``."""
    tracemalloc.start()
    taken = 0

    def dump() -> None:
        nonlocal taken
        taken += 1
        snapshot = tracemalloc.take_snapshot()
        partial = folder / f"snapshot-{taken}.partial"
        snapshot.dump(str(partial))
        partial.replace(folder / f"snapshot-{taken}.tracemalloc")

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump)


async def serve(gateway: Gateway, port: int) -> None:
    trace_to = os.environ.get("BENCH_TRACEMALLOC")
    if trace_to:
        snapshot_on_sigusr1(Path(trace_to))
    app = web.Application()
    gateway.attach(app)

    def started(url: str) -> None:
        bound = urlsplit(url).port
        assert bound is not None
        announce(bound)

    await gateway.run_aiohttp(app, host="127.0.0.1", port=port, started=started)


def main() -> None:
    args = parse_args(__doc__ or "")
    asyncio.run(serve(make_gateway(require_secret(args.secret)), args.port))


if __name__ == "__main__":
    main()
