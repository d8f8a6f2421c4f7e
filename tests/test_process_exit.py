"""After SIGTERM, a process served by :meth:`Gateway.run_aiohttp` ends within
``shutdown_grace`` plus a small bound, whatever its clients do.

tests/exit_node.py runs as its own OS process; raw TCP clients hold it the ways a
hostile or broken client can: a socket.io client on a websocket that stops reading
(with output pending) and half-closes, one that opened a websocket and never sent
CONNECT, a download that is never read, an idle keep-alive connection and a request
whose headers never end. Each stays open until the process is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from realtime_gateway import Identity, SignedTokenAuthenticator

from .conftest import SALT, SECRET

NODE_SCRIPT = Path(__file__).with_name("exit_node.py")
ROOT = Path(__file__).resolve().parent.parent
GRACE = 1.0
# The bound documented in README's "Graceful shutdown": the gateway's own steps
# after the grace period, then aiohttp's wait for handlers (twice 1 s).
EXIT_BOUND = 5.0
READY_WITHIN = 20.0

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def node(log: Path, *options: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """tests/exit_node.py, yielded with its port once it serves; killed by pid if it
    is still running afterwards."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(NODE_SCRIPT),
            "--grace",
            str(GRACE),
            *options,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), READY_WITHIN)
        if not line.startswith(b"http://127.0.0.1:"):
            pytest.fail(f"not ready ({line!r}): {await asyncio.to_thread(log.read_text)}")
        yield proc, int(line.decode().rsplit(":", 1)[1])
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


class RawClient:
    """A TCP connection whose reading the test controls: a small receive buffer,
    so that a client that stops reading makes the server's writes wait."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_until(self, marker: bytes) -> bytes:
        """Read (a byte at a time, so nothing after it) up to ``marker``."""
        seen = b""
        while marker not in seen:
            chunk = self.sock.recv(1)
            assert chunk, f"closed before {marker!r}: {seen!r}"
            seen += chunk
        return seen

    def read_head(self) -> bytes:
        """Read up to the end of the HTTP response head."""
        return self.read_until(b"\r\n\r\n")

    def half_close(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()


def ws_frame(text: str) -> bytes:
    """One masked client text frame (RFC 6455), as a browser sends it."""
    payload = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    size = len(payload)
    if size < 126:
        header = bytes([0x81, 0x80 | size])
    elif size < 65536:
        header = bytes([0x81, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        header = bytes([0x81, 0x80 | 127]) + size.to_bytes(8, "big")
    return header + mask + masked


WS_UPGRADE = (
    b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def hold_connections(port: int) -> list[RawClient]:
    """Open every kind of stuck connection on the server at ``port``."""
    tokens = SignedTokenAuthenticator([SECRET], salt=SALT, max_age=600)
    token = tokens.issue(Identity(user_id="nurse"))
    clients: list[RawClient] = []

    # A request whose headers never end.
    slow = RawClient(port)
    slow.send(b"GET /api/socket.io/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    clients.append(slow)

    # A socket.io client that asks for thousands of acks, reads none, half-closes.
    flooder = RawClient(port)
    flooder.send(WS_UPGRADE)
    assert b" 101 " in flooder.read_head()
    flooder.send(ws_frame("40" + json.dumps({"token": token})))
    flooder.read_until(b'40{"sid"')  # connected
    flooder.send(b"".join(ws_frame(f'42{n}["ping"]') for n in range(20_000)))
    flooder.half_close()
    clients.append(flooder)

    # An engine.io session that never sends CONNECT and never reads.
    silent = RawClient(port)
    silent.send(WS_UPGRADE)
    assert b" 101 " in silent.read_head()
    clients.append(silent)

    # A download that is never read, from a client that half-closed.
    download = RawClient(port)
    download.send(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert b" 200 " in download.read_head()
    download.half_close()
    clients.append(download)

    # An idle keep-alive connection after one answered request.
    idle = RawClient(port)
    idle.send(b"GET /api/socket.io/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert b" 200 " in idle.read_head()
    clients.append(idle)
    return clients


@pytest.mark.parametrize(
    "options",
    [
        pytest.param((), id="run_aiohttp"),
        pytest.param(("--server", "uvicorn", "--graceful-timeout", "1"), id="uvicorn"),
    ],
)
async def test_sigterm_ends_the_process_despite_stuck_clients(
    tmp_path: Path, options: tuple[str, ...]
) -> None:
    log = tmp_path / "node.log"
    async with node(log, *options) as (proc, port):
        clients = hold_connections(port)
        try:
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), GRACE + EXIT_BOUND)
            took = time.monotonic() - started
            text = await asyncio.to_thread(log.read_text, errors="replace")
            # uvicorn ends by raising the signal it caught again, run_aiohttp returns.
            assert proc.returncode in (0, -signal.SIGTERM), (
                f"still running after {took:.1f} s:\n{text[-3000:]}"
            )
            assert "shutdown_finished" in text
        finally:
            for client in clients:
                client.close()
