"""The README's quick start runs as printed."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from realtime_gateway import Gateway, Identity

from .conftest import Clients, call

README = Path(__file__).resolve().parent.parent / "README.md"


async def test_quick_start(clients: Clients) -> None:
    found = re.search(r"## Quick start\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert found is not None
    code = found.group(1)
    assert len(code.splitlines()) <= 25
    served: dict[str, Any] = {}
    assert code.splitlines()[-1].startswith("asyncio.run(gateway.run_aiohttp(app")
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
        port = runner.addresses[0][1]
        token = gateway.authenticator.issue(Identity(user_id="n1", roles={"nurse"}))  # type: ignore[attr-defined]
        notified: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        client = await clients.connect(
            f"http://127.0.0.1:{port}",
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
    finally:
        await runner.cleanup()
