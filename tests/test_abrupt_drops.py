"""No entry outlives its socket: abrupt drops, refused connects, server disconnects,
and the reconnection count."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import socketio

from realtime_gateway import (
    ChatNamespace,
    Connection,
    Gateway,
    Identity,
    MainNamespace,
    NotificationsNamespace,
    SignedTokenAuthenticator,
    UpdatesNamespace,
    reference_rules,
)

from .clinic import USERS, clinic_gateway, connect_as
from .conftest import Clients, call, until

CLIENT_SCRIPT = Path(__file__).with_name("drop_clients.py")
CONVERSATIONS = [f"c{n}" for n in range(5)]
DOUBLED_USERS = 20  # users with two clients
SINGLE_USERS = 10  # users with one
DROPPED = [
    Identity(user_id=f"drop-{n:02d}", roles={"nurse"}, display_name=f"Nurse {n}")
    for n in range(DOUBLED_USERS + SINGLE_USERS)
]
OBSERVER = Identity(user_id="observer", roles={"doctor"}, display_name="Observer")


def conversation_of(identity: Identity) -> str:
    return CONVERSATIONS[int(identity.user_id.rsplit("-", 1)[1]) % len(CONVERSATIONS)]


@contextlib.asynccontextmanager
async def client_process(spec: dict[str, Any]) -> AsyncIterator[asyncio.subprocess.Process]:
    """Start tests/drop_clients.py with ``spec``; wait for its ``ready``. The process is
    killed (by its pid) and reaped on the way out, whatever happened."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CLIENT_SCRIPT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(json.dumps(spec).encode())
        await proc.stdin.drain()
        proc.stdin.close()
        line = b""
        with contextlib.suppress(TimeoutError):
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if line != b"ready\n":
            if proc.returncode is None:
                proc.kill()
            _, err = await asyncio.wait_for(proc.communicate(), 10)
            raise AssertionError(f"client process not ready ({line!r}): {err.decode()[-2000:]}")
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.communicate(), 10)


async def test_abrupt_drops_leave_nothing(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str, transport: str
) -> None:
    gateway = clinic_gateway(authenticator)
    entries = [
        {"token": authenticator.issue(identity), "conversation": conversation_of(identity)}
        for n, identity in enumerate(DROPPED)
        for _ in range(2 if n < DOUBLED_USERS else 1)
    ]
    assert len(entries) == 50
    async with clients.serve(gateway, server_kind) as server:
        observer, inbox = await connect_as(
            clients, server.url, authenticator.issue(OBSERVER), namespaces=("/", "/chat")
        )
        for conversation in CONVERSATIONS:
            ack = await call(observer, "join:conversation", conversation, "/chat")
            assert ack["success"], ack
        observer_sids = {observer.get_sid("/"), observer.get_sid("/chat")}
        spec = {"url": server.url, "transport": transport, "clients": entries}

        async with client_process(spec) as proc:
            assert len(gateway.connections) == 2 * len(entries) + 2
            assert await gateway.registry.users() == {
                OBSERVER.user_id,
                *(identity.user_id for identity in DROPPED),
            }
            await inbox.wait("user:joined", "/chat", count=len(DROPPED))
            for conversation in CONVERSATIONS:
                members = {i.user_id for i in DROPPED if conversation_of(i) == conversation}
                room = f"conversation:{conversation}"
                present = await gateway.presence(room, namespace="/chat")
                assert present == members | {OBSERVER.user_id}
            proc.kill()  # SIGKILL: no disconnect packet, the transports just close
            await proc.wait()

        await until(lambda: set(gateway.connections) == observer_sids, within=10)
        remaining = await gateway.registry.connections()
        assert {info.sid for info in remaining} == observer_sids
        assert await gateway.registry.users() == {OBSERVER.user_id}
        for identity in DROPPED:
            assert not await gateway.is_user_connected(identity.user_id)
            assert await gateway.user_sockets(identity.user_id) == []
            for namespace in ("/", "/chat"):
                room = f"user:{identity.user_id}"
                assert await gateway.presence(room, namespace=namespace) == frozenset()
        for namespace in ("/", "/chat"):
            assert await gateway.presence("role:nurse", namespace=namespace) == frozenset()
        for conversation in CONVERSATIONS:
            room = f"conversation:{conversation}"
            assert await gateway.presence(room, namespace="/chat") == {OBSERVER.user_id}

        # One user:left per user (not per socket), then a barrier shows no more follow.
        await inbox.wait("user:left", "/chat", count=len(DROPPED), within=10)
        await gateway.server.emit("barrier", 1, to=observer.get_sid("/chat"), namespace="/chat")
        await inbox.wait("barrier", "/chat")
        left = Counter(
            (note["userId"], note["conversationId"]) for note in inbox.of("user:left", "/chat")
        )
        assert left == Counter((i.user_id, conversation_of(i)) for i in DROPPED)

        await observer.disconnect()
        await until(lambda: not gateway.connections)
        assert await gateway.registry.connections() == []
        assert await gateway.registry.users() == frozenset()
        for conversation in CONVERSATIONS:
            room = f"conversation:{conversation}"
            assert await gateway.presence(room, namespace="/chat") == frozenset()


class Exploding(MainNamespace):
    """Admits nobody while ``failing``: its on_connected hook fails after the user and
    role rooms have been joined."""

    failing = True

    async def on_connected(self, conn: Connection) -> None:
        if self.failing:
            raise RuntimeError("the application's admission hook failed")


def refusing_gateway(authenticator: SignedTokenAuthenticator) -> Gateway:
    return clinic_gateway(
        authenticator,
        # /updates is served but no rule lets anyone but an admin connect to it.
        authorizer=reference_rules(namespaces=("/", "/notifications", "/chat", "/boom")),
        namespaces=[
            MainNamespace(),
            NotificationsNamespace(),
            ChatNamespace(),
            UpdatesNamespace(),
            Exploding("/boom"),
        ],
    )


async def assert_nothing_left(gateway: Gateway, user_id: str, namespaces: list[str]) -> None:
    assert gateway.connections == {}
    assert await gateway.registry.connections() == []
    assert await gateway.registry.users() == frozenset()
    assert not await gateway.is_user_connected(user_id)
    for namespace in namespaces:
        assert await gateway.presence(f"user:{user_id}", namespace=namespace) == frozenset()


async def test_failed_connects_leave_nothing(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = refusing_gateway(authenticator)
    nurse = USERS["nurse"]
    token = authenticator.issue(nurse)
    async with clients.serve(gateway, server_kind) as server:
        refusal = await clients.refusal(server.url, auth={"token": token + "tampered"})
        assert refusal.data["data"]["code"] == "unauthenticated"
        await assert_nothing_left(gateway, nurse.user_id, ["/"])

        refusal = await clients.refusal(server.url, namespace="/updates", auth={"token": token})
        assert refusal.data["data"] == {"code": "forbidden"}
        await assert_nothing_left(gateway, nurse.user_id, ["/updates"])

        refusal = await clients.refusal(server.url, namespace="/boom", auth={"token": token})
        assert refusal.data["data"] == {"code": "internal"}
        await assert_nothing_left(gateway, nurse.user_id, ["/boom"])
        assert await gateway.presence("role:nurse", namespace="/boom") == frozenset()
        # python-socketio's own room table holds no trace of the refused socket either.
        socketio_rooms = gateway.server.manager.rooms.get("/boom", {})
        assert "user:u-nurse" not in socketio_rooms
        assert "role:nurse" not in socketio_rooms

        # The gateway still admits the same user where it may.
        client, _ = await connect_as(clients, server.url, token, namespaces=("/",))
        assert (await call(client, "ping"))["status"] == "pong"
        assert [info.sid for info in await gateway.user_sockets(nurse.user_id)] == [
            client.get_sid("/")
        ]


async def test_a_refused_connect_is_not_a_departure(
    clients: Clients, authenticator: SignedTokenAuthenticator
) -> None:
    """A socket refused by on_connected never was connected: the user's next, successful
    connect there is their first, not a reconnection."""
    gateway = refusing_gateway(authenticator)
    boom = gateway.namespaces["/boom"]
    assert isinstance(boom, Exploding)
    token = authenticator.issue(USERS["nurse"])
    async with clients.serve(gateway, "aiohttp") as server:
        refusal = await clients.refusal(server.url, namespace="/boom", auth={"token": token})
        assert refusal.data["data"] == {"code": "internal"}
        boom.failing = False
        await connect_as(clients, server.url, token, namespaces=("/boom",))
        assert [info.namespace for info in await gateway.user_sockets("u-nurse")] == ["/boom"]
        assert gateway.metrics.reconnections == 0


def disconnect_recorder(client: socketio.AsyncClient, namespaces: list[str]) -> list[str]:
    """Record the namespaces in which ``client`` hears its disconnect."""
    heard: list[str] = []
    for namespace in namespaces:

        async def on_disconnect(reason: Any = None, namespace: str = namespace) -> None:
            heard.append(namespace)

        client.on("disconnect", on_disconnect, namespace=namespace)
    return heard


async def test_server_disconnects_leave_nothing(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator)
    namespaces = ["/", "/chat"]
    nurse_token = authenticator.issue(USERS["nurse"])
    async with clients.serve(gateway, server_kind) as server:
        doctor, doctor_inbox = await connect_as(
            clients, server.url, authenticator.issue(USERS["doctor"]), namespaces=namespaces
        )
        nurse1, _ = await connect_as(clients, server.url, nurse_token, namespaces=namespaces)
        nurse2, _ = await connect_as(clients, server.url, nurse_token, namespaces=namespaces)
        heard1 = disconnect_recorder(nurse1, namespaces)
        heard2 = disconnect_recorder(nurse2, namespaces)
        for client in (doctor, nurse1, nurse2):
            assert (await call(client, "join:conversation", "c1", "/chat"))["success"]
        await doctor_inbox.wait("user:joined", "/chat")

        dropped = nurse1.get_sid("/chat")
        assert await gateway.disconnect_socket(dropped) is True
        await until(lambda: dropped not in gateway.connections)
        assert await gateway.connection_info(dropped) is None
        await until(lambda: heard1 == ["/chat"])
        assert await gateway.presence("conversation:c1", namespace="/chat") == {
            "u-doctor",
            "u-nurse",
        }
        assert await gateway.disconnect_socket(dropped) is False

        assert await gateway.disconnect_user("u-nurse") == 3
        await until(lambda: not nurse1.connected and not nurse2.connected)
        assert sorted(heard1) == ["/", "/chat"]
        assert sorted(heard2) == ["/", "/chat"]
        await until(lambda: len(gateway.connections) == 2)
        assert await gateway.registry.users() == {"u-doctor"}
        assert await gateway.user_sockets("u-nurse") == []
        assert not await gateway.is_user_connected("u-nurse")
        for namespace in namespaces:
            for room in ("user:u-nurse", "role:nurse"):
                assert await gateway.presence(room, namespace=namespace) == frozenset()
        assert await gateway.presence("conversation:c1", namespace="/chat") == {"u-doctor"}
        # The doctor heard the nurse leave once, when the last nurse socket went.
        await gateway.server.emit("barrier", 1, to=doctor.get_sid("/chat"), namespace="/chat")
        await doctor_inbox.wait("barrier", "/chat")
        assert [note["userId"] for note in doctor_inbox.of("user:left", "/chat")] == ["u-nurse"]
        assert await gateway.disconnect_user("u-nurse") == 0
        assert (await call(doctor, "ping"))["status"] == "pong"

        assert await gateway.disconnect_user("u-doctor") == 2
        await until(lambda: not gateway.connections)
        assert await gateway.registry.connections() == []
        assert await gateway.registry.users() == frozenset()
        assert await gateway.presence("conversation:c1", namespace="/chat") == frozenset()


async def test_reconnections_are_counted(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator)
    nurse_token = authenticator.issue(USERS["nurse"])
    async with clients.serve(gateway, server_kind) as server:
        first, _ = await connect_as(clients, server.url, nurse_token, namespaces=("/",))
        assert gateway.metrics.reconnections == 0
        await first.disconnect()
        await until(lambda: not gateway.connections)
        assert gateway.metrics.reconnections == 0

        await connect_as(clients, server.url, nurse_token, namespaces=("/",))
        assert gateway.metrics.reconnections == 1
        await connect_as(
            clients, server.url, authenticator.issue(USERS["staff"]), namespaces=("/",)
        )
        assert gateway.metrics.reconnections == 1
        # The nurse's first visit to another namespace is not a reconnection either.
        await connect_as(clients, server.url, nurse_token, namespaces=("/chat",))
        assert gateway.metrics.reconnections == 1
        assert gateway.metrics.connections_total == 4
