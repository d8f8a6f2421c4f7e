"""The ``/notifications`` namespace: user and role rooms, notifications, channels and
``mark:read``."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import pytest
import socketio

from realtime_gateway import (
    NOTIFICATION_TYPES,
    Connection,
    Gateway,
    Identity,
    InvalidPayload,
    NotificationsNamespace,
    SignedTokenAuthenticator,
)

from .clinic import USERS, Inbox, assert_epoch_ms, assert_refused, clinic_gateway, connect_as
from .conftest import Clients, call

NS = "/notifications"
ONLY_NS = (NS,)


async def notifications_before_marker(gateway: Gateway, user_id: str, inbox: Inbox) -> list[Any]:
    """Notify ``user_id`` a marker and wait for it on ``inbox``; return what arrived
    before it (a socket receives its events in the order they were emitted)."""
    marker = await gateway.notify_user(user_id, "marker", "")
    while True:
        got = await inbox.wait("notification", NS, count=len(inbox.of("notification", NS)) + 1)
        ids = [note["id"] for note in got]
        if marker["id"] in ids:
            return got[: ids.index(marker["id"])]


async def rooms_of(gateway: Gateway, client: socketio.AsyncClient) -> frozenset[str]:
    info = await gateway.connection_info(client.get_sid(NS))
    assert info is not None
    assert info.namespace == NS
    return info.rooms


async def connect(
    clients: Clients, url: str, authenticator: SignedTokenAuthenticator, identity: Identity
) -> tuple[socketio.AsyncClient, Inbox]:
    return await connect_as(clients, url, authenticator.issue(identity), namespaces=ONLY_NS)


# -- user and role rooms ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "identity",
    [
        USERS["nurse"],
        Identity(user_id="u-multi", roles={"doctor", "staff"}),
        Identity(user_id="u-nobody"),
    ],
    ids=["nurse", "two-roles", "no-role"],
)
async def test_sockets_are_in_their_user_and_role_rooms(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str, identity: Identity
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        client, _ = await connect(clients, server.url, authenticator, identity)
        rooms = await rooms_of(gateway, client)

    expected = {f"user:{identity.user_id}"} | {f"role:{role}" for role in identity.roles}
    assert rooms == expected


NOTIFY_CASES = [
    # (gateway method, its target, the only one of doctor/nurse/staff that gets it)
    ("notify_user", "u-nurse", "nurse"),
    ("notify_user", "u-staff", "staff"),
    ("notify_role", "doctor", "doctor"),
    ("notify_role", "staff", "staff"),
]


@pytest.mark.parametrize(("method", "target", "recipient"), NOTIFY_CASES)
async def test_notifications_reach_exactly_the_intended_clients(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    method: str,
    target: str,
    recipient: str,
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        inboxes: dict[str, Inbox] = {}
        for role in ("doctor", "nurse", "staff"):
            _, inboxes[role] = await connect(clients, server.url, authenticator, USERS[role])

        notify = gateway.notify_user if method == "notify_user" else gateway.notify_role
        note = await notify(target, "Heads up", "Something happened")

        for role, inbox in inboxes.items():
            before = await notifications_before_marker(gateway, USERS[role].user_id, inbox)
            assert before == ([note] if role == recipient else []), role


async def test_notification_shape(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        _, inbox = await connect(clients, server.url, authenticator, USERS["nurse"])
        sent = [await gateway.notify_user("u-nurse", "Default", "no type, no data")]
        for kind in NOTIFICATION_TYPES:
            sent.append(
                await gateway.notify_user(
                    "u-nurse", f"A {kind}", "body", type=kind, data={"patientId": "p1"}
                )
            )
        received = await inbox.wait("notification", NS, count=len(sent))

    assert received == sent
    assert [note["type"] for note in received] == ["info", *NOTIFICATION_TYPES]
    assert received[0]["data"] == {}
    assert received[1]["data"] == {"patientId": "p1"}
    assert len({note["id"] for note in received}) == len(received)
    for note in received:
        assert set(note) == {"id", "type", "title", "message", "data", "timestamp"}
        uuid.UUID(note["id"])
        assert_epoch_ms(note["timestamp"])


BAD_NOTIFICATIONS: list[tuple[dict[str, Any], str]] = [
    ({"type": "urgent"}, "type"),
    ({"type": "INFO"}, "type"),
    ({"type": ""}, "type"),
    ({"data": ["not", "a", "mapping"]}, "data"),
    ({"data": "text"}, "data"),
    ({"title": ""}, "title"),
    ({"title": "   "}, "title"),
]


@pytest.mark.parametrize("method", ["notify_user", "notify_role"])
@pytest.mark.parametrize(("bad", "field"), BAD_NOTIFICATIONS)
async def test_invalid_notifications_are_refused(
    authenticator: SignedTokenAuthenticator, method: str, bad: dict[str, Any], field: str
) -> None:
    gateway = clinic_gateway(authenticator)
    arguments: dict[str, Any] = {"title": "Title", "message": "Message", **bad}
    notify = gateway.notify_user if method == "notify_user" else gateway.notify_role
    with pytest.raises(InvalidPayload) as caught:
        await notify("nurse", **arguments)
    assert caught.value.field == field


# -- channels -----------------------------------------------------------------------------

CHANNELS = ("system", "admin", "clinical", "billing", "unknown")
SUBSCRIBABLE = {
    # An admin may do everything except subscribe to a channel that does not exist.
    "admin": {"system", "admin", "clinical", "billing"},
    "doctor": {"system", "clinical"},
    "nurse": {"system", "clinical"},
    "staff": {"system", "billing"},
    "patient": {"system"},
}


@pytest.mark.parametrize("role", sorted(SUBSCRIBABLE))
async def test_subscribe_follows_the_reference_channel_rules(
    clients: Clients, authenticator: SignedTokenAuthenticator, role: str
) -> None:
    allowed = SUBSCRIBABLE[role]
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, "aiohttp") as server:
        one_by_one, _ = await connect(clients, server.url, authenticator, USERS[role])
        all_at_once, _ = await connect(clients, server.url, authenticator, USERS[role])

        for channel in CHANNELS:
            ack = await call(one_by_one, "subscribe", channel, NS)
            if channel in allowed:
                expected = {"subscribedChannels": [channel], "deniedChannels": []}
            else:
                expected = {"subscribedChannels": [], "deniedChannels": [channel]}
            assert ack == {"success": True, **expected}, channel

        ack = await call(all_at_once, "subscribe", list(CHANNELS), NS)
        assert ack == {
            "success": True,
            "subscribedChannels": [c for c in CHANNELS if c in allowed],
            "deniedChannels": [c for c in CHANNELS if c not in allowed],
        }
        for client in (one_by_one, all_at_once):
            rooms = await rooms_of(gateway, client)
            assert {room for room in rooms if room.startswith("channel:")} == {
                f"channel:{c}" for c in allowed
            }


async def test_channel_emits_reach_subscribers_only(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        inboxes: dict[str, Inbox] = {}
        acks: dict[str, Any] = {}
        for role in ("doctor", "staff", "patient"):
            client, inboxes[role] = await connect(clients, server.url, authenticator, USERS[role])
            acks[role] = await call(client, "subscribe", {"channels": ["clinical"]}, NS)
        assert acks["doctor"]["subscribedChannels"] == ["clinical"]
        assert acks["staff"]["deniedChannels"] == ["clinical"]
        assert acks["patient"]["deniedChannels"] == ["clinical"]

        await gateway.emit_to_room("channel:clinical", "bulletin", {"n": 1}, namespace=NS)
        assert await inboxes["doctor"].wait("bulletin", NS) == [{"n": 1}]
        for role in ("staff", "patient"):
            await notifications_before_marker(gateway, USERS[role].user_id, inboxes[role])
            assert inboxes[role].of("bulletin", NS) == [], role


BAD_CHANNELS: list[Any] = [
    "",
    " system",
    "two words",
    "channel:system",
    "-leading-dash",
    "x" * 65,
    42,
    None,
    True,
    {"channels": 5},
    [],
    {"channels": []},
    ["system", 5],
    ["system", None],
    ["system", ["clinical"]],
    ["system"] + [f"c{i}" for i in range(100)],  # 101 items
]


@pytest.mark.parametrize("event", ["subscribe", "unsubscribe"])
async def test_invalid_channel_payloads_are_refused_and_change_nothing(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str, event: str
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        client, _ = await connect(clients, server.url, authenticator, USERS["nurse"])
        await call(client, "subscribe", "clinical", NS)
        rooms = await rooms_of(gateway, client)
        for payload in BAD_CHANNELS:
            ack = await call(client, event, payload, NS)
            assert_refused(ack, "invalid_payload")
            assert ack["field"] == "channels", payload
        assert await rooms_of(gateway, client) == rooms

        # The connection still works, and 100 items is within the limit.
        ack = await call(client, "subscribe", ["system"] + [f"c{i}" for i in range(99)], NS)
        assert ack["success"] is True
        assert ack["subscribedChannels"] == ["system"]
        assert len(ack["deniedChannels"]) == 99


async def test_unsubscribe_lists_what_was_left_and_stops_delivery(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        client, inbox = await connect(clients, server.url, authenticator, USERS["nurse"])
        ack = await call(client, "subscribe", ["system", "clinical", "billing"], NS)
        assert ack["subscribedChannels"] == ["system", "clinical"]

        async def emit_to_channels(tag: str) -> None:
            for channel in ("system", "clinical"):
                await gateway.emit_to_room(
                    f"channel:{channel}", "bulletin", f"{tag} {channel}", namespace=NS
                )

        await emit_to_channels("before")
        await inbox.wait("bulletin", NS, count=2)

        ack = await call(client, "unsubscribe", "clinical", NS)
        assert ack == {"success": True, "unsubscribedChannels": ["clinical"]}
        # billing was denied, clinical already left, admin never asked for.
        ack = await call(client, "unsubscribe", ["billing", "system", "clinical", "admin"], NS)
        assert ack == {"success": True, "unsubscribedChannels": ["system"]}
        ack = await call(client, "unsubscribe", {"channel": "system"}, NS)
        assert ack == {"success": True, "unsubscribedChannels": []}
        assert await rooms_of(gateway, client) == {"user:u-nurse", "role:nurse"}

        await emit_to_channels("after")
        await notifications_before_marker(gateway, "u-nurse", inbox)
        assert inbox.of("bulletin", NS) == ["before system", "before clinical"]


# -- mark:read ------------------------------------------------------------------------------

MARK_READ_FORMS: list[tuple[Any, list[str]]] = [
    ("n1", ["n1"]),
    (7, ["7"]),
    (["n1", "n2"], ["n1", "n2"]),
    (["n1", "n2", "n1"], ["n1", "n2"]),
    ({"ids": ["n1", "n2"]}, ["n1", "n2"]),
    ({"ids": "n1"}, ["n1"]),
    ({"notificationIds": ["a.b@c-d_1"]}, ["a.b@c-d_1"]),
    ([f"n{i}" for i in range(100)], [f"n{i}" for i in range(100)]),
]


@pytest.mark.parametrize(("payload", "ids"), MARK_READ_FORMS)
async def test_mark_read_without_hook_acknowledges_the_ids(
    clients: Clients, authenticator: SignedTokenAuthenticator, payload: Any, ids: list[str]
) -> None:
    async with clients.serve(clinic_gateway(authenticator), "aiohttp") as server:
        client, _ = await connect(clients, server.url, authenticator, USERS["staff"])
        ack = await call(client, "mark:read", payload, NS)

    assert ack == {"success": True, "markedIds": ids}


def hooked_gateway(
    authenticator: SignedTokenAuthenticator, namespace: NotificationsNamespace
) -> Gateway:
    return clinic_gateway(authenticator, namespaces=[namespace])


async def test_mark_read_hook_persists_and_may_mark_a_subset(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    recorded: list[tuple[str, list[str]]] = []

    async def on_mark_read(conn: Connection, ids: list[str]) -> Iterable[str] | None:
        recorded.append((conn.identity.user_id, ids))
        if ids == ["all"]:
            return None  # None: every id was marked
        return (marked for marked in ids if not marked.startswith("gone"))

    namespace = NotificationsNamespace(on_mark_read=on_mark_read)
    async with clients.serve(hooked_gateway(authenticator, namespace), server_kind) as server:
        nurse, _ = await connect(clients, server.url, authenticator, USERS["nurse"])
        doctor, _ = await connect(clients, server.url, authenticator, USERS["doctor"])
        subset = await call(nurse, "mark:read", {"ids": ["n1", "gone-2", "n3"]}, NS)
        everything = await call(doctor, "mark:read", "all", NS)

    assert recorded == [("u-nurse", ["n1", "gone-2", "n3"]), ("u-doctor", ["all"])]
    assert subset == {"success": True, "markedIds": ["n1", "n3"]}
    assert everything == {"success": True, "markedIds": ["all"]}


BAD_IDS: list[Any] = [
    "",
    "has space",
    "-leading-dash",
    "x" * 129,
    True,
    None,
    1.5,
    [],
    [None],
    ["n1", {"id": "n2"}],
    {},
    {"ids": []},
    {"ids": "bad id"},
    [f"n{i}" for i in range(101)],
]


async def test_invalid_mark_read_ids_are_refused(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    recorded: list[list[str]] = []

    async def on_mark_read(conn: Connection, ids: list[str]) -> None:
        recorded.append(ids)

    namespace = NotificationsNamespace(on_mark_read=on_mark_read)
    async with clients.serve(hooked_gateway(authenticator, namespace), server_kind) as server:
        client, _ = await connect(clients, server.url, authenticator, USERS["nurse"])
        for payload in BAD_IDS:
            ack = await call(client, "mark:read", payload, NS)
            assert_refused(ack, "invalid_payload")
            assert ack["field"] == "ids", payload
        assert await call(client, "mark:read", "ok", NS) == {"success": True, "markedIds": ["ok"]}

    assert recorded == [["ok"]]


async def test_mark_read_hook_crash_answers_internal(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    async def on_mark_read(conn: Connection, ids: list[str]) -> None:
        raise RuntimeError("lost connection to db at 10.0.0.7")

    namespace = NotificationsNamespace(on_mark_read=on_mark_read)
    async with clients.serve(hooked_gateway(authenticator, namespace), server_kind) as server:
        client, _ = await connect(clients, server.url, authenticator, USERS["nurse"])
        ack = await call(client, "mark:read", ["n1"], NS)
        still_works = await call(client, "subscribe", "system", NS)

    assert_refused(ack, "internal")
    assert set(ack) == {"success", "error", "code"}
    assert "10.0.0.7" not in repr(ack)
    assert still_works["subscribedChannels"] == ["system"]
