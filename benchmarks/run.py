"""The benchmark harness: six scenarios, side by side, against three servers.

    python benchmarks/run.py                      # the full run, writes benchmarks/RESULTS.md
    python benchmarks/run.py --smoke --out /tmp/RESULTS.md   # a handful of clients
    python benchmarks/run.py --loadgen python     # S1 to S5 driven by loadgen.py instead

Servers, each started as a subprocess on a free 127.0.0.1 port, fresh for every
scenario, and ended by its pid:

- A: realtime_gateway (signed tokens, reference rules, registry) on aiohttp;
- B: raw python-socketio on aiohttp, no authentication;
- C: Node's socket.io 4.x with an HMAC token middleware (its packages are installed
  with npm into benchmarks/node/node_modules when missing);
- A-asgi: server A's gateway as ASGI (``Gateway.asgi_app()``) under uvicorn, S1 and S3
  only, compared with A.

One load generator drives them all: by default the official ``socket.io-client`` in
one Node process (``node/loadgen.cjs``, see ``generators.py``), pinned to the first
CPU while each server is pinned to the second; ``--loadgen python`` drives S1 to S5
with ``loadgen.py``'s asyncio clients in this process instead, as a second opinion
(S6, S7 and the soak always use those). Scenarios:
S1 fan-out to 1,000 clients in one room (100 B and 1 KB payloads), S2 authenticated
connects per second, S3 acknowledgement round trips with 1,000 clients connected,
S4 idle memory per authenticated connection (on A also without expiry timers, to
tell what they cost), S5 1,000 clients in 100 rooms of 10, and, on A only, S6 the
expiry storm: 5,000 sockets whose tokens expire in the same second while 100 other
clients keep calling, their acknowledgement p99 compared with a quiet window, and
S7 S1's fan-out with missed-message recovery on, side by side with it off (two
gateway servers, runs interleaved), plus the memory the recovery log keeps per event
and a parked session's, and SOAK (``soak.py``): 2,000 clients churning for 5 minutes,
with one slow reader and one flooder (``--soak-seconds`` and ``--soak-clients`` size
it).
Every ``bench:msg`` is checked: each client must get every sequence number in
order; in S6 each of the 5,000 must get ``auth:expiring`` then ``auth:expired`` and
be disconnected, not before its expiry. The exit status is 1 when a server failed a
check, 2 when the harness could not run. Where a target of the full run is missed,
the gateway server is profiled with py-spy under that scenario and the top frames go
into the results.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import gc
import hashlib
import hmac
import json
import math
import os
import platform
import random
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import attrs
from generators import GENERATORS, Generator, NodeGenerator, RunResult
from loadgen import Client, Delivery, LoadGenerator, ProtocolError, call_all, close_all
from soak import FULL_SOAK, SMOKE_SOAK, Soak, SoakReport, SoakSizes
from soak import markdown as soak_markdown

from realtime_gateway import GatewayConfig, Identity, SignedTokenAuthenticator

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
NODE_DIR = BENCH_DIR / "node"
NODE_PACKAGES = ("socket.io", "socket.io-client")  # server C's, the load generator's
DEFAULT_OUT = BENCH_DIR / "RESULTS.md"

ASGI = "A-asgi"  # the key of the gateway served by uvicorn
GATEWAY_SALT = "realtime_gateway.bench"  # the salt of servers/gateway_server.py
TOKEN_TTL = 3600
READY_TIMEOUT = 30.0  # seconds for a server to print "ready <port>"
STOP_TIMEOUT = 10.0  # seconds for a server to exit after SIGTERM before SIGKILL
CALL_TIMEOUT = 30.0  # seconds for any acknowledgement
STORM_TIMEOUT = 90.0  # S6: seconds after the expiry for every expiring socket to be ended
NPM_TIMEOUT = 300.0
PROFILE_RATE = 200  # py-spy samples per second


# -- configuration ------------------------------------------------------------------


@attrs.frozen
class Sizes:
    """How big each scenario is."""

    fanout_clients: int
    fanout_sizes: tuple[int, ...]
    warmup_count: int  # messages per client in the warm-up run
    run_seconds: float  # how long a measured run should last at the warm-up's rate
    min_count: int  # messages per client in a measured run, at least
    max_count: int  # and at most
    runs: int  # measured runs; the median is reported
    connects: int
    connect_concurrency: int
    connect_runs: int
    ack_clients: int
    ack_rounds: int
    ack_gap: float  # mean seconds between two calls of one client
    idle_connections: int
    idle_settle: float  # S4: seconds from the warm-up's closes to the first RSS reading
    idle_seconds: float  # S4: seconds from the connects to the second
    rooms: int
    room_clients: int
    storm_clients: int  # S6: sockets whose tokens expire in the same second
    storm_steady: int  # S6: clients with long-lived tokens calling meanwhile
    storm_gap: float  # S6: mean seconds between two calls of one steady client
    storm_lead: float  # S6: seconds from issuing the expiring tokens to their expiry
    storm_settle: float  # S6: seconds left out after the connects and before expiry
    storm_min_quiet: float  # S6: the quiet window must last this long at least
    storm_runs: int  # S6: storms counted, one after the other on one server
    storm_max_runs: int  # S6: storms run at most, while other processes spoil some
    storm_judge: bool  # S6: count only storms on an otherwise idle machine
    recovery_window: float  # S7: the recovering fan-out server's window, seconds
    recovery_pairs: int  # S7: measured runs on each server, interleaved
    log_entries: int  # S7: events appended to measure the recovery log's memory
    park_clients: int  # S7: sockets dropped to measure what a parked session keeps
    park_settle: float  # S7: seconds from the drops to the last snapshot


FULL = Sizes(
    fanout_clients=1000,
    fanout_sizes=(100, 1024),
    warmup_count=20,
    run_seconds=3.0,
    min_count=20,
    max_count=500,
    runs=5,
    connects=1000,
    connect_concurrency=50,
    connect_runs=3,
    ack_clients=1000,
    ack_rounds=5,
    ack_gap=1.0,
    idle_connections=2000,
    idle_settle=1.0,
    idle_seconds=2.0,
    rooms=100,
    room_clients=1000,
    storm_clients=5000,
    storm_steady=100,
    storm_gap=0.1,
    storm_lead=20.0,
    storm_settle=1.0,
    storm_min_quiet=4.0,
    storm_runs=3,
    storm_max_runs=6,
    storm_judge=True,
    recovery_window=5.0,
    recovery_pairs=9,
    log_entries=100_000,
    park_clients=1000,
    # python-engineio's ping task keeps a closed socket until its next ping.
    park_settle=GatewayConfig().ping_interval + 2.0,
)
SMOKE = Sizes(
    fanout_clients=10,
    fanout_sizes=(100, 1024),
    warmup_count=2,
    run_seconds=0.0,
    min_count=5,
    max_count=5,
    runs=1,
    connects=20,
    connect_concurrency=5,
    connect_runs=1,
    ack_clients=10,
    ack_rounds=2,
    ack_gap=0.02,
    idle_connections=20,
    idle_settle=0.2,
    idle_seconds=0.5,
    rooms=2,
    room_clients=10,
    storm_clients=20,
    storm_steady=5,
    storm_gap=0.02,
    storm_lead=2.5,
    storm_settle=0.2,
    storm_min_quiet=0.5,
    storm_runs=1,
    storm_max_runs=1,
    storm_judge=False,
    recovery_window=5.0,
    recovery_pairs=1,
    log_entries=2000,
    park_clients=10,
    park_settle=0.5,
)


# -- the servers ----------------------------------------------------------------------


@attrs.frozen
class ServerSpec:
    key: str
    name: str
    argv: tuple[str, ...]
    auth: str  # "gateway", "hmac" or "none"
    env: tuple[tuple[str, str], ...] = ()  # set for the server process


SERVERS = (
    ServerSpec(
        "A",
        "realtime_gateway",
        (sys.executable, str(BENCH_DIR / "servers" / "gateway_server.py")),
        "gateway",
    ),
    ServerSpec(
        "B",
        "python-socketio",
        (sys.executable, str(BENCH_DIR / "servers" / "raw_server.py")),
        "none",
    ),
    ServerSpec("C", "Node socket.io", ("node", str(NODE_DIR / "server.js")), "hmac"),
    # The same gateway server as A, its asgi_app() served by uvicorn.
    ServerSpec(
        ASGI,
        "realtime_gateway on uvicorn",
        (sys.executable, str(BENCH_DIR / "servers" / "gateway_server.py")),
        "gateway",
        (("BENCH_SERVE", "uvicorn"),),
    ),
)
SERVER_KEYS = tuple(spec.key for spec in SERVERS)
# Not compared: S1 against it measures the load generator's own ceiling.
CEILING = ServerSpec(
    "ceiling",
    "pre-encoded frames, one write per socket per burst",
    (sys.executable, str(BENCH_DIR / "servers" / "ceiling_server.py")),
    "none",
)


class Tokens:
    """Tokens for each server's authentication, one user per connection."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self._gateway = SignedTokenAuthenticator([secret], salt=GATEWAY_SALT, max_age=TOKEN_TTL)
        self._cache: dict[tuple[str, str], str | None] = {}

    def token(self, auth: str, user_id: str) -> str | None:
        key = (auth, user_id)
        if key not in self._cache:
            self._cache[key] = self._make(auth, user_id)
        return self._cache[key]

    def many(self, auth: str, count: int, prefix: str = "u") -> list[str | None]:
        return [self.token(auth, f"{prefix}{index}") for index in range(count)]

    def expiring(self, user_id: str, at: int) -> str:
        """A gateway token whose ``exp`` claim is the Unix time ``at``."""
        identity = Identity(
            user_id=user_id,
            roles=frozenset({"nurse"}),
            expires_at=dt.datetime.fromtimestamp(at, dt.UTC),
        )
        return self._gateway.issue(identity)

    def _make(self, auth: str, user_id: str) -> str | None:
        if auth == "none":
            return None
        if auth == "gateway":
            identity = Identity(user_id=user_id, roles=frozenset({"nurse"}))
            return self._gateway.issue(identity, ttl=TOKEN_TTL)
        claims = {"sub": user_id, "roles": ["nurse"], "exp": int(time.time()) + TOKEN_TTL}
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(self.secret.encode(), body.encode(), hashlib.sha256).digest()
        return f"{body}.{_b64(signature)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class ServerProcess:
    """One benchmark server as a subprocess, started on any free port of 127.0.0.1
    and always ended by its pid."""

    pin: int | None = None  # the CPU servers are pinned to (see pin_cpus)

    def __init__(
        self, spec: ServerSpec, secret: str, log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.spec = spec
        self.secret = secret
        self.env = env or {}
        self.log_path = log_dir / f"server-{spec.key}-{secrets.token_hex(4)}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.process: asyncio.subprocess.Process | None = None
        self.port = 0
        self._drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> ServerProcess:
        env = {
            **os.environ,
            **dict(self.spec.env),
            **self.env,
            "BENCH_SECRET": self.secret,
            "PYTHONUNBUFFERED": "1",
        }
        try:
            pin = () if self.pin is None else ("taskset", "-c", str(self.pin))
            self.process = await asyncio.create_subprocess_exec(
                *pin,
                *self.spec.argv,
                "--port",
                "0",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._log,
                env=env,
                cwd=ROOT,
            )
            assert self.process.stdout is not None
            line = await asyncio.wait_for(self.process.stdout.readline(), READY_TIMEOUT)
            words = line.decode(errors="replace").split()
            if len(words) != 2 or words[0] != "ready" or not words[1].isdigit():
                raise RuntimeError(f"server {self.spec.key} did not start: {self.log_tail()}")
            self.port = int(words[1])
            self._drain = asyncio.create_task(self._drain_stdout(self.process.stdout))
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _drain_stdout(self, stream: asyncio.StreamReader) -> None:
        while await stream.read(65536):
            pass

    async def stop(self) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
        self._log.close()

    def log_tail(self, chars: int = 2000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def rss_kib(self) -> int:
        """Resident memory (VmRSS) in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server has used."""
        return process_cpu_seconds(self.pid)


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time process ``pid`` has used (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- profiling ------------------------------------------------------------------------


def py_spy_path() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    """py-spy recording one server process while a scenario's measured part runs."""

    def __init__(self, py_spy: str, out_dir: Path) -> None:
        self.py_spy = py_spy
        self.out_dir = out_dir
        self.samples: Counter[str] = Counter()
        self.error: str | None = None

    @contextlib.asynccontextmanager
    async def record(self, pid: int) -> AsyncIterator[None]:
        output = self.out_dir / f"profile-{pid}-{secrets.token_hex(4)}.txt"
        process = await asyncio.create_subprocess_exec(
            self.py_spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(PROFILE_RATE),
            "--function",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(output),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            await asyncio.sleep(0.5)  # py-spy attaches
            yield
        finally:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
            try:
                _, err = await asyncio.wait_for(process.communicate(), 60)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
                err = b"py-spy did not stop"
            if output.exists():
                for line in output.read_text().splitlines():
                    stack, _, count = line.rpartition(" ")
                    if stack and count.isdigit():
                        self.samples[stack] += int(count)
            else:
                self.error = err.decode(errors="replace").strip()[-500:] or "no output"

    def own(self) -> Counter[str]:
        """Samples by the frame that was running (own time)."""
        own: Counter[str] = Counter()
        for stack, count in self.samples.items():
            frames = [frame for frame in stack.split(";") if frame]
            if frames:
                own[_short_frame(frames[-1])] += count
        return own

    def within(self, *markers: str) -> int:
        """Samples with a frame whose text contains one of ``markers`` (callees
        included)."""
        return sum(
            count
            for stack, count in self.samples.items()
            if any(marker in stack for marker in markers)
        )

    def top(self, limit: int = 12) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """(top frames by own time, top frames by time including callees), in % of
        the samples; event-loop and harness plumbing is left out of the second."""
        total = sum(self.samples.values())
        own: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        for stack, count in self.samples.items():
            frames = [_short_frame(frame) for frame in stack.split(";") if frame]
            if not frames:
                continue
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
        plumbing = ("asyncio/", "<module>", "main (", "run (", "events.py", "runners.py")
        busy = [
            (frame, count)
            for frame, count in inclusive.most_common()
            if not any(part in frame for part in plumbing)
        ]
        if not total:
            return [], []
        return (
            [(frame, 100 * count / total) for frame, count in own.most_common(limit)],
            [(frame, 100 * count / total) for frame, count in busy[:limit]],
        )


def _short_frame(frame: str) -> str:
    for marker in ("site-packages/", "lib/python3"):
        at = frame.find(marker)
        if at >= 0:
            start = frame.rfind("(", 0, at) + 1
            rest = frame[at + len(marker) :]
            if marker == "lib/python3":
                rest = rest.split("/", 1)[-1]
            return frame[:start] + rest
    return frame.replace(str(ROOT) + "/", "")


class MemoryProfiler:
    """tracemalloc snapshots of the gateway server (which takes one on SIGUSR1 when
    started with ``BENCH_TRACEMALLOC``), compared to tell where a connection's memory
    goes."""

    def __init__(self, out_dir: Path) -> None:
        self.folder = out_dir / f"tracemalloc-{secrets.token_hex(4)}"
        self.folder.mkdir()
        self.taken = 0
        self.snapshots: list[Path] = []
        self.connections = 0
        self.error: str | None = None
        self.heap_kb = 0.0  # Python heap growth per connection
        self.files: list[tuple[str, float]] = []  # top files, KB per connection
        self.lines: list[tuple[str, float]] = []  # top lines, KB per connection
        self.packages: list[tuple[str, float]] = []  # by package, KB per connection

    @property
    def env(self) -> dict[str, str]:
        return {"BENCH_TRACEMALLOC": str(self.folder)}

    async def snapshot(self, server: ServerProcess) -> None:
        self.taken += 1
        path = self.folder / f"snapshot-{self.taken}.tracemalloc"
        assert server.process is not None
        server.process.send_signal(signal.SIGUSR1)
        async with asyncio.timeout(60):
            while not path.exists():  # noqa: ASYNC110 (a file another process writes)
                await asyncio.sleep(0.1)
        self.snapshots.append(path)

    def analyse(self, limit: int = 12) -> None:
        """Compare the first two snapshots: the Python heap's growth per connection,
        and the files and lines that grew most (KB per connection)."""
        if len(self.snapshots) < 2 or not self.connections:
            return
        ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
        before = tracemalloc.Snapshot.load(str(self.snapshots[0])).filter_traces(ignore)
        after = tracemalloc.Snapshot.load(str(self.snapshots[1])).filter_traces(ignore)
        per = 1024 * self.connections

        def growth(key: str) -> list[tuple[str, float]]:
            stats = sorted(after.compare_to(before, key), key=lambda s: -s.size_diff)
            return [
                (_short_frame(str(stat.traceback[0])), stat.size_diff / per)
                for stat in stats[:limit]
                if stat.size_diff > 0
            ]

        by_file = after.compare_to(before, "filename")
        packages: Counter[str] = Counter()
        for stat in by_file:
            packages[_package(str(stat.traceback[0].filename))] += stat.size_diff
        self.packages = [(name, size / per) for name, size in packages.most_common()]
        self.heap_kb = sum(stat.size_diff for stat in by_file) / per
        self.files, self.lines = growth("filename"), growth("lineno")


PACKAGES = (
    ("realtime_gateway/", "realtime_gateway"),
    ("benchmarks/", "the benchmark server"),
    ("aiohttp/", "aiohttp"),
    ("engineio/", "python-engineio"),
    ("socketio/", "python-socketio"),
    ("asyncio/", "asyncio"),
    ("multidict/", "multidict"),
    ("attr/", "attrs"),
    ("itsdangerous/", "itsdangerous"),
)


def _package(filename: str) -> str:
    for marker, name in PACKAGES:
        if marker in filename:
            return name
    return "other (standard library)" if "/lib/python3" in filename else "other"


# -- results ----------------------------------------------------------------------------


@attrs.define
class Measure:
    """One row of the table: a figure per server."""

    scenario: str
    label: str
    unit: str
    higher_is_better: bool
    only: tuple[str, ...] | None = None  # the servers it applies to (None: all)
    values: dict[str, float | None] = attrs.field(factory=dict)
    counts: dict[str, int] = attrs.field(factory=dict)  # messages per client per run
    spread: dict[str, tuple[float, float]] = attrs.field(factory=dict)  # slowest, fastest run


@attrs.define
class Check:
    """Did a server do everything right in a scenario (every message, in order)?"""

    scenario: str
    server: str
    expected: int = 0
    received: int = 0
    in_order: bool = True
    errors: list[str] = attrs.field(factory=list)

    @property
    def ok(self) -> bool:
        return self.in_order and self.received == self.expected and not self.errors

    def add(self, delivery: Delivery | RunResult) -> None:
        self.expected += delivery.expected
        self.received += delivery.received
        self.in_order = self.in_order and delivery.in_order
        self.errors.extend(delivery.errors[: max(0, 5 - len(self.errors))])

    def fail(self, error: str) -> None:
        self.in_order = False
        if len(self.errors) < 5:
            self.errors.append(error)


@attrs.define
class Target:
    """A performance target the gateway is held to."""

    text: str
    label: str  # the Measure it is about
    # "ratio_at_least", "ratio_at_most", "value_at_most", "value_at_least" or
    # "cpu_ratio_at_most" (server CPU time per delivery, from "Where the time went")
    kind: str
    threshold: float
    versus: str = "B"  # for ratios
    mine: str = "A"  # for ratios: the server held to the target
    value: float | None = None
    met: bool | None = None
    gap: str = ""


TARGETS = (
    Target("S1 100 B deliveries/s >= 1.3x Node", "S1-100", "ratio_at_least", 1.3, "C"),
    Target("S1 100 B server CPU/delivery <= 0.5x Node", "S1-100", "cpu_ratio_at_most", 0.5, "C"),
    Target("S1 100 B deliveries/s >= 5x python-socketio", "S1-100", "ratio_at_least", 5.0, "B"),
    Target("S1 1 KB deliveries/s >= 1.3x Node", "S1-1024", "ratio_at_least", 1.3, "C"),
    Target("S1 1 KB server CPU/delivery <= 0.5x Node", "S1-1024", "cpu_ratio_at_most", 0.5, "C"),
    Target("S1 1 KB deliveries/s >= 5x python-socketio", "S1-1024", "ratio_at_least", 5.0, "B"),
    Target("S2 connects/s >= 1.0x Node", "S2", "ratio_at_least", 1.0, "C"),
    Target("S2 connects/s >= 0.9x python-socketio (no auth)", "S2", "ratio_at_least", 0.9, "B"),
    Target("S3 p50 <= 1.0x Node", "S3-p50", "ratio_at_most", 1.0, "C"),
    Target("S3 p99 <= 1.0x Node", "S3-p99", "ratio_at_most", 1.0, "C"),
    Target("S3 p99 <= 1.2x python-socketio", "S3-p99", "ratio_at_most", 1.2, "B"),
    Target("S4 <= 20 KB per idle authenticated connection", "S4", "value_at_most", 20.0),
    Target("S4 expiry timers <= 1 KB per idle connection", "S4-timers", "value_at_most", 1.0),
    Target("S5 deliveries/s >= 1.3x Node", "S5", "ratio_at_least", 1.3, "C"),
    Target("S5 server CPU/delivery <= 0.5x Node", "S5", "cpu_ratio_at_most", 0.5, "C"),
    Target(
        "S1 100 B deliveries/s on uvicorn (ASGI) >= 0.7x aiohttp",
        "S1-100",
        "ratio_at_least",
        0.7,
        "A",
        ASGI,
    ),
    Target(
        "S1 1 KB deliveries/s on uvicorn (ASGI) >= 0.7x aiohttp",
        "S1-1024",
        "ratio_at_least",
        0.7,
        "A",
        ASGI,
    ),
    Target("S6 ack p99 during the expiry storm <= 3x quiet", "S6-ratio", "value_at_most", 3.0),
    Target(
        "S7 100 B deliveries/s, recovery on >= 0.85x off",
        "S7-ratio-100",
        "value_at_least",
        0.85,
    ),
    Target(
        "S7 1 KB deliveries/s, recovery on >= 0.85x off",
        "S7-ratio-1024",
        "value_at_least",
        0.85,
    ),
)


class Results:
    def __init__(self, servers: Sequence[ServerSpec], loadgen: str = "node") -> None:
        self.servers = list(servers)
        self.loadgen = loadgen  # S1 to S5's load generator
        self.measures: dict[str, Measure] = {}
        self.checks: dict[tuple[str, str], Check] = {}
        self.extensions: dict[str, set[str]] = {spec.key: set() for spec in servers}
        self.offered: set[str] = set()
        self.cpu: dict[tuple[str, str], float] = {}  # server µs of CPU per delivery
        self.loadgen_busy: dict[tuple[str, str], float] = {}  # load generator busy share
        self.profiles: dict[str, Profiler] = {}
        self.memory_profile: MemoryProfiler | None = None
        self.soak: SoakReport | None = None
        self.details: dict[str, list[str]] = {}  # per scenario, said under the tables
        self.errors: list[str] = []
        self.ceiling: Results | None = None  # S1 against the ceiling server

    def measure(
        self,
        key: str,
        scenario: str,
        label: str,
        unit: str,
        *,
        higher_is_better: bool,
        only: tuple[str, ...] | None = None,
    ) -> Measure:
        if key not in self.measures:
            self.measures[key] = Measure(scenario, label, unit, higher_is_better, only)
        return self.measures[key]

    def check(self, scenario: str, server: str) -> Check:
        return self.checks.setdefault((scenario, server), Check(scenario, server))

    def ratio(self, key: str, versus: str, server: str = "A") -> float | None:
        measure = self.measures.get(key)
        if measure is None:
            return None
        mine, theirs = measure.values.get(server), measure.values.get(versus)
        if mine is None or not theirs:
            return None
        return mine / theirs

    def cpu_ratio(self, key: str, versus: str, server: str = "A") -> float | None:
        """``server``'s CPU time per delivery over ``versus``'s, in measure ``key``."""
        mine, theirs = self.cpu.get((key, server)), self.cpu.get((key, versus))
        if mine is None or not theirs:
            return None
        return mine / theirs

    def evaluate(self) -> list[Target]:
        evaluated = []
        for template in TARGETS:
            target = attrs.evolve(template)
            if target.kind in ("value_at_most", "value_at_least"):
                measure = self.measures.get(target.label)
                target.value = None if measure is None else measure.values.get("A")
            elif target.kind == "cpu_ratio_at_most":
                target.value = self.cpu_ratio(target.label, target.versus, target.mine)
            else:
                target.value = self.ratio(target.label, target.versus, target.mine)
            if target.value is not None:
                if target.kind in ("ratio_at_least", "value_at_least"):
                    target.met = target.value >= target.threshold
                    target.gap = f"{target.value:.2f}x" + (
                        "" if target.met else f", {1 - target.value / target.threshold:.0%} short"
                    )
                elif target.kind in ("ratio_at_most", "cpu_ratio_at_most"):
                    target.met = target.value <= target.threshold
                    target.gap = f"{target.value:.2f}x" + (
                        "" if target.met else f", {target.value / target.threshold - 1:.0%} over"
                    )
                else:
                    target.met = target.value <= target.threshold
                    unit = self.measures[target.label].unit
                    target.gap = _fmt(target.value, unit) + ("" if unit == "x" else f" {unit}")
                    if not target.met:
                        target.gap += f", {target.value / target.threshold - 1:.0%} over"
            evaluated.append(target)
        return evaluated


# -- scenarios -----------------------------------------------------------------------


@attrs.define
class Context:
    sizes: Sizes
    tokens: Tokens
    results: Results
    soak: SoakSizes = FULL_SOAK
    profiler: Profiler | None = None  # set when profiling the gateway's CPU
    memory: MemoryProfiler | None = None  # set when tracing the gateway's memory
    baseline_profiler: Profiler | None = None  # S7: the server without recovery
    loadgen: str = "node"  # S1 to S5's load generator (see generators.py)
    log_dir: Path = attrs.field(factory=lambda: Path(tempfile.gettempdir()))

    def generator(self, server: ServerProcess) -> contextlib.AbstractAsyncContextManager[Generator]:
        """S1 to S5's load generator (``--loadgen``), driving clients of ``server``."""
        return GENERATORS[self.loadgen](server.url, self.log_dir)

    @contextlib.asynccontextmanager
    async def measuring_pair(
        self, server: ServerProcess, baseline: ServerProcess
    ) -> AsyncIterator[None]:
        """:meth:`measuring` for two servers measured in turn (S7): ``baseline`` is
        profiled by :attr:`baseline_profiler`."""
        async with contextlib.AsyncExitStack() as stack:
            if self.baseline_profiler is not None:
                await stack.enter_async_context(self.baseline_profiler.record(baseline.pid))
            await stack.enter_async_context(self.measuring(server))
            yield

    @contextlib.asynccontextmanager
    async def measuring(self, server: ServerProcess) -> AsyncIterator[None]:
        """Around a scenario's measured part: the load generator's cyclic garbage
        collector is paused (its pauses would show as the servers' latency), and the
        server is profiled when asked to."""
        gc.collect()
        gc.disable()
        try:
            if self.profiler is None:
                yield
            else:
                async with self.profiler.record(server.pid):
                    yield
        finally:
            gc.enable()


async def _connect(
    gen: LoadGenerator, ctx: Context, spec: ServerSpec, count: int, prefix: str = "u"
) -> list[Client]:
    tokens = ctx.tokens.many(spec.auth, count, prefix)
    clients, _ = await gen.connect_many(tokens, concurrency=ctx.sizes.connect_concurrency)
    return clients


def _succeeded(answer: Any) -> bool:
    return isinstance(answer, dict) and answer.get("success") is True


async def _deliver(
    server: ServerProcess,
    controller: Client,
    clients: Sequence[Client],
    event: str,
    request: dict[str, Any],
    count: int,
    size: int,
) -> tuple[Delivery, float, float]:
    """One run: every client expects ``count`` messages of ``size``; the controller
    asks for them. Returns the delivery, the server's CPU seconds and the load
    generator's."""
    delivery = Delivery(clients=len(clients), count=count, size=size)
    for client in clients:
        client.expect(delivery)
    timeout = max(30.0, delivery.expected / 2000)
    cpu_before, own_before = server.cpu_seconds(), time.process_time()
    delivery.started = time.perf_counter()
    answer = await controller.call(event, request, within=timeout)
    if not _succeeded(answer):
        raise ProtocolError(f"{event} answered {answer!r}")
    if not await delivery.wait(timeout):
        delivery.error(
            f"timed out after {timeout:.0f} s with {delivery.received} of "
            f"{delivery.expected} messages"
        )
    return delivery, server.cpu_seconds() - cpu_before, time.process_time() - own_before


async def _open(
    gen: Generator, ctx: Context, spec: ServerSpec, count: int, prefix: str = "u"
) -> list[int]:
    tokens = ctx.tokens.many(spec.auth, count, prefix)
    clients, _ = await gen.connect_many(tokens, concurrency=ctx.sizes.connect_concurrency)
    return clients


async def _join(gen: Generator, clients: Sequence[int], rooms: Sequence[str]) -> None:
    answers = await gen.call_all(clients, "bench:join", rooms, within=CALL_TIMEOUT)
    refused = [answer for answer in answers if not _succeeded(answer)]
    if refused:
        raise ProtocolError(f"bench:join answered {refused[0]!r} ({len(refused)} refused)")


async def _run(
    gen: Generator,
    server: ServerProcess,
    controller: int,
    clients: Sequence[int],
    event: str,
    request: dict[str, Any],
    count: int,
    size: int,
) -> tuple[RunResult, float]:
    """One run: every client expects ``count`` messages of ``size``; the controller
    asks for them. Returns what the load generator saw and the server's CPU seconds."""
    timeout = max(30.0, len(clients) * count / 2000)
    cpu_before = server.cpu_seconds()
    result = await gen.deliver(clients, controller, event, request, count, size, within=timeout)
    return result, server.cpu_seconds() - cpu_before


async def _fanout_runs(
    ctx: Context,
    gen: Generator,
    spec: ServerSpec,
    server: ServerProcess,
    key: str,
    clients: Sequence[int],
    controller: int,
    event: str,
    request: Callable[[int], dict[str, Any]],
    size: int,
) -> None:
    """A warm-up run, then ``runs`` measured runs, each of as many messages per client
    as last about ``run_seconds`` at the warm-up's rate; records the median
    deliveries/s under ``key``, the server's CPU per delivery and the load
    generator's busy share."""
    sizes = ctx.sizes
    measure = ctx.results.measures[key]
    check = ctx.results.check(measure.scenario, spec.key)
    warmup, _ = await _run(
        gen,
        server,
        controller,
        clients,
        event,
        request(sizes.warmup_count),
        sizes.warmup_count,
        size,
    )
    check.add(warmup)
    if not warmup.in_order:
        return
    warmup_rate = warmup.expected / warmup.elapsed
    count = round(warmup_rate * sizes.run_seconds / len(clients))
    count = min(max(count, sizes.min_count), sizes.max_count)
    rates: list[float] = []
    cpu_total = own_total = wall_total = 0.0
    delivered = 0
    async with ctx.measuring(server):
        for _ in range(sizes.runs):
            result, cpu = await _run(
                gen, server, controller, clients, event, request(count), count, size
            )
            check.add(result)
            if not result.in_order:
                return
            rates.append(result.expected / result.elapsed)
            cpu_total, own_total = cpu_total + cpu, own_total + result.own_cpu
            wall_total += result.elapsed
            delivered += result.expected
    measure.values[spec.key] = statistics.median(rates)
    measure.counts[spec.key] = count
    measure.spread[spec.key] = (min(rates), max(rates))
    ctx.results.cpu[(key, spec.key)] = 1e6 * cpu_total / delivered
    ctx.results.loadgen_busy[(key, spec.key)] = own_total / wall_total


def _fanout_request(size: int) -> Callable[[int], dict[str, Any]]:
    def request(count: int) -> dict[str, Any]:
        return {"room": "bench:all", "count": count, "size": size}

    return request


async def scenario_fanout(ctx: Context, spec: ServerSpec, server: ServerProcess) -> None:
    """S1: 1,000 clients in one room; the server emits each message to the room."""
    sizes = ctx.sizes
    for size in sizes.fanout_sizes:
        ctx.results.measure(
            f"S1-{size}",
            "S1",
            f"S1 fan-out, {sizes.fanout_clients:,} clients in 1 room, {_bytes(size)}",
            "deliveries/s",
            higher_is_better=True,
        )
    async with ctx.generator(server) as gen:
        clients = await _open(gen, ctx, spec, sizes.fanout_clients)
        (controller,) = await _open(gen, ctx, spec, 1, prefix="controller")
        await _join(gen, clients, ["bench:all"] * len(clients))
        for size in sizes.fanout_sizes:
            await _fanout_runs(
                ctx,
                gen,
                spec,
                server,
                f"S1-{size}",
                clients,
                controller,
                "bench:fanout",
                _fanout_request(size),
                size,
            )
        await _generator_extensions(ctx, spec, gen)


async def scenario_rooms(ctx: Context, spec: ServerSpec, server: ServerProcess) -> None:
    """S5: 1,000 clients in 100 rooms of 10; messages go to each room in turn."""
    sizes = ctx.sizes
    per_room = sizes.room_clients // sizes.rooms
    ctx.results.measure(
        "S5",
        "S5",
        f"S5 {sizes.room_clients:,} clients in {sizes.rooms} rooms of {per_room}, 100 B",
        "deliveries/s",
        higher_is_better=True,
    )
    async with ctx.generator(server) as gen:
        clients = await _open(gen, ctx, spec, sizes.room_clients)
        (controller,) = await _open(gen, ctx, spec, 1, prefix="controller")
        await _join(gen, clients, [f"bench:{index % sizes.rooms}" for index in range(len(clients))])
        await _fanout_runs(
            ctx,
            gen,
            spec,
            server,
            "S5",
            clients,
            controller,
            "bench:rooms",
            lambda count: {"rooms": sizes.rooms, "count": count, "size": 100},
            100,
        )
        await _generator_extensions(ctx, spec, gen)


async def scenario_connects(ctx: Context, spec: ServerSpec, server: ServerProcess) -> None:
    """S2: authenticated connects per second, ``connect_concurrency`` at a time."""
    sizes = ctx.sizes
    measure = ctx.results.measure(
        "S2",
        "S2",
        f"S2 connects ({sizes.connects:,}, {sizes.connect_concurrency} at a time; B: no auth)",
        "connects/s",
        higher_is_better=True,
    )
    check = ctx.results.check("S2", spec.key)
    async with ctx.generator(server) as gen:
        warmup = await _open(gen, ctx, spec, sizes.connect_concurrency, prefix="w")
        await gen.close(warmup)
        rates = []
        async with ctx.measuring(server):
            for run in range(sizes.connect_runs):
                tokens = ctx.tokens.many(spec.auth, sizes.connects, prefix=f"r{run}-")
                clients, elapsed = await gen.connect_many(
                    tokens, concurrency=sizes.connect_concurrency
                )
                check.expected += len(tokens)
                check.received += len(clients)
                rates.append(len(clients) / elapsed)
                await gen.close(clients)
                await asyncio.sleep(0.5)  # let the server forget them
        measure.values[spec.key] = statistics.median(rates)
        await _generator_extensions(ctx, spec, gen)


async def scenario_acks(ctx: Context, spec: ServerSpec, server: ServerProcess) -> None:
    """S3: 1,000 clients connected, each calling ``bench:echo`` one at a time at
    random intervals (about ``ack_clients / ack_gap`` calls per second overall);
    the round trip from send to acknowledgement."""
    sizes = ctx.sizes
    p50 = ctx.results.measure(
        "S3-p50",
        "S3",
        f"S3 ack round trip p50, {sizes.ack_clients:,} clients connected",
        "ms",
        higher_is_better=False,
    )
    p99 = ctx.results.measure(
        "S3-p99",
        "S3",
        f"S3 ack round trip p99, {sizes.ack_clients:,} clients connected",
        "ms",
        higher_is_better=False,
    )
    check = ctx.results.check("S3", spec.key)
    text = "x" * 64
    async with ctx.generator(server) as gen:
        clients = await _open(gen, ctx, spec, sizes.ack_clients)
        warm = await gen.acks(
            clients, 1, sizes.ack_gap, seed=7, text=text, record=False, within=CALL_TIMEOUT
        )
        async with ctx.measuring(server):
            measured = await gen.acks(
                clients,
                sizes.ack_rounds,
                sizes.ack_gap,
                seed=8,
                text=text,
                record=True,
                within=CALL_TIMEOUT,
            )
        await _generator_extensions(ctx, spec, gen)
    for result in (warm, measured):
        check.expected += result.expected
        check.received += result.received
        for error in result.errors:
            check.fail(error)
    ordered = sorted(measured.round_trips_ms)
    p50.values[spec.key] = _percentile(ordered, 50)
    p99.values[spec.key] = _percentile(ordered, 99)


async def scenario_memory(ctx: Context, spec: ServerSpec, server: ServerProcess) -> None:
    """S4: the server's RSS growth per idle authenticated connection. The gateway's
    tokens always carry an expiry, so its sockets have their expiry timers armed; on
    A the same is measured once more on a server whose identities have no
    ``expires_at`` (``BENCH_EXPIRY=off``), and the difference is what the timers cost."""
    sizes = ctx.sizes
    measure = ctx.results.measure(
        "S4",
        "S4",
        f"S4 idle memory per connection (RSS delta at {sizes.idle_connections:,}; B: no auth; "
        "A: expiry timers armed)",
        "KB",
        higher_is_better=False,
    )
    armed = measure.values[spec.key] = await _idle_memory(ctx, spec, server)
    if spec.key != "A" or ctx.memory is not None:
        return
    without = ctx.results.measure(
        "S4-no-expiry",
        "S4",
        "S4 A without expiry timers (BENCH_EXPIRY=off)",
        "KB",
        higher_is_better=False,
        only=("A",),
    )
    timers = ctx.results.measure(
        "S4-timers",
        "S4",
        "S4 what A's expiry timers cost (with minus without)",
        "KB",
        higher_is_better=False,
        only=("A",),
    )
    env = {"BENCH_EXPIRY": "off"}
    async with ServerProcess(spec, server.secret, server.log_path.parent, env) as plain:
        plain_kb = without.values[spec.key] = await _idle_memory(ctx, spec, plain)
    timers.values[spec.key] = armed - plain_kb


async def _idle_memory(ctx: Context, spec: ServerSpec, server: ServerProcess) -> float:
    """KB of RSS growth per idle connection on ``server``."""
    sizes = ctx.sizes
    check = ctx.results.check("S4", spec.key)
    async with ctx.generator(server) as gen:
        warmup = await _open(gen, ctx, spec, sizes.connect_concurrency, prefix="w")
        await gen.close(warmup)
        await asyncio.sleep(sizes.idle_settle)
        before = server.rss_kib()
        if ctx.memory is not None:
            await ctx.memory.snapshot(server)
        tokens = ctx.tokens.many(spec.auth, sizes.idle_connections)
        clients, _ = await gen.connect_many(tokens, concurrency=sizes.connect_concurrency)
        check.expected += len(tokens)
        check.received += len(clients)
        await asyncio.sleep(sizes.idle_seconds)  # idle
        after = server.rss_kib()
        if ctx.memory is not None:
            await ctx.memory.snapshot(server)
            ctx.memory.connections = len(clients)
        await gen.close(clients)
        await _generator_extensions(ctx, spec, gen)
    return (after - before) / len(clients)


@attrs.define
class _Call:
    """One steady client's call in S6: when it was sent and answered (perf_counter)."""

    started: float
    ended: float

    @property
    def ms(self) -> float:
        return 1000 * (self.ended - self.started)


class _Usage:
    """CPU time of the server, of this process and of the whole machine, sampled
    every 50 ms, to tell how busy each was in a window (the rest of the machine's
    load is what other processes took)."""

    def __init__(self, server: ServerProcess, helpers: Sequence[int] = ()) -> None:
        self.server = server
        self.helpers = helpers  # load-generator processes of the harness's own
        # perf_counter, server, this process, all CPUs
        self.samples: list[tuple[float, float, float, float]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Usage:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _sample(self) -> None:
        while True:
            self.samples.append(
                (
                    time.perf_counter(),
                    self.server.cpu_seconds(),
                    time.process_time() + sum(process_cpu_seconds(pid) for pid in self.helpers),
                    machine_cpu_seconds(),
                )
            )
            await asyncio.sleep(0.05)

    def busy(self, start: float, end: float) -> tuple[float, float, float]:
        """Shares of one CPU the server, this process and all other processes used
        from ``start`` to ``end``."""
        inside = [sample for sample in self.samples if start <= sample[0] <= end]
        if len(inside) < 2:
            return float("nan"), float("nan"), float("nan")
        (t0, server0, own0, all0), (t1, server1, own1, all1) = inside[0], inside[-1]
        server, own = server1 - server0, own1 - own0
        others = max(0.0, all1 - all0 - server - own)
        return server / (t1 - t0), own / (t1 - t0), others / (t1 - t0)


def machine_cpu_seconds() -> float:
    """CPU time all processes have used, on all CPUs (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    # user nice system idle iowait irq softirq steal: all but idle and iowait
    busy = sum(int(fields[index]) for index in (0, 1, 2, 5, 6, 7))
    return busy / os.sysconf("SC_CLK_TCK")


@attrs.frozen
class GcPause:
    """A pause of the server's cyclic garbage collector (``BENCH_GC_LOG``)."""

    ended: float  # Unix time
    generation: int
    ms: float


def gc_pauses(server: ServerProcess) -> list[GcPause]:
    """The garbage collector's pauses the server has logged so far."""
    pauses = []
    for line in server.log_tail(10_000_000).splitlines():
        words = line.split()
        if len(words) == 4 and words[0] == "gc":
            pauses.append(GcPause(float(words[1]), int(words[2]), float(words[3])))
    return pauses


@attrs.frozen
class Stall:
    """A stretch the server's (``BENCH_STALL_LOG``) or the load generator's loop was
    held: one callback (``slow``) or a 1 ms sleeper woken late (``lag``)."""

    kind: str  # "slow", "lag" or "own" (the load generator's lag)
    ended: float  # Unix time
    ms: float
    what: str = ""


def server_stalls(server: ServerProcess) -> list[Stall]:
    """The stalls the server has logged so far (with ``BENCH_STALL_LOG``)."""
    stalls = []
    for line in server.log_tail(10_000_000).splitlines():
        words = line.split(maxsplit=3)
        if len(words) >= 3 and words[0] in ("slow", "lag"):
            what = words[3] if len(words) == 4 else ""
            stalls.append(Stall(words[0], float(words[1]), float(words[2]), what))
    return stalls


async def sample_own_lag(into: list[Stall]) -> None:
    """Note each time this process's loop woke a 1 ms sleeper 2 ms late or more."""
    while True:
        due = time.perf_counter() + 0.001
        await asyncio.sleep(0.001)
        late = 1000 * (time.perf_counter() - due)
        if late >= 2.0:
            into.append(Stall("own", time.time(), late))


def _stall_summary(stalls: Sequence[Stall], start: float, end: float) -> str:
    inside = [stall for stall in stalls if start <= stall.ended <= end]
    parts = []
    for kind, label in (
        ("slow", "server callbacks of 2 ms or more"),
        ("lag", "server loop late 2 ms or more"),
        ("own", "load generator loop late 2 ms or more"),
    ):
        of_kind = sorted((s for s in inside if s.kind == kind), key=lambda s: -s.ms)
        if not of_kind:
            parts.append(f"{label}: none")
            continue
        ms = [s.ms for s in of_kind]
        longest = ", ".join(
            f"{s.ms:.1f} ms at {s.ended - start:+.2f} s" + (f" ({s.what[:40]})" if s.what else "")
            for s in of_kind[:3]
        )
        part = (
            f"{label}: {len(ms)}, {sum(ms):.0f} ms in all, >=5 ms: "
            f"{sum(m >= 5 for m in ms)}, >=10 ms: {sum(m >= 10 for m in ms)}, "
            f"the longest {longest}"
        )
        if kind == "slow":
            by_what: dict[str, float] = {}
            for stall in of_kind:
                key = stall.what.split(" at 0x")[0][:80]
                by_what[key] = by_what.get(key, 0.0) + stall.ms
            top = sorted(by_what.items(), key=lambda item: -item[1])[:4]
            part += " (by what, ms: " + "; ".join(f"{w} {t:.0f}" for w, t in top) + ")"
        parts.append(part)
    return ", ".join(parts)


def _gc_summary(pauses: Sequence[GcPause], start: float, end: float) -> str:
    inside = [pause for pause in pauses if start <= pause.ended <= end]
    if not inside:
        return "no collector pause of 1 ms or more"
    longest = max(inside, key=lambda pause: pause.ms)
    return (
        f"collector pauses of 1 ms or more: {len(inside)}, {sum(p.ms for p in inside):.0f} ms "
        f"in all, the longest {longest.ms:.0f} ms (generation {longest.generation})"
    )


@attrs.define
class StormRun:
    """One expiry storm of S6."""

    ended: int = 0  # expiring sockets ended as specified
    quiet: list[float] = attrs.field(factory=list)  # round trips, ms, sorted
    storm: list[float] = attrs.field(factory=list)
    quiet_seconds: float = 0.0
    storm_seconds: float = 0.0
    last: float = 0.0  # seconds from the expiry to the last disconnect
    first_expired: float = 0.0  # seconds from the expiry to the first auth:expired
    busy: dict[str, tuple[float, float, float]] = attrs.field(factory=dict)  # by window
    gc: dict[str, str] = attrs.field(factory=dict)  # by window
    stalls: dict[str, str] = attrs.field(factory=dict)  # by window (BENCH_STALL_LOG)
    too_short: bool = False  # the connects left less than storm_min_quiet before expiry
    full_collection: float = 0.0  # ms: the longest generation-2 collection in either window

    @property
    def others(self) -> float:
        """The most of a CPU other processes took in either window."""
        return max(self.busy["quiet"][2], self.busy["storm"][2])

    def counted(self, judge: bool) -> bool:
        """Whether the storm measured the gateway: calls in both windows and, when
        judging, the machine otherwise idle, a quiet window of its full length and no
        full collection in either window (with 5,100 connections, one takes the
        server 0.2 to 1.3 s and sets that window's p99 by itself, whatever the
        expiry path does)."""
        if not self.quiet or not self.storm:
            return False
        return not judge or (
            self.others <= BUSY_MACHINE
            and not self.too_short
            and self.full_collection < FULL_COLLECTION_MS
        )

    @property
    def quiet_p99(self) -> float:
        return _percentile(self.quiet, 99)

    @property
    def storm_p99(self) -> float:
        return _percentile(self.storm, 99)

    @property
    def ratio(self) -> float:
        return self.storm_p99 / self.quiet_p99

    def describe(self, index: int, storm: int, judge: bool) -> str:
        if not self.quiet or not self.storm:
            return (
                f"- Storm {index}: {self.ended:,} of {storm:,} expiring sockets ended as "
                f"specified; **not counted**: {len(self.quiet)} calls in the quiet window "
                f"({self.quiet_seconds:.1f} s), {len(self.storm)} in the storm window."
            )
        busy = {
            window: f"server {server:.0%} of a CPU, load generator {own:.0%}, "
            f"other processes {others:.0%}"
            for window, (server, own, others) in self.busy.items()
        }
        return (
            f"- Storm {index}: p99 {self.quiet_p99:.2f} ms quiet, {self.storm_p99:.2f} ms in "
            f"the storm ({self.ratio:.2f}x); p50 {_percentile(self.quiet, 50):.2f} / "
            f"{_percentile(self.storm, 50):.2f} ms; max {self.quiet[-1]:.2f} / "
            f"{self.storm[-1]:.2f} ms. {self.ended:,} of {storm:,} expiring sockets ended "
            f"as specified, the first `auth:expired` {1000 * self.first_expired:+.0f} ms and "
            f"the last disconnect {1000 * self.last:+.0f} ms after the expiry. Quiet window "
            f"{self.quiet_seconds:.1f} s, {len(self.quiet):,} calls ({busy['quiet']}; "
            f"{self.gc['quiet']}); storm window {self.storm_seconds:.1f} s, "
            f"{len(self.storm):,} calls ({busy['storm']}; {self.gc['storm']})."
            + "".join(f" {window}: {text}." for window, text in self.stalls.items())
            + (
                f" **Not counted**: other processes took {self.others:.0%} of a CPU."
                if judge and self.others > BUSY_MACHINE
                else ""
            )
            + (" **Not counted**: the connects took too long." if judge and self.too_short else "")
            + (
                f" **Not counted**: a full collection of {self.full_collection:.0f} ms."
                if judge and self.full_collection >= FULL_COLLECTION_MS
                else ""
            )
        )


# A storm during which other processes took more of a CPU than this (in either
# window) measured the machine, not the gateway: its figures are shown, not counted.
BUSY_MACHINE = 0.10
# A storm with a generation-2 collection this long (ms) in either window measured the
# collector, not the expiry path: its figures are shown, not counted.
FULL_COLLECTION_MS = 50.0


async def scenario_storm(ctx: Context, spec: ServerSpec, server: ServerProcess) -> None:
    """S6 (gateway only), ``storm_runs`` times on one server: ``storm_steady`` clients
    with long-lived tokens call ``bench:echo`` one at a time at random intervals (as
    in S3, about 1,000 calls/s overall) while ``storm_clients`` other sockets are
    connected with tokens whose ``exp`` is the same whole second. The steady clients'
    acknowledgement p99 in a quiet window (everyone connected, nobody expiring) is
    compared with their p99 over the storm: every call in flight from the expiry to
    ``storm_settle`` after the last expired socket was disconnected. Every expiring
    socket must get ``auth:expiring``, then ``auth:expired`` (not before the
    expiry), then a server disconnect; otherwise the scenario fails and no figure is
    recorded. The figures are the medians over the storms during which the machine
    was otherwise idle and the server made no full collection (no figure if none
    was)."""
    sizes = ctx.sizes
    results = ctx.results
    storm, steady_count = sizes.storm_clients, sizes.storm_steady
    quiet_p99 = results.measure(
        "S6-quiet-p99",
        "S6",
        f"S6 ack p99 of {steady_count} clients, quiet ({storm:,} others connected)",
        "ms",
        higher_is_better=False,
        only=("A",),
    )
    storm_p99 = results.measure(
        "S6-storm-p99",
        "S6",
        f"S6 ack p99 of {steady_count} clients while {storm:,} sockets expire in 1 s",
        "ms",
        higher_is_better=False,
        only=("A",),
    )
    ratio = results.measure(
        "S6-ratio", "S6", "S6 storm p99 / quiet p99", "x", higher_is_better=False, only=("A",)
    )
    last = results.measure(
        "S6-last",
        "S6",
        f"S6 from the expiry to the last of the {storm:,} disconnects",
        "ms",
        higher_is_better=False,
        only=("A",),
    )
    check = results.check("S6", spec.key)
    runs: list[StormRun] = []
    while len(runs) < sizes.storm_max_runs:
        runs.append(await _storm(ctx, spec, server, check, f"r{len(runs)}-"))
        if not check.ok or sum(run.counted(sizes.storm_judge) for run in runs) >= sizes.storm_runs:
            break
    details = results.details.setdefault("S6", [])
    details.append(
        f"S6, {len(runs)} storm{'' if len(runs) == 1 else 's'} on one server, until "
        f"{sizes.storm_runs} ran while other processes took at most {BUSY_MACHINE:.0%} of "
        f"a CPU or {sizes.storm_max_runs} had run (figures: the median of those storms):"
        if sizes.storm_judge
        else f"S6, {len(runs)} storm{'' if len(runs) == 1 else 's'} on one server:"
    )
    details += [run.describe(index + 1, storm, sizes.storm_judge) for index, run in enumerate(runs)]
    if not check.ok:
        return  # a failure, not a figure
    counted = [run for run in runs if run.counted(sizes.storm_judge)]
    if not counted:
        details.append("- No storm could be counted: no figure.")
        return
    quiet_p99.values[spec.key] = statistics.median(run.quiet_p99 for run in counted)
    storm_p99.values[spec.key] = statistics.median(run.storm_p99 for run in counted)
    ratio.values[spec.key] = statistics.median(run.ratio for run in counted)
    last.values[spec.key] = 1000 * statistics.median(run.last for run in counted)


async def _storm(
    ctx: Context, spec: ServerSpec, server: ServerProcess, check: Check, prefix: str
) -> StormRun:
    """One expiry storm of S6 (see :func:`scenario_storm`)."""
    sizes = ctx.sizes
    rng = random.Random(11)  # noqa: S311 (pacing, not secrets)
    text = "x" * 64
    calls: list[_Call] = []
    own_stalls: list[Stall] = []
    stop = asyncio.Event()

    async def keep_calling(index: int, client: Client) -> None:
        round_ = 0
        while not stop.is_set():
            await asyncio.sleep(rng.uniform(0, 2 * sizes.storm_gap))
            payload = {"client": index, "round": round_, "text": text}
            started = time.perf_counter()
            answer = await client.call("bench:echo", payload, within=CALL_TIMEOUT)
            ended = time.perf_counter()
            round_ += 1
            check.expected += 1
            if answer == {"success": True, "payload": payload}:
                check.received += 1
                calls.append(_Call(started, ended))
            else:
                check.fail(f"bench:echo answered {answer!r}")

    async with LoadGenerator(server.url) as gen:
        steady = await _connect(gen, ctx, spec, sizes.storm_steady, prefix=f"{prefix}steady")
        opened = list(steady)
        apart = _DoomedApart(server.url) if os.environ.get("BENCH_STORM_APART") else None
        try:
            # One clock for both: the expiry is wall-clock time, the calls are timed
            # with perf_counter.
            offset = time.time() - time.perf_counter()
            expires = math.floor(time.time() + sizes.storm_lead)
            expiry = expires - offset
            tokens = [
                ctx.tokens.expiring(f"{prefix}doomed{index}", expires)
                for index in range(sizes.storm_clients)
            ]
            doomed: Sequence[Client | _Reported] = []
            if apart is None:
                clients, _ = await gen.connect_many(tokens, concurrency=sizes.connect_concurrency)
                doomed = clients
                opened += clients
            else:
                await apart.connect(tokens, sizes.connect_concurrency, expiry + STORM_TIMEOUT)
            quiet = (time.perf_counter() + sizes.storm_settle, expiry - sizes.storm_settle)
            callers = [
                asyncio.create_task(keep_calling(index, client))
                for index, client in enumerate(steady)
            ]
            if os.environ.get("BENCH_STALL_LOG"):
                callers.append(asyncio.create_task(sample_own_lag(own_stalls)))
            try:
                helpers = () if apart is None else apart.pids
                async with _Usage(server, helpers) as usage, ctx.measuring(server):
                    deadline = expiry + STORM_TIMEOUT - time.perf_counter()
                    if apart is not None:
                        doomed = await apart.report(max(deadline, 1.0) + 30.0)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(deadline, 1.0)):
                            await asyncio.gather(*(client.closed.wait() for client in doomed))
                    seen = [c.disconnected_at for c in doomed if c.disconnected_at is not None]
                    last = max(seen, default=time.perf_counter())
                    window = (expiry, last + sizes.storm_settle)
                    await asyncio.sleep(max(0.0, window[1] - time.perf_counter()))
                    stop.set()
                    for task in callers[len(steady) :]:
                        task.cancel()
                    await asyncio.gather(*callers, return_exceptions=True)
            finally:
                stop.set()
                for task in callers:
                    task.cancel()
                await asyncio.gather(*callers, return_exceptions=True)
        finally:
            await close_all(opened)
            if apart is not None:
                await apart.stop()
        _record_extensions(ctx, spec, gen)

    for client in steady:
        if client.disconnected_at is not None or client.events["auth:expired"]:
            check.fail(f"steady client {client.name} was ended")
    pauses = gc_pauses(server)
    stalls = server_stalls(server) + own_stalls
    expired_at = [c.first_seen["auth:expired"] for c in doomed if c.events["auth:expired"]]
    return StormRun(
        ended=_check_expired(check, doomed, expiry),
        quiet=sorted(c.ms for c in calls if quiet[0] <= c.started and c.ended <= quiet[1]),
        storm=sorted(c.ms for c in calls if c.ended >= window[0] and c.started <= window[1]),
        quiet_seconds=max(0.0, quiet[1] - quiet[0]),
        too_short=quiet[1] - quiet[0] < sizes.storm_min_quiet,
        full_collection=max(
            (
                pause.ms
                for pause in pauses
                if pause.generation == 2
                and (
                    quiet[0] + offset <= pause.ended <= quiet[1] + offset
                    or window[0] + offset <= pause.ended <= window[1] + offset
                )
            ),
            default=0.0,
        ),
        storm_seconds=window[1] - window[0],
        last=last - expiry,
        first_expired=min(expired_at, default=expiry) - expiry,
        busy={"quiet": usage.busy(*quiet), "storm": usage.busy(*window)},
        gc={
            "quiet": _gc_summary(pauses, quiet[0] + offset, quiet[1] + offset),
            "storm": _gc_summary(pauses, window[0] + offset, window[1] + offset),
        },
        stalls={
            "quiet": _stall_summary(stalls, quiet[0] + offset, quiet[1] + offset),
            "storm": _stall_summary(stalls, window[0] + offset, window[1] + offset),
            "slow storm calls": _slow_calls(calls, quiet, window),
        }
        if os.environ.get("BENCH_STALL_LOG")
        else {},
    )


def _slow_calls(
    calls: Sequence[_Call], quiet: tuple[float, float], window: tuple[float, float]
) -> str:
    """When the storm's calls slower than three times the quiet p99 were sent, by
    half second from the expiry."""
    quiet_p99 = _percentile(
        sorted(c.ms for c in calls if quiet[0] <= c.started and c.ended <= quiet[1]), 99
    )
    slow = [c for c in calls if c.ended >= window[0] and c.started <= window[1]]
    slow = [c for c in slow if c.ms > 3 * quiet_p99]
    bins = Counter(math.floor(2 * (c.started - window[0])) / 2 for c in slow)
    return f"{len(slow)} over {3 * quiet_p99:.1f} ms, sent at (s from the expiry: calls) " + (
        ", ".join(f"{start:+.1f}: {count}" for start, count in sorted(bins.items())) or "none"
    )


class _Reported:
    """An expiring client of S6 as the process that held it reported it."""

    def __init__(
        self,
        name: str,
        events: dict[str, int],
        first_seen: dict[str, float],
        disconnected_at: float | None,
    ) -> None:
        self.name = name
        self.events = Counter(events)
        self.first_seen = first_seen
        self.disconnected_at = disconnected_at
        self.closed = asyncio.Event()
        self.closed.set()


class _DoomedApart:
    """S6's expiring clients in a process of their own (``storm_clients.py``, with
    ``BENCH_STORM_APART``), on this process's CPU: their storm of disconnects and
    closes is then not handled in the loop that times the steady clients' calls."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.process: asyncio.subprocess.Process | None = None

    async def connect(self, tokens: Sequence[str | None], concurrency: int, until: float) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(BENCH_DIR / "storm_clients.py"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        request = {"url": self.url, "tokens": tokens, "concurrency": concurrency, "until": until}
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        await self.process.stdin.drain()
        line = await self.process.stdout.readline()
        if line.strip() != b"connected":
            raise RuntimeError("the expiring clients' process could not connect them all")

    @property
    def pids(self) -> tuple[int, ...]:
        return () if self.process is None else (self.process.pid,)

    async def report(self, within: float) -> list[_Reported]:
        assert self.process is not None
        assert self.process.stdout is not None
        async with asyncio.timeout(within):
            line = await self.process.stdout.readline()
        return [_Reported(*fields) for fields in json.loads(line)]

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()


# A socket whose auth:expired arrives this much before its expiry was ended early (the
# load generator's and the server's clocks are the same clock, read at different times).
EARLY_TOLERANCE = 0.1


def _check_expired(check: Check, doomed: Sequence[Client | _Reported], expiry: float) -> int:
    """Count the expiring sockets that were ended as specified; fail the others."""
    ended = 0
    for client in doomed:
        expiring, expired = client.events["auth:expiring"], client.events["auth:expired"]
        check.expected += 1
        if expiring != 1 or expired != 1:
            check.fail(f"{client.name}: {expiring} auth:expiring, {expired} auth:expired")
        elif client.first_seen["auth:expiring"] > client.first_seen["auth:expired"]:
            check.fail(f"{client.name}: auth:expired before auth:expiring")
        elif client.first_seen["auth:expired"] < expiry - EARLY_TOLERANCE:
            early = expiry - client.first_seen["auth:expired"]
            check.fail(f"{client.name}: auth:expired {early:.2f} s before the expiry")
        elif client.disconnected_at is None:
            check.fail(f"{client.name}: auth:expired but not disconnected")
        else:
            ended += 1
    check.received += ended
    return ended


@attrs.define
class _Side:
    """One of S7's two gateway servers, with its clients in one room and its figures
    for the payload size being measured."""

    name: str  # "off" or "on"
    server: ServerProcess
    clients: list[Client]
    controller: Client
    messages: int = 0  # bench:msg frames each client got from it so far
    rates: list[float] = attrs.field(factory=list)
    others: list[float] = attrs.field(factory=list)  # other processes' CPU share, per run
    cpu: float = 0.0
    own: float = 0.0
    wall: float = 0.0
    delivered: int = 0

    def reset(self) -> None:
        self.rates, self.others = [], []
        self.cpu, self.own, self.wall, self.delivered = 0.0, 0.0, 0.0, 0


RECOVERY_MEMORY = BENCH_DIR / "recovery_memory.py"
PARK_WINDOW = 120.0  # S7: the window of the server whose parked sessions are measured


async def scenario_recovery(ctx: Context, spec: ServerSpec, server: ServerProcess) -> None:
    """S7 (gateway only): S1's fan-out (``fanout_clients`` clients in one room) on two
    gateway servers at once, pinned to the same CPU: ``server`` without missed-message
    recovery and one with it (``BENCH_RECOVERY``, in memory, a window of
    ``recovery_window`` seconds, so that the log trims as it fills). For each size a
    warm-up run on each, then ``recovery_pairs`` measured runs on each, interleaved
    (off, on, then on, off, ...) with the same number of messages, so that whatever
    else the machine does falls on both alike; the medians are compared. Every
    message of the recovering server must carry an offset, none of the other's. Then
    (not when profiling) the memory the log keeps per event (``recovery_memory.py``,
    a fresh process) and what one parked session keeps on a gateway server
    (tracemalloc snapshots before the connects and after the drops)."""
    sizes = ctx.sizes
    results = ctx.results
    rooms = f"{sizes.fanout_clients:,} clients in 1 room"
    for size in sizes.fanout_sizes:
        for state in ("off", "on"):
            results.measure(
                f"S7-{state}-{size}",
                "S7",
                f"S7 fan-out, {rooms}, {_bytes(size)}, recovery {state}",
                "deliveries/s",
                higher_is_better=True,
                only=("A",),
            )
        results.measure(
            f"S7-ratio-{size}",
            "S7",
            f"S7 {_bytes(size)} deliveries/s, recovery on / off",
            "x",
            higher_is_better=True,
            only=("A",),
        )
    results.details.setdefault("S7", []).append(
        f"S7 (A only): S1's fan-out on two gateway servers at once, both on the servers' "
        f"CPU, one without missed-message recovery and one with it (in memory, "
        f"`BENCH_RECOVERY={sizes.recovery_window:g}`: the log trims as it fills); per "
        f"size a warm-up run on each, then {sizes.recovery_pairs} runs on each, "
        "interleaved in pairs (off then on, on then off, ...), all of the same number "
        "of messages; figures: the medians. Each message from the recovering server "
        "must carry an offset, and none from the other (a delivery check):"
    )
    check = results.check("S7", spec.key)
    env = {"BENCH_RECOVERY": f"{sizes.recovery_window:g}"}
    sides: list[_Side] = []
    async with contextlib.AsyncExitStack() as stack:
        recovering = await stack.enter_async_context(
            ServerProcess(spec, server.secret, server.log_path.parent, env)
        )
        for name, each in (("off", server), ("on", recovering)):
            gen = await stack.enter_async_context(LoadGenerator(each.url))
            clients = await _connect(gen, ctx, spec, sizes.fanout_clients)
            stack.push_async_callback(close_all, clients)
            controller = await gen.connect(ctx.tokens.token(spec.auth, "controller"))
            stack.push_async_callback(close_all, [controller])
            await call_all(
                clients,
                "bench:join",
                lambda index: "bench:all",
                within=CALL_TIMEOUT,
                check=_succeeded,
            )
            sides.append(_Side(name, each, clients, controller))
        for size in sizes.fanout_sizes:
            if not await _paired_runs(ctx, spec, sides, size):
                return
    for side in sides:
        wanted = side.messages if side.name == "on" else 0
        wrong = [client for client in side.clients if client.offsets != wanted]
        if wrong:
            check.fail(
                f"recovery {side.name}: {len(wrong)} clients got {wrong[0].offsets} "
                f"offsets in {side.messages} messages, not {wanted}"
            )
    if ctx.profiler is None and ctx.memory is None:
        await _log_memory(ctx)
        await _parked_memory(ctx, spec, server.log_path.parent)


async def _paired_runs(ctx: Context, spec: ServerSpec, sides: Sequence[_Side], size: int) -> bool:
    """S7 for one payload size (see :func:`scenario_recovery`); ``False`` if a
    server failed the delivery check."""
    sizes = ctx.sizes
    results = ctx.results
    check = results.check("S7", spec.key)
    request = _fanout_request(size)
    off, on = sides
    warmup_rate = 0.0
    for side in sides:
        side.reset()
        warmup, _, _ = await _deliver(
            side.server,
            side.controller,
            side.clients,
            "bench:fanout",
            request(sizes.warmup_count),
            sizes.warmup_count,
            size,
        )
        check.add(warmup)
        if not warmup.in_order:
            return False
        side.messages += sizes.warmup_count
        if side is off:
            warmup_rate = warmup.expected / warmup.elapsed
    count = round(warmup_rate * sizes.run_seconds / sizes.fanout_clients)
    count = min(max(count, sizes.min_count), sizes.max_count)
    async with ctx.measuring_pair(on.server, off.server):
        for run in range(sizes.recovery_pairs):
            for side in sides if run % 2 == 0 else tuple(reversed(sides)):
                machine_before = machine_cpu_seconds()
                delivery, cpu, own = await _deliver(
                    side.server,
                    side.controller,
                    side.clients,
                    "bench:fanout",
                    request(count),
                    count,
                    size,
                )
                elsewhere = machine_cpu_seconds() - machine_before - cpu - own
                check.add(delivery)
                if not delivery.in_order:
                    return False
                side.messages += count
                side.others.append(max(0.0, elsewhere) / delivery.elapsed)
                side.rates.append(delivery.expected / delivery.elapsed)
                side.cpu += cpu
                side.own += own
                side.wall += delivery.elapsed
                side.delivered += delivery.expected
    for side in sides:
        key = f"S7-{side.name}-{size}"
        measure = results.measures[key]
        measure.values[spec.key] = statistics.median(side.rates)
        measure.counts[spec.key] = count
        measure.spread[spec.key] = (min(side.rates), max(side.rates))
        results.cpu[(key, spec.key)] = 1e6 * side.cpu / side.delivered
        results.loadgen_busy[(key, spec.key)] = side.own / side.wall
    median_off, median_on = statistics.median(off.rates), statistics.median(on.rates)
    results.measures[f"S7-ratio-{size}"].values[spec.key] = median_on / median_off
    pairs = [mine / theirs for mine, theirs in zip(on.rates, off.rates, strict=True)]
    others = sorted(off.others + on.others)
    cpu_off = results.cpu[(f"S7-off-{size}", spec.key)]
    cpu_on = results.cpu[(f"S7-on-{size}", spec.key)]
    details = results.details.setdefault("S7", [])
    details.append(
        f"- S7 {_bytes(size)}: {count} messages per client per run; recovery off "
        f"{median_off:,.0f}, on {median_on:,.0f} deliveries/s (median of {len(off.rates)} "
        f"runs each): {median_on / median_off:.3f}x; the {len(pairs)} pairs' own ratios "
        f"{min(pairs):.3f}x to {max(pairs):.3f}x, median {statistics.median(pairs):.3f}x; "
        f"server CPU {cpu_off:.2f} µs per delivery off, {cpu_on:.2f} on"
        + (f" ({cpu_on / cpu_off - 1:+.1%})" if cpu_off else "")
        + "; runs off "
        + ", ".join(f"{rate / 1000:.0f}k" for rate in off.rates)
        + "; on "
        + ", ".join(f"{rate / 1000:.0f}k" for rate in on.rates)
        + f"; other processes took {others[0]:.0%} to {others[-1]:.0%} of a CPU during "
        f"the runs (median {statistics.median(others):.0%})."
    )
    return True


async def _log_memory(ctx: Context) -> None:
    """S7: bytes per event the in-memory recovery log keeps, measured in a fresh
    process (``recovery_memory.py``) for each payload size."""
    sizes = ctx.sizes
    results = ctx.results
    details = results.details.setdefault("S7", [])
    for size in sizes.fanout_sizes:
        measure = results.measure(
            f"S7-log-bytes-{size}",
            "S7",
            f"S7 memory per event kept by the recovery log, {_bytes(size)} payload",
            "B",
            higher_is_better=False,
            only=("A",),
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(RECOVERY_MEMORY),
            "--size",
            str(size),
            "--entries",
            str(sizes.log_entries),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        out, err = await asyncio.wait_for(process.communicate(), 300)
        if process.returncode != 0:
            results.errors.append(f"recovery_memory.py failed: {err.decode()[-500:]}")
            continue
        found = json.loads(out)
        measure.values["A"] = found["heap_bytes"]
        details.append(
            f"- S7 recovery log, {_bytes(size)} payload, {sizes.log_entries:,} events kept "
            f"by a `MemoryRecoveryStore` in a fresh process: {found['heap_bytes']:,.0f} B "
            f"of Python heap per event (tracemalloc; RSS: {found['rss_bytes']:,.0f} B), "
            f"of which {found['frame_bytes']:,.0f} B are the encoded frame's characters "
            f"and {found['heap_bytes'] - found['frame_bytes']:,.0f} B the entry around it; "
            f"taking an offset and appending the entry took {found['append_us']:.2f} µs "
            f"per event ({1000 * found['append_us'] / sizes.fanout_clients:.1f} ns per "
            f"delivery at {sizes.fanout_clients:,} recipients)."
        )


def _heap_growth(before: Path, after: Path, per: int) -> tuple[float, dict[str, float]]:
    """Bytes of Python heap grown from snapshot ``before`` to ``after`` per ``per``,
    in all and by line."""
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    first = tracemalloc.Snapshot.load(str(before)).filter_traces(ignore)
    second = tracemalloc.Snapshot.load(str(after)).filter_traces(ignore)
    total = sum(stat.size_diff for stat in second.compare_to(first, "filename")) / per
    lines = {
        _short_frame(str(stat.traceback[0])): stat.size_diff / per
        for stat in second.compare_to(first, "lineno")
    }
    return total, lines


async def _drop_sockets(
    ctx: Context, spec: ServerSpec, server: ServerProcess, memory: MemoryProfiler
) -> int:
    """S7's parked-session measure on one server: snapshots before ``park_clients``
    sockets connect and join a room, and with them connected; then they drop (their
    websockets close under them, no DISCONNECT: with recovery on each is parked).
    Returns how many connected."""
    sizes = ctx.sizes
    check = ctx.results.check("S7", spec.key)
    async with LoadGenerator(server.url) as gen:
        warmup = await _connect(gen, ctx, spec, 5, prefix="pw")
        await call_all(
            warmup, "bench:join", lambda index: "bench:all", within=CALL_TIMEOUT, check=_succeeded
        )
        await close_all(warmup)
        await memory.snapshot(server)
        clients = await _connect(gen, ctx, spec, sizes.park_clients, prefix="p")
        try:
            await call_all(
                clients,
                "bench:join",
                lambda index: "bench:all",
                within=CALL_TIMEOUT,
                check=_succeeded,
            )
            check.expected += sizes.park_clients
            check.received += len(clients)
            await memory.snapshot(server)
        finally:
            await close_all(clients)
    return len(clients)


async def _parked_memory(ctx: Context, spec: ServerSpec, log_dir: Path) -> None:
    """S7: what one parked session keeps on a gateway server. Two gateway servers
    with tracemalloc, one with recovery on (a window of ``PARK_WINDOW``), one
    without: on each ``park_clients`` sockets connect, join a room and drop (see
    :func:`_drop_sockets`), and a last snapshot is taken ``park_settle`` after the
    drops. The server without recovery tells what dropped sockets leave behind
    anyway (tables that do not shrink, caches); the difference is what parking keeps."""
    sizes = ctx.sizes
    results = ctx.results
    measure = results.measure(
        "S7-parked",
        "S7",
        "S7 memory per parked session (dropped socket kept for recovery)",
        "KB",
        higher_is_better=False,
        only=("A",),
    )
    found: dict[str, tuple[float, float, dict[str, float]]] = {}
    async with contextlib.AsyncExitStack() as stack:
        tracing: list[tuple[str, ServerProcess, MemoryProfiler, int]] = []
        for state in ("on", "off"):
            memory = MemoryProfiler(log_dir)
            env = dict(memory.env)
            if state == "on":
                env["BENCH_RECOVERY"] = f"{PARK_WINDOW:g}"
            server = await stack.enter_async_context(
                ServerProcess(spec, ctx.tokens.secret, log_dir, env)
            )
            dropped = await _drop_sockets(ctx, spec, server, memory)
            tracing.append((state, server, memory, dropped))
        await asyncio.sleep(sizes.park_settle)
        for state, server, memory, dropped in tracing:
            await memory.snapshot(server)
            first, connected, settled = memory.snapshots
            per_socket, _ = _heap_growth(first, connected, dropped)
            left, lines = _heap_growth(first, settled, dropped)
            found[state] = (per_socket, left, lines)
    on_socket, on_left, on_lines = found["on"]
    _, off_left, off_lines = found["off"]
    measure.values["A"] = (on_left - off_left) / 1024
    kept = sorted(
        ((where, size - off_lines.get(where, 0.0)) for where, size in on_lines.items()),
        key=lambda item: -item[1],
    )
    results.details.setdefault("S7", []).append(
        f"- S7 parked sessions: {sizes.park_clients:,} sockets joined `bench:all` and then "
        f"dropped, on a gateway server with recovery on ({PARK_WINDOW:g} s window) and on "
        f"one without; Python heap (tracemalloc) {sizes.park_settle:g} s after the drops "
        "(python-engineio's ping task keeps a closed socket until its next ping) against "
        f"before the connects: {on_left / 1024:.2f} KB per dropped socket with recovery, "
        f"{off_left / 1024:.2f} KB without (what dropped sockets leave anyway), so "
        f"{(on_left - off_left) / 1024:.2f} KB per parked session (a connected socket "
        f"held {on_socket / 1024:.1f} KB). The lines that keep most for a parked session "
        "(with minus without), per session: "
        + "; ".join(f"`{where}` {size:,.0f} B" for where, size in kept[:8] if size > 0)
        + "."
    )


async def scenario_soak(ctx: Context, spec: ServerSpec, server: ServerProcess) -> None:
    """SOAK: the gateway under churn with a slow reader and a flooder (``soak.py``)."""
    soak = Soak(ctx.soak, server.url, lambda user: ctx.tokens.token(spec.auth, user))
    ctx.results.soak = soak.report
    report = await soak.run()
    check = ctx.results.check("SOAK", spec.key)
    check.expected, check.received = (
        report.lives_checked,
        (report.lives_checked - report.lives_without_messages),
    )
    for problem in report.problems():
        check.fail(problem)


def _record_extensions(ctx: Context, spec: ServerSpec, gen: LoadGenerator) -> None:
    ctx.results.extensions[spec.key] |= gen.extensions
    ctx.results.offered |= gen.offered


async def _generator_extensions(ctx: Context, spec: ServerSpec, gen: Generator) -> None:
    await gen.refresh_extensions()
    ctx.results.extensions[spec.key] |= gen.extensions
    ctx.results.offered |= gen.offered


def _percentile(ordered: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return float("nan")
    rank = max(1, round(percent / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def _bytes(size: int) -> str:
    return f"{size // 1024} KB" if size % 1024 == 0 else f"{size} B"


Scenario = Callable[[Context, ServerSpec, ServerProcess], Awaitable[None]]
SCENARIOS: dict[str, Scenario] = {
    "S1": scenario_fanout,
    "S2": scenario_connects,
    "S3": scenario_acks,
    "S4": scenario_memory,
    "S5": scenario_rooms,
    "S6": scenario_storm,
    "S7": scenario_recovery,
    "SOAK": scenario_soak,
}
# The scenarios that run on some servers only.
SCENARIO_SERVERS = {
    "S2": ("A", "B", "C"),
    "S4": ("A", "B", "C"),
    "S5": ("A", "B", "C"),
    "S6": ("A",),
    "S7": ("A",),
    "SOAK": ("A",),
}


def runs_on(scenario: str, server: str) -> bool:
    """Whether ``scenario`` runs on ``server`` (the uvicorn variant: S1 and S3 only)."""
    only = SCENARIO_SERVERS.get(scenario)
    return only is None or server in only


SCENARIO_ENV = {  # for the gateway server, by scenario
    "S6": {"BENCH_GC_LOG": "1"},
    "SOAK": {"BENCH_SOAK": "1"},
}
TARGET_SCENARIO = {
    "S1-100": "S1",
    "S1-1024": "S1",
    "S2": "S2",
    "S3-p50": "S3",
    "S3-p99": "S3",
    "S4": "S4",
    "S4-timers": "S4",
    "S6-ratio": "S6",
    "S7-ratio-100": "S7",
    "S7-ratio-1024": "S7",
}


# -- running ----------------------------------------------------------------------------


async def run_scenario(
    name: str, ctx: Context, specs: Sequence[ServerSpec], secret: str, log_dir: Path
) -> None:
    for spec in specs:
        if not runs_on(name, spec.key):
            continue
        print(f"  {name} on {spec.key} ({spec.name}) ...", flush=True)
        started = time.perf_counter()
        env = SCENARIO_ENV.get(name, {}) if spec.key in ("A", ASGI) else {}
        async with ServerProcess(spec, secret, log_dir, env) as server:
            try:
                await SCENARIOS[name](ctx, spec, server)
            except Exception as exc:
                message = f"{name} on {spec.key}: {type(exc).__name__}: {exc}"
                ctx.results.errors.append(message)
                ctx.results.check(name, spec.key).fail(f"{type(exc).__name__}: {exc}")
                print(f"    failed: {message}\n{server.log_tail(800)}", flush=True)
        print(f"    done in {time.perf_counter() - started:.1f} s", flush=True)


class HarnessError(Exception):
    """The benchmarks cannot run at all."""


def node_packages_found() -> bool:
    """Whether Node finds socket.io and socket.io-client from benchmarks/node (in its
    node_modules or, as Node looks, in a folder above)."""
    probe = "for (const name of process.argv.slice(1)) require.resolve(name + '/package.json')"
    try:
        done = subprocess.run(  # noqa: S603 (a fixed command)
            ["node", "-e", probe, *NODE_PACKAGES],  # noqa: S607 (node from PATH)
            cwd=NODE_DIR,
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def ensure_node_packages() -> None:
    """Install Node's socket.io and socket.io-client into benchmarks/node/node_modules
    if Node does not find them."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise HarnessError(
            "node and npm are needed for server C (Node's socket.io) and the load generator"
        )
    if node_packages_found():
        return
    print(
        "installing socket.io and socket.io-client into benchmarks/node/node_modules ...",
        flush=True,
    )
    command = ["npm", "install", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"]
    try:
        done = subprocess.run(  # noqa: S603 (a fixed command)
            command, cwd=ROOT, capture_output=True, text=True, timeout=NPM_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise HarnessError(f"npm install took more than {NPM_TIMEOUT:.0f} s") from None
    if done.returncode != 0 or not node_packages_found():
        raise HarnessError(f"npm install failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def pin_cpus() -> str:
    """With two CPUs or more, and taskset at hand, the load generator (the Node
    process, and this one) runs on the first CPU and every server on the second, so
    that the two never compete for one core and the scheduler does not move them
    around. Says what was done."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return "none (fewer than 2 CPUs or no taskset): the OS schedules everything"
    os.sched_setaffinity(0, {cpus[0]})
    NodeGenerator.pin = cpus[0]
    ServerProcess.pin = cpus[1]
    return (
        f"load generator (and the harness) on CPU {cpus[0]}, each server (all its threads) "
        f"on CPU {cpus[1]}"
    )


def raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def run(args: argparse.Namespace) -> Results:
    sizes = SMOKE if args.smoke else FULL
    specs = [spec for spec in SERVERS if spec.key in args.servers]
    names = [name for name in SCENARIOS if name in args.scenarios]
    secret = secrets.token_urlsafe(32)
    results = Results(specs, args.loadgen)
    soak = SMOKE_SOAK if args.smoke else FULL_SOAK
    soak = attrs.evolve(
        soak,
        seconds=args.soak_seconds or soak.seconds,
        clients=args.soak_clients or soak.clients,
    )
    with tempfile.TemporaryDirectory(prefix="rtg-bench-") as tmp:
        log_dir = Path(tmp)
        ctx = Context(
            sizes=sizes,
            tokens=Tokens(secret),
            results=results,
            soak=soak,
            loadgen=args.loadgen,
            log_dir=log_dir,
        )
        for name in names:
            print(f"{name}:", flush=True)
            await run_scenario(name, ctx, specs, secret, log_dir)
            if name == "SOAK" and results.soak is not None:
                print("\n".join(soak_markdown(results.soak)), flush=True)
            else:
                print(scenario_table(results, name, specs), flush=True)
        if "S1" in names and args.ceiling:
            await measure_ceiling(ctx, secret, log_dir)
        if args.profile and not args.smoke and any(spec.key == "A" for spec in specs):
            await profile_missed(
                results, sizes, secret, log_dir, args.loadgen, also=args.also_profile
            )
    return results


async def measure_ceiling(ctx: Context, secret: str, log_dir: Path) -> None:
    """S1 against ``servers/ceiling_server.py``, which spends next to nothing per
    delivery: how many deliveries per second the load generator itself can take."""
    print(f"S1 against the ceiling server ({ctx.loadgen} load generator) ...", flush=True)
    scratch = ctx.results.ceiling = Results([CEILING], ctx.loadgen)
    sub = attrs.evolve(ctx, results=scratch, profiler=None, memory=None)
    async with ServerProcess(CEILING, secret, log_dir) as server:
        try:
            await scenario_fanout(sub, CEILING, server)
        except Exception as exc:
            scratch.check("S1", CEILING.key).fail(f"{type(exc).__name__}: {exc}")
            print(f"    failed: {exc}\n{server.log_tail(800)}", flush=True)
    for check in scratch.checks.values():
        if not check.ok:
            ctx.results.errors.append(f"S1 on the ceiling server: {'; '.join(check.errors)}")
    print("\n".join(ceiling_lines(scratch)), flush=True)


BOUNDED_SHARE = 0.9  # of the ceiling's rate, or of the load generator's CPU


def generator_bounded(results: Results) -> list[str]:
    """The S1 figures the load generator, not the server, may have set."""
    ceiling = results.ceiling
    found = []
    for key, measure in results.measures.items():
        if measure.scenario != "S1" or measure.unit != "deliveries/s":
            continue
        top = None if ceiling is None else ceiling.measures[key].values.get(CEILING.key)
        for spec in results.servers:
            rate = measure.values.get(spec.key)
            busy = results.loadgen_busy.get((key, spec.key), 0.0)
            if rate is not None and (
                busy >= BOUNDED_SHARE or (top is not None and rate >= BOUNDED_SHARE * top)
            ):
                found.append(f"{key} on {spec.key} ({rate / 1000:.0f}k, busy {busy:.0%})")
    return found


def ceiling_lines(ceiling: Results) -> list[str]:
    """The ceiling's figures, one bullet per S1 payload size."""
    lines = []
    for key, measure in ceiling.measures.items():
        rate = measure.values.get(CEILING.key)
        busy = ceiling.loadgen_busy.get((key, CEILING.key))
        cpu = ceiling.cpu.get((key, CEILING.key))
        if rate is None or busy is None or cpu is None:
            lines.append(f"- {measure.label}: failed")
            continue
        low, high = measure.spread[CEILING.key]
        lines.append(
            f"- {measure.label}: {rate:,.0f} deliveries/s ({low / 1000:.0f}k to "
            f"{high / 1000:.0f}k), the load generator busy {busy:.0%}, the server "
            f"{cpu:.2f} µs/delivery"
        )
    return lines


async def profile_missed(
    results: Results,
    sizes: Sizes,
    secret: str,
    log_dir: Path,
    loadgen: str,
    also: Sequence[str] = (),
) -> None:
    """Run each scenario whose target the gateway missed (and those in ``also``) once
    more, under py-spy (S4: tracing memory with tracemalloc)."""
    missed = sorted(
        {TARGET_SCENARIO.get(t.label, t.label) for t in results.evaluate() if t.met is False}
        | set(also)
    )
    if not missed:
        return
    py_spy = py_spy_path()
    gateway = next(spec for spec in SERVERS if spec.key == "A")
    for name in missed:
        # A separate Results: the profiled run's figures are skewed by the profiling.
        scratch = Results([gateway])
        ctx = Context(
            sizes=sizes, tokens=Tokens(secret), results=scratch, loadgen=loadgen, log_dir=log_dir
        )
        env = dict(SCENARIO_ENV.get(name, {}))
        if name == "S4":
            print("tracing the gateway's memory under S4 ...", flush=True)
            ctx.memory = results.memory_profile = MemoryProfiler(log_dir)
            env.update(ctx.memory.env)
        elif py_spy is None:
            results.errors.append(f"py-spy is not installed: no profile of {name}")
            continue
        elif name == "S7":
            print("profiling both gateway servers under S7 ...", flush=True)
            ctx.profiler = results.profiles["S7 recovery on"] = Profiler(py_spy, log_dir)
            ctx.baseline_profiler = results.profiles["S7 recovery off"] = Profiler(py_spy, log_dir)
        else:
            print(f"profiling the gateway under {name} ...", flush=True)
            ctx.profiler = results.profiles[name] = Profiler(py_spy, log_dir)
        async with ServerProcess(gateway, secret, log_dir, env) as server:
            try:
                await SCENARIOS[name](ctx, gateway, server)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                if ctx.memory is not None:
                    ctx.memory.error = error
                if ctx.profiler is not None:
                    ctx.profiler.error = error
        if ctx.memory is not None:
            ctx.memory.analyse()


# -- reporting ----------------------------------------------------------------------------


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "failed"
    if unit in ("deliveries/s", "connects/s"):
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:.2f}"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "B":
        return f"{value:,.0f}"
    return f"{value:.1f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _ratio_columns(keys: set[str]) -> list[tuple[str, str]]:
    """The (server, versus) pairs of the ratio columns: A against B and C, and the
    uvicorn variant against A."""
    pairs: list[tuple[str, str]] = [
        ("A", other) for other in ("B", "C") if "A" in keys and other in keys
    ]
    if "A" in keys and ASGI in keys:
        pairs.append((ASGI, "A"))
    return pairs


def table_rows(results: Results, measures: Sequence[tuple[str, Measure]]) -> list[str]:
    specs = results.servers
    header = ["Scenario", "unit", *(f"{spec.key}: {spec.name}" for spec in specs)]
    pairs = _ratio_columns({spec.key for spec in specs})
    header += [f"{mine}/{other}" for mine, other in pairs]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, measure in measures:
        cells = [measure.label, measure.unit]
        cells += [
            "n/a"
            if (measure.only is not None and spec.key not in measure.only)
            or not runs_on(measure.scenario, spec.key)
            else _fmt(measure.values.get(spec.key), measure.unit)
            for spec in specs
        ]
        cells += [_ratio(results.ratio(key, other, mine)) for mine, other in pairs]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def scenario_table(results: Results, name: str, specs: Sequence[ServerSpec]) -> str:
    measures = [(key, m) for key, m in results.measures.items() if m.scenario == name]
    lines = table_rows(results, measures)
    for spec in specs:
        check = results.checks.get((name, spec.key))
        if check is not None:
            verdict = "ok" if check.ok else "FAILED " + "; ".join(check.errors)
            lines.append(f"  {spec.key}: {check.received:,}/{check.expected:,} {verdict}")
    return "\n".join(lines)


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "load average at the end (1, 5, 15 min)": ", ".join(
            f"{load:.2f}" for load in os.getloadavg()
        ),
    }


def versions() -> dict[str, str]:
    found = {"Python": platform.python_version()}
    for package in ("realtime-gateway", "python-socketio", "python-engineio", "aiohttp"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    try:
        node = subprocess.run(
            ["node", "--version"],  # noqa: S607 (node from PATH, as the servers use)
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        node = "not found"
    found["Node"] = node
    for package in ("socket.io", "engine.io", "ws"):
        manifest = NODE_DIR / "node_modules" / package / "package.json"
        try:
            found[f"{package} (npm)"] = json.loads(manifest.read_text())["version"]
        except (OSError, ValueError, KeyError):
            found[f"{package} (npm)"] = "not installed"
    return found


def markdown(results: Results, args: argparse.Namespace, elapsed: float) -> str:
    sizes = SMOKE if args.smoke else FULL
    targets = results.evaluate()
    lines = [
        "# Benchmark results"
        + (" (smoke run: a handful of clients, not a measurement)" if args.smoke else ""),
        "",
        f"Produced by `make bench` (`benchmarks/run.py`) on "
        f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} in {elapsed:.0f} s.",
        "Servers on 127.0.0.1, each fresh for every scenario, all driven by the same load "
        "generator: " + LOADGEN_TEXT[args.loadgen] + " S6, S7 and the soak are driven by "
        "`benchmarks/loadgen.py` whatever the choice (they follow each socket's "
        "events in ways only it implements).",
        "",
        "- **A**: realtime_gateway on aiohttp: signed-token auth (itsdangerous), the "
        "reference rules plus a rule for `bench:{room}`, the registry on, rate limit off.",
        "- **B**: raw python-socketio `AsyncServer` on aiohttp with its defaults, no auth.",
        "- **C**: Node socket.io 4.x with its defaults and an HMAC-SHA256 token middleware.",
        f"- **{ASGI}**: the same gateway server as A, `Gateway.asgi_app()` served by "
        "uvicorn (websockets-sansio, permessage-deflate declined as A declines it); S1 "
        f"and S3 only (n/a elsewhere), the column {ASGI}/A its ratio to A on aiohttp.",
        "",
        "## Machine",
        "",
    ]
    lines += [f"- {name}: {value}" for name, value in machine().items()]
    lines.append(f"- CPU pinning: {args.pinning}")
    lines += ["", "## Versions", ""]
    lines += [f"- {name}: {value}" for name, value in versions().items()]
    lines += ["", "## Results", ""]
    lines += table_rows(results, list(results.measures.items()))
    lines += [
        "",
        f"S1 and S5: the median of {sizes.runs} runs after a warm-up run of "
        f"{sizes.warmup_count} messages per client; each measured run asks for as many "
        f"messages per client as last about {sizes.run_seconds:g} s at the warm-up's rate "
        f"({sizes.min_count} to {sizes.max_count}; S5: per room) and lasts until every "
        f"client has every message. S2: the median of {sizes.connect_runs} runs. S3: each "
        f"client calls `bench:echo` {sizes.ack_rounds} times, one at a time, after random "
        f"pauses of 0 to {2 * sizes.ack_gap:g} s (about "
        f"{sizes.ack_clients / sizes.ack_gap:,.0f} calls/s overall). S4: RSS (VmRSS) "
        f"growth of the server process from before to {sizes.idle_seconds:g} s after the "
        "connects, divided "
        "by the connections; A's tokens always carry an expiry, so every socket has its "
        "expiry timers armed, and A is measured once more with identities stripped of "
        "`expires_at` (no timers) to tell what they cost. S6 (A only, n/a elsewhere: "
        f"the others have no live expiry): {sizes.storm_steady} clients with long-lived "
        f"tokens each call `bench:echo` one at a time after random pauses of 0 to "
        f"{2 * sizes.storm_gap:g} s (about {sizes.storm_steady / sizes.storm_gap:,.0f} "
        f"calls/s overall, as in S3) while {sizes.storm_clients:,} other sockets are "
        "connected with tokens whose `exp` claim is the same second (issued by the "
        "harness with the server's key, expiry "
        f"{sizes.storm_lead:g} s after issue at most). Quiet window: from "
        f"{sizes.storm_settle:g} s after the last connect to {sizes.storm_settle:g} s "
        "before the expiry; storm window: every call in flight from the expiry to "
        f"{sizes.storm_settle:g} s after the last expired socket was disconnected "
        "(the load generator, like the official client, closes the websocket on a server "
        "disconnect). KB = 1,024 bytes.",
        "",
        *[line for name in SCENARIOS for line in results.details.get(name, [])],
        *([""] if results.details else []),
        "### Where the time went (S1, S5, S7)",
        "",
        "Server CPU time per delivery during the measured runs, how busy the load "
        "generator's own process was meanwhile (near 100% would mean the figure is "
        "bounded by the load generator, not the server), the messages per client in "
        "each measured run, and the slowest and fastest run (thousands of deliveries/s).",
        "",
    ]
    keys = [key for key, m in results.measures.items() if m.unit == "deliveries/s"]
    header = ["Scenario"]
    for spec in results.servers:
        header += [
            f"{spec.key} µs/delivery",
            f"{spec.key} load gen. busy",
            f"{spec.key} msgs/run",
            f"{spec.key} runs",
        ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in keys:
        measure = results.measures[key]
        cells = [measure.label]
        for spec in results.servers:
            cpu = results.cpu.get((key, spec.key))
            busy = results.loadgen_busy.get((key, spec.key))
            count = measure.counts.get(spec.key)
            cells.append("-" if cpu is None else f"{cpu:.2f}")
            cells.append("-" if busy is None else f"{busy:.0%}")
            cells.append("-" if count is None else str(count))
            low, high = measure.spread.get(spec.key, (0.0, 0.0))
            cells.append(f"{low / 1000:.0f}k to {high / 1000:.0f}k" if high else "-")
        lines.append("| " + " | ".join(cells) + " |")
    if results.ceiling is not None:
        lines += [
            "",
            "The load generator's ceiling: S1 once more against "
            "`benchmarks/servers/ceiling_server.py`, a server of a few lines on plain "
            "asyncio that encodes each message once down to its websocket frame and writes "
            "one buffer per socket per burst of 50 (no framework, no authentication): what "
            "the load generator alone can take. A figure above near this one, or a load "
            "generator busy near 100%, is bounded by the load generator.",
            "",
            *ceiling_lines(results.ceiling),
        ]
        bounded = generator_bounded(results)
        if bounded:
            lines += [
                "",
                "Bounded by the load generator (within 10% of its ceiling, or the load "
                "generator 90% busy or more): " + "; ".join(bounded) + ".",
            ]
    lines += ["", "## Delivery checks", ""]
    lines += [
        f"Every `bench:msg` is checked by the load generator ({args.loadgen}): each client "
        "must receive "
        "every sequence number of a run, in order, with the payload's size; S2/S4 count "
        "the connections made, S3 the acknowledgements that echoed the payload, S6 "
        "those and the expiring sockets ended as specified.",
        "",
        "| Scenario | " + " | ".join(spec.key for spec in results.servers) + " |",
        "|---|" + "---|" * len(results.servers),
    ]
    for name in SCENARIOS:
        if name == "SOAK":
            continue  # in its own section
        cells = []
        for spec in results.servers:
            check = results.checks.get((name, spec.key))
            if check is None:
                cells.append("-")
                continue
            verdict = "in order" if check.ok and name in ("S1", "S5", "S7") else "ok"
            cells.append(
                f"{check.received:,}/{check.expected:,} {verdict if check.ok else 'FAILED'}"
            )
        if any(cell != "-" for cell in cells):
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Negotiated websocket extensions", ""]
    offered = ", ".join(sorted(results.offered)) or "(none)"
    lines.append(f"The load generator offers `Sec-WebSocket-Extensions: {offered}`.")
    lines.append("")
    for spec in results.servers:
        answers = ", ".join(f"`{value}`" for value in sorted(results.extensions[spec.key]))
        lines.append(f"- {spec.key} ({spec.name}): {answers or 'not recorded'}")
    lines += ["", "## Targets", ""]
    lines += ["| Target | measured | verdict |", "|---|---|---|"]
    for target in targets:
        verdict = {True: "met", False: "**missed**", None: "not measured"}[target.met]
        lines.append(f"| {target.text} | {target.gap or '-'} | {verdict} |")
    if results.profiles or results.memory_profile is not None:
        lines += ["", "## Profiles of the missed targets", ""]
        lines.append(
            "The gateway server (A) was run once more under each scenario whose target it "
            "missed, or was asked to with `--also-profile` (those figures are not in the "
            "tables): for time, sampled by py-spy at "
            f"{PROFILE_RATE} Hz (`--nonblocking`, idle time left out) during the measured "
            "part, shares being of the samples; for memory (S4), traced by tracemalloc."
        )
        for name, profiler in results.profiles.items():
            lines += ["", f"### {name} (time, py-spy)", ""]
            if profiler.error:
                lines.append(f"py-spy failed: {profiler.error}")
            own, inclusive = profiler.top()
            if own:
                lines += ["Own time (the frame itself):", ""]
                lines += [f"- {share:.1f}% `{frame}`" for frame, share in own]
                lines += ["", "Including callees (event-loop plumbing left out):", ""]
                lines += [f"- {share:.1f}% `{frame}`" for frame, share in inclusive]
        lines += _recovery_profile(results.profiles)
    memory = results.memory_profile
    if memory is not None:
        lines += ["", "### S4 (memory, tracemalloc)", ""]
        if memory.error:
            lines.append(f"Tracing failed: {memory.error}")
        if memory.files:
            lines += [
                "The gateway server was run once more under S4 with Python's allocations "
                "traced (tracemalloc); a snapshot before and one after the "
                f"{memory.connections:,} connections, compared. The Python heap grew by "
                f"{memory.heap_kb:.1f} KB per connection (the rest of the RSS growth is memory "
                "outside Python's allocator, and allocator overhead).",
                "",
                "By package (where the memory was allocated), KB per connection:",
                "",
            ]
            lines += [f"- {kb:.2f} KB {name}" for name, kb in memory.packages if kb >= 0.05]
            lines += ["", "By file, KB per connection:", ""]
            lines += [f"- {kb:.2f} KB `{where}`" for where, kb in memory.files]
            lines += ["", "By line, KB per connection:", ""]
            lines += [f"- {kb:.2f} KB `{where}`" for where, kb in memory.lines]
    if results.soak is not None:
        lines += ["", *soak_markdown(results.soak)]
    if results.errors:
        lines += ["", "## Errors", ""]
        lines += [f"- {error}" for error in results.errors]
    return "\n".join(lines) + "\n"


LOADGEN_TEXT = {
    "node": "the official `socket.io-client` 4.x (`benchmarks/node/loadgen.cjs`, one Node "
    "process, websocket transport only, as browsers connect, offering permessage-deflate "
    "as it does), pinned to its own CPU.",
    "python": "`benchmarks/loadgen.py` (`--loadgen python`: one asyncio process, aiohttp "
    "websockets offering permessage-deflate), in the harness's own process.",
}

RECOVERY_CODE = (
    "realtime_gateway/_recovery.py",
    "realtime_gateway/_recover.py",
    "realtime_gateway._recovery.",  # attrs' generated methods
)


def _recovery_profile(profiles: dict[str, Profiler]) -> list[str]:
    """S7's two profiles compared: both servers delivered the same messages and
    py-spy counts busy samples only, so sample counts compare as time."""
    on, off = profiles.get("S7 recovery on"), profiles.get("S7 recovery off")
    if on is None or off is None or not on.samples or not off.samples:
        return []
    total_on, total_off = sum(on.samples.values()), sum(off.samples.values())
    own_on, own_off = on.own(), off.own()
    recovery = on.within(*RECOVERY_CODE)
    grown = sorted(
        ((frame, count - own_off.get(frame, 0)) for frame, count in own_on.items()),
        key=lambda item: -item[1],
    )
    lines = [
        "",
        "### S7 recovery on against off (py-spy samples)",
        "",
        "Both servers delivered the same messages while profiled, and only busy samples "
        f"count: {total_on:,} samples with recovery on, {total_off:,} off "
        f"({total_on / total_off:.3f}x). Samples in missed-message recovery's own code "
        "(`_recovery.py`, `_recover.py`, `LogEntry`'s generated `__init__`; callees "
        f"included) with recovery on: {recovery:,} ({100 * recovery / total_on:.2f}%). "
        "The frames (own time) with the most samples more with recovery on:",
        "",
    ]
    lines += [
        f"- +{count:,} `{frame}` ({own_off.get(frame, 0):,} off, {own_on[frame]:,} on)"
        for frame, count in grown[:8]
        if count > 0
    ]
    return lines


def as_json(results: Results) -> dict[str, Any]:
    return {
        "loadgen": results.loadgen,
        "servers": {spec.key: spec.name for spec in results.servers},
        "measures": {
            key: {
                "scenario": m.scenario,
                "label": m.label,
                "unit": m.unit,
                "values": m.values,
                "messages_per_run": m.counts,
                "slowest_fastest_run": m.spread,
            }
            for key, m in results.measures.items()
        },
        "cpu_per_delivery_us": {
            key: {server: value for (k, server), value in results.cpu.items() if k == key}
            for key in {k for k, _ in results.cpu}
        },
        "loadgen_busy": {
            key: {server: value for (k, server), value in results.loadgen_busy.items() if k == key}
            for key in {k for k, _ in results.loadgen_busy}
        },
        "checks": [
            {
                "scenario": check.scenario,
                "server": check.server,
                "expected": check.expected,
                "received": check.received,
                "in_order": check.in_order,
                "ok": check.ok,
                "errors": check.errors,
            }
            for check in results.checks.values()
        ],
        "extensions": {key: sorted(values) for key, values in results.extensions.items()},
        "targets": [attrs.asdict(target) for target in results.evaluate()],
        "soak": None if results.soak is None else results.soak.figures(),
        "ceiling": None
        if results.ceiling is None
        else {
            key: {
                "deliveries_per_s": m.values.get(CEILING.key),
                "loadgen_busy": results.ceiling.loadgen_busy.get((key, CEILING.key)),
                "cpu_per_delivery_us": results.ceiling.cpu.get((key, CEILING.key)),
                "ok": all(check.ok for check in results.ceiling.checks.values()),
            }
            for key, m in results.ceiling.measures.items()
        },
        "errors": results.errors,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="a handful of clients and messages")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the Markdown report")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="which scenarios (default: all)"
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVER_KEYS),
        help=f"which servers (default: {','.join(SERVER_KEYS)})",
    )
    parser.add_argument(
        "--loadgen",
        choices=sorted(GENERATORS),
        default="node",
        help="S1 to S5's load generator: Node's socket.io-client (default) or loadgen.py's",
    )
    parser.add_argument(
        "--no-profile", dest="profile", action="store_false", help="skip profiling missed targets"
    )
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false", help="do not pin processes to CPUs"
    )
    parser.add_argument(
        "--no-ceiling",
        dest="ceiling",
        action="store_false",
        help="skip S1 against the ceiling server (the load generator's own ceiling)",
    )
    parser.add_argument(
        "--also-profile", default="", help="profile these scenarios too, e.g. S1,S5"
    )
    parser.add_argument(
        "--soak-seconds", type=float, default=None, help="how long SOAK runs (default: 300)"
    )
    parser.add_argument(
        "--soak-clients", type=int, default=None, help="SOAK's churning clients (default: 2000)"
    )
    args = parser.parse_args(argv)
    args.scenarios = [name.strip().upper() for name in args.scenarios.split(",") if name.strip()]
    canonical = {key.upper(): key for key in SERVER_KEYS}
    args.servers = [
        canonical.get(name.strip().upper(), name.strip())
        for name in args.servers.split(",")
        if name.strip()
    ]
    args.also_profile = [
        name.strip().upper() for name in args.also_profile.split(",") if name.strip()
    ]
    unknown = (
        set(args.scenarios) - set(SCENARIOS)
        | set(args.servers) - set(SERVER_KEYS)
        | set(args.also_profile) - set(args.scenarios)
    )
    if unknown:
        parser.error(f"unknown scenarios or servers: {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_file_limit()
    args.pinning = pin_cpus() if args.pin else "none (--no-pin)"
    if "C" in args.servers or args.loadgen == "node":
        try:
            ensure_node_packages()
        except HarnessError as exc:
            print(f"cannot run the benchmarks: {exc}", file=sys.stderr)
            return 2
    started = time.perf_counter()
    results = asyncio.run(run(args))
    report = markdown(results, args, time.perf_counter() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    if args.json is not None:
        args.json.write_text(json.dumps(as_json(results), indent=2) + "\n")
    print()
    print("\n".join(table_rows(results, list(results.measures.items()))))
    print()
    for target in results.evaluate():
        verdict = {True: "met", False: "MISSED", None: "not measured"}[target.met]
        print(f"{verdict:>12}  {target.text}: {target.gap or '-'}")
    print(f"\nwrote {args.out}")
    failed = [check for check in results.checks.values() if not check.ok]
    for check in failed:
        print(f"FAILED: {check.scenario} on {check.server}: {'; '.join(check.errors)}")
    return 1 if failed or results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
