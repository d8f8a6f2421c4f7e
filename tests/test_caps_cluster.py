"""``max_sockets_per_user`` holds across the cluster: two gateway OS processes, A and
B, on one real ``redis-server`` (the harness of tests/test_cluster.py), each
started with ``--max-sockets-per-user 3``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import socketio

from .clinic import USERS
from .conftest import Clients, call, socketio_client
from .redis_server import RedisServer, redis_server_fixture  # noqa: F401 (the fixture)
from .test_cluster import Cluster, Node, eventually, running_cluster

CAP = 3


@pytest.fixture
async def capped(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Cluster]:
    options = ["--max-sockets-per-user", str(CAP)]
    async with running_cluster(redis_server, tmp_path, options=options) as running:
        yield running


def nurse_auth(cluster: Cluster) -> dict[str, str]:
    return {"token": cluster.tokens.issue(USERS["nurse"])}


async def connect_one(cluster: Cluster, node: Node) -> socketio.AsyncClient:
    """A client of the nurse on ``node``'s ``/``."""
    client, _ = await cluster.connect(node, "nurse", namespaces=["/"])
    return client


async def attempt(cluster: Cluster, node: Node, pool: Clients) -> bool:
    """Try to connect the nurse to ``node``; ``True`` if admitted."""
    client = socketio_client()
    try:
        await client.connect(
            node.url, transports=["websocket"], auth=nurse_auth(cluster), wait_timeout=5
        )
    except socketio.exceptions.ConnectionError:
        await client.eio.disconnect(abort=True)
        return False
    pool.adopt(client)
    return True


async def metric(cluster: Cluster, node: Node, reason: str) -> int:
    status, body = await cluster.admin(node, "GET", "/metrics")
    assert status == 200, body
    count: int = body["metrics"]["limits_exceeded"].get(reason, 0)
    return count


async def test_a_user_at_the_cap_on_a_is_refused_on_b(capped: Cluster) -> None:
    a, b = capped.a, capped.b
    on_a = [await connect_one(capped, a) for _ in range(CAP)]
    refusal = await capped.clients.refusal(b.url, auth=nurse_auth(capped))
    assert refusal.data == {
        "message": "Too many connections for this user",
        "data": {"code": "limit_exceeded", "reason": "too_many_connections"},
    }
    assert await metric(capped, b, "too_many_connections") == 1
    assert await metric(capped, a, "too_many_connections") == 0
    # Another user is not affected, on either process.
    doctor, _ = await capped.connect(b, "doctor", namespaces=["/"])
    assert (await call(doctor, "ping"))["status"] == "pong"
    # A's sockets never noticed.
    for client in on_a:
        assert (await call(client, "ping"))["status"] == "pong"

    # One socket leaving on A frees a place on B.
    await on_a[0].disconnect()
    await eventually(
        lambda: capped.status(b, "u-nurse"), lambda status: len(status["sockets"]) == CAP - 1
    )
    on_b = await connect_one(capped, b)
    assert (await call(on_b, "ping"))["status"] == "pong"
    assert len((await capped.status(a, "u-nurse"))["sockets"]) == CAP
    assert await capped.clients.refusal(a.url, auth=nurse_auth(capped)) is not None
    assert await metric(capped, a, "too_many_connections") == 1


async def test_concurrent_connects_on_both_processes_do_not_pass_the_cap(
    capped: Cluster,
) -> None:
    pool = capped.clients
    tries = [attempt(capped, node, pool) for node in (capped.a, capped.b) for _ in range(4)]
    admitted = await asyncio.gather(*tries)
    assert sum(admitted) == CAP
    status = await capped.status(capped.a, "u-nurse")
    assert len(status["sockets"]) == CAP
    refused = [await metric(capped, node, "too_many_connections") for node in (capped.a, capped.b)]
    assert sum(refused) == len(tries) - CAP
