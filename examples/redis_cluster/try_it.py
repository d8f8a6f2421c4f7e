"""A nurse connected to one process gets a notification sent through the other.

Run two ``app.py`` processes first (ports 8001 and 8002, see the README), with the
same ``RTG_SECRET_KEY`` in this shell.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

import aiohttp
import socketio

from realtime_gateway import Identity, SignedTokenAuthenticator

SALT = "realtime_gateway.session"


async def main(first: str, second: str, key: str) -> None:
    tokens = SignedTokenAuthenticator([key], salt=SALT, max_age=3600)
    nurse = tokens.issue(Identity(user_id="u-nurse", roles={"nurse"}, display_name="Nat"))
    admin = tokens.issue(Identity(user_id="u-admin", roles={"admin"}))
    received: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    client = socketio.AsyncClient(reconnection=False)
    client.on("notification", received.set_result, namespace="/notifications")
    await client.connect(
        second, namespaces=["/notifications"], transports=["websocket"], auth={"token": nurse}
    )
    print(f"nurse connected to {second}")
    async with aiohttp.ClientSession() as http:
        reply = await http.post(
            f"{first}/api/socket.io/notify/u-nurse",
            json={"title": "Hello from the other process", "message": "Delivered via Redis"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        print(f"admin notified through {first}: HTTP {reply.status}")
    notification = await asyncio.wait_for(received, 5)
    print(f"nurse received: {notification['title']!r}")
    await client.disconnect()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--first", default="http://127.0.0.1:8001")
    parser.add_argument("--second", default="http://127.0.0.1:8002")
    args = parser.parse_args()
    secret = os.environ.get("RTG_SECRET_KEY")
    if not secret:
        sys.exit("Set RTG_SECRET_KEY to the key the two processes use.")
    asyncio.run(main(args.first, args.second, secret))
