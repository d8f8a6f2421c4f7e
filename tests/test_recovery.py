"""Missed-message recovery with the official socket.io client (Node), in one process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from realtime_gateway import Gateway, SignedTokenAuthenticator

from .clinic import USERS, clinic_gateway
from .conftest import RunningServer, quick_config, serve, until
from .jsclient import JsClient, js_client


def _vitals(client: JsClient) -> list[Any]:
    return [args[0]["data"]["n"] for args in client.events("patient:update")]


@pytest.fixture
async def clinic(authenticator: SignedTokenAuthenticator) -> AsyncIterator[RunningServer]:
    gateway = clinic_gateway(authenticator, config=quick_config(recovery_window=30))
    async with serve(gateway, "aiohttp") as running:
        yield running


async def _parked(gateway: Gateway, count: int = 1) -> None:
    """Wait until the server has heard ``count`` sockets drop (they are parked)."""
    recovery = gateway._recovery
    assert recovery is not None
    await until(lambda: len(recovery._parked) >= count)


async def test_a_dropped_client_recovers_the_events_it_missed_in_order_once(
    clinic: RunningServer, authenticator: SignedTokenAuthenticator
) -> None:
    gateway = clinic.gateway
    token = authenticator.issue(USERS["nurse"])
    async with js_client(clinic.url, "/updates", auth={"token": token}) as client:
        assert (await client.connected())["recovered"] is False
        await client.call("subscribe:patient", {"patientId": "p1"})
        await gateway.publish_update("patient", "p1", "vitals", {"n": 0})
        await client.event("patient:update")

        client.send("drop")
        await client.disconnected()
        await _parked(gateway)
        for n in (1, 2, 3):
            await gateway.publish_update("patient", "p1", "vitals", {"n": n})

        client.send("reconnect")
        assert (await client.connected())["recovered"] is True
        await gateway.publish_update("patient", "p1", "vitals", {"n": 4})
        await until(lambda: len(_vitals(client)) >= 5)
        assert _vitals(client) == [0, 1, 2, 3, 4]
        # Each event carries its offset as its last argument, in increasing order.
        offsets = [int(args[-1]) for args in client.events("patient:update")]
        assert offsets == sorted(set(offsets))
    assert gateway.metrics.recoveries["recovered"] == 1
    assert gateway.metrics.recovered_events == 3
