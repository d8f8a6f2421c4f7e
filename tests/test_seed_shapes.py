"""Every shape of SPEC's "Seed compatibility (exact shapes)", one test per shape.

The front-ends and monitors built for the Node service this library replaces must
keep working unchanged, so each shape is checked as they see it: events and
acknowledgements through the official socket.io JavaScript client (Node, over
``tests/js/sioclient.cjs``), admin bodies over HTTP, on both adapters (aiohttp and
the ASGI app under uvicorn). The gateway is the reference clinic with missed-message
recovery on, as the clinic example runs it: events to rooms then carry an offset as
an extra last argument, and the payload before it keeps its shape. Extra fields are
allowed everywhere; the named ones, their types and their values are not negotiable.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import attrs
import pytest

from realtime_gateway import (
    AdminAPI,
    Gateway,
    Identity,
    Rule,
    RuleAuthorizer,
    SignedTokenAuthenticator,
    reference_rules,
)
from realtime_gateway.testing import ServerKind

from .clinic import USERS, clinic_gateway
from .conftest import RunningServer, quick_config, serve
from .jsclient import JsClient, js_client

ADMIN = "/api/socket.io"


# -- what every shape is made of ----------------------------------------------------------


def assert_epoch_ms(value: object) -> None:
    """A JavaScript ``Date.now()``: an integral number of milliseconds, close to now
    (never an ISO string, never seconds)."""
    assert isinstance(value, int), value
    assert not isinstance(value, bool), value
    assert abs(time.time() * 1000 - value) < 60_000, value


def assert_iso(value: object) -> None:
    """An ISO 8601 UTC string as JavaScript's ``toISOString()`` writes it, close to now."""
    assert isinstance(value, str), value
    assert value.endswith("Z"), value
    moment = dt.datetime.fromisoformat(value)
    assert abs((dt.datetime.now(dt.UTC) - moment).total_seconds()) < 60, value


def has(payload: object, **expected: object) -> dict[str, Any]:
    """``payload`` is an object holding each named field with that value (extra
    fields allowed); returns it."""
    assert isinstance(payload, dict), payload
    missing = set(expected) - set(payload)
    assert not missing, (missing, payload)
    assert {key: payload[key] for key in expected} == expected, payload
    return payload


def only_payload(args: list[Any]) -> Any:
    """The payload of an event as a socket.io handler gets it: the first argument;
    a recovery offset (a string) may follow, nothing else."""
    assert 1 <= len(args) <= 2, args
    if len(args) == 2:
        assert isinstance(args[1], str), args
    return args[0]


def socket_id(client: JsClient) -> str:
    """The id the official client was given at its (first) connect."""
    ids = [report["id"] for report in client.reports if report["type"] == "connect"]
    assert ids, client.reports
    sid: str = ids[0]
    return sid


# -- the clinic, a JS client per socket, the admin API ------------------------------------


@attrs.frozen
class Clinic:
    server: RunningServer
    authenticator: SignedTokenAuthenticator
    http: aiohttp.ClientSession

    @property
    def gateway(self) -> Gateway:
        return self.server.gateway

    def token(self, who: str | Identity) -> str:
        return self.authenticator.issue(USERS[who] if isinstance(who, str) else who)

    @contextlib.asynccontextmanager
    async def js(self, who: str, namespace: str = "/") -> AsyncIterator[JsClient]:
        """The official client of ``who`` (a reference role), connected to ``namespace``."""
        async with js_client(self.server.url, namespace, auth={"token": self.token(who)}) as client:
            await client.connected()
            yield client

    async def admin(
        self, method: str, path: str, body: Any = None, *, who: str | None = "admin"
    ) -> tuple[int, dict[str, Any]]:
        """``method path`` on the admin API (as ``who``, or anonymous): status and body."""
        headers = {} if who is None else {"Authorization": f"Bearer {self.token(who)}"}
        options: dict[str, Any] = {} if body is None else {"json": body}
        async with self.http.request(
            method, self.server.url + ADMIN + path, headers=headers, **options
        ) as reply:
            assert reply.content_type == "application/json", reply.content_type
            answer: dict[str, Any] = await reply.json()
            return reply.status, answer


@pytest.fixture
async def clinic(
    authenticator: SignedTokenAuthenticator, server_kind: ServerKind
) -> AsyncIterator[Clinic]:
    # The reference rules, plus wards anyone may join (a room that can be left).
    rules = reference_rules() + RuleAuthorizer([Rule(actions="join", target="ward:{ward}")])
    gateway = clinic_gateway(
        authenticator, authorizer=rules, config=quick_config(recovery_window=120)
    )
    async with (
        serve(gateway, server_kind, AdminAPI(gateway, prefix=ADMIN)) as server,
        aiohttp.ClientSession() as http,
    ):
        yield Clinic(server, authenticator, http)


def succeeded(status: int, body: Mapping[str, Any]) -> Any:
    """A ``{"success": true, "data": {...}}`` answer; returns ``data``."""
    assert status == 200, body
    assert body["success"] is True, body
    assert isinstance(body["data"], dict), body
    return body["data"]


def done(status: int, body: Mapping[str, Any]) -> Any:
    """An action's ``{success: true, message, data}``; returns ``data``."""
    data = succeeded(status, body)
    assert isinstance(body["message"], str), body
    assert body["message"].strip(), body
    return data


def failed(status: int, body: Mapping[str, Any], expected_status: int, code: str) -> None:
    """A ``{"success": false, "error": "...", "code": "..."}`` answer."""
    assert status == expected_status, body
    assert body["success"] is False, body
    assert isinstance(body["error"], str), body
    assert body["error"], body
    assert body["code"] == code, body


# -- / ---------------------------------------------------------------------------------------


async def test_connected_has_ms_timestamp_and_iso_server_time(clinic: Clinic) -> None:
    async with js_client(clinic.server.url, "/", auth={"token": clinic.token("nurse")}) as nurse:
        report = await nurse.connected()
        welcome = only_payload((await nurse.event("connected"))["args"])
    has(welcome, socketId=report["id"], userId="u-nurse")
    assert_epoch_ms(welcome["timestamp"])
    assert_iso(welcome["serverTime"])


async def test_ping_acks_pong_with_ms_timestamp(clinic: Clinic) -> None:
    async with clinic.js("staff") as staff:
        pong = await staff.call("ping")
    has(pong, status="pong")
    assert pong.get("success", True) is True
    assert_epoch_ms(pong["timestamp"])


async def test_join_room_acks_success_and_room(clinic: Clinic) -> None:
    async with clinic.js("nurse") as nurse:
        ack = await nurse.call("join:room", "ward:3")
    has(ack, success=True, room="ward:3")


async def test_leave_room_acks_success_and_room(clinic: Clinic) -> None:
    async with clinic.js("nurse") as nurse:
        await nurse.call("join:room", "ward:3")
        ack = await nurse.call("leave:room", "ward:3")
    has(ack, success=True, room="ward:3")


async def test_message_acks_id_and_ms_received_at(clinic: Clinic) -> None:
    async with clinic.js("doctor") as doctor:
        ack = await doctor.call("message", {"text": "hello"})
    has(ack, success=True)
    assert isinstance(ack["messageId"], str), ack
    assert ack["messageId"]
    assert_epoch_ms(ack["receivedAt"])


# -- /updates ---------------------------------------------------------------------------------


async def test_subscribe_patient_acks_patient_id(clinic: Clinic) -> None:
    async with clinic.js("nurse", "/updates") as nurse:
        ack = await nurse.call("subscribe:patient", "p-1001")
    has(ack, success=True, patientId="p-1001")


async def test_subscribe_encounter_acks_encounter_id(clinic: Clinic) -> None:
    async with clinic.js("doctor", "/updates") as doctor:
        ack = await doctor.call("subscribe:encounter", "e-7")
    has(ack, success=True, encounterId="e-7")


async def test_unsubscribe_takes_two_arguments_and_acks_room(clinic: Clinic) -> None:
    async with clinic.js("doctor", "/updates") as doctor:
        await doctor.call("subscribe:patient", "p-1001")
        await doctor.call("subscribe:encounter", "e-7")
        ack = await doctor.call("unsubscribe", "patient", "p-1001")
        has(ack, success=True, room="patient:p-1001")
        # It took effect: the patient's update is not delivered, the later encounter's is.
        await clinic.gateway.publish_update("patient", "p-1001", "vitals")
        await clinic.gateway.publish_update("encounter", "e-7", "note_added")
        await doctor.event("encounter:update")
        assert doctor.events("patient:update") == []


async def test_patient_update_shape(clinic: Clinic) -> None:
    async with clinic.js("nurse", "/updates") as nurse:
        await nurse.call("subscribe:patient", "p-1001")
        await clinic.gateway.publish_update("patient", "p-1001", "vitals", {"hr": 72})
        update = only_payload((await nurse.event("patient:update"))["args"])
    has(update, patientId="p-1001", updateType="vitals", data={"hr": 72})
    assert_epoch_ms(update["timestamp"])


async def test_encounter_update_shape(clinic: Clinic) -> None:
    async with clinic.js("doctor", "/updates") as doctor:
        await doctor.call("subscribe:encounter", "e-7")
        await clinic.gateway.publish_update("encounter", "e-7", "note_added", {"n": 1})
        update = only_payload((await doctor.event("encounter:update"))["args"])
    has(update, encounterId="e-7", updateType="note_added", data={"n": 1})
    assert_epoch_ms(update["timestamp"])


# -- /chat ------------------------------------------------------------------------------------


async def test_user_joined_shape(clinic: Clinic) -> None:
    async with clinic.js("doctor", "/chat") as doctor, clinic.js("nurse", "/chat") as nurse:
        await doctor.call("join:conversation", "c-1")
        await nurse.call("join:conversation", "c-1")
        joined = only_payload((await doctor.event("user:joined"))["args"])
    has(joined, userId="u-nurse", userName="Nat Nurse")
    assert_epoch_ms(joined["timestamp"])


async def test_user_left_shape(clinic: Clinic) -> None:
    async with clinic.js("doctor", "/chat") as doctor, clinic.js("nurse", "/chat") as nurse:
        await doctor.call("join:conversation", "c-1")
        await nurse.call("join:conversation", "c-1")
        await nurse.call("leave:conversation", "c-1")
        left = only_payload((await doctor.event("user:left"))["args"])
    has(left, userId="u-nurse")
    assert_epoch_ms(left["timestamp"])


async def test_user_stopped_typing_shape(clinic: Clinic) -> None:
    async with clinic.js("doctor", "/chat") as doctor, clinic.js("nurse", "/chat") as nurse:
        await doctor.call("join:conversation", "c-1")
        await nurse.call("join:conversation", "c-1")
        await nurse.call("typing:stop", "c-1")
        stopped = only_payload((await doctor.event("user:stopped_typing"))["args"])
    has(stopped, userId="u-nurse", conversationId="c-1")


async def test_new_message_shape(clinic: Clinic) -> None:
    async with clinic.js("doctor", "/chat") as doctor, clinic.js("nurse", "/chat") as nurse:
        await doctor.call("join:conversation", "c-1")
        await nurse.call("join:conversation", "c-1")
        sent = await nurse.call(
            "send:message", {"conversationId": "c-1", "content": "BP stable", "type": "text"}
        )
        assert sent["success"] is True, sent
        message = only_payload((await doctor.event("new:message"))["args"])
    has(
        message,
        conversationId="c-1",
        senderId="u-nurse",
        senderName="Nat Nurse",
        content="BP stable",
        type="text",
    )
    assert isinstance(message["id"], str), message
    assert message["id"]
    assert_epoch_ms(message["timestamp"])


# -- the other events that carry a timestamp ---------------------------------------------------


async def test_notification_timestamp_is_ms(clinic: Clinic) -> None:
    async with clinic.js("nurse", "/notifications") as nurse:
        await clinic.gateway.notify_user("u-nurse", "Meds due", "Room 4", type="warning")
        note = only_payload((await nurse.event("notification"))["args"])
    has(note, type="warning", title="Meds due", message="Room 4", data={})
    assert_epoch_ms(note["timestamp"])


async def test_presence_join_timestamp_is_ms(clinic: Clinic) -> None:
    async with clinic.js("doctor") as doctor, clinic.js("nurse") as nurse:
        await doctor.call("join:room", "ward:3")
        await nurse.call("join:room", "ward:3")
        joined = only_payload((await doctor.event("presence:join"))["args"])
    has(joined, room="ward:3", userId="u-nurse")
    assert_epoch_ms(joined["timestamp"])


async def test_server_shutdown_shape(clinic: Clinic) -> None:
    async with clinic.js("nurse") as nurse:
        shutting_down = asyncio.create_task(clinic.gateway.shutdown(grace=5, message="Bye"))
        try:
            notice = only_payload((await nurse.event("server:shutdown"))["args"])
            nurse.send("disconnect")
            await asyncio.wait_for(shutting_down, 5)
        finally:
            shutting_down.cancel()
    has(notice, message="Bye")
    assert_epoch_ms(notice["timestamp"])


# -- admin API: failures --------------------------------------------------------------------


async def test_admin_failure_envelope(clinic: Clinic) -> None:
    status, body = await clinic.admin("GET", "/connections", who=None)
    failed(status, body, 401, "unauthenticated")
    status, body = await clinic.admin("GET", "/connections", who="nurse")
    failed(status, body, 403, "forbidden")
    status, body = await clinic.admin("POST", "/broadcast", {"data": {}})
    failed(status, body, 400, "invalid_payload")


# -- admin API: GET ---------------------------------------------------------------------------


async def test_health_shape(clinic: Clinic) -> None:
    async with clinic.js("nurse"), clinic.js("nurse", "/chat"), clinic.js("doctor"):
        data = succeeded(*await clinic.admin("GET", "/health", who=None))
    has(data, status="healthy", initialized=True, activeConnections=3, connectedUsers=2)
    assert_epoch_ms(data["timestamp"])


async def test_health_while_draining(clinic: Clinic) -> None:
    async with clinic.js("nurse") as nurse:
        shutting_down = asyncio.create_task(clinic.gateway.shutdown(grace=5))
        try:
            await nurse.event("server:shutdown")
            status, body = await clinic.admin("GET", "/health", who=None)
            nurse.send("disconnect")
            await asyncio.wait_for(shutting_down, 5)
        finally:
            shutting_down.cancel()
    failed(status, body, 503, "unavailable")
    data = body["data"]
    has(data, status="draining", initialized=True, activeConnections=1, connectedUsers=1)
    assert_epoch_ms(data["timestamp"])


async def test_metrics_shape(clinic: Clinic) -> None:
    async with clinic.js("nurse") as nurse, clinic.js("doctor"):
        await nurse.call("ping")
        expired = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        refused = Identity(user_id="u-x", expires_at=expired)
        async with js_client(clinic.server.url, auth={"token": clinic.token(refused)}) as x:
            await x.next(lambda report: report["type"] == "connect_error")
        data = succeeded(*await clinic.admin("GET", "/metrics"))
    has(
        data,
        connections={"total": 2, "active": 2, "uniqueUsers": 2},
        authentication={"failures": 1},
        messages={"total": 1},
        reconnections=0,
    )
    assert_epoch_ms(data["timestamp"])


async def test_connections_shape(clinic: Clinic) -> None:
    async with clinic.js("nurse") as nurse:
        data = succeeded(*await clinic.admin("GET", "/connections"))
    has(data, count=1)
    [entry] = data["connections"]
    has(entry, socketId=socket_id(nurse), userId="u-nurse", role="nurse")
    assert {"user:u-nurse", "role:nurse"} <= set(entry["rooms"])
    assert isinstance(entry["rooms"], list)
    assert_epoch_ms(entry["connectedAt"])
    assert_epoch_ms(entry["lastActivity"])


async def test_user_status_shape(clinic: Clinic) -> None:
    async with clinic.js("nurse"), clinic.js("nurse", "/updates"):
        connected = succeeded(*await clinic.admin("GET", "/user/u-nurse/status", who="nurse"))
    has(connected, userId="u-nurse", isConnected=True, connectionCount=2)
    away = succeeded(*await clinic.admin("GET", "/user/u-staff/status"))
    has(away, userId="u-staff", isConnected=False, connectionCount=0)


# -- admin API: actions -------------------------------------------------------------------------


async def test_broadcast_answer_shape(clinic: Clinic) -> None:
    async with clinic.js("nurse") as nurse:
        answer = await clinic.admin("POST", "/broadcast", {"event": "news", "data": {"n": 1}})
        assert only_payload((await nurse.event("news"))["args"]) == {"n": 1}
    has(done(*answer), event="news")


async def test_notify_user_answer_shape(clinic: Clinic) -> None:
    async with clinic.js("nurse", "/notifications") as nurse:
        answer = await clinic.admin("POST", "/notify/u-nurse", {"title": "Hi", "message": "m"})
        await nurse.event("notification")
    data = done(*answer)
    has(data["notification"], title="Hi", message="m", type="info")
    assert "u-nurse" not in answer[1]["message"]


async def test_notify_role_answer_shape(clinic: Clinic) -> None:
    async with clinic.js("nurse", "/notifications") as nurse:
        answer = await clinic.admin("POST", "/notify/role/nurse", {"title": "Handover"})
        await nurse.event("notification")
    has(done(*answer)["notification"], title="Handover")
    assert "nurse" not in answer[1]["message"]


async def test_disconnect_socket_answer_shape(clinic: Clinic) -> None:
    async with clinic.js("nurse") as nurse:
        sid = socket_id(nurse)
        answer = await clinic.admin("DELETE", f"/disconnect/{sid}")
        assert (await nurse.disconnected())["reason"] == "io server disconnect"
    done(*answer)
    assert sid not in answer[1]["message"]


async def test_disconnect_user_answer_shape(clinic: Clinic) -> None:
    async with clinic.js("nurse") as nurse, clinic.js("nurse", "/chat") as chat:
        answer = await clinic.admin("DELETE", "/disconnect/user/u-nurse")
        for client in (nurse, chat):
            assert (await client.disconnected())["reason"] == "io server disconnect"
    has(done(*answer), disconnected=2)
    assert "u-nurse" not in answer[1]["message"]


async def test_disconnect_user_without_connection_is_404(clinic: Clinic) -> None:
    async with clinic.js("nurse"):
        failed(*await clinic.admin("DELETE", "/disconnect/user/u-staff"), 404, "not_found")
