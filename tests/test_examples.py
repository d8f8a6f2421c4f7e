"""The example gateway started the way `make demo` starts it, as its own process."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from .conftest import Clients

ROOT = Path(__file__).resolve().parent.parent
KEY = "example-test-key-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
async def clinic() -> AsyncIterator[str]:
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "examples/aiohttp_clinic/app.py"),
        "--port",
        str(port),
        env={**os.environ, "RTG_SECRET_KEY": KEY},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session, asyncio.timeout(20):
            while True:
                assert process.returncode is None, "the example exited early"
                try:
                    async with session.get(url) as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
        yield url
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


async def test_clinic_accepts_a_cli_token_and_refuses_none(clinic: str, clients: Clients) -> None:
    minting = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "realtime_gateway", "token", "--user-id", "n1", "--role", "nurse"),
        env={**os.environ, "RTG_SECRET_KEY": KEY},
        stdout=subprocess.PIPE,
    )
    out, _ = await minting.communicate()
    assert minting.returncode == 0
    token = out.decode().strip()
    welcomed: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()

    async def on_connected(data: dict[str, str]) -> None:
        welcomed.set_result(data)

    client = await clients.connect(
        clinic, auth={"token": token}, handlers={"connected": on_connected}
    )
    welcome = await asyncio.wait_for(welcomed, 5)
    assert welcome["userId"] == "n1"
    assert welcome["socketId"] == client.get_sid("/")
    ack = await client.call("ping", timeout=5)
    assert ack["success"] is True
    assert ack["status"] == "pong"
    async with (
        aiohttp.ClientSession() as session,
        session.get(clinic + "/api/socket.io/health") as response,
    ):
        health = await response.json()
    assert (response.status, health["status"], health["activeConnections"]) == (200, "ok", 1)
    refusal = await clients.refusal(clinic)
    assert refusal.data["data"]["reason"] == "missing"
