"""Under uvicorn's default ``lifespan="auto"``, a gateway that cannot start is not
served: the ASGI wrapper answers ``lifespan.startup.failed`` with a message naming
where Redis was looked for, never its password, and uvicorn exits."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODE = Path(__file__).with_name("lifespan_node.py")

pytestmark = pytest.mark.timeout(60)


async def run_node(*args: str) -> tuple[int | None, str]:
    """Run tests/lifespan_node.py until it exits: its exit code and its output."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, str(NODE), *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, output.decode()


@pytest.mark.parametrize("host_app", [False, True], ids=["gateway-alone", "starlette-host"])
async def test_unreachable_redis_fails_startup(host_app: bool) -> None:
    # A bound port that does not listen: connecting to it is refused at once.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        url = f"redis://:hunter2-secret@127.0.0.1:{port}/0"
        code, text = await run_node(url, *(["--host-app"] if host_app else []))
    assert code != 0, text
    assert "Uvicorn running" not in text
    assert "appears unsupported" not in text
    assert f"Redis at 127.0.0.1:{port} is unreachable" in text
    assert "Application startup failed" in text
    assert "hunter2" not in text


async def test_a_host_app_that_cannot_start_stops_the_gateway() -> None:
    code, text = await run_node("--failing-host-app")
    assert code != 0, text
    assert "Uvicorn running" not in text
    assert "the host app cannot start" in text  # Starlette's own message
    assert "gateway_started" in text
    assert "shutdown_finished" in text
    assert text.index("shutdown_finished") < text.index("Application startup failed")
