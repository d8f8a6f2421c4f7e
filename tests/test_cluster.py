"""Two gateway OS processes, A and B, on one real ``redis-server`` behave as one.

Each process runs tests/cluster_node.py (the clinic gateway, its admin API and a
test-only ``POST /test/emit``); real python-socketio clients connect to either.
Most tests drive A and watch clients on B. Absence is shown with a barrier: a later
event to the same client, sent the same way, arrives after anything sent before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import attrs
import pytest
import redis.asyncio as aioredis
import socketio
from itsdangerous import URLSafeSerializer

from realtime_gateway import (
    ConfigurationError,
    Gateway,
    GatewayConfig,
    Identity,
    SignedTokenAuthenticator,
    default_namespaces,
    reference_rules,
)
from realtime_gateway._cluster import CLUSTER_SALT, identity_to_json

from .clinic import USERS, Inbox, connect_as
from .conftest import SALT, SECRET, Clients, call
from .redis_server import RedisServer, redis_server_fixture  # noqa: F401 (the fixture)

NODE_SCRIPT = Path(__file__).with_name("cluster_node.py")
ADMIN = "/api/socket.io"
CHANNEL = "rtg"  # GatewayConfig.redis_prefix's default: the channel and key prefix
TTL = 3.0  # cluster_ttl of most tests: a heartbeat every second
KILL_TTL = 1.5  # cluster_ttl of the kill -9 test: clean within 1.5 s + one 0.5 s beat
READY_WITHIN = 20.0  # seconds for a node to print "ready"
STOP_WITHIN = 10.0  # seconds for a node to exit after SIGTERM before it is killed
NAMESPACES = ("/", "/chat")

T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@attrs.define
class Node:
    """One gateway process."""

    label: str
    url: str
    proc: asyncio.subprocess.Process
    log: Path
    name: str = ""  # its cluster name (Gateway.process)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


async def _spawn(
    label: str, redis_url: str, ttl: float, directory: Path, options: Sequence[str] = ()
) -> Node:
    """Start a node; ``options`` are more cluster_node.py arguments."""
    port = _free_port()
    log = directory / f"node-{label}.log"
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(NODE_SCRIPT),
            "--port",
            str(port),
            "--redis-url",
            redis_url,
            "--secret",
            SECRET,
            "--salt",
            SALT,
            "--ttl",
            str(ttl),
            *options,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    return Node(label=label, url=f"http://127.0.0.1:{port}", proc=proc, log=log)


async def _wait_ready(node: Node) -> None:
    assert node.proc.stdout is not None
    line = b""
    with contextlib.suppress(TimeoutError):
        line = await asyncio.wait_for(node.proc.stdout.readline(), READY_WITHIN)
    if line != b"ready\n":
        raise AssertionError(f"node {node.label} not ready ({line!r}): {node.log_text()[-3000:]}")


async def _stop(node: Node) -> None:
    """SIGTERM by pid, a bounded wait, then SIGKILL; always reaped."""
    proc = node.proc
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    try:
        await asyncio.wait_for(proc.communicate(), STOP_WITHIN)
    except TimeoutError:
        proc.kill()
        await asyncio.wait_for(proc.communicate(), STOP_WITHIN)


class Cluster:
    """Processes A and B on one Redis, an HTTP session, a client pool and tokens."""

    def __init__(self, redis: RedisServer, a: Node, b: Node, http: aiohttp.ClientSession) -> None:
        self.redis = redis
        self.a = a
        self.b = b
        self.http = http
        self.clients = Clients()
        self.tokens = SignedTokenAuthenticator([SECRET], salt=SALT, max_age=600)
        self.admin_token = self.tokens.issue(USERS["admin"])

    async def connect(
        self, node: Node, user: str | Identity, namespaces: Iterable[str] = NAMESPACES
    ) -> tuple[socketio.AsyncClient, Inbox]:
        identity = USERS[user] if isinstance(user, str) else user
        return await connect_as(
            self.clients, node.url, self.tokens.issue(identity), namespaces=namespaces
        )

    async def emit(
        self,
        node: Node,
        kind: str,
        target: str | None,
        event: str = "",
        data: Any = None,
        *,
        namespace: str = "/",
        identity: Identity | None = None,
    ) -> dict[str, Any]:
        """Have ``node`` emit (or reauthorize) through its /test/emit route."""
        body = {
            "kind": kind,
            "target": target,
            "event": event,
            "data": data,
            "namespace": namespace,
            "identity": None if identity is None else identity_to_json(identity),
        }
        async with self.http.post(f"{node.url}/test/emit", json=body) as reply:
            assert reply.status == 200, await reply.text()
            answer: dict[str, Any] = await reply.json()
            return answer

    async def admin_body(self, node: Node, method: str, path: str) -> tuple[int, dict[str, Any]]:
        """Call ``node``'s admin API as the admin: the status and the whole body."""
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        async with self.http.request(method, f"{node.url}{ADMIN}{path}", headers=headers) as reply:
            body: dict[str, Any] = await reply.json()
            return reply.status, body

    async def admin(self, node: Node, method: str, path: str) -> tuple[int, dict[str, Any]]:
        """Call ``node``'s admin API as the admin: the status and, on success, the
        ``data`` of the ``{success, data}`` body (else the error body)."""
        status, body = await self.admin_body(node, method, path)
        if status == 200:
            assert body["success"] is True, body
            body = body["data"]
        return status, body

    async def status(self, node: Node, user_id: str) -> dict[str, Any]:
        status, body = await self.admin(node, "GET", f"/user/{user_id}/status")
        assert status == 200, body
        return body

    async def health(self, node: Node) -> int:
        async with self.http.get(f"{node.url}{ADMIN}/health") as reply:
            return reply.status

    async def barrier(self, user_id: str, inbox: Inbox, namespace: str = "/") -> None:
        """Send ``user_id`` a barrier through A and wait for it: whatever was sent to
        that user the same way before has arrived by then."""
        count = len(inbox.of("barrier", namespace)) + 1
        await self.emit(self.a, "user", user_id, "barrier", count, namespace=namespace)
        await inbox.wait("barrier", namespace, count=count)

    async def subscribed(self, count: int) -> None:
        """Wait until ``count`` processes listen on the channel. python-socketio starts
        a process's Redis listener with its first client, so a message published
        before that reaches nobody there."""
        client = aioredis.Redis.from_url(self.redis.url)
        try:
            async with asyncio.timeout(5):
                while True:
                    [(_, listening)] = await client.pubsub_numsub(CHANNEL)
                    if listening >= count:
                        return
                    await asyncio.sleep(0.01)
        finally:
            await client.aclose()


@contextlib.asynccontextmanager
async def running_cluster(
    redis: RedisServer, directory: Path, *, ttl: float = TTL, options: Sequence[str] = ()
) -> AsyncIterator[Cluster]:
    """Start A and B (with cluster_node.py ``options``); afterwards close the
    clients, then stop both processes."""
    async with contextlib.AsyncExitStack() as stack:
        nodes: list[Node] = []
        for label in ("A", "B"):
            node = await _spawn(label, redis.url, ttl, directory, options)
            stack.push_async_callback(_stop, node)
            nodes.append(node)
        a, b = nodes
        await asyncio.gather(_wait_ready(a), _wait_ready(b))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        for node in nodes:
            async with http.get(f"{node.url}/test/process") as reply:
                node.name = (await reply.json())["process"]
        assert a.name != b.name
        cluster = Cluster(redis, a, b, http)
        stack.push_async_callback(cluster.clients.close)
        try:
            yield cluster
        finally:
            # Captured by pytest, shown when the test fails.
            for node in nodes:
                print(f"--- node {node.label} ({node.name}) log ---\n{node.log_text()[-3000:]}")


@pytest.fixture
async def cluster(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with running_cluster(redis_server, tmp_path) as running:
        yield running


def disconnect_events(
    client: socketio.AsyncClient, namespaces: Iterable[str]
) -> dict[str, asyncio.Event]:
    """An event per namespace, set when ``client`` hears its disconnect there."""
    heard: dict[str, asyncio.Event] = {}
    for namespace in namespaces:
        heard[namespace] = asyncio.Event()

        async def on_disconnect(reason: Any = None, namespace: str = namespace) -> None:
            heard[namespace].set()

        client.on("disconnect", on_disconnect, namespace=namespace)
    return heard


async def wait_all(events: Iterable[asyncio.Event], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        for event in events:
            await event.wait()


async def eventually(
    probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], within: float = 5.0
) -> T:
    """Poll ``probe`` until ``accept`` says yes: a state another process converges to,
    with no event to await; fails after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if accept(value):
            return value
        assert time.monotonic() < deadline, f"not within {within} s: {value!r}"
        await asyncio.sleep(0.05)


def disconnected(status: dict[str, Any]) -> bool:
    return status["isConnected"] is False and status["sockets"] == []


def sockets_of(status: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(s["socketId"], s["namespace"], s["process"]) for s in status["sockets"]}


# -- delivery -------------------------------------------------------------------------


async def test_emits_from_a_reach_only_the_intended_clients_on_b(cluster: Cluster) -> None:
    a = cluster.a
    nurse, nurse_inbox = await cluster.connect(cluster.b, "nurse")
    doctor, doctor_inbox = await cluster.connect(cluster.b, "doctor")
    _, staff_inbox = await cluster.connect(a, "staff")
    await cluster.subscribed(2)
    assert (await call(nurse, "join:conversation", "c1", "/chat"))["success"]

    await cluster.emit(a, "user", "u-nurse", "to:user", {"n": 1})
    await cluster.emit(a, "role", "doctor", "to:role", {"n": 2})
    await cluster.emit(a, "room", "conversation:c1", "to:room", {"n": 3}, namespace="/chat")
    await cluster.emit(a, "broadcast", None, "to:all", {"n": 4})
    await cluster.emit(a, "broadcast", None, "to:all:chat", {"n": 5}, namespace="/chat")

    inboxes = {"u-nurse": nurse_inbox, "u-doctor": doctor_inbox, "u-staff": staff_inbox}
    for user_id, inbox in inboxes.items():
        for namespace in NAMESPACES:
            await cluster.barrier(user_id, inbox, namespace)

    def got(inbox: Inbox, event: str, namespace: str = "/") -> list[Any]:
        return inbox.of(event, namespace)

    assert got(nurse_inbox, "to:user") == [{"n": 1}]
    assert got(nurse_inbox, "to:user", "/chat") == [], "emit_to_user targets one namespace"
    assert got(doctor_inbox, "to:user") == []
    assert got(staff_inbox, "to:user") == []

    assert got(doctor_inbox, "to:role") == [{"n": 2}]
    assert got(nurse_inbox, "to:role") == []
    assert got(staff_inbox, "to:role") == []

    assert got(nurse_inbox, "to:room", "/chat") == [{"n": 3}]
    assert got(doctor_inbox, "to:room", "/chat") == [], "the doctor did not join c1"
    assert got(staff_inbox, "to:room", "/chat") == []

    for inbox in inboxes.values():
        assert got(inbox, "to:all") == [{"n": 4}]
        assert got(inbox, "to:all:chat", "/chat") == [{"n": 5}]
        assert got(inbox, "to:all:chat") == []
    assert (await call(doctor, "ping"))["status"] == "pong"


async def test_presence_and_is_connected_agree_on_both_processes(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    nurse, nurse_inbox = await cluster.connect(b, "nurse")
    doctor, _ = await cluster.connect(b, "doctor")
    staff, staff_inbox = await cluster.connect(a, "staff")
    await cluster.subscribed(2)

    ack = await call(nurse, "join:conversation", "c1", "/chat")
    assert ack["members"] == ["u-nurse"]
    # Joining on A sees the nurse on B, and the nurse on B hears it (A -> B).
    ack = await call(staff, "join:conversation", "c1", "/chat")
    assert ack["members"] == ["u-nurse", "u-staff"]
    joined = await nurse_inbox.wait("presence:join", "/chat")
    assert [(note["room"], note["userId"]) for note in joined] == [("conversation:c1", "u-staff")]
    assert [note["userId"] for note in await nurse_inbox.wait("user:joined", "/chat")] == [
        "u-staff"
    ]
    # Joining on B sees the staff on A, and the staff on A hears it (B -> A).
    ack = await call(doctor, "join:conversation", "c1", "/chat")
    assert ack["members"] == ["u-doctor", "u-nurse", "u-staff"]
    joined = await staff_inbox.wait("presence:join", "/chat")
    assert [(note["room"], note["userId"]) for note in joined] == [("conversation:c1", "u-doctor")]

    expected = {
        "u-nurse": {(nurse.get_sid(ns), ns, b.name) for ns in NAMESPACES},
        "u-doctor": {(doctor.get_sid(ns), ns, b.name) for ns in NAMESPACES},
        "u-staff": {(staff.get_sid(ns), ns, a.name) for ns in NAMESPACES},
    }
    for node in (a, b):
        for user_id, sockets in expected.items():
            status = await cluster.status(node, user_id)
            assert status["isConnected"] is True, (node.label, user_id)
            assert sockets_of(status) == sockets, (node.label, user_id)
        assert disconnected(await cluster.status(node, "u-patient"))
        code, health = await cluster.admin(node, "GET", "/health")
        assert (code, health["connectedUsers"]) == (200, 3)

    # The nurse leaves on B: A hears it and, once B has recorded it, says so.
    await nurse.disconnect()
    left = await staff_inbox.wait("user:left", "/chat")
    assert [note["userId"] for note in left] == ["u-nurse"]
    for node in (a, b):
        await eventually(partial(cluster.status, node, "u-nurse"), disconnected)
    ack = await call(staff, "join:conversation", "c1", "/chat")  # a no-op join
    assert ack["members"] == ["u-doctor", "u-staff"]


# -- control ----------------------------------------------------------------------------


async def test_disconnect_user_on_a_drops_the_sockets_on_b(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    first, _ = await cluster.connect(b, "nurse")
    second, _ = await cluster.connect(b, "nurse", namespaces=("/",))
    doctor, doctor_inbox = await cluster.connect(b, "doctor")
    heard = [disconnect_events(first, NAMESPACES), disconnect_events(second, ("/",))]
    await cluster.subscribed(1)

    status, body = await cluster.admin(a, "DELETE", "/disconnect/user/u-nurse")
    assert (status, body["disconnected"]) == (200, 3), body
    await wait_all(event for events in heard for event in events.values())
    assert not first.connected
    assert not second.connected

    for node in (a, b):
        await eventually(partial(cluster.status, node, "u-nurse"), disconnected)
    status, body = await cluster.admin(a, "DELETE", "/disconnect/user/u-nurse")
    assert status == 404, body
    # Nobody else went: the doctor is connected, and reachable from A.
    assert (await call(doctor, "ping"))["status"] == "pong"
    assert (await cluster.status(a, "u-doctor"))["isConnected"] is True
    await cluster.barrier("u-doctor", doctor_inbox)

    # One socket, by id, from A.
    sid = doctor.get_sid("/chat")
    heard_doctor = disconnect_events(doctor, ("/chat",))
    status, body = await cluster.admin(a, "DELETE", f"/disconnect/{sid}")
    assert (status, body["socketId"]) == (200, sid), body
    await wait_all(heard_doctor.values())
    assert (await call(doctor, "ping"))["status"] == "pong", "its / socket stays"
    await eventually(
        lambda: cluster.status(a, "u-doctor"),
        lambda status: [s["namespace"] for s in status["sockets"]] == ["/"],
    )


async def test_reauthorization_on_a_revokes_rooms_on_b(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    nurse, nurse_inbox = await cluster.connect(b, "nurse")
    doctor, doctor_inbox = await cluster.connect(b, "doctor")
    await cluster.subscribed(1)
    assert (await call(nurse, "join:conversation", "c1", "/chat"))["success"]
    ack = await call(doctor, "join:conversation", "c1", "/chat")
    assert ack["members"] == ["u-doctor", "u-nurse"]

    demoted = Identity(user_id="u-nurse", roles={"patient"}, display_name="Nat Nurse")
    answer = await cluster.emit(a, "reauthorize", "u-nurse", identity=demoted)
    assert answer["revoked"] == {}, "A holds none of the nurse's sockets"

    revoked = await nurse_inbox.wait("access:revoked", "/chat", count=2)
    assert sorted(note["room"] for note in revoked) == ["conversation:c1", "role:nurse"]
    assert await nurse_inbox.wait("access:revoked", "/") == [
        {"room": "role:nurse", "reason": "reauthorized"}
    ]
    left = await doctor_inbox.wait("user:left", "/chat")
    assert [note["userId"] for note in left] == ["u-nurse"]

    # B applied the new identity: the nurse role no longer reaches her, patient does.
    await cluster.emit(a, "role", "nurse", "to:nurses")
    await cluster.emit(a, "role", "patient", "to:patients")
    await cluster.barrier("u-nurse", nurse_inbox)
    assert nurse_inbox.of("to:nurses") == []
    assert nurse_inbox.of("to:patients") == [None]
    ack = await call(nurse, "join:conversation", "c1", "/chat")
    assert ack["success"] is False
    assert ack["code"] == "forbidden"

    # Both processes' view of the nurse's sockets is the new one.
    def reauthorized(status: dict[str, Any]) -> bool:
        return {s["namespace"]: (s["roles"], s["rooms"]) for s in status["sockets"]} == {
            "/": (["patient"], ["role:patient", "user:u-nurse"]),
            "/chat": (["patient"], ["role:patient", "user:u-nurse"]),
        }

    for node in (a, b):
        await eventually(partial(cluster.status, node, "u-nurse"), reauthorized)
    assert (await call(doctor, "join:conversation", "c1", "/chat"))["members"] == ["u-doctor"]


# -- the admin view ------------------------------------------------------------------


async def test_metrics_and_connections_name_their_process(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    nurse, _ = await cluster.connect(b, "nurse")
    staff, _ = await cluster.connect(a, "staff", namespaces=("/",))
    await cluster.subscribed(2)

    status, body = await cluster.admin(a, "GET", "/connections")
    assert status == 200, body
    where = {entry["socketId"]: entry["process"] for entry in body["connections"]}
    assert where == {
        nurse.get_sid("/"): b.name,
        nurse.get_sid("/chat"): b.name,
        staff.get_sid("/"): a.name,
    }
    assert body["count"] == 3

    # B publishes its figures with each heartbeat (every ttl / 3): wait for one.
    deadline = time.monotonic() + TTL
    while True:
        status, body = await cluster.admin(a, "GET", "/metrics")
        assert status == 200, body
        processes = body.get("cluster", {}).get("processes", {})
        if processes.get(b.name, {}).get("connections_active") == 2:
            break
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.1)
    assert body["process"] == a.name
    assert set(processes) == {a.name, b.name}
    assert processes[a.name]["connections_active"] == 1
    assert processes[a.name]["users_connected"] == 1
    assert processes[b.name]["users_connected"] == 1
    assert body["metrics"]["connections_active"] == 1, "this process's own figures"
    total = body["cluster"]["total"]
    assert total["connections_active"] == 3
    assert total["users_connected"] == 2
    assert total["connections_total"] == 3

    status, body_b = await cluster.admin(b, "GET", "/metrics")
    assert status == 200, body_b
    assert body_b["process"] == b.name
    assert set(body_b["cluster"]["processes"]) == {a.name, b.name}


# -- faults ----------------------------------------------------------------------------


async def test_kill_9_of_b_leaves_a_clean_view_within_the_bound(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    bound = KILL_TTL + KILL_TTL / 3  # cluster_ttl plus one heartbeat, as the README says
    async with running_cluster(redis_server, tmp_path, ttl=KILL_TTL) as cluster:
        a, b = cluster.a, cluster.b
        nurse, _ = await cluster.connect(b, "nurse")
        doctor, _ = await cluster.connect(b, "doctor")
        staff, staff_inbox = await cluster.connect(a, "staff")
        await cluster.subscribed(2)
        for client in (staff, nurse, doctor):
            assert (await call(client, "join:conversation", "c1", "/chat"))["success"]
        await staff_inbox.wait("user:joined", "/chat", count=2)
        assert (await cluster.status(a, "u-nurse"))["isConnected"] is True
        staff_sids = {staff.get_sid(ns) for ns in NAMESPACES}

        b.proc.kill()  # SIGKILL by pid: no goodbye, no disconnects
        killed_at = time.monotonic()
        await b.proc.wait()

        while True:
            nurse_status = await cluster.status(a, "u-nurse")
            doctor_status = await cluster.status(a, "u-doctor")
            _, listing = await cluster.admin(a, "GET", "/connections")
            clean = (
                not nurse_status["isConnected"]
                and not doctor_status["isConnected"]
                and {entry["socketId"] for entry in listing["connections"]} == staff_sids
            )
            elapsed = time.monotonic() - killed_at
            if clean:
                break
            assert elapsed < 3 * bound, (nurse_status, doctor_status, listing)
            await asyncio.sleep(0.05)
        assert elapsed <= bound + 0.5, f"clean after {elapsed:.2f} s, bound {bound:.2f} s"
        assert {entry["process"] for entry in listing["connections"]} == {a.name}

        # The staff on A heard both leave the conversation, once each.
        left = await staff_inbox.wait("user:left", "/chat", count=2)
        await cluster.barrier("u-staff", staff_inbox, "/chat")
        assert sorted(note["userId"] for note in staff_inbox.of("user:left", "/chat")) == [
            "u-doctor",
            "u-nurse",
        ]
        assert {note["conversationId"] for note in left} == {"c1"}
        ack = await call(staff, "join:conversation", "c1", "/chat")
        assert ack["members"] == ["u-staff"]
        status, metrics = await cluster.admin(a, "GET", "/metrics")
        assert status == 200
        assert set(metrics["cluster"]["processes"]) == {a.name}
        assert metrics["cluster"]["total"]["users_connected"] == 1
        status, health = await cluster.admin(a, "GET", "/health")
        assert (status, health["connectedUsers"]) == (200, 1)


async def test_redis_restart_mid_traffic(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    nurse, nurse_inbox = await cluster.connect(b, "nurse")
    staff, staff_inbox = await cluster.connect(a, "staff")
    await cluster.subscribed(2)
    await cluster.emit(a, "user", "u-nurse", "before", 1)
    await nurse_inbox.wait("before")

    await asyncio.to_thread(cluster.redis.stop)
    # Traffic while Redis is down: several emits, local delivery goes on.
    for n in range(5):
        await cluster.emit(a, "user", "u-staff", "during", n)
        await cluster.emit(a, "user", "u-nurse", "lost", n)
    assert await staff_inbox.wait("during", count=5) == list(range(5))
    assert (await call(nurse, "ping"))["status"] == "pong"
    assert (await call(staff, "join:conversation", "c1", "/chat"))["members"] == ["u-staff"]
    for node in (a, b):
        assert await cluster.health(node) == 200, node.label
        assert (await cluster.status(node, "u-staff" if node is a else "u-nurse"))["isConnected"]

    await asyncio.to_thread(cluster.redis.start)  # the same port, and empty
    # Cross-process delivery resumes once both have reconnected (with backoff).
    deadline = time.monotonic() + 15
    for attempt in range(1000):
        await cluster.emit(a, "user", "u-nurse", "after", attempt)
        with contextlib.suppress(TimeoutError):
            await nurse_inbox.wait("after", within=0.5)
            break
        assert time.monotonic() < deadline, "A -> B delivery did not resume"
    for attempt in range(1000):
        await cluster.emit(b, "user", "u-staff", "back", attempt)
        with contextlib.suppress(TimeoutError):
            await staff_inbox.wait("back", within=0.5)
            break
        assert time.monotonic() < deadline, "B -> A delivery did not resume"
    # The heartbeats restore the registry that the empty Redis lost.
    nurse_sockets = {(nurse.get_sid(ns), ns, b.name) for ns in NAMESPACES}
    staff_sockets = {(staff.get_sid(ns), ns, a.name) for ns in NAMESPACES}
    await eventually(
        lambda: cluster.status(a, "u-nurse"), lambda s: sockets_of(s) == nurse_sockets, TTL
    )
    await eventually(
        lambda: cluster.status(b, "u-staff"), lambda s: sockets_of(s) == staff_sockets, TTL
    )
    assert (await call(nurse, "join:conversation", "c1", "/chat"))["members"] == [
        "u-nurse",
        "u-staff",
    ]

    for node in (a, b):
        assert node.proc.returncode is None, node.label
        assert await cluster.health(node) == 200, node.label
        # Logged once per outage, not once per message.
        text = node.log_text()
        for part in ("publish", "subscribe", "registry"):
            assert text.count(f"redis_unavailable part={part}") <= 1, (node.label, text)
    assert a.log_text().count("redis_unavailable part=publish") == 1, a.log_text()


async def test_a_socket_that_left_while_redis_was_down_is_gone_once_it_is_back(
    cluster: Cluster,
) -> None:
    """Redis restarts with its data (a persistent Redis, or a network cut): what
    changed meanwhile on B must reach A's view, departures included."""
    a, b = cluster.a, cluster.b
    nurse, _ = await cluster.connect(b, "nurse")
    _, doctor_inbox = await cluster.connect(b, "doctor")
    staff, _ = await cluster.connect(a, "staff")
    await cluster.subscribed(2)
    for client in (staff, nurse):
        assert (await call(client, "join:conversation", "c1", "/chat"))["success"]
    assert (await cluster.status(a, "u-nurse"))["isConnected"] is True
    store = aioredis.Redis.from_url(cluster.redis.url)
    try:
        assert await store.save()  # the restart below loads this snapshot
    finally:
        await store.aclose()

    await asyncio.to_thread(cluster.redis.stop)
    await nurse.disconnect()
    await eventually(partial(cluster.status, b, "u-nurse"), disconnected)
    await asyncio.to_thread(cluster.redis.start)

    deadline = time.monotonic() + 15
    for attempt in range(1000):
        await cluster.emit(a, "user", "u-doctor", "after", attempt)
        with contextlib.suppress(TimeoutError):
            await doctor_inbox.wait("after", within=0.5)
            break
        assert time.monotonic() < deadline, "A -> B delivery did not resume"

    # Once each process answers from Redis again (the doctor, on B, is seen from A and
    # the staff, on A, from B), the nurse's sockets are gone within a heartbeat or two.
    def users_in(answer: tuple[int, dict[str, Any]]) -> set[str]:
        status, listing = answer
        assert status == 200, listing
        return {entry["userId"] for entry in listing["connections"]}

    for node in (a, b):
        connections = partial(cluster.admin, node, "GET", "/connections")
        await eventually(
            connections, lambda answer: users_in(answer) >= {"u-doctor", "u-staff"}, 15
        )
    for node in (a, b):
        connections = partial(cluster.admin, node, "GET", "/connections")
        await eventually(
            connections, lambda answer: users_in(answer) == {"u-doctor", "u-staff"}, TTL
        )
        status = await cluster.status(node, "u-nurse")
        assert disconnected(status), (node.label, status)
    ack = await call(staff, "join:conversation", "c1", "/chat")
    assert ack["members"] == ["u-staff"]


async def test_injected_messages_on_the_channel_are_dropped(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    nurse, nurse_inbox = await cluster.connect(b, "nurse", namespaces=("/",))
    _, staff_inbox = await cluster.connect(a, "staff", namespaces=("/",))
    await cluster.subscribed(2)

    def emit_message(event: str, user_id: str) -> dict[str, Any]:
        """What python-socketio's manager publishes for an emit to a user."""
        return {
            "method": "emit",
            "event": event,
            "data": [{"from": "redis"}],
            "binary": False,
            "namespace": "/",
            "room": f"user:{user_id}",
            "skip_sid": None,
            "callback": None,
            "host_id": "intruder",
        }

    demote = {
        "rtg": True,
        "op": "reauthorize",
        "userId": "u-nurse",
        "identity": identity_to_json(Identity(user_id="u-nurse")),
        "host_id": "intruder",
    }
    right = URLSafeSerializer(SECRET, salt=CLUSTER_SALT)
    wrong = URLSafeSerializer("not-the-gateway-key-0123456789", salt=CLUSTER_SALT)
    injected = [
        json.dumps(emit_message("injected", "u-nurse")),
        json.dumps({"signed": wrong.dumps(emit_message("injected", "u-nurse"))}),
        json.dumps(demote),
        json.dumps({"signed": wrong.dumps(demote)}),
        json.dumps(emit_message("injected", "u-staff")),
        "not json",
    ]
    publisher = aioredis.Redis.from_url(cluster.redis.url)
    try:
        for raw in injected:
            assert await publisher.publish(CHANNEL, raw) == 2
        # The same message signed with the gateway's key is delivered: the ones above
        # were refused for their signature, not for their shape.
        for user_id in ("u-nurse", "u-staff"):
            genuine = {"signed": right.dumps(emit_message("genuine", user_id))}
            assert await publisher.publish(CHANNEL, json.dumps(genuine)) == 2
    finally:
        await publisher.aclose()
    await nurse_inbox.wait("genuine")
    await staff_inbox.wait("genuine")
    await cluster.emit(a, "role", "nurse", "still:nurse")
    await cluster.barrier("u-nurse", nurse_inbox)
    await cluster.barrier("u-staff", staff_inbox)

    assert nurse_inbox.of("injected") == []
    assert staff_inbox.of("injected") == []
    assert nurse_inbox.of("genuine") == [{"from": "redis"}]
    assert nurse_inbox.of("still:nurse") == [None], "the unsigned reauthorization was ignored"
    assert nurse.connected
    for node in (a, b):
        status, body = await cluster.admin(node, "GET", "/metrics")
        assert status == 200, body
        assert body["metrics"]["cluster_messages_dropped"] == len(injected), node.label


# -- without a cluster ------------------------------------------------------------------


def _gateway(config: GatewayConfig) -> Gateway:
    return Gateway(
        authenticator=SignedTokenAuthenticator([SECRET], salt=SALT, max_age=600),
        authorizer=reference_rules(),
        namespaces=default_namespaces(),
        config=config,
    )


async def test_unreachable_redis_at_start_fails_fast() -> None:
    closed = _free_port()  # nothing listens there
    gateway = _gateway(GatewayConfig(redis_url=f"redis://127.0.0.1:{closed}/0"))
    assert gateway.process is not None
    started = time.monotonic()
    with pytest.raises(ConfigurationError) as caught:
        await gateway.start()
    assert time.monotonic() - started < 3
    assert caught.value.field == "redis_url"
    assert "unreachable" in caught.value.problem


async def test_without_a_redis_url_there_is_no_cluster() -> None:
    gateway = _gateway(GatewayConfig())
    assert gateway.process is None
    await gateway.start()  # needs no server
    assert await gateway.cluster_stats() is None
