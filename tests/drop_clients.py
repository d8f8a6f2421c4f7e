"""Clients for tests/test_abrupt_drops.py, run in a process of their own so that the
test can kill it: every transport then closes without a disconnect packet.

Reads a JSON object from stdin: ``{"url", "transport", "clients": [{"token",
"conversation"}, ...]}``. Each client connects to ``/`` and ``/chat`` and joins its
conversation; once all have, prints ``ready`` and waits forever.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp
import socketio


async def start(url: str, transport: str, entry: dict[str, Any]) -> socketio.AsyncClient:
    # A cookie jar that keeps the gateway's session binding cookie from 127.0.0.1
    # (aiohttp's default one drops cookies set by IP-address hosts).
    client = socketio.AsyncClient(
        reconnection=False,
        http_session=lambda: aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)),
    )
    await client.connect(
        url,
        namespaces=["/", "/chat"],
        transports=[transport],
        auth={"token": entry["token"]},
        wait_timeout=10,
    )
    ack = await client.call(
        "join:conversation", entry["conversation"], namespace="/chat", timeout=10
    )
    if not isinstance(ack, dict) or ack.get("success") is not True:
        raise RuntimeError(f"join:conversation refused: {ack!r}")
    return client


async def main() -> None:
    spec = json.loads(sys.stdin.read())
    clients = await asyncio.gather(
        *(start(spec["url"], spec["transport"], entry) for entry in spec["clients"])
    )
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:  # only reached on a polite stop; the test kills the process instead
        await asyncio.gather(*(client.disconnect() for client in clients))


if __name__ == "__main__":
    asyncio.run(main())
