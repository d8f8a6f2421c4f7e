"""Revocation across gateway processes on a real ``redis-server``.

The processes are tests/test_cluster.py's: tests/cluster_node.py (the clinic gateway
and its admin API) run as OS processes A and B, real python-socketio clients on
either. A revocation made through one process's admin API must end the live sockets
it covers on every process and make every process, including one started later,
refuse those credentials; the Redis keys that hold it expire with the credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import attrs
import pytest
import redis.asyncio as aioredis
import socketio

from realtime_gateway import Identity
from realtime_gateway._revocation import RedisRevocationStore, session_digest

from .clinic import USERS, Inbox, connect_as
from .conftest import call
from .redis_server import RedisServer, redis_server_fixture  # noqa: F401 (the fixture)
from .test_cluster import (
    CHANNEL,
    TTL,
    Cluster,
    Node,
    _spawn,
    _stop,
    _wait_ready,
    running_cluster,
    sockets_of,
)

MAX_AGE_MS = 600_000  # cluster_node.py's default --max-age, in milliseconds
REVOKED = {"code": "unauthenticated", "reason": "revoked"}
DISCONNECTED_BY_SERVER = socketio.AsyncClient.reason.SERVER_DISCONNECT
REVOKED_KEYS = f"{CHANNEL}:revoked:*"  # redis_prefix is the channel's name


@pytest.fixture
async def cluster(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with running_cluster(redis_server, tmp_path) as running:
        yield running


def in_session(user: str, session_id: str) -> Identity:
    """``user`` of tests/clinic.py in the application session ``session_id``."""
    return attrs.evolve(USERS[user], session_id=session_id)


async def connect_with(
    cluster: Cluster, node: Node, token: str, namespaces: Iterable[str] = ("/", "/chat")
) -> tuple[socketio.AsyncClient, Inbox]:
    return await connect_as(cluster.clients, node.url, token, namespaces=namespaces)


async def revoke(cluster: Cluster, node: Node, kind: str, target: str) -> dict[str, Any]:
    """``POST /revoke/{kind}/{target}`` on ``node`` as the admin; its 200 answer."""
    status, body = await cluster.admin_body(node, "POST", f"/revoke/{kind}/{target}")
    assert status == 200, body
    return body


async def refusal_of(cluster: Cluster, node: Node, token: str) -> Any:
    """What ``node`` tells a handshake with ``token`` that it refuses."""
    refusal = await cluster.clients.refusal(node.url, auth={"token": token})
    assert isinstance(refusal.data, dict), refusal
    return refusal.data["data"]


async def admitted(cluster: Cluster, node: Node, token: str) -> socketio.AsyncClient:
    """Connect to ``node`` with ``token`` and show the socket works."""
    client, _ = await connect_with(cluster, node, token, namespaces=("/",))
    assert (await call(client, "ping"))["status"] == "pong"
    return client


Ending = tuple[float, Any, list[Any], list[Any]]
"""When a socket was disconnected, why, and the auth:revoked and auth:idle it had heard."""


class Endings:
    """For each namespace of one client: when it is disconnected, why, and which
    ``auth:revoked`` / ``auth:idle`` payloads it had received by then."""

    def __init__(
        self, client: socketio.AsyncClient, inbox: Inbox, namespaces: Iterable[str]
    ) -> None:
        loop = asyncio.get_running_loop()
        self.ended: dict[str, asyncio.Future[Ending]] = {}
        for namespace in namespaces:
            ended = self.ended[namespace] = loop.create_future()

            async def on_disconnect(
                reason: Any = None,
                namespace: str = namespace,
                ended: asyncio.Future[Ending] = ended,
            ) -> None:
                heard = (inbox.of("auth:revoked", namespace), inbox.of("auth:idle", namespace))
                if not ended.done():
                    ended.set_result((time.monotonic(), reason, *heard))

            client.on("disconnect", on_disconnect, namespace=namespace)

    async def revoked(self, within: float = 5.0) -> None:
        """Wait for every namespace to be told ``auth:revoked``, then disconnected."""
        for namespace, ended in self.ended.items():
            _, reason, revoked, idle = await asyncio.wait_for(ended, within)
            assert (reason, revoked, idle) == (
                DISCONNECTED_BY_SERVER,
                [{"reason": "revoked"}],
                [],
            ), namespace

    def still_connected(self) -> bool:
        return not any(ended.done() for ended in self.ended.values())


@contextlib.asynccontextmanager
async def store(cluster: Cluster) -> AsyncIterator[aioredis.Redis]:
    """A client of the cluster's Redis, to read the keys directly."""
    client = aioredis.Redis.from_url(cluster.redis.url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


# -- live sockets elsewhere ------------------------------------------------------------


async def test_revoke_session_on_a_ends_it_on_b_and_both_refuse_its_token(
    cluster: Cluster,
) -> None:
    a, b = cluster.a, cluster.b
    ward = cluster.tokens.issue(in_session("nurse", "s-ward"))
    home = cluster.tokens.issue(in_session("nurse", "s-home"))
    on_b, on_b_inbox = await connect_with(cluster, b, ward)
    on_a, on_a_inbox = await connect_with(cluster, a, ward, namespaces=("/",))  # a second tab
    other, other_inbox = await connect_with(cluster, b, home, namespaces=("/",))
    _, doctor_inbox = await cluster.connect(b, "doctor", namespaces=("/",))
    endings = [Endings(on_b, on_b_inbox, ("/", "/chat")), Endings(on_a, on_a_inbox, ("/",))]
    await cluster.subscribed(2)

    body = await revoke(cluster, a, "session", "s-ward")
    assert body == {"success": True, "message": "Session revoked", "data": {"disconnected": 3}}
    for ending in endings:
        await ending.revoked()

    # The nurse's other session and the doctor, on B, noticed nothing.
    await cluster.barrier("u-nurse", other_inbox)
    await cluster.barrier("u-doctor", doctor_inbox)
    assert other_inbox.of("auth:revoked") == []
    assert doctor_inbox.of("auth:revoked") == []
    assert other.connected
    for node in (a, b):
        assert await refusal_of(cluster, node, ward) == REVOKED, node.label
    assert (await call(other, "ping"))["status"] == "pong"
    for node in (a, b):
        status = await cluster.status(node, "u-nurse")
        assert sockets_of(status) == {(other.get_sid("/"), "/", b.name)}, node.label


async def test_revoke_user_on_a_ends_all_its_sessions_on_both_processes(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    ward = cluster.tokens.issue(in_session("nurse", "s-ward"))
    home = cluster.tokens.issue(in_session("nurse", "s-home"))
    unused = cluster.tokens.issue(USERS["nurse"])  # issued before, never presented
    on_b, on_b_inbox = await connect_with(cluster, b, ward)
    on_a, on_a_inbox = await connect_with(cluster, a, home, namespaces=("/",))
    _, doctor_inbox = await cluster.connect(b, "doctor", namespaces=("/",))
    endings = [Endings(on_b, on_b_inbox, ("/", "/chat")), Endings(on_a, on_a_inbox, ("/",))]
    await cluster.subscribed(2)

    body = await revoke(cluster, a, "user", "u-nurse")
    assert body == {
        "success": True,
        "message": "User's sessions revoked",
        "data": {"disconnected": 3},
    }
    for ending in endings:
        await ending.revoked()
    await cluster.barrier("u-doctor", doctor_inbox)
    assert doctor_inbox.of("auth:revoked") == []
    for node in (a, b):
        for token in (ward, home, unused):
            assert await refusal_of(cluster, node, token) == REVOKED, node.label
        assert (await cluster.status(node, "u-nurse"))["isConnected"] is False, node.label
    # Nothing of the nurse's is left to count.
    assert (await revoke(cluster, b, "user", "u-nurse"))["data"] == {"disconnected": 0}


async def test_revoke_user_admits_credentials_issued_after_it(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    before = cluster.tokens.issue(in_session("nurse", "s-ward"))
    await revoke(cluster, b, "user", "u-nurse")
    async with store(cluster) as redis:
        cutoff = int(await redis.get(f"{CHANNEL}:revoked:user:u-nurse") or 0)
    assert cutoff > 0
    # Tokens carry their issue time in milliseconds: one issued within the revocation's
    # own millisecond counts as issued before it.
    while int(time.time() * 1000) <= cutoff + 1:  # noqa: ASYNC110 (the clock, no event)
        await asyncio.sleep(0.001)
    after = cluster.tokens.issue(in_session("nurse", "s-ward"))  # a new login, same session id

    for node in (a, b):
        assert await refusal_of(cluster, node, before) == REVOKED, node.label
    clients = {node.label: await admitted(cluster, node, after) for node in (a, b)}
    await cluster.subscribed(2)
    # A later revocation of someone else reaches both processes and leaves these be.
    await revoke(cluster, a, "user", "u-doctor")
    for client in clients.values():
        assert (await call(client, "ping"))["status"] == "pong"
        assert client.connected
    for node in (a, b):
        status = await cluster.status(node, "u-nurse")
        assert {s["process"] for s in status["sockets"]} == {a.name, b.name}, node.label
        assert await refusal_of(cluster, node, before) == REVOKED, node.label


# -- the keys in Redis ------------------------------------------------------------------


async def test_revocation_keys_expire_with_the_credentials_they_cover(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    await connect_with(cluster, b, cluster.tokens.issue(in_session("nurse", "s-ward")))
    await cluster.connect(a, "doctor")
    await cluster.subscribed(2)

    started, wall_before = time.monotonic(), time.time()
    await revoke(cluster, a, "session", "s-ward")
    await revoke(cluster, b, "user", "u-doctor")
    wall_after = time.time()
    async with store(cluster) as redis:
        session_key = f"{CHANNEL}:revoked:session:{session_digest('s-ward')}"
        user_key = f"{CHANNEL}:revoked:user:u-doctor"
        lived_ms = (time.monotonic() - started) * 1000
        for key in (session_key, user_key):
            left = await redis.pttl(key)
            # The token's max_age, less what has passed since the revocation.
            assert 0 < left <= MAX_AGE_MS, (key, left)
            assert left >= MAX_AGE_MS - lived_ms - 100, (key, left, lived_ms)
        assert await redis.get(session_key) == "1"
        cutoff = int(await redis.get(user_key) or 0)
        assert wall_before * 1000 - 1 <= cutoff <= wall_after * 1000 + 1
        # Only these two, and the session id is not stored in clear.
        assert {key async for key in redis.scan_iter(REVOKED_KEYS)} == {session_key, user_key}
        assert [key async for key in redis.scan_iter("*s-ward*")] == []


async def test_revocation_keys_follow_the_authenticators_max_age(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    max_age = 2.0
    options = ("--max-age", str(max_age))
    async with running_cluster(redis_server, tmp_path, options=options) as cluster:
        a, b = cluster.a, cluster.b
        for node, kind, target in ((a, "session", "s-ward"), (b, "user", "u-nurse")):
            # Fresh each time: an admin token lives for max_age here too.
            cluster.admin_token = cluster.tokens.issue(USERS["admin"])
            await revoke(cluster, node, kind, target)
        revoked_at = time.monotonic()
        async with store(cluster) as redis:
            keys = [
                f"{CHANNEL}:revoked:session:{session_digest('s-ward')}",
                f"{CHANNEL}:revoked:user:u-nurse",
            ]
            for key in keys:
                assert 0 < await redis.pttl(key) <= max_age * 1000, key
            while await redis.exists(*keys):
                assert time.monotonic() - revoked_at < max_age + 1, "the keys did not expire"
                await asyncio.sleep(0.05)
            assert [key async for key in redis.scan_iter(REVOKED_KEYS)] == []


# -- a process that was not there ------------------------------------------------------


async def test_a_process_started_after_the_revocation_refuses_the_credentials(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b = cluster.a, cluster.b
    ward = cluster.tokens.issue(in_session("nurse", "s-ward"))
    doctor = cluster.tokens.issue(USERS["doctor"])
    staff = cluster.tokens.issue(USERS["staff"])
    await revoke(cluster, a, "session", "s-ward")
    await revoke(cluster, b, "user", "u-doctor")

    late = await _spawn("C", cluster.redis.url, TTL, tmp_path)
    try:
        await _wait_ready(late)
        # Nothing was published while C was away: what it knows, it reads from Redis.
        assert await refusal_of(cluster, late, ward) == REVOKED
        assert await refusal_of(cluster, late, doctor) == REVOKED
        await admitted(cluster, late, staff)
        await admitted(cluster, late, cluster.tokens.issue(in_session("nurse", "s-home")))
    finally:
        await cluster.clients.close()
        await _stop(late)
        print(f"--- node C log ---\n{late.log_text()[-3000:]}")
    assert late.proc.returncode == 0, late.log_text()


# -- Redis down ---------------------------------------------------------------------------


async def test_while_redis_is_down_handshakes_go_on_and_known_revocations_hold(
    cluster: Cluster,
) -> None:
    a, b = cluster.a, cluster.b
    ward = cluster.tokens.issue(in_session("nurse", "s-ward"))
    patient = cluster.tokens.issue(USERS["patient"])
    nurse, nurse_inbox = await connect_with(cluster, b, ward)
    ending = Endings(nurse, nurse_inbox, ("/", "/chat"))
    await cluster.subscribed(2)
    await revoke(cluster, a, "session", "s-ward")  # made on A, heard by B
    await ending.revoked()
    await revoke(cluster, b, "user", "u-patient")  # made on B, heard by A

    await asyncio.to_thread(cluster.redis.stop)
    # Each process goes by what it made or heard; everything else is let in.
    for node in (a, b):
        assert await refusal_of(cluster, node, ward) == REVOKED, node.label
        assert await refusal_of(cluster, node, patient) == REVOKED, node.label
        started = time.monotonic()
        await admitted(cluster, node, cluster.tokens.issue(USERS["staff"]))
        assert time.monotonic() - started < 1.5, f"handshake on {node.label} waited for Redis"

    # A revocation made now ends the revoking process's sockets and says it is not
    # stored (503): the other processes cannot hear it.
    rounds = cluster.tokens.issue(in_session("doctor", "s-rounds"))
    doctor_a, doctor_a_inbox = await connect_with(cluster, a, rounds, namespaces=("/",))
    doctor_b, doctor_b_inbox = await connect_with(cluster, b, rounds, namespaces=("/",))
    on_a = Endings(doctor_a, doctor_a_inbox, ("/",))
    on_b = Endings(doctor_b, doctor_b_inbox, ("/",))
    status, body = await cluster.admin(a, "POST", "/revoke/session/s-rounds")
    assert status == 503, body
    assert (body["success"], body["code"]) == (False, "unavailable")
    await on_a.revoked()
    assert await refusal_of(cluster, a, rounds) == REVOKED
    assert (await call(doctor_b, "ping"))["status"] == "pong"
    assert on_b.still_connected()

    # Once Redis is back (empty) and delivery between the processes has resumed,
    # trying again revokes it everywhere.
    await asyncio.to_thread(cluster.redis.start)
    await delivery_resumed(cluster, doctor_b_inbox)
    assert (await revoke(cluster, a, "session", "s-rounds"))["success"] is True
    await on_b.revoked()
    assert await refusal_of(cluster, b, rounds) == REVOKED
    for node in (a, b):
        assert await refusal_of(cluster, node, ward) == REVOKED, node.label
        assert node.proc.returncode is None, node.label


async def test_a_revocation_made_as_redis_returns_reaches_every_process(
    cluster: Cluster,
) -> None:
    a, b = cluster.a, cluster.b
    rounds = cluster.tokens.issue(in_session("doctor", "s-rounds"))
    doctor_b, doctor_b_inbox = await connect_with(cluster, b, rounds, namespaces=("/",))
    on_b = Endings(doctor_b, doctor_b_inbox, ("/",))
    await cluster.subscribed(2)
    await asyncio.to_thread(cluster.redis.stop)
    # A publishes during the outage, so its publishing backs off.
    for n in range(20):
        await cluster.emit(a, "user", "u-doctor", "lost", n)
    await asyncio.to_thread(cluster.redis.start)

    # At once, before B has subscribed again: either A says it could not tell the
    # others (503, try again) or the revocation reaches B, if need be through B
    # asking the store about its sockets once it hears the channel again.
    deadline = time.monotonic() + 15
    while True:
        status, body = await cluster.admin(a, "POST", "/revoke/session/s-rounds")
        if status == 200:
            break
        assert (status, body["code"]) == (503, "unavailable"), body
        assert time.monotonic() < deadline, "the revocation was never accepted"
        await asyncio.sleep(0.2)  # the caller's retry, as the 503 asks

    await on_b.revoked(within=20)
    assert await refusal_of(cluster, b, rounds) == REVOKED


async def test_a_process_cut_off_asks_the_store_once_it_hears_the_channel_again(
    cluster: Cluster,
) -> None:
    b = cluster.b
    rounds = cluster.tokens.issue(in_session("doctor", "s-rounds"))
    doctor_b, doctor_b_inbox = await connect_with(cluster, b, rounds, namespaces=("/",))
    on_b = Endings(doctor_b, doctor_b_inbox, ("/",))
    await cluster.subscribed(2)
    await asyncio.to_thread(cluster.redis.stop)
    await asyncio.sleep(2)  # long enough for B's listener to back off

    await asyncio.to_thread(cluster.redis.start)
    # A revocation B never hears of: in the store (Redis came back empty), no
    # control message, as when one is published before B has subscribed again.
    async with store(cluster) as redis:
        await RedisRevocationStore(redis, prefix=CHANNEL).revoke_session("s-rounds", ttl=600)
    assert on_b.still_connected()

    await on_b.revoked(within=20)
    assert await refusal_of(cluster, b, rounds) == REVOKED


async def delivery_resumed(cluster: Cluster, inbox_on_b: Inbox, within: float = 15.0) -> None:
    """Wait until A's emits reach the doctor's client on B again after an outage."""
    deadline = time.monotonic() + within
    for attempt in range(10_000):
        await cluster.emit(cluster.a, "user", "u-doctor", "after", attempt)
        with contextlib.suppress(TimeoutError):
            await inbox_on_b.wait("after", within=0.5)
            return
        assert time.monotonic() < deadline, "A -> B delivery did not resume"


# -- automatic logoff -------------------------------------------------------------------


async def test_idle_logoff_on_a_revokes_the_session_on_b(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    idle_timeout = 1.5
    options = ("--idle-timeout", str(idle_timeout))
    async with running_cluster(redis_server, tmp_path, options=options) as cluster:
        a, b = cluster.a, cluster.b
        ward = cluster.tokens.issue(in_session("nurse", "s-ward"))
        connecting_at = time.monotonic()  # before the server starts the idle clock
        quiet, quiet_inbox = await connect_with(cluster, a, ward, namespaces=("/",))
        busy, busy_inbox = await connect_with(cluster, b, ward, namespaces=("/",))
        on_a = Endings(quiet, quiet_inbox, ("/",))
        on_b = Endings(busy, busy_inbox, ("/",))
        await cluster.subscribed(2)

        acks: list[Any] = []

        async def keep_busy() -> None:
            while busy.connected:
                with contextlib.suppress(socketio.exceptions.SocketIOError):
                    acks.append(await call(busy, "session:activity"))
                await asyncio.sleep(idle_timeout / 5)

        activity = asyncio.create_task(keep_busy())
        try:
            ended_at, reason, revoked, idle = await asyncio.wait_for(on_a.ended["/"], 5)
            assert (reason, revoked, idle) == (DISCONNECTED_BY_SERVER, [], [{"reason": "idle"}])
            assert idle_timeout <= ended_at - connecting_at < idle_timeout + 2
            # The tab on B was active, but its session was revoked with the idle one.
            await on_b.revoked()
        finally:
            activity.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await activity
        assert len(acks) >= 4
        assert all(ack == {"success": True} for ack in acks), acks
        for node in (a, b):
            assert await refusal_of(cluster, node, ward) == REVOKED, node.label
