"""Server A of the benchmarks: a realtime_gateway ``Gateway`` on aiohttp, as an
application would run it: signed-token authentication, the reference rules plus one
rule for the benchmark rooms, the connection registry on (the default) and the
benchmark protocol in a small namespace on ``/``. Only the per-connection rate limit
is off, since the benchmark clients send far more than people do.

    BENCH_SECRET=... python benchmarks/servers/gateway_server.py --port 0

Tokens are ``SignedTokenAuthenticator([secret], salt=SALT)`` tokens, whose
identities always have an ``expires_at`` (their ``exp`` claim, at most ``max_age``
after signing), so every socket has its expiry timers armed. Prints ``ready <port>``
once listening; on SIGTERM or SIGINT shuts the gateway down, then the web server.
With ``BENCH_TRACEMALLOC`` set to a folder, Python's allocations are traced and each
SIGUSR1 writes a snapshot there (``snapshot-<n>.tracemalloc``): the harness uses it
to explain the memory a connection takes. With ``BENCH_EXPIRY=off`` the identities
lose their ``expires_at`` after verification, so no socket has expiry timers: the
harness compares the two to tell what the timers cost. With ``BENCH_GC_LOG`` set,
each pause of Python's cyclic garbage collector of 1 ms or more is written to stderr
(``gc <unix time> <generation> <ms>``), for the harness to line up with latencies.
With ``BENCH_SOAK`` set (the soak scenario), the gateway runs with its default
limits (the per-connection rate limit included) and ``GET /bench/stats`` answers the
server's own figures (see :func:`soak_stats`). With ``BENCH_RECOVERY=<seconds>``
missed-message recovery is on (``GatewayConfig.recovery_window``, in memory): every
room emit gets its offset as its last argument and goes into the recovery log, and
a socket that drops is parked for that long. With ``BENCH_SERVE=uvicorn`` the same
gateway is served as ASGI (:meth:`Gateway.asgi_app`) by uvicorn, its websockets by
``websockets-sansio`` with permessage-deflate declined, as the gateway declines it
under aiohttp by default. With ``--redis-url`` the gateway is one process of a
cluster on that Redis (``GatewayConfig.redis_url``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import socket
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
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
    Authenticator,
    Connection,
    Gateway,
    GatewayConfig,
    GatewayNamespace,
    Handshake,
    Identity,
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


class WithoutExpiry:
    """The identities of ``inner`` without ``expires_at``: sockets without expiry
    timers, for comparison only."""

    def __init__(self, inner: Authenticator) -> None:
        self._inner = inner

    async def authenticate(self, handshake: Handshake) -> Identity:
        return attrs.evolve(await self._inner.authenticate(handshake), expires_at=None)


def make_gateway(
    secret: str,
    *,
    expiry: bool = True,
    soak: bool = False,
    recovery: float | None = None,
    redis_url: str | None = None,
) -> Gateway:
    authenticator: Authenticator = SignedTokenAuthenticator(
        [secret], salt=SALT, max_age=TOKEN_MAX_AGE
    )
    if not expiry:
        authenticator = WithoutExpiry(authenticator)
    # The soak keeps every default limit (it checks that they hold under churn) but
    # the per-address handshake budget: every load-generator client comes from one
    # address.
    config = (
        GatewayConfig(
            shutdown_grace=0.5,
            handshake_rate=None,
            recovery_window=recovery,
            redis_url=redis_url,
        )
        if soak
        else GatewayConfig(
            rate_limit=None,
            handshake_rate=None,
            shutdown_grace=0.5,
            recovery_window=recovery,
            redis_url=redis_url,
        )
    )
    return Gateway(
        authenticator=authenticator,
        # Any user may join the benchmark rooms; everything else is the reference rules.
        authorizer=reference_rules()
        + RuleAuthorizer([Rule(actions="join", target="bench:{room}")]),
        config=config,
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


def _coroutine(task: asyncio.Task[Any]) -> str:
    return getattr(task.get_coro(), "__qualname__", "?")


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def soak_stats(gateway: Gateway, user: str | None = None) -> dict[str, Any]:
    """What the soak samples: this process's RSS (KiB), its asyncio tasks, the
    gateway's live connections, the registry's sockets, python-engineio's sessions,
    the counters of the limits, and (with ``user``) how many sockets the registry
    holds for that user."""
    stats = await gateway.stats()
    tasks = asyncio.all_tasks()
    by_coroutine = Counter(_coroutine(task) for task in tasks)
    figures: dict[str, Any] = {
        "rss_kib": _rss_kib(),
        "cpu_seconds": time.process_time(),
        "tasks": len(tasks),
        "tasks_by_coroutine": dict(by_coroutine.most_common(8)),
        # python-engineio's ping task of a socket outlives the socket by up to
        # ping_interval; the gateway's sockets ping from timer handles instead, so
        # this is 0 unless that regresses. Counted apart all the same.
        "ping_timers": by_coroutine["AsyncSocket._send_ping"],
        "connections": len(gateway.connections),
        "registry": len(await gateway.registry.connections()),
        "eio_sessions": len(gateway.server.eio.sockets),
        "slow_consumers": stats["slow_consumers"],
        "events_received": sum(stats["events_received"].values()),
        "events_refused": stats["events_refused"],
        "protocol_errors": stats["protocol_errors"],
        "connections_total": stats["connections_total"],
    }
    if user is not None:
        figures["user_sockets"] = len(await gateway.registry.user_sockets(user))
    return figures


def stats_route(gateway: Gateway) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        return web.json_response(await soak_stats(gateway, request.query.get("user")))

    return handle


async def serve(gateway: Gateway, port: int, *, soak: bool = False) -> None:
    trace_to = os.environ.get("BENCH_TRACEMALLOC")
    if trace_to:
        snapshot_on_sigusr1(Path(trace_to))
    background = [asyncio.create_task(sampler()) for sampler in _samplers]
    app = web.Application()
    gateway.attach(app)
    if soak:
        app.router.add_get("/bench/stats", stats_route(gateway))

    def started(url: str) -> None:
        bound = urlsplit(url).port
        assert bound is not None
        announce(bound)

    try:
        await gateway.run_aiohttp(app, host="127.0.0.1", port=port, started=started)
    finally:
        for task in background:
            task.cancel()


async def serve_asgi(gateway: Gateway, port: int) -> None:
    """Serve ``gateway.asgi_app()`` with uvicorn until SIGTERM or SIGINT (uvicorn's
    own handlers; lifespan shutdown shuts the gateway down)."""
    import uvicorn

    trace_to = os.environ.get("BENCH_TRACEMALLOC")
    if trace_to:
        snapshot_on_sigusr1(Path(trace_to))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(
        gateway.asgi_app(),
        lifespan="on",
        log_level="warning",
        access_log=False,
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task
            sys.exit("uvicorn did not start")
        await asyncio.sleep(0.01)
    announce(sock.getsockname()[1])
    await task


def log_gc_pauses() -> None:
    """Write each pause of the cyclic garbage collector of 1 ms or more to stderr, as
    ``gc <unix time at its end> <generation> <ms>``."""
    started = 0.0

    def callback(phase: str, info: dict[str, int]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
            return
        ms = 1000 * (time.perf_counter() - started)
        if ms >= 1.0:
            print(f"gc {time.time():.3f} {info['generation']} {ms:.1f}", file=sys.stderr)

    gc.callbacks.append(callback)


def log_stalls() -> None:
    """Write each loop callback of 2 ms or more to stderr, as ``slow <unix time at its
    end> <ms> <what ran>``, and each loop iteration that kept a 1 ms sleeper waiting
    2 ms or more past its time, as ``lag <unix time> <ms>``: a diagnosis, not a
    figure (timing every callback costs about a microsecond each)."""
    run = asyncio.Handle._run

    def timed(handle: asyncio.Handle) -> None:
        started = time.perf_counter()
        run(handle)
        ms = 1000 * (time.perf_counter() - started)
        if ms >= 2.0:
            what = getattr(handle, "_callback", None)
            task = getattr(what, "__self__", None)
            if isinstance(task, asyncio.Task):
                coro = task.get_coro()
                what = getattr(coro, "__qualname__", coro)
            print(f"slow {time.time():.3f} {ms:.1f} {what}", file=sys.stderr)

    setattr(asyncio.Handle, "_run", timed)  # noqa: B010 (diagnosis only)

    async def sampler() -> None:
        while True:
            due = time.perf_counter() + 0.001
            await asyncio.sleep(0.001)
            late = 1000 * (time.perf_counter() - due)
            if late >= 2.0:
                print(f"lag {time.time():.3f} {late:.1f}", file=sys.stderr)

    _samplers.append(sampler)


_samplers: list[Callable[[], Coroutine[Any, Any, None]]] = []


def _redis_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url", default=None, help="run as one process of a cluster on this Redis"
    )


def main() -> None:
    args = parse_args(__doc__ or "", _redis_option)
    if os.environ.get("BENCH_GC_LOG"):
        log_gc_pauses()
    if os.environ.get("BENCH_STALL_LOG"):
        log_stalls()
    expiry = os.environ.get("BENCH_EXPIRY", "on") != "off"
    soak = bool(os.environ.get("BENCH_SOAK"))
    window = os.environ.get("BENCH_RECOVERY")
    try:
        recovery = float(window) if window else None
    except ValueError:
        sys.exit("BENCH_RECOVERY must be a number of seconds")
    gateway = make_gateway(
        require_secret(args.secret),
        expiry=expiry,
        soak=soak,
        recovery=recovery,
        redis_url=args.redis_url,
    )
    if os.environ.get("BENCH_SERVE", "aiohttp") == "uvicorn":
        asyncio.run(serve_asgi(gateway, args.port))
    else:
        asyncio.run(serve(gateway, args.port, soak=soak))


if __name__ == "__main__":
    main()
