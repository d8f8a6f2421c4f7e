"""A process that stops hearing the cluster bus says so: its ``/health`` turns 503
(``not_initialized``, state ``degraded``), ``cluster_bus_deaf`` moves and one
WARNING is logged, and it recovers by itself once it hears its own canary again;
the other process stays ``ok``.

Processes A and B (tests/cluster_node.py) on a real redis-server, as in
tests/test_cluster.py. A's subscription is cut with ``CLIENT KILL ID`` while Redis
refuses new clients (``maxclients``), so that A cannot subscribe again until the
test lets it; its publishing connection stays, so B keeps hearing A.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from .redis_server import RedisServer, redis_server_fixture  # noqa: F401 (the fixture)
from .test_cluster import ADMIN, CHANNEL, Cluster, Node, running_cluster

CANARY = 0.2  # seconds; a process is deaf after 3 intervals without its own canary
WITHIN = 10.0

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def cluster(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Cluster]:
    options = ("--canary-interval", str(CANARY))
    async with running_cluster(redis_server, tmp_path, options=options) as running:
        yield running


async def health(cluster: Cluster, node: Node) -> tuple[int, dict[str, Any]]:
    """``node``'s /health status and ``data``."""
    async with cluster.http.get(f"{node.url}{ADMIN}/health") as reply:
        body: dict[str, Any] = await reply.json()
        assert body["success"] is (reply.status == 200), body
        data: dict[str, Any] = body["data"]
        return reply.status, data


async def status_of(cluster: Cluster, node: Node) -> tuple[int, str]:
    status, body = await health(cluster, node)
    return status, body["status"]


async def metrics(cluster: Cluster, node: Node) -> dict[str, Any]:
    status, body = await cluster.admin(node, "GET", "/metrics")
    assert status == 200, body
    figures: dict[str, Any] = body["metrics"]
    return figures


async def health_becomes(cluster: Cluster, node: Node, status: str) -> dict[str, Any]:
    """Poll ``node``'s /health (its state has no event to await) until ``status``."""
    async with asyncio.timeout(WITHIN):
        while True:
            _, body = await health(cluster, node)
            if body["status"] == status:
                return body
            await asyncio.sleep(0.05)


async def subscriptions_of(redis: aioredis.Redis, node: Node) -> list[str]:
    """The ids of ``node``'s pub/sub connections (its bus client is named after it)."""
    found = await redis.client_list(_type="pubsub")
    return [str(client["id"]) for client in found if client["name"].endswith(f":bus:{node.name}")]


async def test_a_process_that_cannot_hear_the_bus_reports_degraded_and_recovers(
    cluster: Cluster,
) -> None:
    await cluster.subscribed(2)
    for node in (cluster.a, cluster.b):
        assert await status_of(cluster, node) == (200, "healthy")
    redis = aioredis.Redis.from_url(cluster.redis.url)
    limit = str((await redis.config_get("maxclients"))["maxclients"])
    try:
        [subscription] = await subscriptions_of(redis, cluster.a)
        connected = int((await redis.info("clients"))["connected_clients"])
        # Nobody may connect any more; everyone already connected stays.
        await redis.config_set("maxclients", connected - 1)
        await redis.client_kill_filter(_id=subscription)

        # SPEC's statuses only: not ready to serve; the gateway's state says why.
        degraded = await health_becomes(cluster, cluster.a, "not_initialized")
        assert (degraded["state"], degraded["initialized"]) == ("degraded", True)
        assert await status_of(cluster, cluster.a) == (503, "not_initialized")
        # The other process hears the bus (A's canaries included) and is fine.
        assert await status_of(cluster, cluster.b) == (200, "healthy")
        figures = await metrics(cluster, cluster.a)
        assert (figures["cluster_bus_deaf"], figures["cluster_bus_deafened"]) == (1, 1)
        assert (await metrics(cluster, cluster.b))["cluster_bus_deaf"] == 0
    finally:
        await redis.config_set("maxclients", limit)

    try:
        # A subscribes again on its own (with its reconnection backoff) and hears itself.
        await health_becomes(cluster, cluster.a, "healthy")
        assert await status_of(cluster, cluster.a) == (200, "healthy")
        assert len(await subscriptions_of(redis, cluster.a)) == 1
        [(_, listening)] = await redis.pubsub_numsub(CHANNEL)
        assert listening == 2
        figures = await metrics(cluster, cluster.a)
        assert (figures["cluster_bus_deaf"], figures["cluster_bus_deafened"]) == (0, 1)
    finally:
        await redis.aclose()
    # One WARNING for going deaf, one for hearing again; nothing on B.
    log_a = cluster.a.log_text()
    assert log_a.count("cluster_bus_deaf") == 1, log_a[-3000:]
    assert log_a.count("cluster_bus_heard") == 1
    assert "cluster_bus_deaf" not in cluster.b.log_text()
