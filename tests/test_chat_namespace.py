"""The ``/chat`` namespace: conversations, messages, typing, presence and reauthorization."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import attrs
import pytest
import socketio

from realtime_gateway import (
    ChatNamespace,
    Connection,
    Gateway,
    Identity,
    PermissionDenied,
    SignedTokenAuthenticator,
    reference_rules,
)

from .clinic import (
    USERS,
    Inbox,
    assert_refused,
    clinic_gateway,
    connect_as,
    without_timestamp,
)
from .conftest import Clients, call, quick_config, until

CHAT = "/chat"
ID_EVENTS = ("join:conversation", "leave:conversation", "typing:start", "typing:stop")


def who(identity: Identity, conversation_id: str = "c1") -> dict[str, str]:
    """A ``user:joined`` / ``user:left`` payload for ``identity``, less its timestamp."""
    return {
        "userId": identity.user_id,
        "userName": identity.name,
        "conversationId": conversation_id,
    }


async def chatter(
    clients: Clients, url: str, authenticator: SignedTokenAuthenticator, who: str | Identity
) -> tuple[socketio.AsyncClient, Inbox]:
    """A client on ``/chat`` only, as the reference user of role ``who`` or as an identity."""
    identity = USERS[who] if isinstance(who, str) else who
    return await connect_as(clients, url, authenticator.issue(identity), namespaces=(CHAT,))


async def join(client: socketio.AsyncClient, conversation: object = "c1") -> dict[str, Any]:
    ack = await call(client, "join:conversation", conversation, CHAT)
    assert ack["success"] is True, ack
    result: dict[str, Any] = ack
    return result


async def send(client: socketio.AsyncClient, content: str, conversation: str = "c1") -> Any:
    ack = await call(
        client, "send:message", {"conversationId": conversation, "content": content}, CHAT
    )
    assert ack["success"] is True, ack
    return ack["message"]


async def barrier(gateway: Gateway, user_id: str, *inboxes: Inbox) -> None:
    """Send ``user_id``'s ``/chat`` sockets a marker and wait until each inbox has it:
    what was emitted to them before has arrived by then."""
    counts = [len(inbox.of("barrier", CHAT)) + 1 for inbox in inboxes]
    await gateway.emit_to_user(user_id, "barrier", {"marker": str(uuid.uuid4())}, namespace=CHAT)
    for inbox, count in zip(inboxes, counts, strict=True):
        await inbox.wait("barrier", CHAT, count=count)


# -- joining ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "conversation_id"),
    [
        ("c1", "c1"),
        (7, "7"),
        ({"conversationId": "c1"}, "c1"),
        ({"conversationId": 7}, "7"),
        ("x" * 128, "x" * 128),
    ],
    ids=["bare", "integer", "object", "object-integer", "longest"],
)
async def test_join_acks_members_and_tells_the_others(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    payload: object,
    conversation_id: str,
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        doctor, doctor_inbox = await chatter(clients, server.url, authenticator, "doctor")
        staff, staff_inbox = await chatter(clients, server.url, authenticator, "staff")
        nurse, nurse_inbox = await chatter(clients, server.url, authenticator, "nurse")
        assert (await join(doctor, conversation_id))["members"] == ["u-doctor"]
        await join(staff, conversation_id)

        ack = await call(nurse, "join:conversation", payload, CHAT)

        assert ack == {
            "success": True,
            "conversationId": conversation_id,
            "members": ["u-doctor", "u-nurse", "u-staff"],
        }
        joined = await doctor_inbox.wait("user:joined", CHAT, count=2)
        assert without_timestamp(joined[1]) == who(USERS["nurse"], conversation_id)
        (joined_staff,) = await staff_inbox.wait("user:joined", CHAT)
        assert without_timestamp(joined_staff) == who(USERS["nurse"], conversation_id)
        await barrier(gateway, "u-nurse", nurse_inbox)
        assert nurse_inbox.of("user:joined", CHAT) == []


@pytest.mark.parametrize(
    ("role", "allowed"),
    [("admin", True), ("doctor", True), ("nurse", True), ("staff", True), ("patient", False)],
)
async def test_reference_rules_let_the_care_team_join(
    clients: Clients, authenticator: SignedTokenAuthenticator, role: str, allowed: bool
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, "aiohttp") as server:
        client, _ = await chatter(clients, server.url, authenticator, role)
        ack = await call(client, "join:conversation", "c1", CHAT)
        user_id = USERS[role].user_id
        if allowed:
            assert ack == {"success": True, "conversationId": "c1", "members": [user_id]}
            assert await gateway.presence("conversation:c1", namespace=CHAT) == {user_id}
        else:
            assert_refused(ack, "forbidden")
            assert await gateway.presence("conversation:c1", namespace=CHAT) == frozenset()


async def test_membership_rule_plugged_into_the_authorizer(
    clients: Clients, authenticator: SignedTokenAuthenticator
) -> None:
    """The app's membership check narrows the reference roles: here the nurse is a
    member of "c-nurse" only, everyone else of every conversation."""
    rules = reference_rules(
        conversation_member=lambda identity, params: (
            identity.user_id != "u-nurse" or params["conversation_id"] == "c-nurse"
        )
    )
    gateway = clinic_gateway(authenticator, authorizer=rules)
    async with clients.serve(gateway, "aiohttp") as server:
        nurse, _ = await chatter(clients, server.url, authenticator, "nurse")
        doctor, _ = await chatter(clients, server.url, authenticator, "doctor")

        assert_refused(await call(nurse, "join:conversation", "c1", CHAT), "forbidden")
        assert (await join(nurse, "c-nurse"))["members"] == ["u-nurse"]
        assert (await join(doctor, "c1"))["members"] == ["u-doctor"]
        assert (await join(doctor, "c-nurse"))["members"] == ["u-doctor", "u-nurse"]
        assert await gateway.presence("conversation:c1", namespace=CHAT) == {"u-doctor"}
        # The rule also governs sending.
        assert (await send(nurse, "hello", "c-nurse"))["content"] == "hello"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "a:b",
        "a b",
        " c1",
        "-c1",
        True,
        None,
        1.5,
        ["c1"],
        "x" * 129,
        {"id": "c1"},
        {"conversationId": True},
    ],
    ids=[
        "empty",
        "colon",
        "space",
        "leading-space",
        "leading-dash",
        "bool",
        "null",
        "float",
        "list",
        "too-long",
        "object-without-id",
        "object-bool-id",
    ],
)
async def test_invalid_conversation_ids_are_refused(
    clients: Clients, authenticator: SignedTokenAuthenticator, bad: object
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, "aiohttp") as server:
        doctor, _ = await chatter(clients, server.url, authenticator, "doctor")
        for name in ID_EVENTS:
            ack = await call(doctor, name, bad, CHAT)
            assert_refused(ack, "invalid_payload", "conversationId")
        fields = bad if isinstance(bad, dict) else {"conversationId": bad}
        ack = await call(doctor, "send:message", {**fields, "content": "hi"}, CHAT)
        assert_refused(ack, "invalid_payload", "conversationId")
        # The connection survives bad input.
        assert (await join(doctor, "c1"))["members"] == ["u-doctor"]


# -- leaving ----------------------------------------------------------------------------


async def test_leave_acks_and_tells_the_others(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        doctor, doctor_inbox = await chatter(clients, server.url, authenticator, "doctor")
        nurse, nurse_inbox = await chatter(clients, server.url, authenticator, "nurse")
        await join(doctor)
        await join(nurse)

        ack = await call(nurse, "leave:conversation", {"conversationId": "c1"}, CHAT)

        assert ack == {"success": True, "conversationId": "c1"}
        (left,) = await doctor_inbox.wait("user:left", CHAT)
        assert without_timestamp(left) == who(USERS["nurse"])
        (presence,) = await doctor_inbox.wait("presence:leave", CHAT)
        assert presence["room"] == "conversation:c1"
        assert presence["userId"] == "u-nurse"
        assert await gateway.presence("conversation:c1", namespace=CHAT) == {"u-doctor"}
        # She is out of the room: the doctor's next message does not reach her.
        await send(doctor, "still there?")
        await barrier(gateway, "u-nurse", nurse_inbox)
        assert nurse_inbox.of("new:message", CHAT) == []
        assert nurse_inbox.of("user:left", CHAT) == []


async def test_leaving_a_conversation_never_joined_is_not_found(
    clients: Clients, authenticator: SignedTokenAuthenticator
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, "aiohttp") as server:
        doctor, doctor_inbox = await chatter(clients, server.url, authenticator, "doctor")
        nurse, _ = await chatter(clients, server.url, authenticator, "nurse")
        staff, _ = await chatter(clients, server.url, authenticator, "staff")
        await join(doctor)
        await join(nurse)

        # Staff is not in c1; the nurse is, but not in c2.
        assert_refused(await call(staff, "leave:conversation", "c1", CHAT), "not_found")
        assert_refused(await call(nurse, "leave:conversation", "c2", CHAT), "not_found")

        await join(staff)  # barrier: the doctor hears this join after anything before it
        joined = await doctor_inbox.wait("user:joined", CHAT, count=2)
        assert [event["userId"] for event in joined] == ["u-nurse", "u-staff"]
        assert doctor_inbox.of("user:left", CHAT) == []
        presence = await gateway.presence("conversation:c1", namespace=CHAT)
        assert presence == {"u-doctor", "u-nurse", "u-staff"}


@pytest.mark.parametrize("first_goes_by", ["leave", "disconnect"])
async def test_user_with_two_sockets_leaves_when_the_last_one_does(
    clients: Clients, authenticator: SignedTokenAuthenticator, first_goes_by: str
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, "aiohttp") as server:
        doctor, doctor_inbox = await chatter(clients, server.url, authenticator, "doctor")
        first, _ = await chatter(clients, server.url, authenticator, "nurse")
        second, _ = await chatter(clients, server.url, authenticator, "nurse")
        await join(doctor)
        await join(first)
        assert (await join(second))["members"] == ["u-doctor", "u-nurse"]

        if first_goes_by == "leave":
            await call(first, "leave:conversation", "c1", CHAT)
        else:
            sid = first.get_sid(CHAT)
            await first.disconnect()
            await until(lambda: gateway.connection(sid) is None)

        # Barrier: a message from her remaining socket reaches the doctor after any
        # user:left would have.
        await send(second, "still here")
        await doctor_inbox.wait("new:message", CHAT)
        assert doctor_inbox.of("user:left", CHAT) == []
        assert len(doctor_inbox.of("user:joined", CHAT)) == 1
        assert await gateway.presence("conversation:c1", namespace=CHAT) == {
            "u-doctor",
            "u-nurse",
        }

        await call(second, "leave:conversation", "c1", CHAT)
        (left,) = await doctor_inbox.wait("user:left", CHAT)
        assert without_timestamp(left) == who(USERS["nurse"])
        assert await gateway.presence("conversation:c1", namespace=CHAT) == {"u-doctor"}


async def test_disconnect_of_a_member_tells_the_others(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        doctor, _ = await chatter(clients, server.url, authenticator, "doctor")
        nurse, nurse_inbox = await chatter(clients, server.url, authenticator, "nurse")
        await join(doctor)
        await join(nurse)

        await doctor.disconnect()

        (left,) = await nurse_inbox.wait("user:left", CHAT)
        assert without_timestamp(left) == who(USERS["doctor"])
        (presence,) = await nurse_inbox.wait("presence:leave", CHAT)
        assert without_timestamp(presence) == {
            "room": "conversation:c1",
            "userId": "u-doctor",
            "userName": "Dr Dee",
        }
        assert await gateway.presence("conversation:c1", namespace=CHAT) == {"u-nurse"}


# -- messages ---------------------------------------------------------------------------


async def test_message_reaches_every_socket_in_the_conversation_only(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        doctor, doctor_inbox = await chatter(clients, server.url, authenticator, "doctor")
        nurse_a, nurse_a_inbox = await chatter(clients, server.url, authenticator, "nurse")
        nurse_b, nurse_b_inbox = await chatter(clients, server.url, authenticator, "nurse")
        staff, staff_inbox = await chatter(clients, server.url, authenticator, "staff")
        for client in (doctor, nurse_a, nurse_b):
            await join(client, "c1")
        await join(staff, "c2")

        ack = await call(
            doctor,
            "send:message",
            {"conversationId": "c1", "content": "Morning round at 9", "type": "text"},
            CHAT,
        )

        assert ack["success"] is True, ack
        assert set(ack) == {"success", "message"}
        message = ack["message"]
        uuid.UUID(message["id"])
        assert without_timestamp(message) == {
            "id": message["id"],
            "conversationId": "c1",
            "senderId": "u-doctor",
            "senderName": "Dr Dee",
            "content": "Morning round at 9",
            "type": "text",
        }
        for inbox in (doctor_inbox, nurse_a_inbox, nurse_b_inbox):
            assert await inbox.wait("new:message", CHAT) == [message]
        # Barrier: a later message in staff's own conversation arrives, the other did not.
        own = await send(staff, "Invoices are out", "c2")
        assert await staff_inbox.wait("new:message", CHAT) == [own]
        assert doctor_inbox.of("new:message", CHAT) == [message]


@pytest.mark.parametrize("name", ["send:message", "typing:start", "typing:stop"])
async def test_writing_to_a_conversation_not_joined_is_forbidden(
    clients: Clients, authenticator: SignedTokenAuthenticator, name: str
) -> None:
    """The doctor's role may write to any conversation, but only once in it."""
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, "aiohttp") as server:
        doctor, _ = await chatter(clients, server.url, authenticator, "doctor")
        nurse, nurse_inbox = await chatter(clients, server.url, authenticator, "nurse")
        await join(nurse)

        payload: object = "c1"
        if name == "send:message":
            payload = {"conversationId": "c1", "content": "hello"}
        assert_refused(await call(doctor, name, payload, CHAT), "forbidden")

        await barrier(gateway, "u-nurse", nurse_inbox)
        for event_name in ("new:message", "user:typing", "user:stopped_typing"):
            assert nurse_inbox.of(event_name, CHAT) == []


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"content": ""}, "content"),
        ({"content": "   \n\t"}, "content"),
        ({"content": "x" * 11}, "content"),
        ({"content": 42}, "content"),
        ({"content": None}, "content"),
        ({"content": ["hi"]}, "content"),
        ({}, "content"),
        ({"content": "hi", "type": "image"}, "type"),
        ({"content": "hi", "type": "TEXT"}, "type"),
        ({"content": "hi", "type": ""}, "type"),
        ({"content": "hi", "type": 5}, "type"),
    ],
    ids=[
        "empty",
        "whitespace",
        "too-long",
        "number",
        "null",
        "list",
        "missing",
        "type-image",
        "type-upper",
        "type-empty",
        "type-number",
    ],
)
async def test_invalid_messages_are_refused_and_not_delivered(
    clients: Clients, authenticator: SignedTokenAuthenticator, fields: dict[str, Any], field: str
) -> None:
    gateway = clinic_gateway(authenticator, config=quick_config(max_message_length=10))
    async with clients.serve(gateway, "aiohttp") as server:
        doctor, _ = await chatter(clients, server.url, authenticator, "doctor")
        nurse, nurse_inbox = await chatter(clients, server.url, authenticator, "nurse")
        await join(doctor)
        await join(nurse)

        ack = await call(doctor, "send:message", {"conversationId": "c1", **fields}, CHAT)
        assert_refused(ack, "invalid_payload", field)

        # Barrier, and the limit is inclusive: exactly max_message_length is fine.
        sent = await send(doctor, "0123456789")
        assert await nurse_inbox.wait("new:message", CHAT) == [sent]


async def test_message_types_are_configurable(
    clients: Clients, authenticator: SignedTokenAuthenticator
) -> None:
    gateway = clinic_gateway(
        authenticator, namespaces=[ChatNamespace(message_types=("text", "image"))]
    )
    async with clients.serve(gateway, "aiohttp") as server:
        doctor, _ = await chatter(clients, server.url, authenticator, "doctor")
        nurse, nurse_inbox = await chatter(clients, server.url, authenticator, "nurse")
        await join(doctor)
        await join(nurse)

        image = {"conversationId": "c1", "content": "https://x.test/scan.png", "type": "image"}
        ack = await call(doctor, "send:message", image, CHAT)
        assert ack["success"] is True, ack
        assert ack["message"]["type"] == "image"
        video = {**image, "type": "video"}
        assert_refused(await call(doctor, "send:message", video, CHAT), "invalid_payload", "type")
        untyped = await send(doctor, "plain")
        assert untyped["type"] == "text"

        received = await nurse_inbox.wait("new:message", CHAT, count=2)
        assert [message["type"] for message in received] == ["image", "text"]


async def test_on_message_hook_runs_before_delivery_and_may_refuse(
    clients: Clients, authenticator: SignedTokenAuthenticator
) -> None:
    seen: list[dict[str, Any]] = []
    release = asyncio.Event()

    async def on_message(conn: Connection, message: dict[str, Any]) -> None:
        seen.append(dict(message))
        if message["content"] == "secret":
            raise PermissionDenied("send", reason="blocked by the app")
        await release.wait()  # as if persisting it

    gateway = clinic_gateway(authenticator, namespaces=[ChatNamespace(on_message=on_message)])
    async with clients.serve(gateway, "aiohttp") as server:
        doctor, doctor_inbox = await chatter(clients, server.url, authenticator, "doctor")
        nurse, nurse_inbox = await chatter(clients, server.url, authenticator, "nurse")
        await join(doctor)
        await join(nurse)

        pending = asyncio.create_task(
            call(doctor, "send:message", {"conversationId": "c1", "content": "hello"}, CHAT)
        )
        await until(lambda: len(seen) == 1)
        # The hook holds the message: nobody has it yet.
        await barrier(gateway, "u-nurse", nurse_inbox)
        await barrier(gateway, "u-doctor", doctor_inbox)
        assert nurse_inbox.of("new:message", CHAT) == []
        assert doctor_inbox.of("new:message", CHAT) == []
        release.set()
        ack = await pending
        assert ack["success"] is True, ack
        assert ack["message"] == seen[0]
        assert seen[0]["senderId"] == "u-doctor"
        assert await nurse_inbox.wait("new:message", CHAT) == [seen[0]]

        refused = await call(
            doctor, "send:message", {"conversationId": "c1", "content": "secret"}, CHAT
        )
        assert_refused(refused, "forbidden")
        assert seen[1]["content"] == "secret"
        await barrier(gateway, "u-nurse", nurse_inbox)
        await barrier(gateway, "u-doctor", doctor_inbox)
        assert nurse_inbox.of("new:message", CHAT) == [seen[0]]
        assert doctor_inbox.of("new:message", CHAT) == [seen[0]]


# -- typing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "heard"),
    [("typing:start", "user:typing"), ("typing:stop", "user:stopped_typing")],
)
async def test_typing_reaches_the_others_but_none_of_the_senders_sockets(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    name: str,
    heard: str,
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        doctor_a, doctor_a_inbox = await chatter(clients, server.url, authenticator, "doctor")
        doctor_b, doctor_b_inbox = await chatter(clients, server.url, authenticator, "doctor")
        nurse, nurse_inbox = await chatter(clients, server.url, authenticator, "nurse")
        staff, staff_inbox = await chatter(clients, server.url, authenticator, "staff")
        for client in (doctor_a, doctor_b, nurse, staff):
            await join(client)

        assert await call(doctor_a, name, "c1", CHAT) == {"success": True}

        doctor_typing = {"userId": "u-doctor", "userName": "Dr Dee", "conversationId": "c1"}
        assert await nurse_inbox.wait(heard, CHAT) == [doctor_typing]
        assert await staff_inbox.wait(heard, CHAT) == [doctor_typing]
        # Barrier: the nurse's signal reaches both doctor sockets after the doctor's
        # own would have.
        assert await call(nurse, name, {"conversationId": "c1"}, CHAT) == {"success": True}
        nurse_typing = {"userId": "u-nurse", "userName": "Nat Nurse", "conversationId": "c1"}
        assert await doctor_a_inbox.wait(heard, CHAT) == [nurse_typing]
        assert await doctor_b_inbox.wait(heard, CHAT) == [nurse_typing]
        assert await staff_inbox.wait(heard, CHAT, count=2) == [doctor_typing, nurse_typing]
        await barrier(gateway, "u-nurse", nurse_inbox)
        assert nurse_inbox.of(heard, CHAT) == [doctor_typing]


# -- reauthorization ----------------------------------------------------------------------


async def test_reauthorization_removes_a_user_who_lost_the_role(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        doctor, doctor_inbox = await chatter(clients, server.url, authenticator, "doctor")
        nurse, nurse_inbox = await chatter(clients, server.url, authenticator, "nurse")
        await join(doctor)
        await join(nurse)

        demoted = attrs.evolve(USERS["nurse"], roles=frozenset())
        revoked = await gateway.reauthorize("u-nurse", demoted)

        # Without the role she also leaves the gateway's role:nurse room.
        assert revoked == {nurse.get_sid(CHAT): ["role:nurse", "conversation:c1"]}
        notices = await nurse_inbox.wait("access:revoked", CHAT, count=2)
        assert notices == [
            {"room": "role:nurse", "reason": "reauthorized"},
            {"room": "conversation:c1", "reason": "reauthorized"},
        ]
        (left,) = await doctor_inbox.wait("user:left", CHAT)
        assert without_timestamp(left) == who(USERS["nurse"])
        assert await gateway.presence("conversation:c1", namespace=CHAT) == {"u-doctor"}

        await send(doctor, "can you see this?")
        await barrier(gateway, "u-nurse", nurse_inbox)
        assert nurse_inbox.of("new:message", CHAT) == []
        # Nor may she come back or write.
        assert_refused(await call(nurse, "join:conversation", "c1", CHAT), "forbidden")
        message = {"conversationId": "c1", "content": "hi"}
        assert_refused(await call(nurse, "send:message", message, CHAT), "forbidden")
