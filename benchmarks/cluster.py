"""What cluster mode (``redis_url``) costs, on a real redis-server.

    python benchmarks/cluster.py [--clients 1000] [--rounds 3] [--out benchmarks/CLUSTER.md]

Server A of the benchmarks (``benchmarks/servers/gateway_server.py``) as a
subprocess, pinned with taskset to the last CPU, the load generator
(``benchmarks/loadgen.py``) in this process and redis-server on the first CPU.
Each round, in turn:

- **one process, no Redis** and **one process on Redis**: ``--clients`` clients
  connect, ``--concurrency`` at a time (connects/s), join one room, then S1's
  fan-out: ``bench:fanout`` emits of 100 B to the room, a warm-up run and
  ``--runs`` measured runs (the median deliveries/s, and the server's CPU per
  delivery from ``/proc/<pid>/stat``);
- **two processes on one Redis**: the clients split across them, the emits from
  the first: deliveries/s over all clients, and each process's CPU per delivery
  to its own clients (what a second process costs).

Every delivery is checked for order and size. Rounds alternate the set-ups so
that the machine's drift hits them alike; the medians over rounds are written as
a markdown section to ``--out``. ``--library DIR`` runs the servers on the
realtime_gateway found in ``DIR`` (another checkout), for before/after figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadgen import Client, Delivery, LoadGenerator, ProtocolError, call_all, close_all
from run import ServerProcess, ServerSpec, process_cpu_seconds

from realtime_gateway import Identity, SignedTokenAuthenticator
from tests.redis_server import RedisServer, _free_port

ROOT = Path(__file__).resolve().parent.parent
SALT = "realtime_gateway.bench"  # the salt of servers/gateway_server.py
SECRET = "cluster-benchmark-secret-0123456789"  # noqa: S105 (signs benchmark tokens only)
SIZE = 100
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
CALL_TIMEOUT = 30.0


def gateway_server(
    library: Path, log_dir: Path, pin: int | None, redis_url: str | None
) -> ServerProcess:
    """Server A of run.py on the realtime_gateway in ``library``, on Redis if
    ``redis_url`` is given, pinned to CPU ``pin``."""
    redis = () if redis_url is None else ("--redis-url", redis_url)
    script = ROOT / "benchmarks" / "servers" / "gateway_server.py"
    spec = ServerSpec("A", "realtime_gateway", (sys.executable, str(script), *redis), "gateway")
    server = ServerProcess(spec, SECRET, log_dir, env={"PYTHONPATH": str(library)})
    server.pin = pin
    return server


def redis_pid(port: int) -> int | None:
    """The pid of the redis-server listening on ``port`` (from its INFO)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(b"INFO server\r\n")
        data = b""
        while b"process_id:" not in data or not data.endswith(b"\r\n\r\n"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("process_id:"):
            return int(line.split(":", 1)[1])
    return None


class Tokens:
    """Gateway tokens, one user per client."""

    def __init__(self) -> None:
        self._signer = SignedTokenAuthenticator([SECRET], salt=SALT, max_age=3600)

    def many(self, prefix: str, count: int) -> list[str | None]:
        return [
            self._signer.issue(
                Identity(user_id=f"{prefix}{i}", roles=frozenset({"nurse"})), ttl=3600
            )
            for i in range(count)
        ]


def _succeeded(answer: Any) -> bool:
    return isinstance(answer, dict) and answer.get("success") is True


async def fan_out(
    servers: Sequence[ServerProcess],
    groups: Sequence[Sequence[Client]],
    controller: Client,
    count: int,
) -> tuple[float, list[float]]:
    """One S1 run: ``count`` emits from the controller's server to every client in
    ``groups`` (those of each server). Deliveries/s and each server's CPU seconds
    per delivery to its own clients."""
    clients = [client for group in groups for client in group]
    delivery = Delivery(clients=len(clients), count=count, size=SIZE)
    for client in clients:
        client.expect(delivery)
    timeout = max(30.0, delivery.expected / 2000)
    before = [process_cpu_seconds(server.pid) for server in servers]
    delivery.started = time.perf_counter()
    answer = await controller.call(
        "bench:fanout", {"room": "bench:all", "count": count, "size": SIZE}, within=timeout
    )
    if not _succeeded(answer):
        raise ProtocolError(f"bench:fanout answered {answer!r}")
    if not await delivery.wait(timeout) or not delivery.in_order:
        raise ProtocolError(f"deliveries incomplete or out of order: {delivery.summary()}")
    cpu = [
        process_cpu_seconds(server.pid) - start
        for server, start in zip(servers, before, strict=True)
    ]
    per_delivery = [spent / (len(group) * count) for spent, group in zip(cpu, groups, strict=True)]
    return delivery.expected / delivery.elapsed, per_delivery


async def setup(
    args: argparse.Namespace,
    tokens: Tokens,
    redis_url: str | None,
    processes: int,
    log_dir: Path,
) -> dict[str, float]:
    """One set-up: ``processes`` servers (on ``redis_url`` if set), the clients split
    across them. Its figures by name."""
    figures: dict[str, float] = {}
    async with contextlib.AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(
                gateway_server(args.library, log_dir, args.pin, redis_url)
            )
            for _ in range(processes)
        ]
        per_server = args.clients // processes
        groups: list[list[Client]] = []
        opened: list[Client] = []
        try:
            connect_seconds = connect_cpu = 0.0
            for index, server in enumerate(servers):
                gen = await stack.enter_async_context(LoadGenerator(server.url))
                wanted = tokens.many(f"u{index}-", per_server)
                cpu_before = process_cpu_seconds(server.pid)
                clients, seconds = await gen.connect_many(wanted, concurrency=args.concurrency)
                connect_cpu += process_cpu_seconds(server.pid) - cpu_before
                connect_seconds += seconds
                opened += clients
                groups.append(clients)
                if index == 0:
                    controller = await gen.connect(tokens.many("controller", 1)[0])
                    opened.append(controller)
            figures["connects/s"] = processes * per_server / connect_seconds
            figures["CPU us/connect"] = 1e6 * connect_cpu / (processes * per_server)
            for group in groups:
                await call_all(
                    group,
                    "bench:join",
                    lambda i: "bench:all",
                    within=CALL_TIMEOUT,
                    check=_succeeded,
                )
            await fan_out(servers, groups, controller, args.warmup)
            rates: list[float] = []
            cpus: list[list[float]] = []
            for _ in range(args.runs):
                rate, cpu = await fan_out(servers, groups, controller, args.emits)
                rates.append(rate)
                cpus.append(cpu)
            figures["deliveries/s"] = statistics.median(rates)
            for index in range(processes):
                figures[f"CPU us/delivery, process {index + 1}"] = 1e6 * statistics.median(
                    cpu[index] for cpu in cpus
                )
        finally:
            await close_all(opened)
    return figures


SETUPS = {  # name: (on Redis, processes, label)
    "local": (False, 1, "1 process, no Redis"),
    "redis": (True, 1, "1 process on Redis"),
    "pair": (True, 2, "2 processes on one Redis (emits from process 1)"),
}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--emits", type=int, default=200, help="emits per measured run")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--library", type=Path, default=ROOT)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "CLUSTER.md")
    parser.add_argument(
        "--redis-cpu",
        choices=("client", "server"),
        default="client",
        help="the CPU redis-server runs on: the load generator's or the servers'",
    )
    parser.add_argument("--setups", default=",".join(SETUPS), help="of local, redis, pair")
    args = parser.parse_args()
    args.library = args.library.resolve()
    cpus = sorted(os.sched_getaffinity(0))
    args.pin = None
    pinning = "none (fewer than 2 CPUs or no taskset)"
    if len(cpus) >= 2 and shutil.which("taskset"):
        args.pin = cpus[-1]
        os.sched_setaffinity(0, {cpus[0]})
        where = cpus[0] if args.redis_cpu == "client" else cpus[-1]
        pinning = (
            f"load generator on CPU {cpus[0]}, servers on CPU {cpus[-1]}, "
            f"redis-server on CPU {where}"
        )
    wanted = [name for name in args.setups.split(",") if name]
    tokens = Tokens()
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in wanted}
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        redis_path = shutil.which("redis-server")
        if redis_path is None:
            sys.exit("redis-server is not installed")
        redis = RedisServer(redis_path, folder, _free_port())
        redis.start()  # inherits this process's CPU
        if args.redis_cpu == "server" and args.pin is not None:
            pid = redis_pid(redis.port)
            if pid is not None:
                os.sched_setaffinity(pid, {args.pin})
        try:
            for round_number in range(args.rounds):
                for name in wanted:
                    with_redis, processes, _ = SETUPS[name]
                    url = redis.url if with_redis else None
                    figures = await setup(args, tokens, url, processes, folder)
                    print(f"round {round_number + 1} {name}: {figures}", flush=True)
                    for key, value in figures.items():
                        samples[name].setdefault(key, []).append(value)
        finally:
            redis.stop()
    write(args, samples, pinning)


def write(
    args: argparse.Namespace, samples: dict[str, dict[str, list[float]]], pinning: str
) -> None:
    medians = {
        name: {key: statistics.median(values) for key, values in by.items()}
        for name, by in samples.items()
    }
    lines = [
        "## Cluster mode (`redis_url`)",
        "",
        f"`python benchmarks/cluster.py`, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"pinning: {pinning}. {args.clients:,} authenticated websocket clients (the Python "
        f"load generator), one room, {SIZE} B emits, {args.emits} emits per run; the median "
        f"of {args.runs} runs per round, then the median of {args.rounds} rounds (set-ups "
        "alternate within each round).",
        "",
        "| set-up | connects/s | server CPU per connect | deliveries/s | server CPU per delivery |",
        "|---|---|---|---|---|",
    ]
    for name, figures in medians.items():
        cpu = ", ".join(
            f"{value:.2f} µs" for key, value in figures.items() if key.startswith("CPU us/deliv")
        )
        lines.append(
            f"| {SETUPS[name][2]} | {figures['connects/s']:,.0f} "
            f"| {figures['CPU us/connect']:,.0f} µs "
            f"| {figures['deliveries/s']:,.0f} | {cpu} |"
        )
    base = medians.get("local")
    one = medians.get("redis")
    if base and one:
        lines += [
            "",
            f"One process on Redis against none: fan-out "
            f"{one['deliveries/s'] / base['deliveries/s']:.2f}x, connects "
            f"{one['connects/s'] / base['connects/s']:.2f}x.",
        ]
    lines.append("")
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
