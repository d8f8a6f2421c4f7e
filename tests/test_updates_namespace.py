"""The ``/updates`` namespace: resource subscriptions, ``publish_update`` and reauthorization."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import attrs
import pytest
import socketio

from realtime_gateway import (
    Gateway,
    Identity,
    InvalidPayload,
    NotFound,
    SignedTokenAuthenticator,
    UpdatesNamespace,
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
from .conftest import Clients, call, until

UPDATES = "/updates"


async def subscriber(
    clients: Clients, url: str, authenticator: SignedTokenAuthenticator, who: str | Identity
) -> tuple[socketio.AsyncClient, Inbox]:
    """A client on ``/updates`` only, as the reference user of role ``who`` or an identity."""
    identity = USERS[who] if isinstance(who, str) else who
    return await connect_as(clients, url, authenticator.issue(identity), namespaces=(UPDATES,))


async def subscribe(client: socketio.AsyncClient, resource_type: str, resource_id: str) -> None:
    ack = await call(client, f"subscribe:{resource_type}", resource_id, UPDATES)
    assert ack == {"success": True, f"{resource_type}Id": resource_id}


async def barrier(gateway: Gateway, user_id: str, *inboxes: Inbox) -> None:
    """Send ``user_id``'s ``/updates`` sockets a marker and wait until each inbox has it:
    what was emitted to them before has arrived by then."""
    counts = [len(inbox.of("barrier", UPDATES)) + 1 for inbox in inboxes]
    marker = {"marker": str(uuid.uuid4())}
    await gateway.emit_to_user(user_id, "barrier", marker, namespace=UPDATES)
    for inbox, count in zip(inboxes, counts, strict=True):
        await inbox.wait("barrier", UPDATES, count=count)


# -- subscribing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("admin", {"patient", "encounter"}),  # the admin rule allows everything
        ("doctor", {"patient", "encounter"}),  # view:patient and view:clinical_notes
        ("nurse", {"patient"}),  # view:patient only
        ("staff", set()),
        ("patient", set()),
    ],
)
async def test_subscribing_needs_the_resource_types_permission(
    clients: Clients, authenticator: SignedTokenAuthenticator, role: str, allowed: set[str]
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, "aiohttp") as server:
        client, inbox = await subscriber(clients, server.url, authenticator, role)
        for resource_type, resource_id in (("patient", "p1"), ("encounter", "e1")):
            ack = await call(client, f"subscribe:{resource_type}", resource_id, UPDATES)
            if resource_type in allowed:
                assert ack == {"success": True, f"{resource_type}Id": resource_id}
            else:
                assert_refused(ack, "forbidden")

        await gateway.publish_update("patient", "p1", "vitals", {"hr": 80})
        await gateway.publish_update("encounter", "e1", "note_added")
        await barrier(gateway, USERS[role].user_id, inbox)
        received = {
            kind for kind in ("patient", "encounter") if inbox.of(f"{kind}:update", UPDATES)
        }
        assert received == allowed


@pytest.mark.parametrize(
    ("resource_type", "payload", "resource_id"),
    [
        ("patient", "p1", "p1"),
        ("patient", 42, "42"),
        ("patient", {"patientId": "p1"}, "p1"),
        ("encounter", "e1", "e1"),
        ("encounter", {"encounterId": 7}, "7"),
    ],
    ids=["bare", "integer", "object", "encounter-bare", "encounter-object-integer"],
)
async def test_subscribe_id_forms(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    resource_type: str,
    payload: object,
    resource_id: str,
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        doctor, inbox = await subscriber(clients, server.url, authenticator, "doctor")

        ack = await call(doctor, f"subscribe:{resource_type}", payload, UPDATES)

        assert ack == {"success": True, f"{resource_type}Id": resource_id}
        await gateway.publish_update(resource_type, resource_id, "changed")
        (update,) = await inbox.wait(f"{resource_type}:update", UPDATES)
        assert update[f"{resource_type}Id"] == resource_id
        assert update["data"] == {}


@pytest.mark.parametrize(
    "bad",
    ["", "a:b", "a b", True, None, 1.5, "x" * 129, {"encounterId": "e1"}, {"patientId": False}],
    ids=[
        "empty",
        "colon",
        "space",
        "bool",
        "null",
        "float",
        "too-long",
        "object-wrong-key",
        "object-bool-id",
    ],
)
async def test_invalid_resource_ids_are_refused(
    clients: Clients, authenticator: SignedTokenAuthenticator, bad: object
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, "aiohttp") as server:
        doctor, _ = await subscriber(clients, server.url, authenticator, "doctor")
        ack = await call(doctor, "subscribe:patient", bad, UPDATES)
        assert_refused(ack, "invalid_payload", "patientId")
        await subscribe(doctor, "patient", "p1")  # the connection survives bad input


# -- publishing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource_type", "subscribed", "other"),
    [("patient", "p1", "p2"), ("encounter", "e1", "e2")],
)
async def test_publish_update_reaches_the_resources_subscribers_only(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    resource_type: str,
    subscribed: str,
    other: str,
) -> None:
    gateway = clinic_gateway(authenticator)
    event_name = f"{resource_type}:update"
    async with clients.serve(gateway, server_kind) as server:
        doctor, doctor_inbox = await subscriber(clients, server.url, authenticator, "doctor")
        other_doctor, other_inbox = await subscriber(clients, server.url, authenticator, "doctor")
        staff, staff_inbox = await subscriber(clients, server.url, authenticator, "staff")
        await subscribe(doctor, resource_type, subscribed)
        await subscribe(other_doctor, resource_type, other)
        refused = await call(staff, f"subscribe:{resource_type}", subscribed, UPDATES)
        assert_refused(refused, "forbidden")

        update = await gateway.publish_update(resource_type, subscribed, "vitals", {"hr": 80})

        assert without_timestamp(update) == {
            f"{resource_type}Id": subscribed,
            "updateType": "vitals",
            "data": {"hr": 80},
        }
        assert await doctor_inbox.wait(event_name, UPDATES) == [update]
        # Barriers: a later update of its own resource reaches the other doctor, and a
        # later event reaches staff; the first update reached neither.
        later = await gateway.publish_update(resource_type, other, "vitals", {"hr": 90})
        assert await other_inbox.wait(event_name, UPDATES) == [later]
        await barrier(gateway, "u-staff", staff_inbox)
        assert staff_inbox.of(event_name, UPDATES) == []
        assert doctor_inbox.of(event_name, UPDATES) == [update]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"resource_type": "invoice"}, "resourceType"),
        ({"resource_type": "Patient"}, "resourceType"),
        ({"resource_id": "a:b"}, "resourceId"),
        ({"resource_id": True}, "resourceId"),
        ({"update_type": ""}, "updateType"),
        ({"update_type": "  "}, "updateType"),
    ],
)
async def test_publish_update_refuses_bad_arguments(
    authenticator: SignedTokenAuthenticator, kwargs: dict[str, Any], field: str
) -> None:
    gateway = clinic_gateway(authenticator)
    arguments: dict[str, Any] = {
        "resource_type": "patient",
        "resource_id": "p1",
        "update_type": "vitals",
        **kwargs,
    }
    with pytest.raises(InvalidPayload) as caught:
        await gateway.publish_update(**arguments)
    assert caught.value.field == field


@pytest.mark.parametrize("namespace", ["/chat", "/", "/nowhere"])
async def test_publish_update_needs_an_updates_namespace(
    authenticator: SignedTokenAuthenticator, namespace: str
) -> None:
    gateway = clinic_gateway(authenticator)
    with pytest.raises(NotFound):
        await gateway.publish_update("patient", "p1", "vitals", namespace=namespace)


# -- unsubscribing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subscribed", "payload"),
    [
        ("p1", ("patient", "p1")),  # a tuple is sent as two arguments, as emit(ev, a, b)
        ("42", ("patient", 42)),
        ("p1", {"resourceType": "patient", "resourceId": "p1"}),
        ("p1", ["patient", "p1"]),
        ("42", {"resourceType": "patient", "resourceId": 42}),
    ],
    ids=["two-arguments", "two-arguments-integer-id", "object", "list", "object-integer-id"],
)
async def test_unsubscribe_stops_the_updates(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    subscribed: str,
    payload: object,
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        doctor, inbox = await subscriber(clients, server.url, authenticator, "doctor")
        await subscribe(doctor, "patient", subscribed)
        await subscribe(doctor, "encounter", "e1")

        ack = await call(doctor, "unsubscribe", payload, UPDATES)

        assert ack == {"success": True, "room": f"patient:{subscribed}"}
        await gateway.publish_update("patient", subscribed, "vitals")
        # Barrier: the encounter subscription is untouched and its update comes later.
        await gateway.publish_update("encounter", "e1", "note_added")
        await inbox.wait("encounter:update", UPDATES)
        assert inbox.of("patient:update", UPDATES) == []
        again = await call(doctor, "unsubscribe", payload, UPDATES)
        assert_refused(again, "not_found")


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        ({"resourceType": "patient", "resourceId": "p2"}, "not_found", None),
        ({"resourceType": "encounter", "resourceId": "e1"}, "not_found", None),
        ({"resourceType": "invoice", "resourceId": "p1"}, "invalid_payload", "resourceType"),
        ({"resourceType": "Patient", "resourceId": "p1"}, "invalid_payload", "resourceType"),
        ({"resourceType": 5, "resourceId": "p1"}, "invalid_payload", "resourceType"),
        ({"resourceType": "user", "resourceId": "u-nurse"}, "invalid_payload", "resourceType"),
        ({"resourceId": "p1"}, "invalid_payload", "resourceType"),
        ({"resourceType": "patient"}, "invalid_payload", "resourceId"),
        ({"resourceType": "patient", "resourceId": "a b"}, "invalid_payload", "resourceId"),
        (["patient"], "invalid_payload", None),
        (["patient", "p1", "extra"], "invalid_payload", None),
        ("patient:p1", "invalid_payload", None),
        (("patient", "p2"), "not_found", None),
        (("invoice", "p1"), "invalid_payload", "resourceType"),
        (("patient", "a b"), "invalid_payload", "resourceId"),
        (("patient", "p1", "extra"), "invalid_payload", None),
    ],
    ids=[
        "never-subscribed",
        "refused-earlier",
        "unknown-type",
        "bad-type-name",
        "type-not-text",
        "own-user-room",
        "missing-type",
        "missing-id",
        "bad-id",
        "short-list",
        "long-list",
        "string",
        "two-arguments-never-subscribed",
        "two-arguments-unknown-type",
        "two-arguments-bad-id",
        "three-arguments",
    ],
)
async def test_bad_unsubscribe_is_refused_and_changes_nothing(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    payload: object,
    code: str,
    field: str | None,
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, "aiohttp") as server:
        nurse, inbox = await subscriber(clients, server.url, authenticator, "nurse")
        await subscribe(nurse, "patient", "p1")
        assert_refused(await call(nurse, "subscribe:encounter", "e1", UPDATES), "forbidden")

        assert_refused(await call(nurse, "unsubscribe", payload, UPDATES), code, field)

        update = await gateway.publish_update("patient", "p1", "vitals")
        assert await inbox.wait("patient:update", UPDATES) == [update]


# -- configurable resource types ----------------------------------------------------------


async def test_resource_types_are_configuration(
    clients: Clients, authenticator: SignedTokenAuthenticator
) -> None:
    gateway = clinic_gateway(
        authenticator,
        authorizer=reference_rules(resources={"invoice": "view:billing"}),
        namespaces=[UpdatesNamespace(resource_types=("invoice",))],
    )
    billing = attrs.evolve(USERS["staff"], permissions=frozenset({"view:billing"}))
    async with clients.serve(gateway, "aiohttp") as server:
        staff, staff_inbox = await subscriber(clients, server.url, authenticator, billing)
        doctor, _ = await subscriber(clients, server.url, authenticator, "doctor")

        await subscribe(staff, "invoice", "inv-1")
        assert_refused(await call(doctor, "subscribe:invoice", "inv-1", UPDATES), "forbidden")
        assert_refused(await call(doctor, "subscribe:patient", "p1", UPDATES), "not_found")
        unknown = {"resourceType": "patient", "resourceId": "p1"}
        refused = await call(staff, "unsubscribe", unknown, UPDATES)
        assert_refused(refused, "invalid_payload", "resourceType")
        with pytest.raises(InvalidPayload) as caught:
            await gateway.publish_update("patient", "p1", "vitals")
        assert caught.value.field == "resourceType"

        update = await gateway.publish_update("invoice", "inv-1", "paid", {"amount": 120})
        assert without_timestamp(update) == {
            "invoiceId": "inv-1",
            "updateType": "paid",
            "data": {"amount": 120},
        }
        assert await staff_inbox.wait("invoice:update", UPDATES) == [update]


@pytest.mark.parametrize(
    "resource_types",
    [
        (),
        ("Invoice",),
        ("in voice",),
        ("invoice-2",),
        ("patient:x",),
        ("",),
        ("1st",),
        ("a" * 33,),
        (5,),
        ("patient", None),
    ],
    ids=[
        "none",
        "upper",
        "space",
        "dash",
        "colon",
        "empty",
        "digit-first",
        "too-long",
        "number",
        "one-bad",
    ],
)
def test_constructor_refuses_bad_resource_types(resource_types: tuple[Any, ...]) -> None:
    with pytest.raises(ValueError, match="resource type"):
        UpdatesNamespace(resource_types=resource_types)


def test_each_namespace_has_its_own_subscribe_events() -> None:
    custom = UpdatesNamespace("/billing", resource_types=["invoice", "lab_result", "a" * 32])
    default = UpdatesNamespace()
    assert custom.resource_types == {"invoice", "lab_result", "a" * 32}
    assert {"subscribe:invoice", "subscribe:lab_result", "unsubscribe"} <= custom.event_names
    assert "subscribe:patient" not in custom.event_names
    assert {"subscribe:patient", "subscribe:encounter", "unsubscribe"} <= default.event_names
    assert "subscribe:invoice" not in default.event_names


# -- reauthorization ----------------------------------------------------------------------


async def test_reauthorization_revokes_subscriptions_no_longer_allowed(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        doctor, inbox = await subscriber(clients, server.url, authenticator, "doctor")
        await subscribe(doctor, "patient", "p1")
        await subscribe(doctor, "encounter", "e1")

        notes_only = attrs.evolve(USERS["doctor"], permissions=frozenset({"view:clinical_notes"}))
        revoked = await gateway.reauthorize("u-doctor", notes_only)

        assert revoked == {doctor.get_sid(UPDATES): ["patient:p1"]}
        assert await inbox.wait("access:revoked", UPDATES) == [
            {"room": "patient:p1", "reason": "reauthorized"}
        ]
        await gateway.publish_update("patient", "p1", "vitals")
        # Barrier: the encounter subscription survives and its update comes later.
        await gateway.publish_update("encounter", "e1", "note_added")
        await inbox.wait("encounter:update", UPDATES)
        assert inbox.of("patient:update", UPDATES) == []
        # The new identity is the one asked from now on.
        assert_refused(await call(doctor, "subscribe:patient", "p1", UPDATES), "forbidden")


async def test_reauthorization_with_an_expired_identity_disconnects(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        doctor, _ = await connect_as(
            clients,
            server.url,
            authenticator.issue(USERS["doctor"]),
            namespaces=(UPDATES, "/chat"),
        )
        nurse, nurse_inbox = await subscriber(clients, server.url, authenticator, "nurse")
        await subscribe(doctor, "patient", "p1")
        await subscribe(nurse, "patient", "p1")
        sids = {doctor.get_sid(UPDATES), doctor.get_sid("/chat")}

        expired = attrs.evolve(
            USERS["doctor"], expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        )
        revoked = await gateway.reauthorize("u-doctor", expired)

        assert set(revoked) == sids
        assert "patient:p1" in revoked[doctor.get_sid(UPDATES)]
        await until(lambda: not doctor.connected)
        await until(lambda: not sids & set(gateway.connections))
        assert not await gateway.is_user_connected("u-doctor")
        # Others are untouched.
        update = await gateway.publish_update("patient", "p1", "vitals")
        assert await nurse_inbox.wait("patient:update", UPDATES) == [update]


async def test_reauthorization_refuses_another_users_identity(
    clients: Clients, authenticator: SignedTokenAuthenticator
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, "aiohttp") as server:
        doctor, inbox = await subscriber(clients, server.url, authenticator, "doctor")
        await subscribe(doctor, "patient", "p1")

        with pytest.raises(ValueError, match="another user"):
            await gateway.reauthorize("u-doctor", USERS["staff"])

        # Nothing changed: re-checking the doctor's own identity revokes nothing.
        assert await gateway.reauthorize("u-doctor") == {}
        update = await gateway.publish_update("patient", "p1", "vitals")
        assert await inbox.wait("patient:update", UPDATES) == [update]
        assert inbox.of("access:revoked", UPDATES) == []
