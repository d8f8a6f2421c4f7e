"""The README's FastAPI quick start and "Testing your gateway" snippets run as printed."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from realtime_gateway import Gateway
from realtime_gateway.testing import serve

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks_after(heading: str) -> list[str]:
    """The python code blocks of the README section that starts at ``heading``."""
    text = README.read_text()
    start = text.index(heading + "\n")
    following = re.search(r"\n## ", text[start + len(heading) :])
    section = text[start : start + len(heading) + (following.start() if following else len(text))]
    return re.findall(r"```python\n(.*?)```", section, re.S)


async def test_fastapi_quick_start() -> None:
    code = blocks_after("### FastAPI quick start")[0]
    lines = code.splitlines()
    assert lines[-1].startswith("uvicorn.run(asgi")
    served: dict[str, Any] = {}
    exec("\n".join(lines[:-1]), served)  # noqa: S102 (the README's own code)
    gateway: Gateway = served["gateway"]
    async with serve(gateway, served["asgi"], kind="asgi") as server:
        token = await server.token("d1", roles=["doctor"])
        async with server.http.get("/me", headers={"Authorization": f"Bearer {token}"}) as r:
            assert (r.status, await r.json()) == (200, {"userId": "d1"})
        async with server.http.get("/me") as r:
            assert (r.status, r.headers["WWW-Authenticate"]) == (401, "Bearer")
        async with server.http.get("/api/socket.io/health") as r:
            assert r.status == 200
        client = await server.connect("d1", roles=["doctor"])
        assert (await client.call("ping"))["status"] == "pong"


async def test_testing_snippets_pass_as_a_users_test_suite(tmp_path: Path) -> None:
    conftest, test = blocks_after("## Testing your gateway")[:2]
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "test_live.py").write_text(test)
    run = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"),
        *("-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function"),
        *("-W", "error", str(tmp_path)),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(run.communicate(), 60)
    assert run.returncode == 0, output.decode()
    assert "1 passed" in output.decode()
