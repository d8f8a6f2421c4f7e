"""The soak scenario of the benchmark harness (``SOAK``): the gateway (server A) alone,
with its default limits, for minutes under churn, with one slow reader and one
flooder.

``clients`` clients each live over and over: connect, join one of ``rooms`` rooms
(``bench:join``), receive what a publisher sends to every room every ``tick``
seconds, call ``bench:echo`` after random pauses (the acknowledgement round trips
measured), and disconnect after a random life (``mean_life`` ± 50%). The run is
cut in phases, as shares of ``seconds``:

- warm-up (0 to 20%): the clients connect and the churn settles;
- quiet (20 to 50%): the baseline of the round trips;
- flood (50 to 70%): one more client sends ``bench:echo`` as fast as its
  websocket takes them (the gateway answers ``rate_limited``);
- slow reader (70 to 85%): a client with a small receive buffer stops reading
  while its user room gets broadcasts of ``slow_size`` characters; the gateway's
  ``max_pending_output`` bound must evict it (``slow_consumer``);
- tail (85 to 100%).

Then the churn stops with every client left connected (the freeze), the server's
registry is compared with the sockets the load generator holds open, and everyone
leaves. The server (``gateway_server.py`` with ``BENCH_SOAK``) reports its own RSS,
asyncio tasks, live connections, registry size and engine.io sessions on
``GET /bench/stats``, sampled every ``sample_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import attrs
from loadgen import Client, LoadGenerator

from realtime_gateway import GatewayConfig

CALL_TIMEOUT = 30.0
SETTLE_WITHIN = 15.0  # seconds for the server's figures to match after the freeze
PHASES = (
    ("warm-up", 0.0),
    ("quiet", 0.2),
    ("flood", 0.5),
    ("slow reader", 0.7),
    ("tail", 0.85),
)
FLOOD_BATCH = 50  # events the flooder writes before letting the other clients run
SLOW_USER = "soak-slow-reader"
FLOOD_USER = "soak-flooder"
RSS_FLAT = 0.10  # RSS after warm-up: (max - min) / min at most this
TASKS_FLAT = 0.10  # tasks: tail mean within this share of the quiet mean
ACK_RATIO = 3.0  # ack p99 during the flood at most this many times the quiet one


@attrs.frozen
class SoakSizes:
    """How big and long the soak is."""

    clients: int
    seconds: float
    rooms: int
    mean_life: float  # seconds a client stays connected, on average
    echo_gap: float  # mean seconds between two bench:echo calls of one client
    tick: float  # seconds between two publisher rounds (one message to every room)
    sample_interval: float  # seconds between two samples of the server's figures
    connect_concurrency: int  # connects in progress at once
    slow_size: int  # characters of each broadcast to the slow reader's user room
    slow_batch: int  # broadcasts per bench:fanout call
    slow_receive_buffer: int  # the slow reader's SO_RCVBUF (bytes)


FULL_SOAK = SoakSizes(
    clients=2000,
    seconds=300.0,
    rooms=100,
    mean_life=20.0,
    echo_gap=2.0,
    tick=0.5,
    sample_interval=1.0,
    connect_concurrency=50,
    slow_size=50_000,
    slow_batch=20,
    slow_receive_buffer=4096,
)
SMOKE_SOAK = SoakSizes(
    clients=20,
    seconds=8.0,
    rooms=4,
    mean_life=1.5,
    echo_gap=0.1,
    tick=0.1,
    sample_interval=0.2,
    connect_concurrency=10,
    slow_size=50_000,
    slow_batch=20,
    slow_receive_buffer=4096,
)


def phase_at(share: float) -> str:
    """The phase a moment belongs to, ``share`` being the part of the run gone."""
    current = PHASES[0][0]
    for name, start in PHASES:
        if share >= start:
            current = name
    return current


def _window(name: str) -> tuple[float, float]:
    starts = [start for _, start in PHASES] + [1.0]
    index = [phase for phase, _ in PHASES].index(name)
    return starts[index], starts[index + 1]


class SoakClient(Client):
    """A churning client: counts the ``bench:msg`` messages it gets."""

    received = 0

    def _message(self, seq: int, size: int) -> None:
        self.received += 1


class FloodClient(Client):
    """The flooder: counts the acknowledgements and the ``rate_limited`` ones among
    them, without decoding them."""

    answers = 0
    rate_limited = 0

    def _ack(self, data: str) -> None:
        self.answers += 1
        if '"rate_limited"' in data:
            self.rate_limited += 1


@attrs.define
class Sample:
    """The server's figures at one moment (``t`` seconds into the run)."""

    t: float
    phase: str
    rss_kib: int
    tasks: int
    ping_timers: int  # python-engineio ping timers among the tasks
    connections: int
    registry: int
    eio_sessions: int
    slow_consumers: int
    rate_limited: int  # events refused rate_limited so far
    user_sockets: int | None = None
    by_coroutine: dict[str, int] = attrs.field(factory=dict)  # the most frequent tasks
    server_cpu: float = 0.0  # the server's CPU seconds so far
    loadgen_cpu: float = 0.0  # the load generator's CPU seconds so far

    @classmethod
    def parse(cls, t: float, phase: str, figures: dict[str, Any]) -> Sample:
        return cls(
            t=t,
            phase=phase,
            rss_kib=int(figures["rss_kib"]),
            tasks=int(figures["tasks"]),
            ping_timers=int(figures["ping_timers"]),
            connections=int(figures["connections"]),
            registry=int(figures["registry"]),
            eio_sessions=int(figures["eio_sessions"]),
            slow_consumers=int(figures["slow_consumers"]),
            rate_limited=int(figures["events_refused"].get("rate_limited", 0)),
            user_sockets=figures.get("user_sockets"),
            by_coroutine=dict(figures["tasks_by_coroutine"]),
            server_cpu=float(figures["cpu_seconds"]),
            loadgen_cpu=time.process_time(),
        )

    def matches(self, live: int) -> bool:
        """Registry, live connections and engine.io sessions all equal ``live``."""
        return self.registry == self.connections == self.eio_sessions == live


@attrs.define
class SlowReader:
    """What became of the slow reader."""

    evicted: bool = False
    seconds: float | None = None  # from the first broadcast to the eviction
    broadcasts: int = 0  # broadcasts of slow_size sent to its user room meanwhile
    registry_cleaned: bool = False  # the registry held none of its sockets afterwards
    rss_before_kib: int = 0
    rss_peak_kib: int = 0


@attrs.define
class Flooder:
    """What the flooder sent and was answered."""

    seconds: float = 0.0
    sent: int = 0
    answers: int = 0
    rate_limited: int = 0
    server_rate_limited: int = 0  # the server's count of rate_limited refusals meanwhile
    connects: int = 0
    connect_failures: int = 0


@attrs.define
class SoakReport:
    """Everything the soak measured; :meth:`figures` computes the verdicts."""

    sizes: SoakSizes
    samples: list[Sample] = attrs.field(factory=list)
    idle: Sample | None = None  # the controller alone, before the churn
    frozen: Sample | None = None  # at the freeze, once settled
    drained: Sample | None = None  # the controller alone again, once settled
    closed: Sample | None = None  # after everyone left, once settled
    held: int = 0  # sockets the load generator held open at the freeze
    settle_seconds: float = 0.0  # how long the figures took to match at the freeze
    lives: int = 0  # client lives completed (connect .. disconnect)
    lives_checked: int = 0  # lives long enough that a message had to arrive
    lives_without_messages: int = 0
    messages: int = 0
    connect_failures: int = 0
    publisher_rounds: int = 0
    echo_ms: dict[str, list[float]] = attrs.field(factory=dict)
    echo_failed: Counter[str] = attrs.field(factory=Counter)  # no answer (by phase)
    echo_wrong: Counter[str] = attrs.field(factory=Counter)  # a wrong answer (by phase)
    slow: SlowReader = attrs.field(factory=SlowReader)
    flood: Flooder = attrs.field(factory=Flooder)
    errors: list[str] = attrs.field(factory=list)

    def error(self, text: str) -> None:
        if len(self.errors) < 10:
            self.errors.append(text)

    def figures(self) -> dict[str, Any]:
        """The report's figures and verdicts, as JSON data."""
        after = [s for s in self.samples if s.phase != "warm-up"]
        rss = [s.rss_kib for s in after]
        # Per live connection: the churn moves how many are connected at a moment.
        quiet_tasks = [s.tasks / max(1, s.connections) for s in after if s.phase == "quiet"]
        tail_tasks = [s.tasks / max(1, s.connections) for s in after if s.phase == "tail"]
        quiet = sorted(self.echo_ms.get("quiet", []))
        flood = sorted(self.echo_ms.get("flood", []))
        figures: dict[str, Any] = {
            "clients": self.sizes.clients,
            "seconds": self.sizes.seconds,
            "samples": len(self.samples),
        }
        if rss:
            low, high = min(rss), max(rss)
            figures["rss"] = {
                "idle_mib": _mib(self.idle.rss_kib) if self.idle else None,
                "warm_mib": _mib(rss[0]),
                "min_mib": _mib(low),
                "max_mib": _mib(high),
                "end_mib": _mib(rss[-1]),
                "spread": (high - low) / low,
                "flat": (high - low) / low <= RSS_FLAT,
            }
        if quiet_tasks and tail_tasks:
            head, tail = statistics.mean(quiet_tasks), statistics.mean(tail_tasks)
            figures["tasks"] = {
                "idle": self.idle.tasks if self.idle else None,
                "quiet_mean": head,
                "tail_mean": tail,
                "max": max(s.tasks for s in after),
                "flood_max": max((s.tasks for s in after if s.phase == "flood"), default=0),
                "drift": (tail - head) / head,
                "drained": self.drained.tasks if self.drained else None,
                "drained_ping_timers": self.drained.ping_timers if self.drained else None,
                "flat": abs(tail - head) / head <= TASKS_FLAT,
                "back_to_idle": (
                    self.drained is not None
                    and self.idle is not None
                    and self.drained.tasks - self.drained.ping_timers
                    <= self.idle.tasks - self.idle.ping_timers
                ),
            }
        if self.frozen is not None and self.closed is not None:
            figures["registry"] = {
                "held": self.held,
                "frozen": attrs.asdict(self.frozen),
                "drained": None if self.drained is None else attrs.asdict(self.drained),
                "closed": attrs.asdict(self.closed),
                "settle_seconds": self.settle_seconds,
                "equal": self.frozen.matches(self.held)
                and self.drained is not None
                and self.drained.matches(1)
                and self.closed.matches(0),
            }
        if quiet and flood:
            figures["acks"] = {
                "quiet_calls": len(quiet),
                "flood_calls": len(flood),
                "quiet_p50_ms": _percentile(quiet, 50),
                "quiet_p99_ms": _percentile(quiet, 99),
                "flood_p50_ms": _percentile(flood, 50),
                "flood_p99_ms": _percentile(flood, 99),
                "ratio": _percentile(flood, 99) / _percentile(quiet, 99),
                "met": _percentile(flood, 99) <= ACK_RATIO * _percentile(quiet, 99),
                "failed": dict(self.echo_failed),
                "wrong": dict(self.echo_wrong),
            }
        figures["slow_reader"] = attrs.asdict(self.slow)
        figures["slow_consumers_total"] = self.closed.slow_consumers if self.closed else None
        figures["flooder"] = attrs.asdict(self.flood)
        figures["churn"] = {
            "lives": self.lives,
            "connects_per_s": self.lives / self.sizes.seconds,
            "connect_failures": self.connect_failures,
            "lives_checked": self.lives_checked,
            "lives_without_messages": self.lives_without_messages,
            "messages": self.messages,
            "publisher_rounds": self.publisher_rounds,
        }
        figures["loadgen_busy"] = self.busy("loadgen_cpu")
        figures["server_busy"] = self.busy("server_cpu")
        figures["errors"] = list(self.errors)
        return figures

    def busy(self, field: str) -> dict[str, float]:
        """The CPU share in each phase of the load generator (``loadgen_cpu``) or
        the server (``server_cpu``)."""
        busy: dict[str, float] = {}
        for name, _ in PHASES:
            inside = [s for s in self.samples if s.phase == name]
            if len(inside) >= 2 and inside[-1].t > inside[0].t:
                cpu = getattr(inside[-1], field) - getattr(inside[0], field)
                busy[name] = cpu / (inside[-1].t - inside[0].t)
        return busy

    def problems(self) -> list[str]:
        """What went wrong (not performance: correctness and the bounds)."""
        found = list(self.errors)
        figures = self.figures()
        registry = figures.get("registry")
        if registry is None:
            found.append("the run did not reach the freeze")
        elif not registry["equal"]:
            found.append(
                f"registry {registry['frozen']['registry']}, connections "
                f"{registry['frozen']['connections']}, engine.io sessions "
                f"{registry['frozen']['eio_sessions']} at the freeze for {self.held} "
                f"sockets held; {registry['closed']['registry']} left after closing"
            )
        if not self.slow.evicted:
            found.append("the slow reader was not evicted")
        elif not self.slow.registry_cleaned:
            found.append("the slow reader's socket stayed in the registry")
        # Answers past the socket's burst must include refusals. A flooder answered
        # little or nothing within the window is not a failure: the gateway stops
        # reading a connection whose events it has not answered yet.
        if self.flood.answers > GatewayConfig().rate_burst and self.flood.rate_limited == 0:
            found.append("the flooder was answered past its burst, never rate_limited")
        if self.lives_without_messages:
            found.append(f"{self.lives_without_messages} client lives got no message")
        if self.connect_failures:
            found.append(f"{self.connect_failures} connects failed")
        for kind, counts in (("unanswered", self.echo_failed), ("wrong", self.echo_wrong)):
            if sum(counts.values()):
                found.append(f"{sum(counts.values())} bench:echo calls {kind}")
        return found


def _mib(kib: int) -> float:
    return kib / 1024


def _percentile(ordered: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return float("nan")
    rank = max(1, round(percent / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``; whether it is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), max(0.0, seconds))
    return event.is_set()


def _succeeded(answer: Any) -> bool:
    return isinstance(answer, dict) and answer.get("success") is True


class Soak:
    """One soak run against the server at ``url``; ``token(user_id)`` makes the
    clients' tokens."""

    def __init__(
        self, sizes: SoakSizes, url: str, token: Callable[[str], str | None], seed: int = 11
    ) -> None:
        self.sizes = sizes
        self.url = url
        self.token = token
        self.report = SoakReport(sizes)
        self.rng = random.Random(seed)  # noqa: S311 (pacing, not secrets)
        self.stopping = asyncio.Event()
        self.gate = asyncio.Semaphore(sizes.connect_concurrency)
        self.started = 0.0
        self.echo_seq = 0
        self._http: aiohttp.ClientSession | None = None
        self._gen: LoadGenerator | None = None

    # -- time -----------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def phase(self) -> str:
        return phase_at(self.elapsed() / self.sizes.seconds)

    async def until(self, share: float) -> None:
        await asyncio.sleep(max(0.0, share * self.sizes.seconds - self.elapsed()))

    # -- the server's figures ---------------------------------------------------------

    async def sample(self, user: str | None = None) -> Sample:
        assert self._http is not None
        params = {} if user is None else {"user": user}
        async with self._http.get(f"{self.url}/bench/stats", params=params) as response:
            response.raise_for_status()
            figures = await response.json()
        t = self.elapsed() if self.started else 0.0
        return Sample.parse(t, self.phase() if self.started else "idle", figures)

    async def settle(self, live: int, *, tasks: int | None = None) -> tuple[Sample, float]:
        """Sample until the registry, the connections and the engine.io sessions all
        equal ``live`` (a disconnect in flight finishes), and the tasks but ping
        timers number at most ``tasks`` if given (a close in flight finishes too), at
        most ``SETTLE_WITHIN`` seconds; the last sample and the seconds it took."""
        began = time.perf_counter()
        while True:
            found = await self.sample()
            waited = time.perf_counter() - began
            settled = found.matches(live) and (
                tasks is None or found.tasks - found.ping_timers <= tasks
            )
            if settled or waited > SETTLE_WITHIN:
                return found, waited
            await asyncio.sleep(0.05)

    async def sampler(self) -> None:
        while True:
            self.report.samples.append(await self.sample())
            await asyncio.sleep(self.sizes.sample_interval)

    # -- the run ----------------------------------------------------------------------

    async def run(self) -> SoakReport:
        report = self.report
        async with (
            # One keep-alive connection for the samples: its handler is one known task.
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http,
            LoadGenerator(self.url, client_class=SoakClient) as gen,
        ):
            self._http, self._gen = http, gen
            controller = await gen.connect(self.token("soak-controller"))
            report.idle = await self.sample()
            self.started = time.perf_counter()
            background = [
                asyncio.create_task(self.sampler()),
                asyncio.create_task(self.publisher(controller)),
                asyncio.create_task(self.flooder()),
                asyncio.create_task(self.slow_reader(controller)),
            ]
            slots = [asyncio.create_task(self.slot(index)) for index in range(self.sizes.clients)]
            try:
                await asyncio.sleep(self.sizes.seconds)
                self.stopping.set()
                held = [client for client in await asyncio.gather(*slots) if client is not None]
                for task in background:
                    task.cancel()
                for outcome in await asyncio.gather(*background, return_exceptions=True):
                    if isinstance(outcome, Exception):
                        report.error(f"{type(outcome).__name__}: {outcome}")
                live = [client for client in held if not client.closed.is_set()]
                report.held = len(live) + 1  # and the controller
                report.frozen, report.settle_seconds = await self.settle(report.held)
                await _close_all(live)
                idle = report.idle
                report.drained, _ = await self.settle(
                    1, tasks=None if idle is None else idle.tasks - idle.ping_timers
                )
                await controller.close()
                report.closed, _ = await self.settle(0)
            finally:
                for pending in (*slots, *background):
                    pending.cancel()
                await asyncio.gather(*slots, *background, return_exceptions=True)
        return report

    async def slot(self, index: int) -> SoakClient | None:
        """One client's lives, until the freeze; returns the client then connected."""
        sizes, report = self.sizes, self.report
        room = f"bench:{index % sizes.rooms}"
        life = self.rng.uniform(0, 2 * sizes.mean_life)  # spread the first departures
        while not self.stopping.is_set():
            assert self._gen is not None
            async with self.gate:
                if self.stopping.is_set():
                    return None
                try:
                    client = await self._gen.connect(self.token(f"soak-{index}"))
                except Exception as exc:
                    report.connect_failures += 1
                    report.error(f"connect: {type(exc).__name__}: {exc}")
                    await _wait(self.stopping, 0.5)
                    continue
            assert isinstance(client, SoakClient)
            joined = time.perf_counter()
            try:
                answer = await client.call("bench:join", room, within=CALL_TIMEOUT)
                if not _succeeded(answer):
                    report.error(f"bench:join answered {answer!r}")
                deadline = joined + life
                while not client.closed.is_set():
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    pause = min(self.rng.uniform(0, 2 * sizes.echo_gap), left)
                    if await _wait(self.stopping, pause):
                        break
                    await self.echo(client)
            except Exception as exc:
                report.error(f"client life: {type(exc).__name__}: {exc}")
            if self.stopping.is_set() and not client.closed.is_set():
                return client
            lasted = time.perf_counter() - joined
            report.lives += 1
            report.messages += client.received
            if lasted >= 4 * sizes.tick + 1.0:
                report.lives_checked += 1
                if client.received == 0:
                    report.lives_without_messages += 1
            await client.close()
            life = self.rng.uniform(0.5 * sizes.mean_life, 1.5 * sizes.mean_life)
        return None

    async def echo(self, client: Client) -> None:
        self.echo_seq += 1
        payload = {"n": self.echo_seq, "text": "x" * 64}
        phase = self.phase()
        began = time.perf_counter()
        try:
            answer = await client.call("bench:echo", payload, within=CALL_TIMEOUT)
        except Exception:
            self.report.echo_failed[phase] += 1
            return
        took = (time.perf_counter() - began) * 1000
        if answer == {"success": True, "payload": payload}:
            self.report.echo_ms.setdefault(phase, []).append(took)
        else:
            self.report.echo_wrong[phase] += 1
            self.report.error(f"bench:echo answered {answer!r}")

    async def publisher(self, controller: Client) -> None:
        """One 100-character message to every room every ``tick`` seconds."""
        request = {"rooms": self.sizes.rooms, "count": 1, "size": 100}
        while not self.stopping.is_set():
            began = time.perf_counter()
            answer = await controller.call("bench:rooms", request, within=CALL_TIMEOUT)
            if _succeeded(answer):
                self.report.publisher_rounds += 1
            else:
                self.report.error(f"bench:rooms answered {answer!r}")
            await _wait(self.stopping, self.sizes.tick - (time.perf_counter() - began))

    async def flooder(self) -> None:
        """During the flood window, one client sends ``bench:echo`` as fast as its
        websocket takes them (reconnecting if the gateway drops it)."""
        start, end = _window("flood")
        await self.until(start)
        flood = self.report.flood
        before = await self.sample()
        began = time.perf_counter()
        until = began + (end - start) * self.sizes.seconds
        async with LoadGenerator(self.url, client_class=FloodClient) as gen:
            clients: list[FloodClient] = []
            while time.perf_counter() < until:
                try:
                    client = await gen.connect(self.token(FLOOD_USER))
                except Exception:
                    flood.connect_failures += 1
                    await asyncio.sleep(0.2)
                    continue
                assert isinstance(client, FloodClient)
                clients.append(client)
                flood.connects += 1
                sent = 0
                # The gateway may stop reading (TCP holds the flooder back): not past
                # the window's end.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(max(0.0, until - time.perf_counter())):
                        while not client.closed.is_set():
                            for _ in range(FLOOD_BATCH):
                                await client.ws.send_str(f'42{sent}["bench:echo",{sent}]')
                                sent += 1
                            await asyncio.sleep(0)
                flood.sent += sent
            flood.seconds = time.perf_counter() - began
            await _close_all(clients)
            # Sampled once the clients are closed: every answer they counted was
            # counted by the server first (one could still be arriving at the end of
            # a fixed wait, and the client would count more than the server).
            after = await self.sample()
        flood.answers = sum(client.answers for client in clients)
        flood.rate_limited = sum(client.rate_limited for client in clients)
        flood.server_rate_limited = after.rate_limited - before.rate_limited

    async def slow_reader(self, controller: Client) -> None:
        """During its window, a client that stopped reading while its user room gets
        broadcasts of ``slow_size`` characters, until the gateway evicts it."""
        sizes, slow = self.sizes, self.report.slow
        start, end = _window("slow reader")
        await self.until(start)
        until = time.perf_counter() + (end - start) * sizes.seconds
        request = {"room": f"user:{SLOW_USER}", "count": sizes.slow_batch, "size": sizes.slow_size}
        async with LoadGenerator(self.url, receive_buffer=sizes.slow_receive_buffer) as gen:
            client = await gen.connect(self.token(SLOW_USER))
            try:
                await client.stop_reading()
                before = await self.sample(SLOW_USER)
                slow.rss_before_kib = slow.rss_peak_kib = before.rss_kib
                began = time.perf_counter()
                while time.perf_counter() < until:
                    answer = await controller.call("bench:fanout", request, within=CALL_TIMEOUT)
                    if not _succeeded(answer):
                        self.report.error(f"bench:fanout answered {answer!r}")
                    slow.broadcasts += sizes.slow_batch
                    now = await self.sample(SLOW_USER)
                    slow.rss_peak_kib = max(slow.rss_peak_kib, now.rss_kib)
                    if now.slow_consumers > before.slow_consumers:
                        slow.evicted = True
                        slow.seconds = time.perf_counter() - began
                        break
                while slow.evicted and time.perf_counter() < until + SETTLE_WITHIN:
                    if (await self.sample(SLOW_USER)).user_sockets == 0:
                        slow.registry_cleaned = True
                        break
                    await asyncio.sleep(0.05)
            finally:
                await client.close()


async def _close_all(clients: Sequence[Client]) -> None:
    for start in range(0, len(clients), 200):
        await asyncio.gather(*(client.close() for client in clients[start : start + 200]))


# -- the report -------------------------------------------------------------------------


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[met]


def markdown(report: SoakReport) -> list[str]:
    """The soak's section of RESULTS.md."""
    sizes, figures = report.sizes, report.figures()
    lines = [
        "## Soak: churn, a slow reader and a flooder (server A only)",
        "",
        f"{sizes.clients:,} clients for {sizes.seconds:g} s against the gateway with its "
        "default limits (`rate_limit` 50/s burst 100, `max_pending_output` 1 MiB): each "
        f"client connects, joins one of {sizes.rooms} rooms, receives the publisher's "
        f"100-character message to every room every {sizes.tick:g} s, calls `bench:echo` "
        f"after random pauses of 0 to {2 * sizes.echo_gap:g} s, and disconnects after a "
        f"random life of {sizes.mean_life:g} s ± 50%, then connects again "
        f"({sizes.connect_concurrency} connects at a time at most). Phases: warm-up "
        "0-20%, quiet 20-50% (the baseline), flood 50-70% (one more client writes "
        "`bench:echo` events as fast as its websocket takes them), slow reader 70-85% "
        f"(a client with a {sizes.slow_receive_buffer:,}-byte receive buffer stops reading "
        f"while its user room gets broadcasts of {sizes.slow_size:,} characters), tail "
        "85-100%. Then the churn stops with every client left connected (the freeze), "
        "and everyone leaves. The server reports its own figures (`GET /bench/stats`, "
        f"every {sizes.sample_interval:g} s); the load generator's garbage collector "
        "stays on.",
        "",
        "| Figure | measured | target | verdict |",
        "|---|---|---|---|",
    ]
    rss = figures.get("rss")
    if rss:
        lines.append(
            f"| RSS after warm-up, min to max (idle {rss['idle_mib']:.1f} MiB) | "
            f"{rss['min_mib']:.1f} to {rss['max_mib']:.1f} MiB ({rss['spread']:.1%}); "
            f"end {rss['end_mib']:.1f} MiB | within {RSS_FLAT:.0%} | {_verdict(rss['flat'])} |"
        )
    tasks = figures.get("tasks")
    if tasks:
        lines.append(
            f"| asyncio tasks per live connection, quiet mean to tail mean | "
            f"{tasks['quiet_mean']:.2f} to {tasks['tail_mean']:.2f} ({tasks['drift']:+.1%}); "
            f"max {tasks['max']:,} tasks "
            f"(flood {tasks['flood_max']:,}) | within {TASKS_FLAT:.0%} | "
            f"{_verdict(tasks['flat'])} |"
        )
        lines.append(
            f"| asyncio tasks with the controller alone, before and after the churn | "
            f"{tasks['idle']}, {tasks['drained']} of which {tasks['drained_ping_timers']:,} "
            "python-engineio ping timers of closed sockets (they end within "
            "`ping_interval`) | the same but for those | "
            f"{_verdict(tasks['back_to_idle'])} |"
        )
    registry = figures.get("registry")
    if registry:
        frozen, drained, closed = registry["frozen"], registry["drained"], registry["closed"]
        lines.append(
            "| at the freeze: registry, `gateway.connections`, engine.io sessions, "
            f"sockets the clients held | {frozen['registry']:,}, {frozen['connections']:,}, "
            f"{frozen['eio_sessions']:,}, {registry['held']:,} (settled in "
            f"{registry['settle_seconds']:.2f} s); with the controller alone: "
            f"{drained['registry']}, {drained['connections']}, {drained['eio_sessions']}; "
            "after everyone left: "
            f"{closed['registry']}, {closed['connections']}, {closed['eio_sessions']} | "
            f"equal; 1; 0 | {_verdict(registry['equal'])} |"
        )
    acks = figures.get("acks")
    if acks:
        lines.append(
            f"| ack p99 quiet, during the flood (p50) | {acks['quiet_p99_ms']:.2f} ms, "
            f"{acks['flood_p99_ms']:.2f} ms ({acks['quiet_p50_ms']:.2f}, "
            f"{acks['flood_p50_ms']:.2f}); {acks['ratio']:.2f}x; "
            f"{acks['quiet_calls']:,} and {acks['flood_calls']:,} calls | "
            f"at most {ACK_RATIO:g}x | {_verdict(acks['met'])} |"
        )
    slow = report.slow
    if slow.evicted:
        told = (
            f"evicted (`slow_consumer`) {slow.seconds:.2f} s after the first broadcast, "
            f"{slow.broadcasts} broadcasts sent; registry "
            f"{'cleaned' if slow.registry_cleaned else '**kept its socket**'}; server RSS "
            f"{_mib(slow.rss_before_kib):.1f} MiB before, peak {_mib(slow.rss_peak_kib):.1f}"
        )
    else:
        told = f"**not evicted** after {slow.broadcasts} broadcasts"
    lines.append(
        f"| slow reader | {told} | evicted by the bound | "
        f"{_verdict(slow.evicted and slow.registry_cleaned)} |"
    )
    flood = report.flood
    rate = flood.sent / flood.seconds if flood.seconds else 0.0
    lines.append(
        f"| flooder | {flood.sent:,} events in {flood.seconds:.0f} s ({rate:,.0f}/s), "
        f"{flood.answers:,} answered, {flood.rate_limited:,} of them `rate_limited` "
        f"(server: {flood.server_rate_limited:,}); {flood.connects} connection(s) | "
        f"rate limited past its burst | "
        f"{_verdict(flood.answers <= GatewayConfig().rate_burst or flood.rate_limited > 0)} |"
    )
    churn = figures["churn"]
    lines.append(
        f"| churn | {churn['lives']:,} client lives ({churn['connects_per_s']:.0f} connects/s), "
        f"{churn['connect_failures']} connects failed, {churn['messages']:,} messages "
        f"received, {churn['lives_without_messages']} of {churn['lives_checked']:,} long "
        f"lives without a message; {churn['publisher_rounds']:,} publisher rounds; "
        f"`slow_consumer` evictions in all: {figures['slow_consumers_total']} | "
        f"every life served | {_verdict(not report.problems())} |"
    )
    lines.append("")
    for key, who in (("server_busy", "Server"), ("loadgen_busy", "Load generator")):
        busy = ", ".join(f"{name} {share:.0%}" for name, share in figures[key].items())
        lines.append(f"{who} busy (CPU share of its one process) by phase: {busy}.")
    lines.append("")
    lines += [
        "Over time (the server's own figures):",
        "",
        "| t (s) | phase | RSS (MiB) | asyncio tasks | connections | registry | "
        "engine.io sessions |",
        "|---|---|---|---|---|---|---|",
    ]
    for sample in _spread(report.samples, 16):
        lines.append(
            f"| {sample.t:.0f} | {sample.phase} | {_mib(sample.rss_kib):.1f} | "
            f"{sample.tasks:,} | {sample.connections:,} | {sample.registry:,} | "
            f"{sample.eio_sessions:,} |"
        )
    if report.problems():
        lines += ["", "Problems:", ""]
        lines += [f"- {problem}" for problem in report.problems()]
    return lines


def _spread(samples: Sequence[Sample], rows: int) -> list[Sample]:
    if len(samples) <= rows:
        return list(samples)
    step = (len(samples) - 1) / (rows - 1)
    return [samples[round(index * step)] for index in range(rows)]
