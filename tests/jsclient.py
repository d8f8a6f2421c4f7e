"""The official socket.io JavaScript client in Node, driven from a test.

``tests/js/sioclient.cjs`` runs ``socket.io-client`` from the repository's
``node_modules`` and speaks JSON lines: the test sends commands, the client
reports what happened. :meth:`JsClient.next` awaits a report, never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).parent / "js" / "sioclient.cjs"

Report = dict[str, Any]


class JsClient:
    """One Node process with one socket.io client socket."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.reports: list[Report] = []
        self._seen = 0
        self._changed = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self._process.stdout is not None
        async for line in self._process.stdout:
            self.reports.append(json.loads(line))
            self._changed.set()

    def send(self, cmd: str, **fields: Any) -> None:
        """Send one command (see ``sioclient.cjs``)."""
        assert self._process.stdin is not None
        self._process.stdin.write((json.dumps({"cmd": cmd, **fields}) + "\n").encode())

    async def next(self, matches: Callable[[Report], bool], within: float = 10.0) -> Report:
        """The next report (after the last one returned) that ``matches``."""
        async with asyncio.timeout(within):
            while True:
                while self._seen < len(self.reports):
                    report = self.reports[self._seen]
                    self._seen += 1
                    if matches(report):
                        return report
                self._changed.clear()
                await self._changed.wait()

    async def connected(self, within: float = 10.0) -> Report:
        """The next ``connect`` report (``recovered`` tells whether it was a recovery)."""
        return await self.next(lambda report: report["type"] == "connect", within)

    async def disconnected(self) -> Report:
        return await self.next(lambda report: report["type"] == "disconnect")

    async def event(self, name: str) -> Report:
        return await self.next(lambda report: report["type"] == "event" and report["name"] == name)

    async def call(self, event: str, *args: Any) -> Any:
        """Emit ``event`` with an ack and return the ack's first argument."""
        self.send("emit", event=event, args=list(args), ack=True)
        report = await self.next(lambda report: report["type"] == "ack")
        return report["args"][0] if report["args"] else None

    def events(self, name: str) -> list[list[Any]]:
        """The arguments of every ``name`` event received so far."""
        return [r["args"] for r in self.reports if r["type"] == "event" and r["name"] == name]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("exit")
            assert self._process.stdin is not None
            self._process.stdin.close()
        try:
            await asyncio.wait_for(self._process.wait(), 5)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def js_client(
    url: str,
    namespace: str = "/",
    *,
    auth: dict[str, Any] | None = None,
    transports: tuple[str, ...] = ("websocket",),
) -> AsyncIterator[JsClient]:
    """A connecting official client (await :meth:`JsClient.connected`)."""
    node = shutil.which("node")
    assert node is not None, "Node.js is needed for the official socket.io client"
    process = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    client = JsClient(process)
    try:
        client.send(
            "connect", url=url, namespace=namespace, auth=auth or {}, transports=list(transports)
        )
        yield client
    finally:
        await client.close()
