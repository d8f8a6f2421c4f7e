"""The admin HTTP API, over real HTTP on both adapters (aiohttp's ``attach()`` and the
ASGI app mounted in Starlette under uvicorn), plus the routing core ``handle()``.

Every "must not receive" is shown with a barrier: a later event the same client does
receive (a socket gets its events in the order they were sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import attrs
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client.parser import text_string_to_metric_families

from realtime_gateway import (
    DEFAULT_ADMIN_PREFIX,
    AdminAPI,
    AdminResponse,
    Gateway,
    Identity,
    SignedTokenAuthenticator,
)

from .clinic import (
    NAMESPACES,
    USERS,
    Inbox,
    assert_epoch_ms,
    clinic_gateway,
    connect_as,
    without_timestamp,
)
from .conftest import Clients, RunningServer, call, quick_config, until

FOREIGN_ORIGIN = "https://evil.example"
JSON_HEADERS = {"Content-Type": "application/json"}


# -- HTTP helpers -----------------------------------------------------------------------


@attrs.frozen
class Reply:
    """One HTTP answer, read whole."""

    status: int
    headers: CIMultiDictProxy[str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)

    @property
    def data(self) -> Any:
        """The ``data`` of a ``{success, data}`` body."""
        body = self.json
        assert set(body) >= {"success", "data"}, body
        return body["data"]

    @property
    def envelope(self) -> dict[str, Any]:
        """The JSON object answered, or ``{"text": ...}`` if it is not one."""
        if self.mime == "application/json":
            with contextlib.suppress(ValueError):
                body = json.loads(self.text)
                if isinstance(body, dict):
                    return body
        return {"text": self.text}

    @property
    def mime(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()


_NO_BODY: Any = object()


class AdminClient:
    """Talks HTTP to the admin API of one running server."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = _NO_BODY,
        raw: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        sent: dict[str, str] = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        options: dict[str, Any] = {}
        if raw is not None:
            options["data"] = raw
        elif body is not _NO_BODY:
            options["json"] = body
        async with self.http.request(
            method, self.base + path, headers=sent, allow_redirects=False, **options
        ) as response:
            text = await response.text()
            return Reply(response.status, CIMultiDictProxy(CIMultiDict(response.headers)), text)

    async def get(self, path: str, token: str | None = None, **options: Any) -> Reply:
        return await self.request("GET", path, token=token, **options)

    async def post(self, path: str, body: Any, token: str | None = None) -> Reply:
        return await self.request("POST", path, token=token, body=body)

    async def delete(self, path: str, token: str | None = None) -> Reply:
        return await self.request("DELETE", path, token=token)

    async def poll(
        self,
        path: str,
        condition: Callable[[Reply], bool],
        *,
        within: float = 5.0,
    ) -> Reply:
        """GET ``path`` until its answer satisfies ``condition``; return that answer."""
        async with asyncio.timeout(within):
            while True:
                reply = await self.get(path)
                if condition(reply):
                    return reply
                await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def admin_server(
    clients: Clients,
    gateway: Gateway,
    kind: str,
    admin: AdminAPI | None = None,
) -> AsyncIterator[tuple[RunningServer, AdminClient]]:
    """Serve ``gateway`` and its admin API with ``kind``; yield an HTTP client for it."""
    api = admin or AdminAPI(gateway)
    async with (
        clients.serve(gateway, kind, api) as server,
        aiohttp.ClientSession() as http,
    ):
        yield server, AdminClient(http, server.url + api.prefix)


@pytest.fixture
def tokens(authenticator: SignedTokenAuthenticator) -> dict[str, str]:
    """A valid token per reference role."""
    return {role: authenticator.issue(identity) for role, identity in USERS.items()}


def tampered(token: str) -> str:
    """``token`` with one character of its signature changed (still token-shaped)."""
    index = len(token) - 5
    replacement = "A" if token[index] != "A" else "B"
    return token[:index] + replacement + token[index + 1 :]


def expired_token(authenticator: SignedTokenAuthenticator, user: str = "admin") -> str:
    identity = attrs.evolve(
        USERS[user], expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    )
    return authenticator.issue(identity)


def error_envelope(reply: Reply) -> dict[str, Any]:
    """The JSON error body, checked for the envelope's shape."""
    assert reply.mime == "application/json", reply.headers
    body: dict[str, Any] = reply.json
    assert body["success"] is False, body
    assert isinstance(body["error"], str), body
    assert body["error"], body
    return body


def action_data(reply: Reply, message: str) -> Any:
    """The ``data`` of an action's ``{success: true, message, data}`` body, checking
    the message."""
    body = reply.json
    assert (body["success"], body["message"]) == (True, message), body
    return body["data"]


def health_figures(reply: Reply) -> dict[str, Any]:
    """The ``/health`` data minus its (checked, epoch milliseconds) ``timestamp``."""
    return without_timestamp(reply.data)


def titles(inbox: Inbox, namespace: str = "/notifications") -> list[str]:
    return [note["title"] for note in inbox.of("notification", namespace)]


# -- GET /health ------------------------------------------------------------------------


async def test_health_is_public_and_reports_real_counts(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator)
    async with admin_server(clients, gateway, server_kind) as (server, api):
        empty = await api.get("/health")
        assert empty.status == 200, empty.text
        assert empty.mime == "application/json"
        assert empty.json["success"] is True
        assert health_figures(empty) == {
            "status": "healthy",
            "state": "running",
            "initialized": True,
            "activeConnections": 0,
            "connectedUsers": 0,
        }

        await connect_as(clients, server.url, authenticator.issue(USERS["nurse"]))
        await connect_as(clients, server.url, authenticator.issue(USERS["nurse"]))
        doctor, _ = await connect_as(
            clients, server.url, authenticator.issue(USERS["doctor"]), namespaces=["/"]
        )
        busy = await api.get("/health")
        assert busy.status == 200
        assert health_figures(busy) == {
            "status": "healthy",
            "state": "running",
            "initialized": True,
            "activeConnections": 9,
            "connectedUsers": 2,
        }
        # Credentials, even bad ones, do not matter to the public endpoint.
        assert (await api.get("/health", token="not-a-token")).status == 200

        await doctor.disconnect()
        after = await api.poll("/health", lambda r: r.data["connectedUsers"] == 1)
        assert after.data["activeConnections"] == 8


async def test_health_answers_503_draining_during_shutdown_then_stopped(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    tokens: dict[str, str],
) -> None:
    gateway = clinic_gateway(authenticator)
    async with admin_server(clients, gateway, server_kind) as (server, api):
        nurse, inbox = await connect_as(clients, server.url, tokens["nurse"], namespaces=["/"])
        shutting_down = asyncio.create_task(gateway.shutdown(grace=5))
        try:
            draining = await api.poll("/health", lambda r: r.data["status"] != "healthy")
            assert draining.status == 503, draining.text
            assert error_envelope(draining)["code"] == "unavailable"
            assert health_figures(draining) == {
                "status": "draining",
                "state": "draining",
                "initialized": True,
                "activeConnections": 1,
                "connectedUsers": 1,
            }
            # The client was told, and admin endpoints are unavailable while draining.
            await inbox.wait("server:shutdown")
            busy = await api.get("/connections", tokens["admin"])
            assert busy.status == 503
            assert error_envelope(busy)["code"] == "unavailable"

            # The client leaving ends the shutdown well before the 5 s grace.
            await nurse.disconnect()
            await asyncio.wait_for(asyncio.shield(shutting_down), 3)
        finally:
            if not shutting_down.done():
                shutting_down.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await shutting_down
        stopped = await api.get("/health")
        assert stopped.status == 503
        assert error_envelope(stopped)["code"] == "unavailable"
        assert health_figures(stopped) == {
            "status": "not_initialized",
            "state": "stopped",
            "initialized": False,
            "activeConnections": 0,
            "connectedUsers": 0,
        }


# -- GET /metrics and /metrics/prometheus ----------------------------------------------


async def test_metrics_json_counts_the_scenario(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    tokens: dict[str, str],
) -> None:
    gateway = clinic_gateway(authenticator)
    async with admin_server(clients, gateway, server_kind) as (server, api):
        first, _ = await connect_as(clients, server.url, tokens["nurse"], namespaces=["/"])
        await connect_as(clients, server.url, tokens["doctor"], namespaces=["/", "/chat"])
        refusal = await clients.refusal(server.url, auth={"token": tampered(tokens["staff"])})
        assert refusal.data["data"] == {"code": "unauthenticated", "reason": "bad_signature"}
        refusal = await clients.refusal(
            server.url, auth={"token": expired_token(authenticator, "staff")}
        )
        assert refusal.data["data"] == {"code": "unauthenticated", "reason": "expired"}
        assert (await call(first, "ping"))["status"] == "pong"
        assert (await call(first, "ping"))["status"] == "pong"
        # The nurse comes back: a reconnection.
        await first.disconnect()
        await until(lambda: len(gateway.connections) == 2)
        await connect_as(clients, server.url, tokens["nurse"], namespaces=["/"])
        sent = await api.post("/broadcast", {"event": "news"}, tokens["admin"])
        assert sent.status == 200, sent.text

        reply = await api.get("/metrics", tokens["admin"])
        assert reply.status == 200, reply.text
        assert reply.json["success"] is True
        data = without_timestamp(reply.data)
        assert {key: data[key] for key in ("connections", "authentication", "messages")} == {
            "connections": {"total": 4, "active": 3, "uniqueUsers": 2},
            "authentication": {"failures": 2},
            "messages": {"total": 2},
        }
        assert data["reconnections"] == 1
        metrics = data["metrics"]
        assert metrics["connections_total"] == 4
        assert metrics["connections_active"] == 3
        assert metrics["users_connected"] == 2
        assert metrics["reconnections"] == 1
        assert metrics["auth_failures"] == {"bad_signature": 1, "expired": 1}
        assert metrics["events_received"] == {"/": 2}
        assert metrics["emits"] == {"broadcast": 1}
        assert metrics["access_denied"] == {}


def prometheus_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(
    samples: Mapping[tuple[str, tuple[tuple[str, str], ...]], float],
    name: str,
    **labels: str,
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_prometheus_counters_move_and_labels_stay_bounded(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    tokens: dict[str, str],
) -> None:
    gateway = clinic_gateway(authenticator)
    async with admin_server(clients, gateway, server_kind) as (server, api):
        nurse, _ = await connect_as(clients, server.url, tokens["nurse"])
        await connect_as(clients, server.url, tokens["doctor"], namespaces=["/"])

        before_reply = await api.get("/metrics/prometheus", tokens["admin"])
        assert before_reply.status == 200, before_reply.text
        assert before_reply.mime == "text/plain"
        before = prometheus_samples(before_reply.text)
        assert sample(before, "rtg_connections_active") == 5
        assert sample(before, "rtg_users_connected") == 2
        assert sample(before, "rtg_connections_total") == 5

        # The scenario: refused tokens, events (allowed and denied), a room, emits.
        await clients.refusal(server.url, auth={"token": tampered(tokens["staff"])})
        await clients.refusal(server.url, auth={"token": "not-a-token"})
        assert (await call(nurse, "ping"))["status"] == "pong"
        denied = await call(nurse, "join:room", "user:u-doctor")
        assert denied["success"] is False
        joined = await call(nurse, "subscribe:patient", "p-4711", namespace="/updates")
        assert joined["success"] is True, joined
        sent = await api.post(
            "/broadcast", {"event": "ward", "room": "role:nurse"}, tokens["admin"]
        )
        assert sent.status == 200, sent.text
        noted = await api.post("/notify/u-nurse", {"title": "Hello"}, tokens["admin"])
        assert noted.status == 200, noted.text

        after_reply = await api.get("/metrics/prometheus", tokens["admin"])
        assert after_reply.status == 200
        text = after_reply.text
        after = prometheus_samples(text)

        def moved(name: str, **labels: str) -> float:
            return sample(after, name, **labels) - sample(before, name, **labels)

        assert moved("rtg_auth_failures_total", reason="bad_signature") == 1
        assert moved("rtg_auth_failures_total", reason="malformed") == 1
        assert moved("rtg_events_received_total", namespace="/") == 2
        assert moved("rtg_events_received_total", namespace="/updates") == 1
        assert moved("rtg_events_refused_total", code="forbidden") == 1
        assert moved("rtg_access_denied_total", action="join") == 1
        assert moved("rtg_emits_total", kind="room") == 1
        assert moved("rtg_emits_total", kind="notification") == 1
        assert moved("rtg_connections_total") == 0
        assert sample(after, "rtg_connections_active") == 5

        # No user id and no room name is a label value (or anywhere in the text).
        connections = (await api.get("/connections", tokens["admin"])).data["connections"]
        rooms = {room for entry in connections for room in entry["rooms"]}
        assert "patient:p-4711" in rooms
        secrets = rooms | {identity.user_id for identity in USERS.values()} | {"p-4711"}
        label_values = {
            value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            for value in s.labels.values()
        }
        assert label_values, "expected labelled samples"
        assert label_values.isdisjoint(secrets), label_values & secrets
        assert [secret for secret in secrets if secret in text] == []


async def test_prometheus_exposition_declares_the_text_format_version(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    tokens: dict[str, str],
) -> None:
    """Prometheus' text format is ``text/plain; version=0.0.4``, on both adapters."""
    gateway = clinic_gateway(authenticator)
    async with admin_server(clients, gateway, server_kind) as (_, api):
        reply = await api.get("/metrics/prometheus", tokens["admin"])
        assert reply.status == 200
        params = {
            part.strip().lower() for part in reply.headers.get("Content-Type", "").split(";")[1:]
        }
        assert reply.mime == "text/plain"
        assert "version=0.0.4" in params, reply.headers.get("Content-Type")


# -- GET /connections and /user/{userId}/status ----------------------------------------


async def test_connections_lists_every_socket(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    tokens: dict[str, str],
) -> None:
    gateway = clinic_gateway(authenticator)
    async with admin_server(clients, gateway, server_kind) as (server, api):
        empty = await api.get("/connections", tokens["admin"])
        assert empty.status == 200
        assert empty.json == {"success": True, "data": {"count": 0, "connections": []}}

        nurse, _ = await connect_as(clients, server.url, tokens["nurse"])
        doctor, _ = await connect_as(clients, server.url, tokens["doctor"], namespaces=["/"])
        reply = await api.get("/connections", tokens["admin"])
        assert reply.status == 200, reply.text
        assert reply.json["success"] is True
        body = reply.data
        assert body["count"] == 5
        by_sid = {entry["socketId"]: entry for entry in body["connections"]}
        expected = {nurse.get_sid(ns): ("u-nurse", ns) for ns in NAMESPACES}
        expected[doctor.get_sid("/")] = ("u-doctor", "/")
        assert {sid: (e["userId"], e["namespace"]) for sid, e in by_sid.items()} == expected
        nurse_main = by_sid[nurse.get_sid("/")]
        assert {"user:u-nurse", "role:nurse"} <= set(nurse_main["rooms"])
        assert "user:u-doctor" not in nurse_main["rooms"]
        assert {"user:u-doctor", "role:doctor"} <= set(by_sid[doctor.get_sid("/")]["rooms"])
        assert (nurse_main["role"], nurse_main["roles"]) == ("nurse", ["nurse"])
        assert_epoch_ms(nurse_main["connectedAt"])
        assert_epoch_ms(nurse_main["lastActivity"])


async def test_user_status_is_open_to_the_user_and_admins_only(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    tokens: dict[str, str],
) -> None:
    gateway = clinic_gateway(authenticator)
    async with admin_server(clients, gateway, server_kind) as (server, api):
        nurse, _ = await connect_as(clients, server.url, tokens["nurse"])
        for asker in ("nurse", "admin"):
            reply = await api.get("/user/u-nurse/status", tokens[asker])
            assert reply.status == 200, (asker, reply.text)
            assert reply.json["success"] is True
            body = reply.data
            assert body["userId"] == "u-nurse"
            assert (body["isConnected"], body["connectionCount"]) == (True, len(NAMESPACES))
            assert {s["namespace"] for s in body["sockets"]} == set(NAMESPACES)
            assert {s["socketId"] for s in body["sockets"]} == {
                nurse.get_sid(ns) for ns in NAMESPACES
            }
            assert {s["userId"] for s in body["sockets"]} == {"u-nurse"}

        refused = await api.get("/user/u-nurse/status", tokens["doctor"])
        assert refused.status == 403
        assert error_envelope(refused)["code"] == "forbidden"

        # A user who is not connected, asked about by an admin and by themselves.
        for asker in ("admin", "staff"):
            away = await api.get("/user/u-staff/status", tokens[asker])
            assert away.status == 200, (asker, away.text)
            assert away.json == {
                "success": True,
                "data": {
                    "userId": "u-staff",
                    "isConnected": False,
                    "connectionCount": 0,
                    "sockets": [],
                },
            }


# -- POST /broadcast --------------------------------------------------------------------


async def test_broadcast_reaches_the_namespace_or_only_the_room(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    tokens: dict[str, str],
) -> None:
    gateway = clinic_gateway(authenticator)
    async with admin_server(clients, gateway, server_kind) as (server, api):
        _, nurse = await connect_as(clients, server.url, tokens["nurse"])
        _, doctor = await connect_as(clients, server.url, tokens["doctor"])

        everyone = await api.post(
            "/broadcast", {"event": "news", "data": {"n": 1}}, tokens["admin"]
        )
        assert everyone.status == 200, everyone.text
        assert action_data(everyone, "Event broadcast to the namespace") == {
            "event": "news",
            "namespace": "/",
            "room": None,
        }
        assert await nurse.wait("news") == [{"n": 1}]
        assert await doctor.wait("news") == [{"n": 1}]

        ward = await api.post(
            "/broadcast",
            {
                "event": "ward",
                "data": {"n": 2},
                "room": "role:nurse",
                "namespace": "/notifications",
            },
            tokens["admin"],
        )
        assert ward.status == 200, ward.text
        assert action_data(ward, "Event sent to the room") == {
            "event": "ward",
            "namespace": "/notifications",
            "room": "role:nurse",
        }
        assert await nurse.wait("ward", "/notifications") == [{"n": 2}]
        # "news" went to "/" only: it would have reached /notifications before "ward".
        assert nurse.of("news", "/notifications") == []

        barrier = await api.post(
            "/broadcast",
            {"event": "barrier", "room": "role:doctor", "namespace": "/notifications"},
            tokens["admin"],
        )
        assert barrier.status == 200, barrier.text
        await doctor.wait("barrier", "/notifications")
        assert doctor.of("ward", "/notifications") == []
        assert nurse.of("ward") == []

        unknown = await api.post(
            "/broadcast", {"event": "news", "namespace": "/nowhere"}, tokens["admin"]
        )
        assert unknown.status == 404
        assert error_envelope(unknown)["code"] == "not_found"


# -- POST /notify/{userId} and /notify/role/{role} -------------------------------------


async def test_notify_user_reaches_every_socket_of_that_user_and_nobody_else(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    tokens: dict[str, str],
) -> None:
    gateway = clinic_gateway(authenticator)
    async with admin_server(clients, gateway, server_kind) as (server, api):
        _, nurse_a = await connect_as(clients, server.url, tokens["nurse"])
        _, nurse_b = await connect_as(clients, server.url, tokens["nurse"])
        _, doctor = await connect_as(clients, server.url, tokens["doctor"])

        reply = await api.post(
            "/notify/u-nurse",
            {"title": "Meds due", "message": "Room 4", "type": "warning", "data": {"k": "v"}},
            tokens["admin"],
        )
        assert reply.status == 200, reply.text
        body = action_data(reply, "Notification sent to the user")
        assert (body["userId"], body["delivered"]) == ("u-nurse", True)
        note = body["notification"]
        assert {k: note[k] for k in ("type", "title", "message", "data")} == {
            "type": "warning",
            "title": "Meds due",
            "message": "Room 4",
            "data": {"k": "v"},
        }
        assert await nurse_a.wait("notification", "/notifications") == [note]
        assert await nurse_b.wait("notification", "/notifications") == [note]

        barrier = await api.post("/notify/u-doctor", {"title": "barrier"}, tokens["admin"])
        assert barrier.status == 200
        await doctor.wait("notification", "/notifications")
        assert titles(doctor) == ["barrier"]
        # Only the notifications namespace carries it.
        assert nurse_a.of("notification") == []

        away = await api.post("/notify/u-staff", {"title": "Later"}, tokens["admin"])
        assert away.status == 200
        assert away.data["delivered"] is False


async def test_notify_role_reaches_holders_of_the_role_only(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    tokens: dict[str, str],
) -> None:
    gateway = clinic_gateway(authenticator)
    async with admin_server(clients, gateway, server_kind) as (server, api):
        _, nurse = await connect_as(clients, server.url, tokens["nurse"])
        _, doctor = await connect_as(clients, server.url, tokens["doctor"])
        _, admin = await connect_as(clients, server.url, tokens["admin"])

        reply = await api.post(
            "/notify/role/nurse", {"title": "Handover", "type": "info"}, tokens["admin"]
        )
        assert reply.status == 200, reply.text
        body = action_data(reply, "Notification sent to the role")
        assert (body["role"], body["notification"]["title"]) == ("nurse", "Handover")
        await nurse.wait("notification", "/notifications")
        assert titles(nurse) == ["Handover"]

        barrier = await api.post("/notify/role/doctor", {"title": "barrier"}, tokens["admin"])
        assert barrier.status == 200
        await doctor.wait("notification", "/notifications")
        assert titles(doctor) == ["barrier"]
        other = await api.post("/notify/role/admin", {"title": "barrier"}, tokens["admin"])
        assert other.status == 200
        await admin.wait("notification", "/notifications")
        assert titles(admin) == ["barrier"]


async def test_notify_role_refuses_roles_outside_the_configured_list(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    tokens: dict[str, str],
) -> None:
    gateway = clinic_gateway(authenticator)
    admin = AdminAPI(gateway, roles=["nurse", "doctor"])
    async with admin_server(clients, gateway, server_kind, admin) as (server, api):
        _, nurse = await connect_as(clients, server.url, tokens["nurse"])
        unknown = await api.post("/notify/role/janitor", {"title": "Hi"}, tokens["admin"])
        assert unknown.status == 400
        body = error_envelope(unknown)
        assert body["code"] == "invalid_payload"
        assert body["field"] == "role"

        known = await api.post("/notify/role/nurse", {"title": "Hi"}, tokens["admin"])
        assert known.status == 200, known.text
        await nurse.wait("notification", "/notifications")


# -- DELETE /disconnect/{socketId} and /disconnect/user/{userId} -----------------------


async def test_disconnect_socket_drops_that_socket_only(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    tokens: dict[str, str],
) -> None:
    gateway = clinic_gateway(authenticator)
    async with admin_server(clients, gateway, server_kind) as (server, api):
        nurse, _ = await connect_as(clients, server.url, tokens["nurse"])
        sid = nurse.get_sid("/chat")
        reply = await api.delete(f"/disconnect/{sid}", tokens["admin"])
        assert reply.status == 200, reply.text
        assert action_data(reply, "Socket disconnected") == {"socketId": sid, "disconnected": 1}
        await until(lambda: "/chat" not in nurse.namespaces)
        await until(lambda: sid not in gateway.connections)
        assert (await call(nurse, "ping"))["status"] == "pong"
        status = await api.get("/user/u-nurse/status", tokens["admin"])
        assert {s["namespace"] for s in status.data["sockets"]} == set(NAMESPACES) - {"/chat"}

        for unknown in (sid, "no-such-socket"):
            missing = await api.delete(f"/disconnect/{unknown}", tokens["admin"])
            assert missing.status == 404, unknown
            assert error_envelope(missing)["code"] == "not_found"


async def test_disconnect_user_drops_all_their_sockets_and_nobody_elses(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    tokens: dict[str, str],
) -> None:
    gateway = clinic_gateway(authenticator)
    async with admin_server(clients, gateway, server_kind) as (server, api):
        first, _ = await connect_as(clients, server.url, tokens["nurse"])
        second, _ = await connect_as(clients, server.url, tokens["nurse"])
        doctor, _ = await connect_as(clients, server.url, tokens["doctor"])

        reply = await api.delete("/disconnect/user/u-nurse", tokens["admin"])
        assert reply.status == 200, reply.text
        assert action_data(reply, "User's sockets disconnected") == {
            "userId": "u-nurse",
            "disconnected": 8,
        }
        await until(lambda: not first.connected and not second.connected)
        status = await api.get("/user/u-nurse/status", tokens["admin"])
        assert status.data["isConnected"] is False

        assert doctor.connected
        assert (await call(doctor, "ping"))["status"] == "pong"
        kept = await api.get("/user/u-doctor/status", tokens["admin"])
        assert kept.data["connectionCount"] == len(kept.data["sockets"]) == 4

        for user in ("u-nurse", "u-staff"):
            missing = await api.delete(f"/disconnect/user/{user}", tokens["admin"])
            assert missing.status == 404, user
            assert error_envelope(missing)["code"] == "not_found"


# User id -> how it appears in a URL path.
ENCODED_IDS = {
    "50%off": "50%25off",
    "\u00e9": "%C3%A9",
    "a+b": "a+b",
    "a?b": "a%3Fb",
    "a#b": "a%23b",
}


async def test_url_encoded_user_ids_are_decoded(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    spaced = Identity(user_id="u 1", roles={"staff"})
    token = authenticator.issue(spaced)
    admin_token = authenticator.issue(USERS["admin"])
    gateway = clinic_gateway(authenticator)
    async with admin_server(clients, gateway, server_kind) as (server, api):
        client, inbox = await connect_as(
            clients, server.url, token, namespaces=["/", "/notifications"]
        )
        for asker in (admin_token, token):  # an admin, and the user themselves
            status = await api.get("/user/u%201/status", asker)
            assert status.status == 200, status.text
            assert status.data["userId"] == "u 1"
            assert status.data["isConnected"] is True
        noted = await api.post("/notify/u%201", {"title": "Hi"}, admin_token)
        assert noted.status == 200, noted.text
        assert noted.data["delivered"] is True
        await inbox.wait("notification", "/notifications")
        dropped = await api.delete("/disconnect/user/u%201", admin_token)
        assert dropped.status == 200, dropped.text
        assert dropped.data["userId"] == "u 1"
        assert dropped.data["disconnected"] == 2
        await until(lambda: not client.connected)

        for user_id, encoded in ENCODED_IDS.items():
            own = authenticator.issue(Identity(user_id=user_id))
            await connect_as(clients, server.url, own, namespaces=["/"])
            status = await api.get(f"/user/{encoded}/status", own)
            assert status.status == 200, (user_id, status.text)
            assert status.data["userId"] == user_id
            assert status.data["isConnected"] is True


# -- 400: body validation ---------------------------------------------------------------

# (path, body, field): JSON bodies the endpoint must refuse naming ``field``.
FIELD_CASES: list[tuple[str, Any, str]] = [
    ("/broadcast", {}, "event"),
    ("/broadcast", {"data": {}}, "event"),
    ("/broadcast", {"event": ""}, "event"),
    ("/broadcast", {"event": "   "}, "event"),
    ("/broadcast", {"event": 5}, "event"),
    ("/broadcast", {"event": "connect"}, "event"),
    ("/broadcast", {"event": "disconnect"}, "event"),
    ("/broadcast", {"event": "connect_error"}, "event"),
    ("/broadcast", {"event": "news", "data": [1, 2]}, "data"),
    ("/broadcast", {"event": "news", "data": "text"}, "data"),
    ("/broadcast", {"event": "news", "data": 3}, "data"),
    ("/broadcast", {"event": "news", "room": ""}, "room"),
    ("/broadcast", {"event": "news", "room": 4}, "room"),
    ("/broadcast", {"event": "news", "namespace": ""}, "namespace"),
    ("/broadcast", {"event": "news", "namespace": ["/"]}, "namespace"),
    ("/notify/u-nurse", {"title": "T", "type": "urgent"}, "type"),
    ("/notify/u-nurse", {"title": "T", "type": 1}, "type"),
    ("/notify/u-nurse", {"title": "T", "type": ""}, "type"),
    ("/notify/role/nurse", {"title": "T", "type": "critical"}, "type"),
    ("/notify/u-nurse", {"message": "m"}, "title"),
    ("/notify/u-nurse", {"title": ""}, "title"),
    ("/notify/u-nurse", {"title": "   "}, "title"),
    ("/notify/u-nurse", {"title": 7}, "title"),
    ("/notify/role/nurse", {}, "title"),
    ("/notify/u-nurse", {"title": "T", "message": 5}, "message"),
    ("/notify/u-nurse", {"title": "T", "message": {"text": "m"}}, "message"),
    ("/notify/u-nurse", {"title": "T", "data": [1]}, "data"),
    ("/notify/role/nurse", {"title": "T", "data": "x"}, "data"),
]

# (case, path, raw body, content type): bodies refused before any field is looked at.
BODY_CASES: list[tuple[str, str, bytes, str | None]] = [
    ("invalid JSON", "/broadcast", b'{"event": ', "application/json"),
    ("not UTF-8", "/broadcast", b'{"event": "\xff"}', "application/json"),
    ("JSON array", "/broadcast", b'["news"]', "application/json"),
    ("JSON string", "/notify/u-nurse", b'"title"', "application/json"),
    ("JSON null", "/notify/role/nurse", b"null", "application/json"),
    ("empty body", "/broadcast", b"", "application/json"),
    ("text/plain", "/broadcast", b'{"event": "news"}', "text/plain"),
    ("form", "/notify/u-nurse", b"title=T", "application/x-www-form-urlencoded"),
    ("no Content-Type", "/broadcast", b'{"event": "news"}', None),
    ("json lookalike", "/broadcast", b'{"event": "news"}', "application/jsonp"),
]


async def test_invalid_bodies_are_400_with_the_error_envelope(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    tokens: dict[str, str],
) -> None:
    gateway = clinic_gateway(authenticator)
    async with admin_server(clients, gateway, server_kind) as (server, api):
        _, nurse = await connect_as(clients, server.url, tokens["nurse"])
        wrong: list[tuple[Any, ...]] = []
        for path, body, field in FIELD_CASES:
            reply = await api.post(path, body, tokens["admin"])
            envelope = reply.envelope
            expected = {"code": "invalid_payload", "field": field}
            if reply.status != 400 or {k: envelope.get(k) for k in expected} != expected:
                wrong.append((path, body, reply.status, envelope))
            else:
                error_envelope(reply)
        for case, path, raw, content_type in BODY_CASES:
            headers = {} if content_type is None else {"Content-Type": content_type}
            reply = await api.request("POST", path, token=tokens["admin"], raw=raw, headers=headers)
            envelope = reply.envelope
            if (
                reply.status != 400
                or envelope.get("code") != "invalid_payload"
                or "field" in envelope
            ):
                wrong.append((case, reply.status, envelope))
            else:
                error_envelope(reply)
        assert wrong == []

        # Nothing refused was sent: the nurse's first notification is the barrier.
        barrier = await api.post("/notify/u-nurse", {"title": "barrier"}, tokens["admin"])
        assert barrier.status == 200
        await nurse.wait("notification", "/notifications")
        assert titles(nurse) == ["barrier"]
        metrics = (await api.get("/metrics", tokens["admin"])).data["metrics"]
        assert metrics["emits"] == {"notification": 1}


async def test_json_content_type_parameters_and_case_are_accepted(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    tokens: dict[str, str],
) -> None:
    gateway = clinic_gateway(authenticator)
    async with admin_server(clients, gateway, server_kind) as (_, api):
        for content_type in ("application/json; charset=utf-8", "Application/JSON"):
            reply = await api.request(
                "POST",
                "/broadcast",
                token=tokens["admin"],
                raw=b'{"event": "news"}',
                headers={"Content-Type": content_type},
            )
            assert reply.status == 200, (content_type, reply.text)


async def test_body_size_limit(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    tokens: dict[str, str],
) -> None:
    def body_of(size: int) -> bytes:
        prefix = b'{"event":"news","data":{"pad":"'
        suffix = b'"}}'
        raw = prefix + b"x" * (size - len(prefix) - len(suffix)) + suffix
        assert len(raw) == size
        return raw

    gateway = clinic_gateway(authenticator)
    admin = AdminAPI(gateway, max_body_size=100)
    async with admin_server(clients, gateway, server_kind, admin) as (server, api):
        _, nurse = await connect_as(clients, server.url, tokens["nurse"], namespaces=["/"])
        at_limit = await api.request(
            "POST", "/broadcast", token=tokens["admin"], raw=body_of(100), headers=JSON_HEADERS
        )
        assert at_limit.status == 200, at_limit.text
        await nurse.wait("news")
        for size in (101, 5000):
            over = await api.request(
                "POST",
                "/broadcast",
                token=tokens["admin"],
                raw=body_of(size),
                headers=JSON_HEADERS,
            )
            assert over.status == 400, (size, over.text)
            body = error_envelope(over)
            assert body["code"] == "invalid_payload"
            assert "too large" in body["error"].lower()
            assert "field" not in body
        # Only the body at the limit was sent.
        barrier = await api.post("/broadcast", {"event": "barrier"}, tokens["admin"])
        assert barrier.status == 200
        await nurse.wait("barrier")
        assert len(nurse.of("news")) == 1


async def test_a_large_body_under_the_limit_is_read_whole(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    tokens: dict[str, str],
) -> None:
    gateway = clinic_gateway(authenticator)
    async with admin_server(clients, gateway, server_kind) as (server, api):
        _, nurse = await connect_as(clients, server.url, tokens["nurse"], namespaces=["/"])
        pad = "x" * 60_000  # under the default 64 KiB limit
        reply = await api.post(
            "/broadcast", {"event": "big", "data": {"pad": pad}}, tokens["admin"]
        )
        assert reply.status == 200, reply.text[:300]
        assert (await nurse.wait("big"))[0]["pad"] == pad


async def test_a_body_sent_in_two_chunks_is_read_whole(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    tokens: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A small body whose second half arrives later (a slow network) is read whole.

    The client holds the second chunk back until the API has started handling the
    request, or for half a second: an adapter that waits for the whole body never
    starts early, one that reads only what has arrived so far is caught at once."""
    gateway = clinic_gateway(authenticator)
    admin = AdminAPI(gateway)
    handling = asyncio.Event()
    handle = admin.handle

    async def observed(*args: Any, **kwargs: Any) -> AdminResponse:
        handling.set()
        return await handle(*args, **kwargs)

    monkeypatch.setattr(admin, "handle", observed)
    raw = json.dumps({"event": "news", "data": {"pad": "x" * 200}}).encode()

    async def two_chunks() -> AsyncIterator[bytes]:
        yield raw[:100]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(handling.wait(), 0.5)
        yield raw[100:]

    async with admin_server(clients, gateway, server_kind, admin) as (server, api):
        _, nurse = await connect_as(clients, server.url, tokens["nurse"], namespaces=["/"])
        async with api.http.post(
            api.base + "/broadcast",
            data=two_chunks(),
            headers={**JSON_HEADERS, "Authorization": f"Bearer {tokens['admin']}"},
        ) as response:
            text = await response.text()
            assert response.status == 200, text
        assert (await nurse.wait("news"))[0]["pad"] == "x" * 200


# -- 401, 403 ---------------------------------------------------------------------------


async def test_401_without_valid_credentials(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    tokens: dict[str, str],
) -> None:
    credentials: list[tuple[str, dict[str, str], str]] = [
        ("none", {}, "missing"),
        ("empty bearer", {"Authorization": "Bearer "}, "missing"),
        ("basic scheme", {"Authorization": "Basic dXNlcjpwYXNz"}, "missing"),
        ("tampered", {"Authorization": f"Bearer {tampered(tokens['admin'])}"}, "bad_signature"),
        (
            "expired",
            {"Authorization": f"Bearer {expired_token(authenticator)}"},
            "expired",
        ),
        ("garbage", {"Authorization": "Bearer not-a-token"}, "malformed"),
        (
            "other salt",
            {
                "Authorization": "Bearer "
                + SignedTokenAuthenticator(
                    ["test-secret-key-0123456789abcdef"], salt="other", max_age=60
                ).issue(USERS["admin"])
            },
            "bad_signature",
        ),
    ]
    # A POST with an invalid body is still a 401: authentication comes first.
    requests: list[tuple[str, str, Any]] = [
        ("GET", "/metrics", _NO_BODY),
        ("GET", "/user/u-admin/status", _NO_BODY),
        ("POST", "/broadcast", {"event": ""}),
        ("DELETE", "/disconnect/user/u-nurse", _NO_BODY),
    ]
    gateway = clinic_gateway(authenticator)
    async with admin_server(clients, gateway, server_kind) as (server, api):
        await connect_as(clients, server.url, tokens["nurse"], namespaces=["/"])
        wrong: list[tuple[Any, ...]] = []
        for case, headers, reason in credentials:
            for method, path, body in requests:
                reply = await api.request(method, path, headers=headers, body=body)
                envelope = reply.envelope
                if (
                    reply.status != 401
                    or reply.headers.get("WWW-Authenticate") != "Bearer"
                    or envelope.get("code") != "unauthenticated"
                    or envelope.get("reason") != reason
                ):
                    wrong.append((case, method, path, reply.status, dict(reply.headers), envelope))
                else:
                    error_envelope(reply)
        assert wrong == []
        assert (await api.get("/user/u-nurse/status", tokens["admin"])).data["isConnected"] is True


async def test_403_for_a_non_admin_on_every_admin_endpoint(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    tokens: dict[str, str],
) -> None:
    gateway = clinic_gateway(authenticator)
    async with admin_server(clients, gateway, server_kind) as (server, api):
        doctor, inbox = await connect_as(clients, server.url, tokens["doctor"])
        requests: list[tuple[str, str, Any]] = [
            ("GET", "/metrics", _NO_BODY),
            ("GET", "/metrics/prometheus", _NO_BODY),
            ("GET", "/connections", _NO_BODY),
            ("GET", "/user/u-doctor/status", _NO_BODY),
            ("POST", "/broadcast", {"event": "news"}),
            ("POST", "/broadcast", {"event": "news", "namespace": "/notifications"}),
            ("POST", "/notify/u-doctor", {"title": "T"}),
            ("POST", "/notify/role/doctor", {"title": "T"}),
            ("DELETE", f"/disconnect/{doctor.get_sid('/')}", _NO_BODY),
            ("DELETE", "/disconnect/user/u-doctor", _NO_BODY),
        ]
        wrong: list[tuple[Any, ...]] = []
        for method, path, body in requests:
            reply = await api.request(method, path, token=tokens["nurse"], body=body)
            envelope = reply.envelope
            if reply.status != 403 or envelope.get("code") != "forbidden":
                wrong.append((method, path, reply.status, envelope))
            else:
                error_envelope(reply)
        assert wrong == []

        # Nothing happened: the doctor is connected everywhere and got only the barrier.
        assert doctor.connected
        status = await api.get("/user/u-doctor/status", tokens["admin"])
        assert len(status.data["sockets"]) == 4
        barrier = await api.post("/notify/u-doctor", {"title": "barrier"}, tokens["admin"])
        assert barrier.status == 200
        await inbox.wait("notification", "/notifications")
        assert titles(inbox) == ["barrier"]
        assert inbox.of("news") == []
        assert inbox.of("news", "/notifications") == []


async def test_a_session_cookie_counts_only_from_an_allowed_origin(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    tokens: dict[str, str],
) -> None:
    gateway = clinic_gateway(
        authenticator, config=quick_config(allowed_origins=["https://app.example"])
    )
    cookie = {"Cookie": f"{authenticator.cookie_name}={tokens['admin']}"}
    async with admin_server(clients, gateway, server_kind) as (server, api):
        _, nurse = await connect_as(clients, server.url, tokens["nurse"], namespaces=["/"])
        accepted = {
            "no Origin": cookie,
            "own origin": {**cookie, "Origin": server.url},
            "listed origin": {**cookie, "Origin": "https://app.example"},
            # A bearer token is not ambient: the origin does not matter.
            "bearer, foreign origin": {
                "Authorization": f"Bearer {tokens['admin']}",
                "Origin": FOREIGN_ORIGIN,
            },
        }
        for case, headers in accepted.items():
            reply = await api.get("/connections", headers=headers)
            assert reply.status == 200, (case, reply.text)
            assert reply.data["count"] == 1

        for path, body in (("/connections", _NO_BODY), ("/broadcast", {"event": "news"})):
            method = "GET" if body is _NO_BODY else "POST"
            refused = await api.request(
                method, path, body=body, headers={**cookie, "Origin": FOREIGN_ORIGIN}
            )
            assert refused.status == 403, (path, refused.text)
            assert error_envelope(refused)["code"] == "forbidden"

        sent = await api.request(
            "POST",
            "/broadcast",
            body={"event": "barrier"},
            headers={**cookie, "Origin": server.url},
        )
        assert sent.status == 200, sent.text
        await nurse.wait("barrier")
        assert nurse.of("news") == []


# -- 404, 405, 503 ----------------------------------------------------------------------


async def test_unknown_paths_are_404_and_wrong_methods_405(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    tokens: dict[str, str],
) -> None:
    unknown = [
        "/",
        "/nope",
        "/health/",
        "/metrics/json",
        "/user/u-nurse",
        "/user/u-nurse/status/extra",
        "/notify",
        "/notify/role/",
        "/disconnect/user/",
    ]
    wrong_methods: list[tuple[str, str, str]] = [
        ("POST", "/health", "GET"),
        ("DELETE", "/metrics", "GET"),
        ("PUT", "/metrics/prometheus", "GET"),
        ("POST", "/connections", "GET"),
        ("DELETE", "/user/u-nurse/status", "GET"),
        ("GET", "/broadcast", "POST"),
        ("PATCH", "/notify/u-nurse", "POST"),
        ("GET", "/notify/role/nurse", "POST"),
        ("GET", "/disconnect/some-sid", "DELETE"),
        ("POST", "/disconnect/user/u-nurse", "DELETE"),
    ]
    gateway = clinic_gateway(authenticator)
    async with admin_server(clients, gateway, server_kind) as (_, api):
        wrong: list[tuple[Any, ...]] = []
        for path in unknown:
            for token in (tokens["admin"], None):
                reply = await api.get(path, token)
                envelope = reply.envelope
                if reply.status != 404 or envelope.get("code") != "not_found":
                    wrong.append((path, token is not None, reply.status, envelope))
        for method, path, allow in wrong_methods:
            reply = await api.request(method, path, token=tokens["admin"])
            envelope = reply.envelope
            if (
                reply.status != 405
                or reply.headers.get("Allow") != allow
                or envelope.get("success") is not False
            ):
                wrong.append((method, path, reply.status, dict(reply.headers), envelope))
        assert wrong == []


async def test_admin_endpoints_are_503_after_shutdown(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    tokens: dict[str, str],
) -> None:
    gateway = clinic_gateway(authenticator)
    async with admin_server(clients, gateway, server_kind) as (server, api):
        nurse, _ = await connect_as(clients, server.url, tokens["nurse"], namespaces=["/"])
        await gateway.shutdown(grace=0)
        await until(lambda: not nurse.connected)
        requests: list[tuple[str, str, Any]] = [
            ("GET", "/metrics", _NO_BODY),
            ("GET", "/metrics/prometheus", _NO_BODY),
            ("GET", "/connections", _NO_BODY),
            ("GET", "/user/u-nurse/status", _NO_BODY),
            ("POST", "/broadcast", {"event": "news"}),
            ("POST", "/notify/u-nurse", {"title": "T"}),
            ("POST", "/notify/role/nurse", {"title": "T"}),
            ("DELETE", "/disconnect/some-sid", _NO_BODY),
            ("DELETE", "/disconnect/user/u-nurse", _NO_BODY),
        ]
        wrong: list[tuple[Any, ...]] = []
        for method, path, body in requests:
            for token in (tokens["admin"], tokens["nurse"]):
                reply = await api.request(method, path, token=token, body=body)
                envelope = reply.envelope
                if reply.status != 503 or envelope.get("code") != "unavailable":
                    wrong.append((method, path, reply.status, envelope))
        assert wrong == []
        health = await api.get("/health")
        assert health.status == 503
        assert (health.data["status"], health.data["state"]) == ("not_initialized", "stopped")


# -- the core, without a server ---------------------------------------------------------


def bearer(token: str, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **more}


async def test_handle_answers_503_until_the_gateway_is_mounted(
    authenticator: SignedTokenAuthenticator, tokens: dict[str, str]
) -> None:
    gateway = clinic_gateway(authenticator)
    admin = AdminAPI(gateway)
    health = await admin.handle("GET", "/health", headers={})
    assert health.status == 503
    assert isinstance(health.body, Mapping)
    assert (health.body["success"], health.body["code"]) == (False, "unavailable")
    assert without_timestamp(health.body["data"]) == {
        "status": "not_initialized",
        "state": "not_mounted",
        "initialized": False,
        "activeConnections": 0,
        "connectedUsers": 0,
    }
    metrics = await admin.handle("GET", "/metrics", headers=bearer(tokens["admin"]))
    assert metrics.status == 503
    assert isinstance(metrics.body, Mapping)
    assert metrics.body["code"] == "unavailable"

    gateway.asgi_app()
    mounted = await admin.handle("GET", "/health", headers={})
    assert mounted.status == 200
    assert isinstance(mounted.body, Mapping)
    assert mounted.body["success"] is True
    assert mounted.body["data"]["status"] == "healthy"


@pytest.fixture
def mounted(authenticator: SignedTokenAuthenticator) -> AdminAPI:
    gateway = clinic_gateway(authenticator)
    gateway.asgi_app()
    return AdminAPI(gateway)


async def test_handle_routes_notify_role_before_notify_user(
    mounted: AdminAPI, tokens: dict[str, str]
) -> None:
    headers = bearer(tokens["admin"], **JSON_HEADERS)
    body = b'{"title": "T"}'
    role = await mounted.handle("POST", "/notify/role/nurse", headers=headers, body=body)
    assert role.status == 200
    assert isinstance(role.body, Mapping)
    assert role.body["data"]["role"] == "nurse"  # /notify/role/{role}
    assert "delivered" not in role.body["data"]
    user = await mounted.handle("POST", "/notify/nurse", headers=headers, body=body)
    assert user.status == 200
    assert isinstance(user.body, Mapping)
    assert user.body["data"]["delivered"] is False  # /notify/{userId}
    # With no role segment, "role" is a user id like any other.
    bare = await mounted.handle("POST", "/notify/role", headers=headers, body=body)
    assert isinstance(bare.body, Mapping)
    assert bare.body["data"]["userId"] == "role"
    assert bare.body["data"]["delivered"] is False
    assert mounted.gateway.metrics.emits == {"notification": 3}


async def test_handle_routes_disconnect_user_before_disconnect_socket(
    mounted: AdminAPI, tokens: dict[str, str]
) -> None:
    headers = bearer(tokens["admin"])
    user = await mounted.handle("DELETE", "/disconnect/user/u-nurse", headers=headers)
    socket = await mounted.handle("DELETE", "/disconnect/user", headers=headers)
    assert (user.status, socket.status) == (404, 404)
    assert isinstance(user.body, Mapping)
    assert isinstance(socket.body, Mapping)
    assert user.body["error"] == "The user has no connected sockets"
    assert socket.body["error"] == "No such socket"


async def test_handle_method_is_case_insensitive_and_405_lists_allowed(
    mounted: AdminAPI, tokens: dict[str, str]
) -> None:
    ok = await mounted.handle("get", "/connections", headers=bearer(tokens["admin"]))
    assert ok.status == 200
    wrong = await mounted.handle("PATCH", "/health", headers={})
    assert wrong.status == 405
    assert wrong.headers == {"Allow": "GET"}


async def test_handle_hides_an_unexpected_failure_as_500(
    mounted: AdminAPI, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken() -> list[Any]:
        raise RuntimeError("secret detail u-nurse")

    monkeypatch.setattr(mounted.gateway.registry, "connections", broken)
    reply = await mounted.handle("GET", "/connections", headers=bearer(tokens["admin"]))
    assert reply.status == 500
    assert reply.body == {"success": False, "error": "Internal error", "code": "internal"}
    assert b"secret" not in reply.encode()


@pytest.mark.parametrize("prefix", ["api", "api/socket.io", "/api/", "/", ""])
def test_prefix_must_start_and_not_end_with_a_slash(
    authenticator: SignedTokenAuthenticator, prefix: str
) -> None:
    gateway = clinic_gateway(authenticator)
    with pytest.raises(ValueError, match="prefix"):
        AdminAPI(gateway, prefix=prefix)


@pytest.mark.parametrize("prefix", ["/admin", "/api/v1/rt"])
def test_valid_prefixes_are_kept(authenticator: SignedTokenAuthenticator, prefix: str) -> None:
    admin = AdminAPI(clinic_gateway(authenticator), prefix=prefix)
    assert admin.prefix == prefix
    assert AdminAPI(clinic_gateway(authenticator)).prefix == DEFAULT_ADMIN_PREFIX


async def test_a_custom_prefix_is_served_by_both_adapters(
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
    tokens: dict[str, str],
) -> None:
    gateway = clinic_gateway(authenticator)
    admin = AdminAPI(gateway, prefix="/ops/rt")
    async with admin_server(clients, gateway, server_kind, admin) as (server, api):
        assert api.base == server.url + "/ops/rt"
        assert (await api.get("/health")).status == 200
        assert (await api.get("/connections", tokens["admin"])).data["count"] == 0
        async with api.http.get(server.url + DEFAULT_ADMIN_PREFIX + "/health") as default:
            assert default.status == 404
