"""A real ``redis-server`` for the tests: one per test, on a free 127.0.0.1 port, in a
temporary directory, with nothing saved to disk.

Import the fixture into a test module (``from .redis_server import
redis_server_fixture``) and ask for it as ``redis_server``.
Without ``redis-server`` on PATH the tests that use it are skipped, unless
``RTG_REQUIRE_REDIS=1`` (set by CI), which makes them fail instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["RedisServer", "redis_server_fixture"]

READY_WITHIN = 10.0  # seconds for redis-server to answer PING
STOP_WITHIN = 5.0  # seconds for it to exit after SIGTERM before it is killed
START_ATTEMPTS = 3  # a free port can be taken by someone else before redis binds it


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process; :meth:`stop` and :meth:`start` again keep the port,
    so clients configured with :attr:`url` find it back after a restart."""

    def __init__(self, executable: str, directory: Path, port: int) -> None:
        self.executable = executable
        self.directory = directory
        self.port = port
        self.log = directory / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and wait (bounded) until it answers PING."""
        if self.running:
            raise RuntimeError("redis-server is already running")
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 (a fixed command line)
                [
                    self.executable,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_WITHIN
        while not _answers_ping(self.port):
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"redis-server exited at start: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING: {self.log_tail()}")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a bounded wait) by its pid."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(STOP_WITHIN)
                except subprocess.TimeoutExpired:
                    process.kill()
        finally:
            process.wait(STOP_WITHIN)

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"


def redis_executable() -> str:
    """The ``redis-server`` to run, or skip (fail under ``RTG_REQUIRE_REDIS=1``)."""
    found = shutil.which("redis-server")
    if found is None:
        reason = (
            "redis-server is not installed (apt-get install redis-server); "
            "set RTG_REQUIRE_REDIS=1 to make this a failure"
        )
        if os.environ.get("RTG_REQUIRE_REDIS") == "1":
            pytest.fail(reason.split(";")[0] + " and RTG_REQUIRE_REDIS=1", pytrace=False)
        pytest.skip(reason)
    return found


@pytest.fixture(name="redis_server")
def redis_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A running ``redis-server`` of this test's own; stopped afterwards."""
    executable = redis_executable()
    directory = tmp_path_factory.mktemp("redis")
    server: RedisServer | None = None
    try:
        for attempt in range(START_ATTEMPTS):
            server = RedisServer(executable, directory, _free_port())
            try:
                server.start()
            except RuntimeError:
                if attempt == START_ATTEMPTS - 1:
                    raise
            else:
                break
        assert server is not None
        yield server
    finally:
        if server is not None:
            server.stop()
