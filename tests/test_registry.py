"""The :class:`Registry` contract, written once and run against every implementation.

:class:`RegistryContract` holds the tests; each implementation gets a ``Test...``
subclass that provides the ``make_registry`` fixture (as itsdangerous re-runs its
signer tests by inheritance). A shared-store registry (Redis) is added by writing
one more subclass whose fixture also empties the store afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest
import redis.asyncio as aioredis

from realtime_gateway import (
    Connection,
    ConnectionInfo,
    Handshake,
    Identity,
    MemoryRegistry,
    Registry,
)
from realtime_gateway._cluster import RedisRegistry

from .redis_server import RedisServer, redis_server_fixture  # noqa: F401 (the fixture)

RegistryFactory = Callable[..., Registry]
"""``make_registry(reconnect_window=...)`` -> a new, empty registry."""

ALICE = Identity(user_id="alice", roles={"nurse", "admin"}, display_name="Alice")
BOB = Identity(user_id="bob", roles={"doctor"})
CAROL = Identity(user_id="carol")


def make_conn(sid: str, identity: Identity = ALICE, namespace: str = "/") -> Connection:
    """A connection as the gateway builds one, without a server."""
    return Connection(
        sid=sid,
        namespace=namespace,
        identity=identity,
        handshake=Handshake.from_http(path=namespace, headers={"Host": "example.test"}),
    )


async def assert_empty(registry: Registry, *, rooms: list[tuple[str, str]]) -> None:
    """Nothing is left: no socket, no user, no presence in ``rooms``."""
    assert await registry.connections() == []
    assert await registry.users() == frozenset()
    for user in ("alice", "bob", "carol"):
        assert await registry.user_sockets(user) == []
    for namespace, room in rooms:
        assert await registry.presence(namespace, room) == frozenset(), (namespace, room)


class RegistryContract:
    """What every :class:`Registry` must do. Not collected itself (no ``Test`` prefix)."""

    @pytest.fixture
    def make_registry(self) -> RegistryFactory:
        raise NotImplementedError("a registry test class provides make_registry")

    @pytest.fixture
    def registry(self, make_registry: RegistryFactory) -> Registry:
        return make_registry(reconnect_window=60.0)

    # -- add / get / listings ------------------------------------------------------

    async def test_implements_the_protocol(self, registry: Registry) -> None:
        assert isinstance(registry, Registry)

    async def test_empty_registry(self, registry: Registry) -> None:
        await assert_empty(registry, rooms=[("/", "r")])
        assert await registry.get("s1") is None

    async def test_add_then_get(self, registry: Registry) -> None:
        conn = make_conn("s1", ALICE, "/chat")
        assert await registry.add(conn) is False
        info = await registry.get("s1")
        assert info is not None
        assert info.sid == "s1"
        assert info.namespace == "/chat"
        assert info.identity == ALICE
        assert info.user_id == "alice"
        assert info.rooms == frozenset()
        assert info.connected_at == conn.connected_at
        assert info.last_activity == conn.last_activity
        assert await registry.get("s2") is None

    async def test_connections_users_and_user_sockets(self, registry: Registry) -> None:
        await registry.add(make_conn("a1", ALICE, "/"))
        await registry.add(make_conn("a2", ALICE, "/chat"))
        await registry.add(make_conn("a3", ALICE, "/chat"))
        await registry.add(make_conn("b1", BOB, "/"))
        assert sorted(info.sid for info in await registry.connections()) == [
            "a1",
            "a2",
            "a3",
            "b1",
        ]
        assert await registry.users() == {"alice", "bob"}
        alice = {(info.namespace, info.sid) for info in await registry.user_sockets("alice")}
        assert alice == {("/", "a1"), ("/chat", "a2"), ("/chat", "a3")}
        assert [info.sid for info in await registry.user_sockets("bob")] == ["b1"]
        assert await registry.user_sockets("carol") == []

    async def test_get_reflects_rooms_and_is_a_snapshot(self, registry: Registry) -> None:
        await registry.add(make_conn("s1"))
        await registry.join("s1", "a")
        await registry.join("s1", "b")
        before = await registry.get("s1")
        assert before is not None
        assert before.rooms == {"a", "b"}
        await registry.leave("s1", "a")
        await registry.join("s1", "c")
        after = await registry.get("s1")
        assert after is not None
        assert after.rooms == {"b", "c"}
        assert before.rooms == {"a", "b"}, "an earlier snapshot must not change"

    # -- join / leave and presence -------------------------------------------------------

    async def test_join_true_only_for_the_users_first_socket(self, registry: Registry) -> None:
        await registry.add(make_conn("a1", ALICE))
        await registry.add(make_conn("a2", ALICE))
        await registry.add(make_conn("b1", BOB))
        assert await registry.join("a1", "room") is True
        assert await registry.join("a2", "room") is False
        assert await registry.join("b1", "room") is True
        assert await registry.presence("/", "room") == {"alice", "bob"}

    async def test_leave_true_only_for_the_users_last_socket(self, registry: Registry) -> None:
        await registry.add(make_conn("a1", ALICE))
        await registry.add(make_conn("a2", ALICE))
        await registry.join("a1", "room")
        await registry.join("a2", "room")
        assert await registry.leave("a1", "room") is False
        assert await registry.presence("/", "room") == {"alice"}
        assert await registry.leave("a2", "room") is True
        assert await registry.presence("/", "room") == frozenset()
        # The user can come back: presence starts over.
        assert await registry.join("a2", "room") is True

    async def test_same_room_name_in_two_namespaces_is_separate(self, registry: Registry) -> None:
        await registry.add(make_conn("main", ALICE, "/"))
        await registry.add(make_conn("chat", ALICE, "/chat"))
        await registry.add(make_conn("bob-chat", BOB, "/chat"))
        assert await registry.join("main", "lobby") is True
        assert await registry.join("chat", "lobby") is True, "another namespace's room"
        assert await registry.join("bob-chat", "lobby") is True
        assert await registry.presence("/", "lobby") == {"alice"}
        assert await registry.presence("/chat", "lobby") == {"alice", "bob"}
        assert await registry.leave("main", "lobby") is True
        assert await registry.presence("/", "lobby") == frozenset()
        assert await registry.presence("/chat", "lobby") == {"alice", "bob"}
        assert await registry.remove("chat") == {"lobby"}
        assert await registry.presence("/chat", "lobby") == {"bob"}

    async def test_double_join_is_a_no_op(self, registry: Registry) -> None:
        await registry.add(make_conn("a1", ALICE))
        assert await registry.join("a1", "room") is True
        assert await registry.join("a1", "room") is False
        info = await registry.get("a1")
        assert info is not None
        assert info.rooms == {"room"}
        # Counted once: a single leave makes the user absent.
        assert await registry.leave("a1", "room") is True
        assert await registry.presence("/", "room") == frozenset()

    async def test_leaving_a_room_not_joined_is_a_no_op(self, registry: Registry) -> None:
        await registry.add(make_conn("a1", ALICE))
        await registry.add(make_conn("a2", ALICE))
        await registry.join("a1", "room")
        assert await registry.leave("a2", "room") is False
        assert await registry.leave("a2", "elsewhere") is False
        assert await registry.presence("/", "room") == {"alice"}
        assert await registry.leave("a1", "room") is True
        assert await registry.leave("a1", "room") is False
        assert await registry.presence("/", "room") == frozenset()

    # -- remove ----------------------------------------------------------------------------

    async def test_remove_returns_the_rooms_the_user_left(self, registry: Registry) -> None:
        await registry.add(make_conn("a1", ALICE))
        await registry.add(make_conn("a2", ALICE))
        await registry.add(make_conn("b1", BOB))
        for room in ("solo", "shared", "with-bob"):
            await registry.join("a1", room)
        await registry.join("a2", "shared")
        await registry.join("b1", "with-bob")
        # "shared" still has alice's other socket; bob's presence does not keep alice in.
        assert await registry.remove("a1") == {"solo", "with-bob"}
        assert await registry.presence("/", "shared") == {"alice"}
        assert await registry.presence("/", "with-bob") == {"bob"}
        assert await registry.presence("/", "solo") == frozenset()
        assert await registry.get("a1") is None
        assert [info.sid for info in await registry.user_sockets("alice")] == ["a2"]
        assert await registry.remove("a2") == {"shared"}
        assert await registry.users() == {"bob"}

    async def test_remove_everything_leaves_no_trace(self, registry: Registry) -> None:
        rooms = [("/", "a"), ("/", "b"), ("/chat", "a"), ("/chat", "c")]
        await registry.add(make_conn("a1", ALICE, "/"))
        await registry.add(make_conn("a2", ALICE, "/chat"))
        await registry.add(make_conn("b1", BOB, "/"))
        await registry.add(make_conn("b2", BOB, "/chat"))
        for sid, room in [("a1", "a"), ("a1", "b"), ("a2", "a"), ("b1", "a"), ("b2", "c")]:
            await registry.join(sid, room)
        for sid in ("b1", "a2", "a1", "b2"):
            await registry.remove(sid)
        await assert_empty(registry, rooms=rooms)

    async def test_remove_of_a_socket_without_rooms(self, registry: Registry) -> None:
        await registry.add(make_conn("a1", ALICE))
        assert await registry.remove("a1") == frozenset()
        await assert_empty(registry, rooms=[])

    async def test_unknown_sids_do_nothing(self, registry: Registry) -> None:
        await registry.add(make_conn("a1", ALICE))
        await registry.join("a1", "room")
        assert await registry.join("ghost", "room") is False
        assert await registry.leave("ghost", "room") is False
        assert await registry.remove("ghost") == frozenset()
        assert await registry.get("ghost") is None
        assert await registry.presence("/", "room") == {"alice"}
        assert [info.sid for info in await registry.connections()] == ["a1"]

    async def test_a_removed_sid_is_unknown(self, registry: Registry) -> None:
        await registry.add(make_conn("a1", ALICE))
        await registry.join("a1", "room")
        assert await registry.remove("a1") == {"room"}
        assert await registry.remove("a1") == frozenset()
        assert await registry.join("a1", "room") is False
        assert await registry.leave("a1", "room") is False
        assert await registry.get("a1") is None
        await assert_empty(registry, rooms=[("/", "room")])

    # -- reconnection --------------------------------------------------------------------

    async def test_first_connect_is_not_a_reconnection(self, registry: Registry) -> None:
        assert await registry.add(make_conn("a1", ALICE)) is False
        assert await registry.add(make_conn("a2", ALICE)) is False, "a second socket"
        assert await registry.add(make_conn("b1", BOB)) is False

    async def test_reconnection_within_the_window(self, make_registry: RegistryFactory) -> None:
        registry = make_registry(reconnect_window=60.0)
        await registry.add(make_conn("a1", ALICE, "/chat"))
        await registry.remove("a1")
        assert await registry.add(make_conn("b1", BOB, "/chat")) is False, "another user"
        assert await registry.add(make_conn("a2", ALICE, "/")) is False, "another namespace"
        assert await registry.add(make_conn("a3", ALICE, "/chat")) is True

    async def test_no_reconnection_after_the_window(self, make_registry: RegistryFactory) -> None:
        window = 0.05
        registry = make_registry(reconnect_window=window)
        await registry.add(make_conn("a1", ALICE))
        await registry.add(make_conn("b1", BOB))
        await registry.remove("b1")
        assert await registry.add(make_conn("b2", BOB)) is True, "within the window"
        await registry.remove("a1")
        # The clock under test is the monotonic one: wait it out, briefly.
        deadline = time.monotonic() + window * 2
        remaining = deadline - time.monotonic()
        while remaining > 0:
            await asyncio.sleep(remaining)
            remaining = deadline - time.monotonic()
        assert await registry.add(make_conn("a2", ALICE)) is False

    # -- snapshots as JSON ------------------------------------------------------------------

    async def test_to_json_shape(self, registry: Registry) -> None:
        conn = make_conn("s1", ALICE, "/chat")
        await registry.add(conn)
        for room in ("zeta", "alpha", "user:alice"):
            await registry.join("s1", room)
        info = await registry.get("s1")
        assert info is not None
        assert info.to_json() == {
            "socketId": "s1",
            "namespace": "/chat",
            "userId": "alice",
            "role": "admin",
            "roles": ["admin", "nurse"],
            "rooms": ["alpha", "user:alice", "zeta"],
            "connectedAt": round(conn.connected_at * 1000),
            "lastActivity": round(conn.last_activity * 1000),
        }

    # -- random operation sequences against a model ------------------------------------------

    @pytest.mark.parametrize("seed", range(12))
    async def test_random_sequences_match_a_model(self, registry: Registry, seed: int) -> None:
        await check_against_model(registry, random.Random(seed), steps=250)  # noqa: S311


def test_connection_info_to_json_directly() -> None:
    info = ConnectionInfo(
        sid="x",
        namespace="/",
        identity=Identity(user_id="u", roles={"b", "a", "c"}),
        rooms=frozenset({"r2", "r1"}),
        connected_at=1_700_000_000.5,
        last_activity=1_700_000_002.25,
    )
    data = info.to_json()
    assert data == {
        "socketId": "x",
        "namespace": "/",
        "userId": "u",
        "role": "a",
        "roles": ["a", "b", "c"],
        "rooms": ["r1", "r2"],
        "connectedAt": 1_700_000_000_500,
        "lastActivity": 1_700_000_002_250,
    }
    assert isinstance(data["connectedAt"], int)
    assert list(data) == [
        "socketId",
        "namespace",
        "userId",
        "role",
        "roles",
        "rooms",
        "connectedAt",
        "lastActivity",
    ]
    roleless = attrs.evolve(info, identity=Identity(user_id="u")).to_json()
    assert (roleless["role"], roleless["roles"]) == (None, [])


async def check_against_model(registry: Registry, rng: random.Random, *, steps: int) -> None:
    """Apply random add/join/leave/remove calls, checking each answer and the whole
    state against a plain model; then remove every socket and check nothing is left."""
    identities = {identity.user_id: identity for identity in (ALICE, BOB, CAROL)}
    namespaces = ("/", "/chat")
    room_names = ("r1", "r2", "r3")
    every_room = [(ns, room) for ns in namespaces for room in room_names]
    live: dict[str, tuple[str, str]] = {}  # sid -> (user, namespace)
    rooms_of: dict[str, set[str]] = {}
    departed: set[tuple[str, str]] = set()
    ever: list[str] = ["never-added"]
    serial = 0

    def present(namespace: str, room: str) -> frozenset[str]:
        return frozenset(
            user for sid, (user, ns) in live.items() if ns == namespace and room in rooms_of[sid]
        )

    def others_in(sid: str, room: str) -> bool:
        user, ns = live[sid]
        return any(
            other != sid and live[other] == (user, ns) and room in rooms_of[other] for other in live
        )

    history: list[tuple[str, Any]] = []
    for _ in range(steps):
        op = rng.choices(("add", "join", "leave", "remove"), weights=(3, 4, 3, 2))[0]
        if op == "add" or not live:
            serial += 1
            sid = f"s{serial}"
            user = rng.choice(sorted(identities))
            ns = rng.choice(namespaces)
            history.append(("add", (sid, user, ns)))
            expected_reconnect = (user, ns) in departed
            departed.discard((user, ns))
            got = await registry.add(make_conn(sid, identities[user], ns))
            assert got is expected_reconnect, history
            live[sid] = (user, ns)
            rooms_of[sid] = set()
            ever.append(sid)
        elif op == "join":
            sid = rng.choice(ever)
            room = rng.choice(room_names)
            history.append(("join", (sid, room)))
            expected = sid in live and room not in rooms_of[sid] and not others_in(sid, room)
            assert await registry.join(sid, room) is expected, history
            if sid in live:
                rooms_of[sid].add(room)
        elif op == "leave":
            sid = rng.choice(ever)
            room = rng.choice(room_names)
            history.append(("leave", (sid, room)))
            expected = sid in live and room in rooms_of[sid] and not others_in(sid, room)
            assert await registry.leave(sid, room) is expected, history
            if sid in live:
                rooms_of[sid].discard(room)
        else:
            sid = rng.choice(ever)
            history.append(("remove", sid))
            expected_gone: frozenset[str] = frozenset()
            if sid in live:
                expected_gone = frozenset(r for r in rooms_of[sid] if not others_in(sid, r))
                departed.add(live.pop(sid))
                del rooms_of[sid]
            assert await registry.remove(sid) == expected_gone, history
        await check_state(registry, live, rooms_of, every_room, present, history)

    for sid in list(live):
        await registry.remove(sid)
    await assert_empty(registry, rooms=every_room)


async def check_state(
    registry: Registry,
    live: dict[str, tuple[str, str]],
    rooms_of: dict[str, set[str]],
    every_room: list[tuple[str, str]],
    present: Callable[[str, str], frozenset[str]],
    history: list[tuple[str, Any]],
) -> None:
    for namespace, room in every_room:
        assert await registry.presence(namespace, room) == present(namespace, room), history
    assert await registry.users() == {user for user, _ in live.values()}, history
    snapshot = {info.sid: info for info in await registry.connections()}
    assert set(snapshot) == set(live), history
    for sid, (user, ns) in live.items():
        assert (snapshot[sid].user_id, snapshot[sid].namespace) == (user, ns), history
        assert snapshot[sid].rooms == rooms_of[sid], history
    per_user = Counter(user for user, _ in live.values())
    for user, count in per_user.items():
        assert len(await registry.user_sockets(user)) == count, history


class TestMemoryRegistry(RegistryContract):
    @pytest.fixture
    def make_registry(self) -> RegistryFactory:
        def make(*, reconnect_window: float = 60.0) -> Registry:
            return MemoryRegistry(reconnect_window=reconnect_window)

        return make

    async def test_len_counts_sockets(self) -> None:
        registry = MemoryRegistry()
        await registry.add(make_conn("a1"))
        await registry.add(make_conn("a2"))
        assert len(registry) == 2
        await registry.remove("a1")
        assert len(registry) == 1


REDIS_STEPS = 100


class TestRedisRegistry(RegistryContract):
    """The contract against :class:`RedisRegistry` on a real ``redis-server``, each
    registry under a key prefix of its own, emptied and closed afterwards."""

    @pytest.fixture
    async def make_registry(self, redis_server: RedisServer) -> AsyncIterator[RegistryFactory]:
        made: list[RedisRegistry] = []
        test_prefix = f"rtg-test-{uuid.uuid4().hex[:12]}"

        def make(*, reconnect_window: float = 60.0) -> Registry:
            registry = RedisRegistry(
                aioredis.Redis.from_url(redis_server.url),
                prefix=f"{test_prefix}-{len(made)}",
                ttl=15,
                reconnect_window=reconnect_window,
            )
            made.append(registry)
            return registry

        try:
            yield make
        finally:
            for registry in made:
                async with asyncio.timeout(5):
                    keys = [key async for key in registry.redis.scan_iter(f"{registry.prefix}:*")]
                    if keys:
                        await registry.redis.delete(*keys)
                    await registry.redis.aclose()

    # -- where the shared store differs from, or goes beyond, the contract -----------

    async def test_to_json_shape(self, registry: Registry) -> None:
        """The contract's shape plus ``process``: a cluster registry names the process
        each socket lives on (``ConnectionInfo.to_json`` adds it when set), which the
        contract's exact comparison, written for one process, leaves out."""
        assert isinstance(registry, RedisRegistry)
        conn = make_conn("s1", ALICE, "/chat")
        await registry.add(conn)
        for room in ("zeta", "alpha", "user:alice"):
            await registry.join("s1", room)
        info = await registry.get("s1")
        assert info is not None
        assert info.to_json() == {
            "socketId": "s1",
            "namespace": "/chat",
            "userId": "alice",
            "role": "admin",
            "roles": ["admin", "nurse"],
            "rooms": ["alpha", "user:alice", "zeta"],
            "connectedAt": round(conn.connected_at * 1000),
            "lastActivity": round(conn.last_activity * 1000),
            "process": registry.process,
        }
        assert [entry.to_json() for entry in await registry.connections()] == [info.to_json()]

    @pytest.mark.parametrize("seed", range(12))
    async def test_random_sequences_match_a_model(self, registry: Registry, seed: int) -> None:
        # Every step checks the whole state, a dozen round trips to Redis: fewer steps
        # than in memory keep the twelve seeds within seconds.
        await check_against_model(registry, random.Random(seed), steps=REDIS_STEPS)  # noqa: S311

    async def test_two_processes_share_one_view(self, redis_server: RedisServer) -> None:
        """Two registries on one prefix (two gateway processes): presence, users,
        sockets and reconnections are the cluster's, whichever process is asked."""
        async with shared_registries(redis_server.url, 2, ttl=15) as (one, two):
            await one.add(make_conn("a1", ALICE))
            await two.add(make_conn("a2", ALICE))
            await two.add(make_conn("b1", BOB))
            assert await one.join("a1", "room") is True
            assert await two.join("a2", "room") is False, "alice is present through one"
            assert await two.join("b1", "room") is True
            for registry in (one, two):
                assert await registry.presence("/", "room") == {"alice", "bob"}
                assert await registry.users() == {"alice", "bob"}
                where = {info.sid: info.process for info in await registry.connections()}
                assert where == {"a1": one.process, "a2": two.process, "b1": two.process}
                alice = {info.sid: info.process for info in await registry.user_sockets("alice")}
                assert alice == {"a1": one.process, "a2": two.process}
                info = await registry.get("a1")
                assert info is not None
                assert (info.process, info.rooms) == (one.process, frozenset({"room"}))
            assert await one.leave("a1", "room") is False, "alice is still there through two"
            assert await two.remove("a2") == {"room"}
            assert await one.presence("/", "room") == {"bob"}
            # alice left "/" through two: her next socket there, on one, is a reconnection.
            assert await one.add(make_conn("a3", ALICE)) is True
            await one.remove("a1")
            await one.remove("a3")
            await two.remove("b1")
            await assert_empty(one, rooms=[("/", "room")])
            await assert_empty(two, rooms=[("/", "room")])

    async def test_a_silent_process_is_swept_within_ttl_and_a_heartbeat(
        self, redis_server: RedisServer
    ) -> None:
        ttl = 0.5
        async with shared_registries(redis_server.url, 2, ttl=ttl) as (dead, alive):
            swept: list[tuple[ConnectionInfo, frozenset[str]]] = []

            async def record(entries: list[tuple[ConnectionInfo, frozenset[str]]]) -> None:
                swept.extend(entries)

            alive.on_swept(record)
            for sid in ("a1", "a2"):
                await dead.add(make_conn(sid, ALICE, "/chat"))
                await dead.join(sid, "conversation:c1")
            await dead.join("a1", "alone")
            await alive.add(make_conn("b1", BOB, "/chat"))
            await alive.join("b1", "conversation:c1")
            await dead.heartbeat()
            last_beat = time.monotonic()
            await alive.heartbeat()
            assert set(await alive.cluster_stats()) == set(), "no figures published yet"
            await dead.publish_stats({"connections_active": 2})
            assert await alive.cluster_stats() == {dead.process: {"connections_active": 2}}
            assert swept == []

            # dead beats no more; alive beats every ttl / 3, as the gateway does.
            async with asyncio.timeout(ttl * 10):
                while not swept:
                    await asyncio.sleep(ttl / 3)
                    await alive.heartbeat()
            assert time.monotonic() - last_beat < ttl + ttl / 3 + 0.5
            assert sorted((info.sid, rooms) for info, rooms in swept) == [
                # alice's presence ended with her process: announced once, not per socket.
                ("a1", frozenset({"alone", "conversation:c1"})),
                ("a2", frozenset()),
            ]
            assert all(info.process == dead.process for info, _ in swept)
            assert await alive.presence("/chat", "conversation:c1") == {"bob"}
            assert await alive.presence("/chat", "alone") == frozenset()
            assert await alive.users() == {"bob"}
            assert await alive.user_sockets("alice") == []
            assert [info.sid for info in await alive.connections()] == ["b1"]
            assert await alive.cluster_stats() == {}
            # Swept once: later heartbeats find nothing more.
            await alive.heartbeat()
            assert len(swept) == 2


@contextlib.asynccontextmanager
async def shared_registries(
    url: str, count: int, *, ttl: float
) -> AsyncIterator[list[RedisRegistry]]:
    """``count`` registries on one Redis and one prefix, as ``count`` processes have;
    their connections are closed afterwards (the test's redis-server goes with it)."""
    registries = [
        RedisRegistry(
            aioredis.Redis.from_url(url), prefix="rtg-shared", ttl=ttl, reconnect_window=60.0
        )
        for _ in range(count)
    ]
    try:
        yield registries
    finally:
        async with asyncio.timeout(5):
            for registry in registries:
                await registry.redis.aclose()
