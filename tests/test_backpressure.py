"""A client that sends faster than it is answered waits: the gateway answers at most
``MAX_EVENTS_IN_FLIGHT`` events of one connection at a time and reads no more of it
meanwhile, so it never holds a task per event sent."""

from __future__ import annotations

import asyncio
from typing import Any

from realtime_gateway import (
    AllowAll,
    Connection,
    Gateway,
    GatewayNamespace,
    SignedTokenAuthenticator,
    event,
)
from realtime_gateway._server import MAX_EVENTS_IN_FLIGHT

from .clinic import USERS
from .conftest import Clients, quick_config, until


class Held(GatewayNamespace):
    """``hold`` waits until the test lets every held event go."""

    def __init__(self) -> None:
        super().__init__("/")
        self.release = asyncio.Event()

    @event("hold")
    async def hold(self, conn: Connection, value: Any) -> dict[str, Any]:
        await self.release.wait()
        return {"value": value}


async def test_events_beyond_the_bound_wait_for_answers(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str, transport: str
) -> None:
    namespace = Held()
    gateway = Gateway(
        authenticator=authenticator,
        authorizer=AllowAll(),
        config=quick_config(rate_limit=None, user_rate_limit=None),
        namespaces=[namespace],
    )
    sent = MAX_EVENTS_IN_FLIGHT + 20
    async with clients.serve(gateway, server_kind) as server:
        client = await clients.connect(
            server.url, transport=transport, auth={"token": authenticator.issue(USERS["nurse"])}
        )
        calls = [asyncio.ensure_future(client.call("hold", n, timeout=20)) for n in range(sent)]
        # The bound's worth in tasks, and one more being answered in the reading
        # loop, which reads nothing else until it is answered.
        await until(lambda: gateway.metrics.events_received["/"] == MAX_EVENTS_IN_FLIGHT + 1)
        await asyncio.sleep(0.3)  # time for more to be read, if anything were read
        assert gateway.metrics.events_received["/"] == MAX_EVENTS_IN_FLIGHT + 1
        assert sum(gateway.server._in_flight.values()) == MAX_EVENTS_IN_FLIGHT

        namespace.release.set()
        acks = await asyncio.gather(*calls)

        assert [ack["value"] for ack in acks] == list(range(sent))
        assert gateway.metrics.events_received["/"] == sent
        await until(lambda: not gateway.server._in_flight)
