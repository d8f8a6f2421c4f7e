"""Every code block of README.md (and of PYPI.md, the PyPI page) runs as printed: the
Quick start serves, and the shell lines (token CLI, curl) work against it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import socketio
from aiohttp import web

from realtime_gateway import (
    AllowAll,
    Gateway,
    GatewayConfig,
    Identity,
    SignedTokenAuthenticator,
    default_namespaces,
    reference_rules,
)

from .conftest import Clients, call, serve, until

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PYPI = ROOT / "PYPI.md"
# The Quick start's address; the test serves it on an ephemeral port instead.
PRINTED_ADDRESS = "127.0.0.1:8080"


@attrs.frozen
class Block:
    language: str
    code: str
    section: str  # the heading of the section the block is in


def blocks(path: Path) -> list[Block]:
    found: list[Block] = []
    section = ""
    lines = iter(path.read_text().splitlines())
    for line in lines:
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        elif line.startswith("```"):
            code = []
            for inner in lines:
                if inner.startswith("```"):
                    break
                code.append(inner)
            found.append(Block(line[3:].strip(), "\n".join(code) + "\n", section))
    return found


def only(path: Path, language: str, section: str) -> str:
    [block] = [b for b in blocks(path) if (b.language, b.section) == (language, section)]
    return block.code


# What each block is checked by; a new block must be added here.
COVERED = {
    ("sh", "realtime_gateway"): "the make commands, run by CI itself",
    ("python", "Quick start"): "test_quick_start",
    ("sh", "Authentication"): "test_shell_lines_against_the_quick_start",
    ("python", "Admin HTTP API"): "test_admin_mounting_snippet",
    ("sh", "Admin HTTP API"): "test_shell_lines_against_the_quick_start",
    ("python", "Logging"): "test_logging_snippet",
    ("js", "Missed-message recovery"): "test_recovery_snippets",
    ("python", "FastAPI quick start"): "tests/test_readme_fastapi.py",
    ("python", "Testing your gateway"): "tests/test_readme_fastapi.py",
    ("python", "Missed-message recovery"): "test_recovery_snippets",
}


def test_every_block_is_covered() -> None:
    for block in blocks(README):
        assert (block.language, block.section) in COVERED, (
            f"README block in {block.section!r} is not run by tests/test_readme.py"
        )


def test_make_commands_stay_at_the_top() -> None:
    first = blocks(README)[0]
    assert first.code.startswith("make demo ")
    assert "\nmake test " in first.code


@contextlib.asynccontextmanager
async def quick_start() -> AsyncIterator[tuple[dict[str, Any], str]]:
    """The Quick start's names, its app served on an ephemeral port, and its address."""
    code = only(README, "python", "Quick start")
    assert len(code.splitlines()) <= 25
    served: dict[str, Any] = {}
    assert code.splitlines()[-1].startswith("asyncio.run(gateway.run_aiohttp(app")
    assert f'host="{PRINTED_ADDRESS.split(":")[0]}", port={PRINTED_ADDRESS.split(":")[1]}' in code
    # Everything but the final blocking line, which the test replaces with its own runner.
    runnable = "\n".join(line for line in code.splitlines() if not line.startswith("asyncio.run"))
    exec(runnable, served)  # noqa: S102 (the README's own code)
    app, gateway = served["app"], served["gateway"]
    assert isinstance(app, web.Application)
    assert isinstance(gateway, Gateway)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield served, f"127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_quick_start(clients: Clients) -> None:
    async with quick_start() as (served, address):
        gateway = served["gateway"]
        token = gateway.authenticator.issue(Identity(user_id="n1", roles={"nurse"}))
        notified: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        client = await clients.connect(
            f"http://{address}",
            namespaces=("/", "/notifications"),
            auth={"token": token},
            handlers={"notification": notified.set_result},
        )
        assert await call(client, "join:room", "ward:3") == {"success": True, "room": "ward:3"}
        assert (await call(client, "join:room", "icu:1"))["code"] == "forbidden"
        await served["lab_results_ready"]("n1")
        notification = await asyncio.wait_for(notified, 5)
        assert (notification["title"], notification["type"]) == ("Lab results", "success")
        await clients.close()


async def sh(script: str, address: str) -> str:
    """Run ``script`` with bash as a reader would in a shell where this checkout is
    installed (its ``realtime-gateway`` command on PATH), the Quick start at
    ``address``; its standard output."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("KEY", None)
    env.pop("RTG_SECRET_KEY", None)
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        script.replace(PRINTED_ADDRESS, address),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


def json_documents(text: str) -> list[Any]:
    """The JSON documents curl printed one after the other."""
    decoder, documents, position = json.JSONDecoder(), [], 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        document, position = decoder.raw_decode(text, position)
        documents.append(document)
    return documents


async def test_shell_lines_against_the_quick_start(clients: Clients) -> None:
    mint = only(README, "sh", "Authentication")
    admin = only(README, "sh", "Admin HTTP API")
    async with quick_start() as (served, address):
        token = (await sh(mint, address)).strip()
        identity = served["gateway"].authenticator.verify(token)
        assert (identity.user_id, identity.session_id) == ("u1", "ward-3-tablet")
        notified: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        # The minted token opens the Quick start's gateway.
        client = await clients.connect(
            f"http://{address}",
            namespaces=("/", "/notifications"),
            auth={"token": token},
            handlers={"notification": notified.set_result},
        )
        assert (await call(client, "join:room", "ward:3"))["success"] is True
        # The curl lines, in the shell where the mint block set $KEY (its token unread).
        replies = json_documents(await sh(f"{{\n{mint}}} >/dev/null\n{admin}", address))
        assert len(replies) == 4
        for reply in replies:
            assert isinstance(reply, dict), reply
            assert reply["success"] is True, reply
        health, connections, notified_role, disconnected = (r["data"] for r in replies)
        assert (health["status"], health["connectedUsers"]) == ("healthy", 1)
        assert connections["count"] == 2
        assert (notified_role["role"], disconnected["userId"]) == ("nurse", "u1")
        notification = await asyncio.wait_for(notified, 5)
        assert notification["title"] == "Shift change"
        await clients.close()


def test_admin_mounting_snippet(authenticator: SignedTokenAuthenticator) -> None:
    from starlette.routing import Mount

    names: dict[str, Any] = {"gateway": Gateway(authenticator=authenticator, authorizer=AllowAll())}
    exec(only(README, "python", "Admin HTTP API"), names)  # noqa: S102 (the README's own code)
    admin, aiohttp_app = names["admin"], names["aiohttp_app"]
    assert any(
        resource.canonical == f"{admin.prefix}/{{tail}}"
        for resource in aiohttp_app.router.resources()
    )
    [mount] = names["starlette_app"].routes
    assert isinstance(mount, Mount)
    assert mount.path == admin.prefix


def test_logging_snippet() -> None:
    logger = logging.getLogger("realtime_gateway")
    level = logger.level
    try:
        exec(only(README, "python", "Logging"), {})  # noqa: S102 (the README's own code)
        assert logger.isEnabledFor(logging.DEBUG)
    finally:
        logger.setLevel(level)


def test_pypi_page_starts_with_pip_install_and_has_the_quick_start() -> None:
    page = blocks(PYPI)
    assert PYPI.read_text().startswith("```sh\npip install realtime-gateway\n")
    assert only(PYPI, "python", "Quick start") == only(README, "python", "Quick start")
    assert [(b.language, b.section) for b in page] == [
        ("sh", ""),
        ("python", "Quick start"),
        ("sh", "Quick start"),
    ]


async def test_pypi_token_line_opens_the_quick_start(clients: Clients) -> None:
    async with quick_start() as (_, address):
        token = (await sh(page_token_block(), address)).strip()
        client = await clients.connect(f"http://{address}", auth={"token": token})
        assert (await call(client, "join:room", "ward:3"))["success"] is True
        await clients.close()


def page_token_block() -> str:
    code = only(PYPI, "sh", "Quick start")
    assert re.search(r"^realtime-gateway token ", code, re.M)
    return code


@contextlib.asynccontextmanager
async def recovering_gateway() -> AsyncIterator[tuple[Gateway, str, str]]:
    """A gateway with recovery on and the built-in namespaces; its URL and a token."""
    authenticator = SignedTokenAuthenticator(
        ["readme-recovery-key-0123456789abcdef"], salt="readme", max_age=600
    )
    gateway = Gateway(
        authenticator=authenticator,
        authorizer=reference_rules(),
        config=GatewayConfig(recovery_window=120),
        namespaces=default_namespaces(),
    )
    token = authenticator.issue(
        Identity(user_id="u-doc", roles={"doctor"}, permissions={"view:patient"})
    )
    async with serve(gateway, "aiohttp") as running:
        yield gateway, running.url, token


async def test_recovery_snippets(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    async with recovering_gateway() as (gateway, url, token):
        # The browser block, in Node with the official client: io() is given the page's
        # origin, and a cookie jar as a browser has (polling sessions are bound by cookie).
        prelude = (
            'const { io: connect } = require("socket.io-client");\n'
            f"const io = (path, options) => connect({json.dumps(url)} + path, "
            "{ ...options, withCredentials: true });\n"
            f"const token = {json.dumps(token)};\n"
        )
        script = tmp_path / "recovery.cjs"
        script.write_text(prelude + only(README, "js", "Missed-message recovery"))
        node = await asyncio.create_subprocess_exec(
            "node",
            str(script),
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "NODE_PATH": str(ROOT / "node_modules")},
        )
        try:
            assert node.stdout is not None
            async with asyncio.timeout(10):
                assert await node.stdout.readline() == b"fresh connection: subscribing\n"
                await until(lambda: _subscribed(gateway))
                await gateway.publish_update("patient", "p-1001", "vitals", namespace="/updates")
                assert await node.stdout.readline() == b"update p-1001\n"
        finally:
            node.kill()
            await node.wait()

        # The Python handler takes the offset as its optional last parameter.
        client = socketio.AsyncClient(reconnection=False)
        exec(only(README, "python", "Missed-message recovery"), {"client": client})  # noqa: S102
        await client.connect(
            url, namespaces=["/updates"], transports=["websocket"], auth={"token": token}
        )
        try:
            await client.call("subscribe:patient", "p-1001", namespace="/updates", timeout=5)
            printed: list[str] = []

            def said_something() -> bool:
                printed.append(capsys.readouterr().out)
                return bool(printed[-1])

            await gateway.publish_update("patient", "p-1001", "vitals", namespace="/updates")
            await until(said_something)
            assert re.fullmatch(r"update p-1001 at offset \d+\n", "".join(printed))
        finally:
            await client.disconnect()


def _subscribed(gateway: Gateway) -> bool:
    """Whether a socket of /updates is in patient p-1001's room."""
    return any("patient:p-1001" in conn.rooms for conn in gateway.connections.values())
