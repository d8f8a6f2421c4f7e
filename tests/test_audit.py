"""The audit trail: one :class:`AuditRecord` per authorization decision, sent to a
plain or a coroutine sink, from socket events and admin HTTP calls alike."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import aiohttp
import attrs
import pytest

from realtime_gateway import (
    AdminAPI,
    AuditRecord,
    AuditSink,
    Authorizer,
    ConfigurationError,
    Gateway,
    Identity,
    SignedTokenAuthenticator,
    default_namespaces,
    reference_rules,
)
from realtime_gateway._audit import target_kind

from .clinic import USERS, connect_as
from .conftest import Clients, call, quick_config

ISO_Z = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")
JSON_KEYS = {
    "userId",
    "sessionId",
    "action",
    "target",
    "targetKind",
    "allowed",
    "reason",
    "timestamp",
}
NURSE = attrs.evolve(USERS["nurse"], session_id="sess-nurse")
ADMIN = attrs.evolve(USERS["admin"], session_id="sess-admin")


@attrs.define
class Trail:
    """Collects audit records through a sync or an async sink."""

    kind: str
    records: list[AuditRecord] = attrs.field(factory=list)
    mark: int = 0

    @property
    def sink(self) -> AuditSink:
        if self.kind == "sync":

            def sync_sink(record: AuditRecord) -> None:
                self.records.append(record)

            return sync_sink

        async def async_sink(record: AuditRecord) -> None:
            self.records.append(record)

        return async_sink

    def new(self) -> list[AuditRecord]:
        """The records that arrived since the last call."""
        fresh = self.records[self.mark :]
        self.mark = len(self.records)
        return fresh


@pytest.fixture(params=("sync", "async"))
def trail(request: pytest.FixtureRequest) -> Trail:
    kind: str = request.param
    return Trail(kind)


def audited(
    authenticator: SignedTokenAuthenticator,
    sink: AuditSink,
    authorizer: Authorizer | None = None,
) -> Gateway:
    return Gateway(
        authenticator=authenticator,
        authorizer=authorizer or reference_rules(),
        namespaces=default_namespaces(),
        config=quick_config(),
        audit=sink,
    )


def assert_forbidden(ack: Any) -> None:
    assert ack["success"] is False, ack
    assert ack["code"] == "forbidden", ack


def decision(record: AuditRecord) -> tuple[str, str, str, bool, str | None]:
    return (record.action, record.target, record.target_kind, record.allowed, record.reason)


def assert_well_formed(
    record: AuditRecord, identity: Identity, since: dt.datetime, until: dt.datetime
) -> None:
    assert record.user_id == identity.user_id
    # A token issued for an identity without a session id gets a random one.
    assert record.session_id == identity.session_id or (
        identity.session_id is None and record.session_id
    )
    assert ISO_Z.fullmatch(record.timestamp), record.timestamp
    when = dt.datetime.fromisoformat(record.timestamp)
    assert since - dt.timedelta(seconds=1) <= when <= until + dt.timedelta(seconds=1)
    assert record.allowed == (record.reason is None) or record.reason == "self", record
    if not record.allowed:
        assert isinstance(record.reason, str), record
        assert record.reason, record
    assert set(record.to_json()) == JSON_KEYS


async def test_every_socket_decision_is_audited(
    clients: Clients, authenticator: SignedTokenAuthenticator, trail: Trail
) -> None:
    started = dt.datetime.now(dt.UTC)
    gateway = audited(authenticator, trail.sink)
    async with clients.serve(gateway, "aiohttp") as server:
        nurse, _ = await connect_as(clients, server.url, authenticator.issue(NURSE))
        connects = trail.new()
        # One record per namespace connect; the user and role rooms every socket is
        # put in are the gateway's own, not decisions.
        assert sorted(map(decision, connects)) == sorted(
            ("connect", ns, "namespace", True, None)
            for ns in ("/", "/notifications", "/chat", "/updates")
        )

        ack = await call(nurse, "ping")
        assert ack["success"] is True
        assert trail.new() == []  # not an authorization decision

        ack = await call(nurse, "join:room", "lobby")
        assert_forbidden(ack)
        [denied] = trail.new()
        assert decision(denied)[:4] == ("join", "lobby", "room", False)
        assert denied.reason

        ack = await call(nurse, "subscribe", ["system", "billing"], namespace="/notifications")
        assert ack["subscribedChannels"] == ["system"], ack
        assert ack["deniedChannels"] == ["billing"], ack
        system, billing = trail.new()
        assert decision(system) == ("subscribe", "channel:system", "channel", True, None)
        assert decision(billing)[:4] == ("subscribe", "channel:billing", "channel", False)
        assert billing.reason

        ack = await call(nurse, "subscribe:patient", 1, namespace="/updates")
        assert ack["success"] is True, ack
        [patient] = trail.new()
        assert decision(patient) == ("subscribe", "patient:1", "patient", True, None)

        ack = await call(nurse, "subscribe:encounter", "e7", namespace="/updates")
        assert_forbidden(ack)
        [encounter] = trail.new()
        assert decision(encounter)[:4] == ("subscribe", "encounter:e7", "encounter", False)

        ack = await call(nurse, "join:conversation", "c1", namespace="/chat")
        assert ack["success"] is True, ack
        [joined] = trail.new()
        assert decision(joined) == ("join", "conversation:c1", "conversation", True, None)

        ack = await call(
            nurse, "send:message", {"conversationId": "c1", "content": "hello"}, namespace="/chat"
        )
        assert ack["success"] is True, ack
        [sent] = trail.new()
        assert decision(sent) == ("send", "conversation:c1", "conversation", True, None)

        nurse_records = trail.records[:]
        patient_user = USERS["patient"]
        patient_client, _ = await connect_as(
            clients, server.url, authenticator.issue(patient_user), namespaces=("/chat",)
        )
        [patient_connect] = trail.new()
        assert decision(patient_connect) == ("connect", "/chat", "namespace", True, None)
        ack = await call(patient_client, "join:conversation", "c1", namespace="/chat")
        assert_forbidden(ack)
        [patient_join] = trail.new()
        assert decision(patient_join)[:4] == ("join", "conversation:c1", "conversation", False)

    finished = dt.datetime.now(dt.UTC)
    for record in nurse_records:
        assert_well_formed(record, NURSE, started, finished)
    for record in (patient_connect, patient_join):
        assert_well_formed(record, patient_user, started, finished)
        # The token's own session id (issue() draws one), the same on each decision.
        assert record.session_id == patient_connect.session_id
    assert gateway.metrics.audit_failures == 0


async def test_admin_calls_are_audited(
    clients: Clients, authenticator: SignedTokenAuthenticator, trail: Trail
) -> None:
    started = dt.datetime.now(dt.UTC)
    gateway = audited(authenticator, trail.sink)
    admin_api = AdminAPI(gateway)
    as_admin = {"Authorization": f"Bearer {authenticator.issue(ADMIN)}"}
    as_nurse = {"Authorization": f"Bearer {authenticator.issue(NURSE)}"}
    async with (
        clients.serve(gateway, "aiohttp", admin_api) as server,
        aiohttp.ClientSession(server.url) as http,
    ):
        base = admin_api.prefix

        async def status(method: str, path: str, headers: dict[str, str], **kw: Any) -> int:
            async with http.request(method, base + path, headers=headers, **kw) as response:
                await response.read()
                return response.status

        assert await status("GET", "/health", {}) == 200
        assert await status("GET", "/connections", {}) == 401
        assert trail.new() == []  # public, or nobody to audit

        assert await status("GET", "/connections", as_admin) == 200
        [listed] = trail.new()
        assert decision(listed)[:2] == ("admin", "/connections")
        assert (listed.allowed, listed.reason, listed.user_id) == (True, None, "u-admin")

        assert await status("GET", "/connections", as_nurse) == 403
        [refused] = trail.new()
        assert decision(refused)[:2] == ("admin", "/connections")
        assert refused.allowed is False
        assert refused.reason
        assert refused.user_id == "u-nurse"

        assert await status("GET", "/user/u-nurse/status", as_nurse) == 200
        [own] = trail.new()
        assert decision(own)[:2] == ("admin", "/user/{userId}/status")
        assert (own.allowed, own.reason) == (True, "self")

        assert await status("GET", "/user/u-doctor/status", as_nurse) == 403
        [other] = trail.new()
        assert (other.target, other.allowed) == ("/user/{userId}/status", False)
        assert other.reason
        assert other.reason != "self"

        assert await status("GET", "/user/u-doctor/status", as_admin) == 200
        [by_admin] = trail.new()
        assert (by_admin.target, by_admin.allowed, by_admin.reason) == (
            "/user/{userId}/status",
            True,
            None,
        )

        assert await status("POST", "/broadcast", as_admin, json={"event": "hello"}) == 200
        assert await status("DELETE", "/disconnect/user/u-nobody", as_admin) == 404
        broadcast, disconnect = trail.new()
        assert (broadcast.target, broadcast.allowed) == ("/broadcast", True)
        # The route template is audited, never the ids in the path.
        assert (disconnect.target, disconnect.allowed) == ("/disconnect/user/{userId}", True)

    finished = dt.datetime.now(dt.UTC)
    for record in trail.records:
        assert record.action == "admin"
        assert_well_formed(
            record, ADMIN if record.user_id == "u-admin" else NURSE, started, finished
        )


async def test_admin_records_are_of_kind_admin(
    clients: Clients, authenticator: SignedTokenAuthenticator
) -> None:
    # target_kind() documents "``admin`` for an admin API route".
    trail = Trail("sync")
    gateway = audited(authenticator, trail.sink)
    admin_api = AdminAPI(gateway)
    async with clients.serve(gateway, "aiohttp", admin_api) as server:
        headers = {"Authorization": f"Bearer {authenticator.issue(ADMIN)}"}
        async with (
            aiohttp.ClientSession() as http,
            http.get(server.url + admin_api.prefix + "/connections", headers=headers) as response,
        ):
            assert response.status == 200
    [record] = trail.records
    assert (record.action, record.target) == ("admin", "/connections")
    assert record.target_kind == "admin", record
    assert record.to_json()["targetKind"] == "admin"


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_failing_sink_changes_no_decision(
    clients: Clients, authenticator: SignedTokenAuthenticator, kind: str
) -> None:
    calls: list[AuditRecord] = []

    def sync_sink(record: AuditRecord) -> None:
        calls.append(record)
        raise RuntimeError("the audit store is down")

    async def async_sink(record: AuditRecord) -> None:
        calls.append(record)
        raise RuntimeError("the audit store is down")

    gateway = audited(authenticator, sync_sink if kind == "sync" else async_sink)
    admin_api = AdminAPI(gateway)
    async with clients.serve(gateway, "aiohttp", admin_api) as server:
        nurse, _ = await connect_as(
            clients, server.url, authenticator.issue(NURSE), namespaces=("/", "/notifications")
        )
        assert len(gateway.connections) == 2
        assert gateway.metrics.audit_failures == 2

        ack = await call(nurse, "subscribe", ["system", "admin"], namespace="/notifications")
        assert ack["success"] is True, ack
        assert (ack["subscribedChannels"], ack["deniedChannels"]) == (["system"], ["admin"])
        ack = await call(nurse, "join:room", "lobby")
        assert_forbidden(ack)
        assert gateway.metrics.audit_failures == 5

        url = server.url + admin_api.prefix + "/connections"
        async with aiohttp.ClientSession() as http:
            for identity, expected in ((NURSE, 403), (ADMIN, 200)):
                headers = {"Authorization": f"Bearer {authenticator.issue(identity)}"}
                async with http.get(url, headers=headers) as response:
                    assert response.status == expected, await response.text()

    assert gateway.metrics.audit_failures == 7
    assert len(calls) == 7
    assert [r.allowed for r in calls[2:]] == [True, False, False, False, True]
    assert dict(gateway.metrics.access_denied) == {"subscribe": 1, "join": 1, "admin": 1}
    assert (await gateway.stats())["audit_failures"] == 7


class Explosive:
    """Lets everyone connect to ``/`` and join ``safe``; fails on anything else."""

    async def authorize(self, identity: Identity, action: str, target: str) -> None:
        if (action, target) in {("connect", "/"), ("join", "safe")}:
            return
        raise RuntimeError("secret-detail")


async def test_an_authorizer_that_fails_is_a_denial(
    clients: Clients, authenticator: SignedTokenAuthenticator, trail: Trail
) -> None:
    gateway = audited(authenticator, trail.sink, authorizer=Explosive())
    token = authenticator.issue(NURSE)
    async with clients.serve(gateway, "aiohttp") as server:
        nurse, _ = await connect_as(clients, server.url, token, namespaces=("/",))
        assert decision(trail.new()[0]) == ("connect", "/", "namespace", True, None)

        refusal = await clients.refusal(server.url, namespace="/chat", auth={"token": token})
        assert refusal.data["data"]["code"] == "forbidden", refusal
        [connect] = trail.new()
        assert decision(connect)[:4] == ("connect", "/chat", "namespace", False)

        assert (await call(nurse, "join:room", "safe"))["success"] is True
        assert decision(trail.new()[0]) == ("join", "safe", "room", True, None)

        ack = await call(nurse, "join:room", "boom")
        assert_forbidden(ack)
        assert "secret-detail" not in json.dumps(ack)
        [join] = trail.new()
        assert decision(join)[:4] == ("join", "boom", "room", False)

    for record in (connect, join):
        assert record.reason
        assert "secret-detail" not in record.reason
    assert gateway.metrics.access_denied["connect"] == 1
    assert gateway.metrics.access_denied["join"] == 1
    assert gateway.metrics.audit_failures == 0


@pytest.mark.parametrize("sink", [42, "audit.log", object()])
def test_a_sink_must_be_callable(authenticator: SignedTokenAuthenticator, sink: Any) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Gateway(authenticator=authenticator, authorizer=reference_rules(), audit=sink)
    assert caught.value.field == "audit"


def test_no_sink_is_fine(authenticator: SignedTokenAuthenticator) -> None:
    gateway = Gateway(authenticator=authenticator, authorizer=reference_rules(), audit=None)
    assert gateway.metrics.audit_failures == 0


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("/", "namespace"),
        ("/chat", "namespace"),
        ("/notifications", "namespace"),
        ("patient:42", "patient"),
        ("encounter:e7", "encounter"),
        ("channel:billing", "channel"),
        ("conversation:c1", "conversation"),
        ("user:u-1", "user"),
        ("role:nurse", "role"),
        ("lobby", "room"),
        ("a:b:c", "a"),
    ],
)
def test_target_kind(target: str, kind: str) -> None:
    assert target_kind(target) == kind


def test_record_to_json() -> None:
    record = AuditRecord(
        user_id="u-1",
        session_id="s-1",
        action="subscribe",
        target="patient:42",
        target_kind="patient",
        allowed=False,
        reason="no rule matches",
        timestamp="2026-01-31T09:30:00.123Z",
    )
    data = record.to_json()
    assert data == {
        "userId": "u-1",
        "sessionId": "s-1",
        "action": "subscribe",
        "target": "patient:42",
        "targetKind": "patient",
        "allowed": False,
        "reason": "no rule matches",
        "timestamp": "2026-01-31T09:30:00.123Z",
    }
    assert json.loads(json.dumps(data)) == data
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        record.allowed = True  # type: ignore[misc]


async def test_namespace_refusals_outside_the_authorizer_are_audited(
    clients: Clients, authenticator: SignedTokenAuthenticator, trail: Trail
) -> None:
    """Refusals a namespace decides itself go through the same count, log and audit."""
    gateway = audited(authenticator, trail.sink)
    async with clients.serve(gateway, "aiohttp") as server:
        nurse, _ = await connect_as(
            clients, server.url, authenticator.issue(NURSE), namespaces=("/", "/chat")
        )
        trail.new()
        message = {"conversationId": "c9", "content": "hello"}
        assert_forbidden(await call(nurse, "send:message", message, "/chat"))
        assert decision(trail.new()[0]) == (
            "send",
            "conversation:c9",
            "conversation",
            False,
            "join the conversation first",
        )
        assert_forbidden(await call(nurse, "leave:room", f"user:{NURSE.user_id}"))
        assert decision(trail.new()[0])[:4] == ("leave", f"user:{NURSE.user_id}", "user", False)
        assert_forbidden(await call(nurse, "join:room", nurse.get_sid("/")))
        [own_room] = trail.new()
        assert (own_room.action, own_room.allowed, own_room.reason) == (
            "join",
            False,
            "a socket's own room",
        )
    assert gateway.metrics.access_denied == {"send": 1, "leave": 1, "join": 1}
