"""The main namespace ``/``: welcome, ping, rooms, presence and the ``message`` hook."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest
import socketio

from realtime_gateway import (
    Connection,
    Gateway,
    InvalidPayload,
    MainNamespace,
    PermissionDenied,
    Rule,
    RuleAuthorizer,
    SignedTokenAuthenticator,
    reference_rules,
    testing,
)
from realtime_gateway.testing import ServerKind

from .clinic import (
    USERS,
    Inbox,
    assert_epoch_ms,
    assert_iso_utc,
    assert_refused,
    clinic_gateway,
    connect_as,
)
from .conftest import Clients, call

MAIN = ("/",)


def lobby_rules() -> RuleAuthorizer:
    """The reference rules plus the app's own rule: anyone may join ``lobby:{name}``."""
    return reference_rules() + RuleAuthorizer([Rule(actions="join", target="lobby:{name}")])


async def barrier(gateway: Gateway, user_id: str, *inboxes: Inbox) -> None:
    """Send ``user_id``'s sockets on ``/`` a marker and wait until each inbox has it: what
    was emitted to them before has arrived by then."""
    counts = [len(inbox.of("barrier")) + 1 for inbox in inboxes]
    await gateway.emit_to_user(user_id, "barrier", {"marker": str(uuid.uuid4())})
    for inbox, count in zip(inboxes, counts, strict=True):
        await inbox.wait("barrier", count=count)


async def kit_barrier(gateway: Gateway, user_id: str, *clients: testing.TestClient) -> None:
    """:func:`barrier` for the testing kit's clients."""
    marker = {"marker": str(uuid.uuid4())}
    await gateway.emit_to_user(user_id, "barrier", marker)
    for client in clients:
        while await client.receive("barrier") != marker:
            pass


async def rooms_of(gateway: Gateway, client: socketio.AsyncClient) -> frozenset[str]:
    info = await gateway.connection_info(client.get_sid("/"))
    assert info is not None
    return info.rooms


# -- welcome and ping -------------------------------------------------------------------
# These tests use realtime_gateway.testing, as an application's own tests would.


async def test_connected_welcome(
    authenticator: SignedTokenAuthenticator, server_kind: ServerKind
) -> None:
    async with testing.serve(clinic_gateway(authenticator), kind=server_kind) as server:
        before = time.time() * 1000
        client = await server.connect(USERS["nurse"], namespaces=MAIN)
        welcome = await client.receive("connected")
        after = time.time() * 1000
        sid = client.sid("/")

    assert set(welcome) == {"socketId", "userId", "timestamp", "serverTime"}
    assert welcome["socketId"] == sid
    assert welcome["userId"] == "u-nurse"
    assert_iso_utc(welcome["serverTime"])
    assert isinstance(welcome["timestamp"], int)
    assert before - 1000 <= welcome["timestamp"] <= after + 1000


async def test_ping_answers_pong(
    authenticator: SignedTokenAuthenticator, server_kind: ServerKind
) -> None:
    async with testing.serve(clinic_gateway(authenticator), kind=server_kind) as server:
        client = await server.connect(USERS["staff"], namespaces=MAIN)
        ack = await client.call("ping")
        ack_with_payload = await client.call("ping", {"anything": 1})

    for answer in (ack, ack_with_payload):
        assert set(answer) == {"success", "status", "timestamp"}
        assert answer["success"] is True
        assert answer["status"] == "pong"
        assert_epoch_ms(answer["timestamp"])


# -- join:room ----------------------------------------------------------------------------

JOIN_CASES = [
    # (who, room, app adds the lobby rule, expected refusal code or None)
    ("nurse", "user:u-nurse", False, None),
    ("nurse", "user:u-doctor", False, "forbidden"),
    ("nurse", "role:nurse", False, None),
    ("nurse", "role:doctor", False, "forbidden"),
    ("patient", "role:admin", False, "forbidden"),
    ("nurse", "lobby:main", False, "forbidden"),
    ("nurse", "lobby:main", True, None),
    ("patient", "lobby:main", True, None),
    ("nurse", "lobby:" + "x" * 194, True, None),  # 200 characters: the longest name
    ("nurse", "lounge", True, "forbidden"),
    ("nurse", "lobby:a:b", True, "forbidden"),
]


@pytest.mark.parametrize(("who", "room", "lobby_rule", "refusal"), JOIN_CASES)
async def test_join_room_follows_the_authorizer(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    who: str,
    room: str,
    lobby_rule: bool,
    refusal: str | None,
) -> None:
    rules = lobby_rules() if lobby_rule else reference_rules()
    gateway = clinic_gateway(authenticator, authorizer=rules)
    async with clients.serve(gateway, "aiohttp") as server:
        client, _ = await connect_as(
            clients, server.url, authenticator.issue(USERS[who]), namespaces=MAIN
        )
        ack = await call(client, "join:room", room)
        rooms = await rooms_of(gateway, client)

    if refusal is None:
        assert ack == {"success": True, "room": room}
        assert room in rooms
    else:
        assert_refused(ack, refusal)
        assert room not in rooms


async def test_joined_room_receives_room_emits(
    authenticator: SignedTokenAuthenticator, server_kind: ServerKind
) -> None:
    gateway = clinic_gateway(authenticator, authorizer=lobby_rules())
    async with testing.serve(gateway, kind=server_kind) as server:
        nurse = await server.connect(USERS["nurse"], namespaces=MAIN)
        staff = await server.connect(USERS["staff"], namespaces=MAIN)
        assert (await nurse.call("join:room", "lobby:a"))["success"]
        assert_refused(await staff.call("join:room", "user:u-nurse"), "forbidden")

        await gateway.emit_to_room("lobby:a", "news", {"n": 1})
        await gateway.emit_to_room("user:u-nurse", "direct", {"n": 2})
        assert await nurse.receive("news") == {"n": 1}
        assert await nurse.receive("direct") == {"n": 2}
        await kit_barrier(gateway, "u-staff", staff)
        assert staff.received("news") == []
        assert staff.received("direct") == []


async def test_a_room_named_after_a_socket_id_is_refused(
    authenticator: SignedTokenAuthenticator, server_kind: ServerKind
) -> None:
    """Every socket's sid is its private room; not even an admin, whom the reference
    rules allow everything, may join another socket's."""
    gateway = clinic_gateway(authenticator)
    async with testing.serve(gateway, kind=server_kind) as server:
        admin = await server.connect(USERS["admin"], namespaces=MAIN)
        nurse = await server.connect(USERS["nurse"], namespaces=MAIN)
        nurse_sid = nurse.sid("/")
        assert (await admin.call("join:room", "lobby:anything"))["success"]  # admin may
        assert_refused(await admin.call("join:room", nurse_sid), "forbidden")
        assert nurse_sid not in await rooms_of(gateway, admin.sio)

        await gateway.emit_to_room(nurse_sid, "private", {"for": "nurse"})
        assert await nurse.receive("private") == {"for": "nurse"}
        await kit_barrier(gateway, "u-admin", admin)
        assert admin.received("private") == []


BAD_ROOMS: list[Any] = [
    42,
    True,
    None,
    ["lobby:a"],
    {"room": 7},
    "",
    "   ",
    "lobby:" + "x" * 195,  # 201 characters
    "lobby:a\n",
    "lobby:\x00a",
    "lobby:\x7f",
    "lobby:\ta",
]


@pytest.mark.parametrize("event", ["join:room", "leave:room"])
async def test_invalid_room_payloads_are_refused_and_the_connection_lives_on(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str, event: str
) -> None:
    gateway = clinic_gateway(authenticator, authorizer=lobby_rules())
    async with clients.serve(gateway, server_kind) as server:
        client, _ = await connect_as(
            clients, server.url, authenticator.issue(USERS["doctor"]), namespaces=MAIN
        )
        rooms_before = await rooms_of(gateway, client)
        for payload in BAD_ROOMS:
            ack = await call(client, event, payload)
            assert_refused(ack, "invalid_payload")
            assert ack["field"] == "room", payload
        assert await rooms_of(gateway, client) == rooms_before
        assert client.connected
        assert (await call(client, "ping"))["status"] == "pong"
        assert await call(client, "join:room", {"room": "lobby:a"}) == {
            "success": True,
            "room": "lobby:a",
        }


# -- leave:room --------------------------------------------------------------------------


async def test_leave_room(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator, authorizer=lobby_rules())
    async with clients.serve(gateway, server_kind) as server:
        client, inbox = await connect_as(
            clients, server.url, authenticator.issue(USERS["nurse"]), namespaces=MAIN
        )
        await call(client, "join:room", "lobby:a")
        await gateway.emit_to_room("lobby:a", "news", "while in")
        await inbox.wait("news")

        assert await call(client, "leave:room", "lobby:a") == {"success": True, "room": "lobby:a"}
        assert "lobby:a" not in await rooms_of(gateway, client)
        assert await gateway.presence("lobby:a") == frozenset()
        await gateway.emit_to_room("lobby:a", "news", "after leaving")
        await barrier(gateway, "u-nurse", inbox)
        assert inbox.of("news") == ["while in"]


async def test_leaving_a_room_never_joined_is_not_found_and_changes_nothing(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator, authorizer=lobby_rules())
    async with clients.serve(gateway, server_kind) as server:
        doctor, doctor_inbox = await connect_as(
            clients, server.url, authenticator.issue(USERS["doctor"]), namespaces=MAIN
        )
        nurse, _ = await connect_as(
            clients, server.url, authenticator.issue(USERS["nurse"]), namespaces=MAIN
        )
        await call(doctor, "join:room", "lobby:a")
        await call(doctor, "join:room", "lobby:b")
        await call(nurse, "join:room", "lobby:b")
        nurse_rooms = await rooms_of(gateway, nurse)

        assert_refused(await call(nurse, "leave:room", "lobby:a"), "not_found")

        assert await rooms_of(gateway, nurse) == nurse_rooms
        assert await gateway.presence("lobby:a") == {"u-doctor"}
        assert await gateway.presence("lobby:b") == {"u-doctor", "u-nurse"}
        await barrier(gateway, "u-doctor", doctor_inbox)
        assert doctor_inbox.of("presence:leave") == []


async def test_own_user_and_role_rooms_cannot_be_left(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        client, inbox = await connect_as(
            clients, server.url, authenticator.issue(USERS["nurse"]), namespaces=MAIN
        )
        # Joining it again (allowed) does not make it leavable.
        assert (await call(client, "join:room", "user:u-nurse"))["success"]
        assert_refused(await call(client, "leave:room", "user:u-nurse"), "forbidden")
        assert_refused(await call(client, "leave:room", "role:nurse"), "forbidden")
        assert {"user:u-nurse", "role:nurse"} <= await rooms_of(gateway, client)

        await gateway.emit_to_user("u-nurse", "direct", {"n": 1})
        await gateway.emit_to_role("nurse", "to-role", {"n": 2})
        assert await inbox.wait("direct") == [{"n": 1}]
        assert await inbox.wait("to-role") == [{"n": 2}]


# -- presence ----------------------------------------------------------------------------


async def test_presence_join_is_announced_to_the_others_only(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator, authorizer=lobby_rules())
    async with clients.serve(gateway, server_kind) as server:
        doctor, doctor_inbox = await connect_as(
            clients, server.url, authenticator.issue(USERS["doctor"]), namespaces=MAIN
        )
        nurse, nurse_inbox = await connect_as(
            clients, server.url, authenticator.issue(USERS["nurse"]), namespaces=MAIN
        )
        await call(doctor, "join:room", "lobby:a")
        await call(nurse, "join:room", "lobby:a")

        (joined,) = await doctor_inbox.wait("presence:join")
        assert set(joined) == {"room", "userId", "userName", "timestamp"}
        assert joined["room"] == "lobby:a"
        assert joined["userId"] == "u-nurse"
        assert joined["userName"] == "Nat Nurse"
        assert_epoch_ms(joined["timestamp"])
        assert await gateway.presence("lobby:a") == {"u-doctor", "u-nurse"}

        await gateway.emit_to_room("lobby:a", "barrier", "both")
        await doctor_inbox.wait("barrier")
        await nurse_inbox.wait("barrier")
        assert nurse_inbox.of("presence:join") == []
        assert len(doctor_inbox.of("presence:join")) == 1


@pytest.mark.parametrize("last_goes_by", ["leave", "disconnect"])
async def test_a_user_with_two_sockets_is_present_once(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    last_goes_by: str,
) -> None:
    gateway = clinic_gateway(authenticator, authorizer=lobby_rules())
    async with clients.serve(gateway, server_kind) as server:
        nurse, nurse_inbox = await connect_as(
            clients, server.url, authenticator.issue(USERS["nurse"]), namespaces=MAIN
        )
        token = authenticator.issue(USERS["doctor"])
        first, _ = await connect_as(clients, server.url, token, namespaces=MAIN)
        second, _ = await connect_as(clients, server.url, token, namespaces=MAIN)
        await call(nurse, "join:room", "lobby:a")
        await call(first, "join:room", "lobby:a")
        await call(second, "join:room", "lobby:a")

        assert await gateway.presence("lobby:a") == {"u-nurse", "u-doctor"}
        await nurse_inbox.wait("presence:join")
        assert (await call(first, "leave:room", "lobby:a"))["success"]
        assert await gateway.presence("lobby:a") == {"u-nurse", "u-doctor"}
        await barrier(gateway, "u-nurse", nurse_inbox)
        assert len(nurse_inbox.of("presence:join")) == 1
        assert nurse_inbox.of("presence:leave") == []

        if last_goes_by == "leave":
            assert (await call(second, "leave:room", "lobby:a"))["success"]
        else:
            await second.disconnect()
        (left,) = await nurse_inbox.wait("presence:leave")
        assert left["room"] == "lobby:a"
        assert left["userId"] == "u-doctor"
        assert left["userName"] == "Dr Dee"
        assert await gateway.presence("lobby:a") == {"u-nurse"}


# -- message --------------------------------------------------------------------------------

MessageHook = Callable[[Connection, dict[str, Any]], Awaitable[Mapping[str, Any] | None]]


def message_gateway(authenticator: SignedTokenAuthenticator, hook: MessageHook | None) -> Gateway:
    return clinic_gateway(authenticator, namespaces=[MainNamespace(on_message=hook)])


async def test_message_without_hook_is_acknowledged(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    async with clients.serve(message_gateway(authenticator, None), server_kind) as server:
        client, _ = await connect_as(
            clients, server.url, authenticator.issue(USERS["staff"]), namespaces=MAIN
        )
        first = await call(client, "message", {"text": "hello"})
        second = await call(client, "message", {})

    for ack in (first, second):
        assert set(ack) == {"success", "messageId", "receivedAt"}
        assert ack["success"] is True
        uuid.UUID(ack["messageId"])
        assert_epoch_ms(ack["receivedAt"])
    assert first["messageId"] != second["messageId"]


async def test_message_hook_gets_data_and_identity_and_extends_the_ack(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    seen: list[tuple[str, str, dict[str, Any]]] = []

    async def on_message(conn: Connection, data: dict[str, Any]) -> dict[str, Any]:
        seen.append((conn.identity.user_id, conn.sid, data))
        return {"stored": True, "echo": data["text"]}

    async with clients.serve(message_gateway(authenticator, on_message), server_kind) as server:
        client, _ = await connect_as(
            clients, server.url, authenticator.issue(USERS["doctor"]), namespaces=MAIN
        )
        payload = {"text": "hello", "nested": {"n": [1, 2]}}
        ack = await call(client, "message", payload)
        sid = client.get_sid("/")

    assert seen == [("u-doctor", sid, payload)]
    assert set(ack) == {"success", "messageId", "receivedAt", "stored", "echo"}
    assert ack["success"] is True
    assert ack["stored"] is True
    assert ack["echo"] == "hello"
    uuid.UUID(ack["messageId"])
    assert_epoch_ms(ack["receivedAt"])


HOOK_FAILURES: list[tuple[Exception, dict[str, Any]]] = [
    (
        InvalidPayload("text is too rude", field="text"),
        {"success": False, "code": "invalid_payload", "error": "text is too rude", "field": "text"},
    ),
    (
        PermissionDenied("post", "lobby:a"),
        {"success": False, "code": "forbidden", "error": "Not allowed to post lobby:a"},
    ),
]


@pytest.mark.parametrize(("raised", "expected"), HOOK_FAILURES, ids=["invalid", "forbidden"])
async def test_message_hook_errors_become_failure_acks(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    raised: Exception,
    expected: dict[str, Any],
) -> None:
    async def on_message(conn: Connection, data: dict[str, Any]) -> None:
        raise raised

    async with clients.serve(message_gateway(authenticator, on_message), "aiohttp") as server:
        client, _ = await connect_as(
            clients, server.url, authenticator.issue(USERS["nurse"]), namespaces=MAIN
        )
        ack = await call(client, "message", {"text": "x"})
        pong = await call(client, "ping")

    assert ack == expected
    assert pong["status"] == "pong"


async def test_message_hook_crash_answers_internal_without_details(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    async def on_message(conn: Connection, data: dict[str, Any]) -> None:
        raise RuntimeError("database password is hunter2")

    async with clients.serve(message_gateway(authenticator, on_message), server_kind) as server:
        client, _ = await connect_as(
            clients, server.url, authenticator.issue(USERS["nurse"]), namespaces=MAIN
        )
        ack = await call(client, "message", {"text": "x"})
        pong = await call(client, "ping")

    assert_refused(ack, "internal")
    assert set(ack) == {"success", "error", "code"}
    assert "hunter2" not in repr(ack)
    assert "RuntimeError" not in repr(ack)
    assert pong["status"] == "pong"


async def test_non_object_messages_are_invalid(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    seen: list[dict[str, Any]] = []

    async def on_message(conn: Connection, data: dict[str, Any]) -> None:
        seen.append(data)

    async with clients.serve(message_gateway(authenticator, on_message), server_kind) as server:
        client, _ = await connect_as(
            clients, server.url, authenticator.issue(USERS["nurse"]), namespaces=MAIN
        )
        for payload in ["text", 42, 1.5, True, None, [{"text": "x"}]]:
            assert_refused(await call(client, "message", payload), "invalid_payload")
        assert (await call(client, "message", {"ok": 1}))["success"]

    assert seen == [{"ok": 1}]
