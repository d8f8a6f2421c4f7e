"""Pings are sent from a timer handle per connection, not a sleeping task."""

from __future__ import annotations

import asyncio

from engineio.packet import PONG

from realtime_gateway import SignedTokenAuthenticator

from .clinic import USERS, clinic_gateway
from .conftest import Clients, quick_config, until


def _ping_tasks() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if "_send_ping" in repr(task.get_coro())]


async def test_pings_keep_a_connection_alive_without_a_task_per_connection(
    authenticator: SignedTokenAuthenticator, clients: Clients, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator, config=quick_config(ping_interval=1, ping_timeout=1))
    async with clients.serve(gateway, server_kind) as running:
        client = await clients.connect(
            running.url, auth={"token": authenticator.issue(USERS["nurse"])}
        )
        [socket] = gateway.server.eio.sockets.values()
        # Watch this one test client answer the server's PINGs (an observer on the
        # instance only: what it sends is unchanged).
        pongs: list[object] = []
        send = client.eio._send_packet

        async def watched(pkt: object) -> None:
            if getattr(pkt, "packet_type", None) == PONG:
                pongs.append(pkt)
            await send(pkt)

        client.eio._send_packet = watched
        # Two pings answered: longer than ping_interval + ping_timeout, still connected.
        await until(lambda: len(pongs) >= 2, within=6)
        assert len(gateway.connections) == 1
        assert _ping_tasks() == []
        assert socket._ping_timer is not None or socket.last_ping is not None
        await clients.close()
        await until(lambda: socket.closed)
        assert socket._ping_timer is None
