"""Missed-message recovery across gateway processes on a real ``redis-server``.

The processes are tests/test_cluster.py's (tests/cluster_node.py, here with
``--recovery-window``), the client is the official socket.io client in Node
(tests/jsclient.py). A client dropped from one process recovers on the other, on a
process restarted after a ``kill -9``, and again after Redis restarted (having
lost everything) once the processes are back on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import redis.asyncio as aioredis

from realtime_gateway import SignedTokenAuthenticator
from realtime_gateway._recovery import OffsetLost, RecoverySession, TooManyMissed, offset_key
from realtime_gateway._recovery_redis import RedisRecoveryStore

from .clinic import USERS, clinic_gateway, connect_as
from .conftest import Clients, call, quick_config, until
from .jsclient import JsClient, js_client
from .redis_server import RedisServer, redis_server_fixture  # noqa: F401 (the fixture)
from .test_cluster import CHANNEL, TTL, Cluster, Node, _spawn, _wait_ready, running_cluster

WINDOW = ["--recovery-window", "30"]
PARKED = f"{CHANNEL}:recovery:parked:*"
UPDATES = "/updates"
ROOM = "patient:p1"


@pytest.fixture
async def cluster(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with running_cluster(redis_server, tmp_path, options=WINDOW) as running:
        yield running


@contextlib.asynccontextmanager
async def nurse_on(cluster: Cluster, node: Node) -> AsyncIterator[JsClient]:
    """The nurse's official client on ``node``, subscribed to patient p1."""
    token = cluster.tokens.issue(USERS["nurse"])
    async with js_client(node.url, UPDATES, auth={"token": token}) as client:
        assert (await client.connected())["recovered"] is False
        await client.call("subscribe:patient", {"patientId": "p1"})
        yield client


async def publish(cluster: Cluster, node: Node, n: int) -> None:
    """Have ``node`` send vitals ``n`` to patient p1's room."""
    await cluster.emit(node, "room", ROOM, "patient:update", {"n": n}, namespace=UPDATES)


def vitals(client: JsClient) -> list[int]:
    return [args[0]["n"] for args in client.events("patient:update")]


def offsets(client: JsClient) -> list[Any]:
    """The last argument of each update: its offset, a Redis stream id."""
    return [args[-1] for args in client.events("patient:update")]


async def received(client: JsClient, count: int, within: float = 10.0) -> list[int]:
    async with asyncio.timeout(within):
        while len(vitals(client)) < count:
            await client.next(lambda report: report["type"] == "event")
    return vitals(client)


def in_stream_order(client: JsClient, since: int = 0) -> bool:
    """Whether the updates from the ``since``-th on carry offsets, increasing."""
    keys = [offset_key(offset) for offset in offsets(client)[since:]]
    return None not in keys and keys == sorted(set(keys))  # type: ignore[type-var]


async def parked(cluster: Cluster, count: int = 1, within: float = 10.0) -> None:
    """Wait until ``count`` dropped sockets are parked in Redis (their server heard
    them drop)."""
    client = aioredis.Redis.from_url(cluster.redis.url)
    try:
        async with asyncio.timeout(within):
            while True:
                if len(await client.keys(PARKED)) >= count:
                    return
                await asyncio.sleep(0.02)
    finally:
        await client.aclose()


async def logging_again(cluster: Cluster, client: JsClient, within: float = 15.0) -> None:
    """Wait until the events of both processes reach ``client`` with offsets again
    (each process gets back on Redis with its own backoff)."""
    n = 1000
    for node in (cluster.a, cluster.b):
        deadline = time.monotonic() + within
        while True:
            n += 1
            await publish(cluster, node, n)
            with contextlib.suppress(TimeoutError):
                # B's events reach the client on A only through Redis.
                await received(client, len(vitals(client)) + 1, within=0.5)
                if vitals(client)[-1] == n and offset_key(offsets(client)[-1]) is not None:
                    break
            assert time.monotonic() < deadline, f"{node.label} does not log events again"


async def test_dropped_from_a_recovers_on_b_in_order_once_and_twice_in_a_row(
    cluster: Cluster,
) -> None:
    a, b = cluster.a, cluster.b
    await cluster.subscribed(2)
    async with nurse_on(cluster, a) as client:
        await publish(cluster, b, 0)
        assert await received(client, 1) == [0]

        client.send("drop")
        await client.disconnected()
        await parked(cluster)
        # Missed meanwhile, sent by either process.
        for n, node in ((1, a), (2, b), (3, a), (4, b)):
            await publish(cluster, node, n)

        client.send("reconnect", url=b.url)
        assert (await client.connected())["recovered"] is True
        await publish(cluster, a, 5)
        assert await received(client, 6) == [0, 1, 2, 3, 4, 5]
        assert in_stream_order(client)

        # A second drop, from B back to A: the offsets keep advancing.
        client.send("drop")
        await client.disconnected()
        await parked(cluster)
        await publish(cluster, b, 6)
        await publish(cluster, a, 7)
        client.send("reconnect", url=a.url)
        assert (await client.connected())["recovered"] is True
        await publish(cluster, b, 8)
        assert await received(client, 9) == list(range(9))
        assert in_stream_order(client)


async def test_after_kill_9_the_restarted_process_recovers_its_socket(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b = cluster.a, cluster.b
    await cluster.subscribed(2)
    async with nurse_on(cluster, a) as client:
        await publish(cluster, b, 0)
        assert await received(client, 1) == [0]

        client.send("pause")
        a.proc.kill()  # SIGKILL by pid: no disconnect handler runs
        await a.proc.wait()
        await client.disconnected()
        for n in (1, 2):
            await publish(cluster, b, n)

        again = await _spawn("A2", cluster.redis.url, TTL, tmp_path, WINDOW)
        try:
            await _wait_ready(again)
            client.send("reconnect", url=again.url)
            assert (await client.connected())["recovered"] is True
            await publish(cluster, b, 3)
            assert await received(client, 4) == [0, 1, 2, 3]
            assert in_stream_order(client)
        finally:
            again.proc.terminate()
            await asyncio.wait_for(again.proc.communicate(), 10)


async def test_redis_restart_degrades_to_fresh_connections_then_recovers_again(
    cluster: Cluster,
) -> None:
    a, b = cluster.a, cluster.b
    await cluster.subscribed(2)
    async with nurse_on(cluster, a) as client:
        await publish(cluster, a, 0)
        assert await received(client, 1) == [0]
        client.send("drop")
        await client.disconnected()
        await parked(cluster)

        await asyncio.to_thread(cluster.redis.stop)
        await publish(cluster, a, 1)  # no Redis: delivered here, to nobody, unlogged
        await asyncio.to_thread(cluster.redis.start)  # the same port, and empty

        # The session went with Redis: a fresh connection, not an error.
        client.send("reconnect", url=a.url)
        assert (await client.connected())["recovered"] is False
        for node in (a, b):
            assert node.proc.returncode is None, node.label
            assert await cluster.health(node) in (200, 503), node.label
        await client.call("subscribe:patient", {"patientId": "p1"})

        await logging_again(cluster, client)
        await cluster.subscribed(2)

        client.send("drop")
        await client.disconnected()
        await parked(cluster)
        before = len(vitals(client))
        await publish(cluster, b, 100)
        await publish(cluster, a, 101)
        client.send("reconnect", url=b.url)
        assert (await client.connected())["recovered"] is True
        await publish(cluster, b, 102)
        assert (await received(client, before + 3))[before:] == [100, 101, 102]
        assert in_stream_order(client, since=before - 1)


async def test_concurrent_emits_from_both_processes_arrive_in_stream_order(
    cluster: Cluster,
) -> None:
    a, b = cluster.a, cluster.b
    await cluster.subscribed(2)
    async with nurse_on(cluster, a) as client:
        # A's own events and B's, at once: each reaches the client on A in the
        # order of their offsets (which the client's recovery relies on).
        await asyncio.gather(*(publish(cluster, (a, b)[n % 2], n) for n in range(60)))
        assert sorted(await received(client, 60)) == list(range(60))
        assert in_stream_order(client)


async def test_a_stolen_pid_with_another_users_token_recovers_nothing_elsewhere(
    cluster: Cluster,
) -> None:
    a, b = cluster.a, cluster.b
    await cluster.subscribed(2)
    async with nurse_on(cluster, a) as client:
        await publish(cluster, b, 0)
        assert await received(client, 1) == [0]
        # The private id the server gave the client in its CONNECT reply.
        [pid] = [report["pid"] for report in client.reports if report["type"] == "connect"]
        async with store(cluster) as redis:
            # Redis names it only by its digest.
            [name] = await redis.hkeys(f"{CHANNEL}:recovery:live:{a.name}")
            assert name == hashlib.sha256(pid.encode()).hexdigest()[:32]
            assert pid not in str(await redis.hgetall(f"{CHANNEL}:recovery:live:{a.name}"))
        client.send("pause")
        a.proc.kill()  # the session is only A's live record now
        await a.proc.wait()
        await client.disconnected()
        await publish(cluster, b, 1)

        # The doctor may see patient p1 too, but this session is not hers.
        doctor = cluster.tokens.issue(USERS["doctor"])
        stolen = {"token": doctor, "pid": pid, "offset": offsets(client)[-1]}
        async with js_client(b.url, UPDATES, auth=stolen) as thief:
            assert (await thief.connected())["recovered"] is False
            # Not in the room either: a barrier to the doctor's own room comes alone.
            await publish(cluster, b, 2)
            await cluster.emit(b, "user", "u-doctor", "barrier", 1, namespace=UPDATES)
            await thief.event("barrier")
            assert thief.events("patient:update") == []

        # Its owner still recovers it, with everything it missed.
        client.send("reconnect", url=b.url)
        assert (await client.connected())["recovered"] is True
        assert await received(client, 3) == [0, 1, 2]
        assert in_stream_order(client)


@contextlib.asynccontextmanager
async def store(cluster: Cluster | RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A client of the cluster's Redis, to read the keys directly."""
    server = cluster.redis if isinstance(cluster, Cluster) else cluster
    client = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


async def test_live_sessions_are_written_again_after_redis_lost_them(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    await cluster.subscribed(2)
    async with nurse_on(cluster, a) as client:
        await asyncio.to_thread(cluster.redis.stop)
        await asyncio.to_thread(cluster.redis.start)  # empty: A's live record is gone
        await logging_again(cluster, client)
        async with store(cluster) as redis:
            async with asyncio.timeout(TTL):
                while True:  # the next heartbeat of A writes it again
                    if await redis.hlen(f"{CHANNEL}:recovery:live:{a.name}"):
                        break
                    await asyncio.sleep(0.05)
        client.send("pause")
        a.proc.kill()
        await a.proc.wait()
        await client.disconnected()
        before = len(vitals(client))
        await publish(cluster, b, 1)
        client.send("reconnect", url=b.url)
        assert (await client.connected())["recovered"] is True
        assert (await received(client, before + 1))[before:] == [1]


async def test_binary_events_are_logged_and_replayed_with_their_attachments(
    redis_server: RedisServer, authenticator: SignedTokenAuthenticator
) -> None:
    config = quick_config(redis_url=redis_server.url, recovery_window=30)
    gateway = clinic_gateway(authenticator, config=config)
    recovery = gateway._recovery
    assert recovery is not None
    assert isinstance(recovery.store, RedisRecoveryStore)
    clients = Clients()
    async with clients.serve(gateway, "aiohttp") as running:
        token = authenticator.issue(USERS["nurse"])
        client, _ = await connect_as(clients, running.url, token, namespaces=(UPDATES,))
        got: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

        async def on_scan(*args: Any) -> None:
            await got.put(args)

        client.on("scan", on_scan, namespace=UPDATES)
        await call(client, "subscribe:patient", {"patientId": "p1"}, UPDATES)
        image = bytes(range(256))
        await gateway.emit_to_room(ROOM, "scan", {"image": image}, namespace=UPDATES)
        data, offset = await asyncio.wait_for(got.get(), 5)
        assert data == {"image": image}
        assert offset_key(offset) is not None

        [entry] = await recovery.store.missed(UPDATES, "0", lambda entry: True, 10)
        assert entry.offset == offset
        assert entry.rooms == ROOM
        header, attachment = entry.frames
        assert isinstance(header, str)
        assert header.startswith(f"51-{UPDATES},")
        assert header.endswith(f'"{offset}"]')
        assert attachment == image
        assert await recovery.store.missed(UPDATES, offset, lambda entry: True, 10) == []


async def test_the_redis_store_keeps_the_memory_stores_semantics(
    redis_server: RedisServer, authenticator: SignedTokenAuthenticator
) -> None:
    config = quick_config(redis_url=redis_server.url, recovery_window=30, recovery_log_events=100)
    gateway, other = (clinic_gateway(authenticator, config=config) for _ in range(2))
    mine, theirs = (g._recovery.store if g._recovery else None for g in (gateway, other))
    assert isinstance(mine, RedisRecoveryStore)
    assert isinstance(theirs, RedisRecoveryStore)
    clients = Clients()
    try:
        async with clients.serve(gateway, "aiohttp"), store(redis_server) as redis:
            # The log: trimmed to about 100 events (whole stream nodes go at once).
            for n in range(250):
                await gateway.emit_to_room(ROOM, "patient:update", {"n": n}, namespace=UPDATES)
            entries = await redis.xrange(mine.log_key(UPDATES))
            assert entries is not None
            kept = [str(entry_id) for entry_id, _ in entries]
            assert 100 <= len(kept) < 250
            everything = lambda entry: True  # noqa: E731
            missed = await mine.missed(UPDATES, kept[0], everything, 1000)
            assert [entry.offset for entry in missed] == kept[1:]
            assert await mine.missed(UPDATES, kept[0], lambda entry: False, 1000) == []
            with pytest.raises(TooManyMissed):
                await mine.missed(UPDATES, kept[0], everything, len(kept) - 2)
            for lost in ("0", "1-0", f"{int(kept[-1].split('-')[0]) + 1}-0"):  # trimmed, ahead
                with pytest.raises(OffsetLost):
                    await mine.missed(UPDATES, lost, everything, 1000)

            # Sessions: a parked one is settled once, by the process that parked it,
            # and a claim (on any process) still finds it, once.
            session = RecoverySession(
                pid="p" * 24,
                namespace=UPDATES,
                identity=USERS["nurse"],
                sid="sid-1",
                rooms={ROOM: "subscribe"},
                offset=kept[-1],
            )
            await mine.park(session, 30)
            assert await theirs.settle(session.pid) is False
            assert await mine.settle(session.pid) is True
            assert await mine.settle(session.pid) is False
            claimed = await theirs.claim(session.pid)
            assert claimed is not None
            assert (claimed.identity.user_id, claimed.rooms, claimed.sid, claimed.offset) == (
                "u-nurse",
                {ROOM: "subscribe"},
                "sid-1",
                kept[-1],
            )
            assert await mine.claim(session.pid) is None
            # Put back by the claimant (it refused the claim: another user's token),
            # the session is still its parker's to settle.
            await theirs.park(claimed, 20)
            assert await theirs.settle(session.pid) is False
            assert await mine.settle(session.pid) is True

            # A live one is taken over by another process, once; not by its own.
            live = attrs.evolve(session, pid="q" * 24)
            await mine.opened(live)
            assert await mine.claim(live.pid) is None
            taken = await theirs.claim(live.pid)
            assert taken is not None
            assert taken.rooms == {ROOM: "subscribe"}
            assert await theirs.claim(live.pid) is None
            await mine.opened(attrs.evolve(live, pid="r" * 24))
            await mine.closed("r" * 24)
            assert await theirs.claim("r" * 24) is None

            # An event sent while Redis was unreachable was not logged: no recovery
            # may replay across it, or it would be skipped without a word.
            manager = gateway._cluster.manager if gateway._cluster else None
            assert manager is not None
            manager._outage.failed(ConnectionError("test"))  # as after a failed command
            await gateway.emit_to_room(ROOM, "patient:update", {"n": 250}, namespace=UPDATES)
            manager._outage.retry_at = 0.0  # the backoff is over
            before = await mine.missed(UPDATES, kept[-1], everything, 1000)
            assert before == []
            await gateway.emit_to_room(ROOM, "patient:update", {"n": 251}, namespace=UPDATES)
            with pytest.raises(OffsetLost):
                await mine.missed(UPDATES, kept[-1], everything, 1000)
            newest = await redis.xrevrange(mine.log_key(UPDATES), count=1)
            assert newest is not None
            [(gap, _)] = newest
            assert await mine.missed(UPDATES, str(gap), everything, 1000) == []
    finally:
        assert other._cluster is not None
        await other._cluster.registry.redis.aclose()


@pytest.mark.parametrize("still_allowed", [True, False], ids=["kept", "lost"])
async def test_presence_does_not_flap_when_a_socket_recovers_on_another_process(
    cluster: Cluster, still_allowed: bool
) -> None:
    """Recovered on B within the window: no departure and no new arrival. Unless
    the fresh credential no longer allows the room: then its departure is told."""
    a, b = cluster.a, cluster.b
    doctor, inbox = await cluster.connect(b, "doctor", namespaces=("/chat",))
    await cluster.subscribed(2)
    await call(doctor, "join:conversation", "c1", "/chat")
    token = cluster.tokens.issue(USERS["nurse"])

    def nurse_presence() -> list[tuple[str, Any]]:
        """What the doctor was told of the nurse, by event name."""
        return [
            (event, data)
            for (namespace, event), items in sorted(inbox.received.items())
            for data in items
            if namespace == "/chat" and isinstance(data, dict) and data.get("userId") == "u-nurse"
        ]

    async with js_client(a.url, "/chat", auth={"token": token}) as client:
        assert (await client.connected())["recovered"] is False
        await client.call("join:conversation", "c1")
        await inbox.wait("user:joined", "/chat")
        seen = nurse_presence()

        client.send("drop")
        await client.disconnected()
        await parked(cluster)
        # The same user; as a patient, no longer of the care team.
        demoted = attrs.evolve(USERS["nurse"], roles={"patient"})
        fresh = token if still_allowed else cluster.tokens.issue(demoted)
        client.send("reconnect", url=b.url, auth={"token": fresh})
        assert (await client.connected())["recovered"] is True
        # A barrier through the same room: whatever B announced came before it.
        await cluster.emit(b, "room", "conversation:c1", "barrier", 1, namespace="/chat")
        await inbox.wait("barrier", "/chat")
        if still_allowed:
            assert nurse_presence() == seen
        else:
            told = sorted(event for event, _ in nurse_presence())
            assert told == ["presence:join", "presence:leave", "user:joined", "user:left"]


async def test_events_published_throughout_a_recovery_arrive_exactly_once_in_order(
    cluster: Cluster,
) -> None:
    a, b = cluster.a, cluster.b
    await cluster.subscribed(2)
    count = 300
    async with nurse_on(cluster, a) as client:
        await publish(cluster, a, 0)
        assert await received(client, 1) == [0]

        async def keep_publishing() -> None:
            for n in range(1, count):
                await publish(cluster, (a, b)[n % 2], n)

        # Events go out before, while and after the client drops from A and is
        # recovered on B (some reach it while its deliveries are held).
        publishing = asyncio.create_task(keep_publishing())
        await received(client, 10)
        client.send("drop")
        await client.disconnected()
        await parked(cluster)
        client.send("reconnect", url=b.url)
        assert (await client.connected())["recovered"] is True
        assert not publishing.done()  # the recovery happened mid-stream
        await publishing
        assert await received(client, count) == list(range(count))
        assert in_stream_order(client)


class Blackhole:
    """A TCP proxy to ``port`` that can stop passing bytes without closing anything,
    as a network that drops a client silently: the server notices only when its
    ping times out."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.frozen = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> Blackhole:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._writers += [writer, upstream_writer]
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                if not self.frozen:
                    sink.write(data)
                    await sink.drain()
        finally:
            if not self.frozen:
                sink.close()


async def test_a_client_back_before_its_server_noticed_is_taken_over_elsewhere(
    cluster: Cluster,
) -> None:
    a, b = cluster.a, cluster.b
    await cluster.subscribed(2)
    token = cluster.tokens.issue(USERS["nurse"])
    network = Blackhole(int(a.url.rsplit(":", 1)[1]))
    async with network, js_client(network.url, UPDATES, auth={"token": token}) as client:
        assert (await client.connected())["recovered"] is False
        await client.call("subscribe:patient", {"patientId": "p1"})
        await publish(cluster, b, 0)
        assert await received(client, 1) == [0]

        network.frozen = True  # A hears nothing more from it, nor it from A
        client.send("drop")
        await client.disconnected()
        await publish(cluster, b, 1)
        client.send("reconnect", url=b.url)
        assert (await client.connected())["recovered"] is True
        assert await received(client, 2) == [0, 1]

        # A's ping timeout parks what it still had: that must not disturb the
        # socket now on B, nor its next recovery.
        await parked(cluster)
        await publish(cluster, a, 2)
        assert await received(client, 3) == [0, 1, 2]
        client.send("drop")
        await client.disconnected()
        await publish(cluster, b, 3)
        client.send("reconnect", url=a.url)
        assert (await client.connected())["recovered"] is True
        await publish(cluster, b, 4)
        assert await received(client, 5) == [0, 1, 2, 3, 4]
        assert in_stream_order(client)


@contextlib.asynccontextmanager
async def recovering_nurse(
    redis_server: RedisServer, authenticator: SignedTokenAuthenticator
) -> AsyncIterator[tuple[Any, JsClient, Any]]:
    """A gateway on Redis with the nurse's official client subscribed to patient p1,
    dropped after vitals 0 and parked: ``(gateway, client, appended)``, where
    ``appended(n)`` logs vitals ``n`` as another process would whose message this
    process has not heard yet, and returns the message to publish later."""
    config = quick_config(redis_url=redis_server.url, recovery_window=30)
    gateway = clinic_gateway(authenticator, config=config)
    recovery = gateway._recovery
    assert recovery is not None
    log = recovery.store
    assert isinstance(log, RedisRecoveryStore)
    clients = Clients()
    async with clients.serve(gateway, "aiohttp") as running:
        manager = gateway.server.manager
        token = authenticator.issue(USERS["nurse"])
        async with js_client(running.url, UPDATES, auth={"token": token}) as client:
            assert (await client.connected())["recovered"] is False
            await client.call("subscribe:patient", {"patientId": "p1"})
            await gateway.emit_to_room(ROOM, "patient:update", {"n": 0}, namespace=UPDATES)
            assert await received(client, 1) == [0]
            client.send("drop")
            await client.disconnected()
            await until(lambda: bool(recovery._parked), within=10)

            async def appended(n: int) -> str:
                message = {
                    "method": "emit",
                    "event": "patient:update",
                    "data": [{"n": n}],
                    "binary": False,
                    "namespace": UPDATES,
                    "room": ROOM,
                    "skip_sid": None,
                    "callback": None,
                    "host_id": "another-process",
                }
                signed = manager._encode(message)
                call = log.append_args(UPDATES, signed, ROOM, None, gap=False)
                call["args"][5] = f"{CHANNEL}:nobody"  # in the stream, not yet on the bus
                offset = await log.append_script(**call)
                text = offset.decode() if isinstance(offset, bytes) else str(offset)
                return f'{signed[:-1]},"offset":"{text}"}}'

            yield gateway, client, appended


async def test_an_event_replayed_before_this_process_heard_it_is_not_sent_again(
    redis_server: RedisServer, authenticator: SignedTokenAuthenticator
) -> None:
    """The replay reads the stream, which can be ahead of what this process has
    heard on the bus: the recovered socket stays held until the bus catches up, so
    the event arriving late on the bus is not delivered a second time."""
    async with (
        recovering_nurse(redis_server, authenticator) as (gateway, client, appended),
        store(redis_server) as redis,
    ):
        late = await appended(1)
        client.send("reconnect")
        assert (await client.connected())["recovered"] is True
        assert await received(client, 2) == [0, 1]  # from the replay
        await redis.publish(gateway.server.manager.channel, late)
        await gateway.emit_to_room(ROOM, "patient:update", {"n": 2}, namespace=UPDATES)
        # Had the late copy of 1 been delivered, it would come before 2 (one bus).
        assert await received(client, 3) == [0, 1, 2]
        assert in_stream_order(client)


async def test_a_bus_that_never_catches_up_releases_the_hold_in_the_end(
    redis_server: RedisServer,
    authenticator: SignedTokenAuthenticator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr("realtime_gateway._recover.BUS_WAIT", 0.3)
    caplog.set_level(logging.WARNING, logger="realtime_gateway")
    async with recovering_nurse(redis_server, authenticator) as (gateway, client, appended):
        await appended(1)  # never published
        client.send("reconnect")
        assert (await client.connected())["recovered"] is True
        assert await received(client, 2) == [0, 1]  # from the replay
        await until(lambda: "recovery_bus_behind" in caplog.text)
        assert gateway._recovery is not None
        assert not gateway._recovery.holding
        # Live again (a later event heard on the bus would also have ended the wait).
        await gateway.emit_to_room(ROOM, "patient:update", {"n": 2}, namespace=UPDATES)
        assert await received(client, 3) == [0, 1, 2]
