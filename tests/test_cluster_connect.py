"""A connect on Redis records the gateway's own rooms of the socket (its user's
room and one per role) in one script call, not one per room, with the same
presence as room-by-room joins: on a real redis-server, with real clients."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from realtime_gateway import Identity, SignedTokenAuthenticator
from realtime_gateway._cluster import RedisRegistry

from .clinic import clinic_gateway
from .conftest import SALT, SECRET, Clients, quick_config
from .redis_server import RedisServer, redis_server_fixture  # noqa: F401 (the fixture)

pytestmark = pytest.mark.timeout(60)

CHARGE_NURSE = Identity(user_id="u-charge", roles={"nurse", "charge", "night"})
WARM_UP = Identity(user_id="u-early", roles={"porter"})
OWN_ROOMS = ["role:charge", "role:night", "role:nurse", "user:u-charge"]


async def scripts_run(redis: aioredis.Redis) -> int:
    stats = await redis.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )


async def test_a_connect_records_its_own_rooms_in_one_call(redis_server: RedisServer) -> None:
    tokens = SignedTokenAuthenticator([SECRET], salt=SALT, max_age=600)
    # No canary in the way of the count: it publishes, but only every 30 s.
    config = quick_config(redis_url=redis_server.url, cluster_canary_interval=30)
    gateway = clinic_gateway(tokens, config=config)
    clients = Clients()
    redis = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        async with clients.serve(gateway, "aiohttp") as server:
            registry = gateway.registry
            assert isinstance(registry, RedisRegistry)
            # A first connect loads the scripts into Redis (EVALSHA, NOSCRIPT, LOAD).
            await clients.connect(server.url, auth={"token": tokens.issue(WARM_UP)})
            before = await scripts_run(redis)
            first = await clients.connect(
                server.url, auth={"token": tokens.issue(CHARGE_NURSE)}, namespaces=["/"]
            )
            # The registry's add, then its own rooms: two scripts (room by room, five).
            assert await scripts_run(redis) - before == 2
            sid = first.get_sid("/")
            info = await registry.get(sid)
            assert info is not None
            assert sorted(info.rooms) == OWN_ROOMS
            for room in OWN_ROOMS:
                assert await registry.presence("/", room) == {"u-charge"}
                assert await redis.hget(registry._presence_key("/", room), "u-charge") == "1"
            # A second socket of the same user: counted, and no one newly present.
            second = await clients.connect(
                server.url, auth={"token": tokens.issue(CHARGE_NURSE)}, namespaces=["/"]
            )
            for room in OWN_ROOMS:
                assert await redis.hget(registry._presence_key("/", room), "u-charge") == "2"
            await second.disconnect()
            await first.disconnect()
            for room in OWN_ROOMS:
                assert await registry.presence("/", room) == frozenset()
    finally:
        await clients.close()
        await redis.aclose()


async def test_more_commands_at_once_than_the_pool_holds_wait_for_a_connection(
    redis_server: RedisServer,
) -> None:
    """redis-py's default pool refuses the 101st command in flight at once, which
    the registry would take for Redis being down (a connect storm does this)."""
    from realtime_gateway._cluster import REDIS_CONNECTIONS

    tokens = SignedTokenAuthenticator([SECRET], salt=SALT, max_age=600)
    config = quick_config(redis_url=redis_server.url)
    gateway = clinic_gateway(tokens, config=config)
    redis = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        async with Clients().serve(gateway, "aiohttp"):
            registry = gateway.registry
            assert isinstance(registry, RedisRegistry)
            # A user another process has in the room: only Redis knows.
            await redis.hset(registry._presence_key("/", "ward:3"), "u-elsewhere", "1")
            answers = await asyncio.gather(
                *(registry.presence("/", "ward:3") for _ in range(3 * REDIS_CONNECTIONS))
            )
            assert answers == [{"u-elsewhere"}] * (3 * REDIS_CONNECTIONS)
    finally:
        await redis.aclose()
