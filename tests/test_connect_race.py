"""A client that goes away while it is being authenticated leaves nothing behind."""

from __future__ import annotations

import asyncio
import contextlib

import socketio

from realtime_gateway import CallbackAuthenticator, Connection, Handshake, Identity, MainNamespace

from .clinic import clinic_gateway
from .conftest import Clients, until


async def test_client_gone_during_authentication_leaves_no_entry(
    clients: Clients, server_kind: str
) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow_lookup(handshake: Handshake) -> Identity:
        entered.set()
        await release.wait()
        return Identity(user_id="slow", roles={"nurse"})

    set_up = asyncio.Event()

    class Main(MainNamespace):
        async def on_connected(self, conn: Connection) -> None:
            set_up.set()

    gateway = clinic_gateway(CallbackAuthenticator(slow_lookup), namespaces=[Main()])
    async with clients.serve(gateway, server_kind) as server:
        client = socketio.AsyncClient(reconnection=False)
        connecting = asyncio.create_task(
            client.connect(server.url, transports=["websocket"], wait_timeout=5)
        )
        await asyncio.wait_for(entered.wait(), 5)
        eio_sid = next(iter(gateway.server.eio.sockets))
        await client.eio.disconnect(abort=True)
        await until(lambda: eio_sid not in gateway.server.environ)
        release.set()
        # The admission completes after the transport is gone and must undo itself.
        await asyncio.wait_for(set_up.wait(), 5)
        await until(lambda: not gateway.connections)
        assert gateway.metrics.connections_total == 0
        connecting.cancel()  # the client would wait out its own timeout for an answer
        with contextlib.suppress(asyncio.CancelledError, socketio.exceptions.ConnectionError):
            await connecting
        assert await gateway.registry.connections() == []
        assert await gateway.registry.users() == frozenset()
        assert not await gateway.is_user_connected("slow")
