"""The load generators the harness drives scenarios S1 to S5 with, behind one interface.

- :class:`NodeGenerator` (the default): the official ``socket.io-client`` 4.x in one
  Node process (``node/loadgen.cjs``), websocket transport only, as a browser's
  client connects; the harness sends it one JSON command per line on stdin and reads
  one JSON answer per line on stdout. It runs on the load generator's CPU (pinned
  with ``taskset``, as the servers are on theirs). With ``BENCH_LOADGEN_CPU_PROF`` set
  to a folder, each Node process writes its V8 CPU profile there (``--cpu-prof``) as
  it exits: where the load generator's own time goes.
- :class:`PythonGenerator` (``--loadgen python``): ``loadgen.py``'s asyncio clients in
  the harness's own process, a second opinion.

Both hand out clients as integers, check every ``bench:msg`` the same way (each
client gets every sequence number of a run, in order, each payload of the announced
size) and report their own CPU time, so that the harness can tell how busy the load
generator was.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import attrs
from loadgen import Client, Delivery, LoadGenerator, ProtocolError, close_all

BENCH_DIR = Path(__file__).resolve().parent
NODE_LOADGEN = BENCH_DIR / "node" / "loadgen.cjs"
START_TIMEOUT = 30.0  # seconds for the Node process to answer its first command
EXIT_TIMEOUT = 10.0  # seconds for it to exit once asked, before SIGKILL
STDOUT_LIMIT = 1 << 26  # bytes: one answer line may carry every round trip of S3


@attrs.frozen
class RunResult:
    """One run of ``bench:msg`` messages as a load generator checked it."""

    expected: int
    received: int
    in_order: bool
    errors: list[str]
    elapsed: float  # seconds from the request to the last delivery
    own_cpu: float  # CPU seconds the load generator used meanwhile


@attrs.frozen
class AckResult:
    """S3's calls: how many were made, how many echoed their payload, the round trips."""

    expected: int
    received: int
    errors: list[str]
    round_trips_ms: list[float]


class Generator(Protocol):
    """What the scenarios S1 to S5 need of a load generator."""

    name: str
    offered: set[str]
    extensions: set[str]

    async def connect_many(
        self, tokens: Sequence[str | None], *, concurrency: int
    ) -> tuple[list[int], float]:
        """One client per token, ``concurrency`` at a time: their ids and the seconds
        it took; raises (having closed those opened) if one fails."""
        ...

    async def call_all(
        self, clients: Sequence[int], event: str, args: Sequence[Any], *, within: float
    ) -> list[Any]:
        """Client ``i`` calls ``event`` with ``args[i]``: the acknowledgements' values."""
        ...

    async def deliver(
        self,
        clients: Sequence[int],
        controller: int,
        event: str,
        request: dict[str, Any],
        count: int,
        size: int,
        *,
        within: float,
    ) -> RunResult:
        """Every client of ``clients`` expects ``count`` messages of ``size``; the
        controller asks for them with ``event``."""
        ...

    async def acks(
        self,
        clients: Sequence[int],
        rounds: int,
        gap: float,
        *,
        seed: int,
        text: str,
        record: bool,
        within: float,
    ) -> AckResult:
        """Each client calls ``bench:echo`` ``rounds`` times, one at a time, after
        random pauses of 0 to ``2 * gap`` seconds."""
        ...

    async def close(self, clients: Sequence[int]) -> None:
        """Disconnect these clients."""
        ...

    async def refresh_extensions(self) -> None:
        """Update :attr:`offered` and :attr:`extensions` (``Sec-WebSocket-Extensions``)."""
        ...


class NodeGenerator:
    """``node/loadgen.cjs`` as a subprocess, driving clients of ``url``."""

    name = "node"
    pin: int | None = None  # the CPU it is pinned to (the harness's)

    def __init__(self, url: str, log_dir: Path) -> None:
        self.url = url
        self.log_path = log_dir / f"loadgen-node-{id(self):x}.log"
        self.offered: set[str] = set()
        self.extensions: set[str] = set()
        self.process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._next = 0
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> NodeGenerator:
        pin = () if self.pin is None else ("taskset", "-c", str(self.pin))
        node = shutil.which("node") or "node"
        profile_to = os.environ.get("BENCH_LOADGEN_CPU_PROF")
        profile = () if not profile_to else ("--cpu-prof", f"--cpu-prof-dir={profile_to}")
        self._log = self.log_path.open("wb")
        try:
            self.process = await asyncio.create_subprocess_exec(
                *pin,
                node,
                *profile,
                str(NODE_LOADGEN),
                "--url",
                self.url,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._log,
                cwd=BENCH_DIR / "node",
                limit=STDOUT_LIMIT,
            )
            await asyncio.wait_for(self._command("cpu"), START_TIMEOUT)
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._command("exit"), EXIT_TIMEOUT)
            try:
                await asyncio.wait_for(process.wait(), EXIT_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def _command(self, op: str, **fields: Any) -> dict[str, Any]:
        process = self.process
        assert process is not None
        assert process.stdin is not None
        assert process.stdout is not None
        async with self._lock:
            self._next += 1
            ident = self._next
            line = json.dumps({"id": ident, "op": op, **fields}, separators=(",", ":"))
            process.stdin.write(line.encode() + b"\n")
            await process.stdin.drain()
            answer = await process.stdout.readline()
        if not answer:
            raise ProtocolError(f"the Node load generator exited: {self.log_tail(800)}")
        reply: dict[str, Any] = json.loads(answer)
        if reply.get("id") != ident:
            raise ProtocolError(f"the Node load generator answered {answer[:200]!r}")
        if "error" in reply:
            raise ProtocolError(f"{op}: {reply['error']}")
        return reply

    async def connect_many(
        self, tokens: Sequence[str | None], *, concurrency: int
    ) -> tuple[list[int], float]:
        reply = await self._command(
            "connect", tokens=list(tokens), concurrency=concurrency, timeout=15
        )
        return list(reply["clients"]), float(reply["elapsed"])

    async def call_all(
        self, clients: Sequence[int], event: str, args: Sequence[Any], *, within: float
    ) -> list[Any]:
        reply = await self._command(
            "call", clients=list(clients), event=event, args=list(args), timeout=within
        )
        return list(reply["answers"])

    async def deliver(
        self,
        clients: Sequence[int],
        controller: int,
        event: str,
        request: dict[str, Any],
        count: int,
        size: int,
        *,
        within: float,
    ) -> RunResult:
        reply = await self._command(
            "deliver",
            clients=list(clients),
            controller=controller,
            event=event,
            request=request,
            count=count,
            size=size,
            timeout=within,
        )
        summary = reply["delivery"]
        return RunResult(
            expected=summary["expected"],
            received=summary["received"],
            in_order=summary["in_order"],
            errors=list(summary["errors"]),
            elapsed=float(reply["elapsed"]),
            own_cpu=float(reply["cpu"]),
        )

    async def acks(
        self,
        clients: Sequence[int],
        rounds: int,
        gap: float,
        *,
        seed: int,
        text: str,
        record: bool,
        within: float,
    ) -> AckResult:
        reply = await self._command(
            "acks",
            clients=list(clients),
            rounds=rounds,
            gap=gap,
            seed=seed,
            text=text,
            record=record,
            timeout=within,
        )
        return AckResult(
            expected=reply["expected"],
            received=reply["received"],
            errors=list(reply["errors"]),
            round_trips_ms=[float(value) for value in reply["round_trips"]],
        )

    async def close(self, clients: Sequence[int]) -> None:
        await self._command("close", clients=list(clients))

    async def refresh_extensions(self) -> None:
        reply = await self._command("extensions")
        self.offered |= set(reply["offered"])
        self.extensions |= set(reply["negotiated"])


class PythonGenerator:
    """``loadgen.py``'s clients, in this process."""

    name = "python"

    def __init__(self, url: str, log_dir: Path) -> None:
        self._gen = LoadGenerator(url)
        self._clients: dict[int, Client] = {}
        self._next = 0
        self.offered: set[str] = set()
        self.extensions: set[str] = set()

    async def __aenter__(self) -> PythonGenerator:
        await self._gen.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await close_all(self._clients.values())
        self._clients.clear()
        await self._gen.__aexit__(*exc)

    def _add(self, clients: Sequence[Client]) -> list[int]:
        ids = []
        for client in clients:
            self._next += 1
            self._clients[self._next] = client
            ids.append(self._next)
        return ids

    async def connect_many(
        self, tokens: Sequence[str | None], *, concurrency: int
    ) -> tuple[list[int], float]:
        clients, elapsed = await self._gen.connect_many(tokens, concurrency=concurrency)
        return self._add(clients), elapsed

    async def call_all(
        self, clients: Sequence[int], event: str, args: Sequence[Any], *, within: float
    ) -> list[Any]:
        answers: list[Any] = [None] * len(clients)
        gate = asyncio.Semaphore(200)

        async def one(index: int, client: Client) -> None:
            async with gate:
                answers[index] = await client.call(event, args[index], within=within)

        await asyncio.gather(
            *(one(index, self._clients[ident]) for index, ident in enumerate(clients))
        )
        return answers

    async def deliver(
        self,
        clients: Sequence[int],
        controller: int,
        event: str,
        request: dict[str, Any],
        count: int,
        size: int,
        *,
        within: float,
    ) -> RunResult:
        delivery = Delivery(clients=len(clients), count=count, size=size)
        for ident in clients:
            self._clients[ident].expect(delivery)
        own_before = time.process_time()
        delivery.started = time.perf_counter()
        answer = await self._clients[controller].call(event, request, within=within)
        if not (isinstance(answer, dict) and answer.get("success") is True):
            raise ProtocolError(f"{event} answered {answer!r}")
        if not await delivery.wait(within):
            delivery.error(
                f"timed out after {within:.0f} s with {delivery.received} of "
                f"{delivery.expected} messages"
            )
        return RunResult(
            expected=delivery.expected,
            received=delivery.received,
            in_order=delivery.in_order,
            errors=list(delivery.errors),
            elapsed=delivery.elapsed,
            own_cpu=time.process_time() - own_before,
        )

    async def acks(
        self,
        clients: Sequence[int],
        rounds: int,
        gap: float,
        *,
        seed: int,
        text: str,
        record: bool,
        within: float,
    ) -> AckResult:
        rng = random.Random(seed)  # noqa: S311 (pacing, not secrets)
        expected = received = 0
        errors: list[str] = []
        round_trips: list[float] = []

        async def calls(index: int, client: Client) -> None:
            nonlocal expected, received
            for round_ in range(rounds):
                await asyncio.sleep(rng.uniform(0, 2 * gap))
                payload = {"client": index, "round": round_, "text": text}
                started = time.perf_counter()
                try:
                    answer = await client.call("bench:echo", payload, within=within)
                except (ProtocolError, TimeoutError) as exc:
                    answer = {"failed": str(exc) or type(exc).__name__}
                elapsed = time.perf_counter() - started
                expected += 1
                if answer == {"success": True, "payload": payload}:
                    received += 1
                elif len(errors) < 5:
                    errors.append(f"bench:echo answered {answer!r}"[:200])
                if record:
                    round_trips.append(elapsed * 1000)

        await asyncio.gather(
            *(calls(index, self._clients[ident]) for index, ident in enumerate(clients))
        )
        return AckResult(expected, received, errors, round_trips)

    async def close(self, clients: Sequence[int]) -> None:
        await close_all([self._clients.pop(ident) for ident in clients if ident in self._clients])

    async def refresh_extensions(self) -> None:
        self.offered |= self._gen.offered
        self.extensions |= self._gen.extensions


GENERATORS: dict[str, type[NodeGenerator] | type[PythonGenerator]] = {
    "node": NodeGenerator,
    "python": PythonGenerator,
}
