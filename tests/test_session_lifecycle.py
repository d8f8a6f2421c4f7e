"""Refresh in place, revocation and automatic logoff (one process; the cluster's
half is in ``test_revocation_cluster.py``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any

import aiohttp
import attrs
import pytest

from realtime_gateway import (
    AdminAPI,
    AuditRecord,
    Gateway,
    GatewayNamespace,
    Identity,
    InvalidPayload,
    MemoryRevocationStore,
    SignedTokenAuthenticator,
    default_namespaces,
    event,
    reference_rules,
)
from realtime_gateway._prometheus import exposition
from realtime_gateway._revocation import session_digest

from .clinic import USERS, connect_as
from .conftest import Clients, call, quick_config, until
from .test_session_expiry import (
    Tokens,
    expiring,
    expiry_config,
    only_sid,
    watched,
)

CHAT = "/chat"
UPDATES = "/updates"
KEY = "lifecycle-test-key-0123456789abcdef"


def lifecycle_gateway(
    authenticator: Any, *, records: list[AuditRecord] | None = None, **settings: Any
) -> Gateway:
    return Gateway(
        authenticator=authenticator,
        authorizer=reference_rules(),
        config=expiry_config(**settings),
        namespaces=default_namespaces(),
        audit=None if records is None else records.append,
    )


def signed(max_age: float = 600) -> SignedTokenAuthenticator:
    return SignedTokenAuthenticator(KEY, salt="lifecycle", max_age=max_age)


def session_records(records: list[AuditRecord]) -> list[tuple[str | None, bool, str | None]]:
    return [(r.user_id, r.allowed, r.reason) for r in records if r.action == "session"]


# -- the gateway's own session events -----------------------------------------------


@pytest.mark.parametrize("name", ["auth:refresh", "session:activity"])
def test_the_session_events_cannot_be_taken_by_a_namespace(name: str) -> None:
    with pytest.raises(ValueError, match="invalid event name"):
        event(name)

    async def handler(conn: Any, value: Any) -> None:
        return None

    namespace = GatewayNamespace("/x")
    assert name in namespace.event_names
    with pytest.raises(ValueError, match="invalid event name"):
        namespace.add_event(name, handler)


# -- refresh in place -------------------------------------------------------------------


async def test_refresh_extends_every_namespace_past_the_first_expiry(
    clients: Clients, server_kind: str, transport: str
) -> None:
    tokens = Tokens()
    records: list[AuditRecord] = []
    gateway = lifecycle_gateway(tokens.authenticator, records=records)
    async with clients.serve(gateway, server_kind) as server:
        first = expiring("doctor", 1.5)
        assert first.expires_at is not None
        loop = asyncio.get_running_loop()
        first_ends = loop.time() + first.expires_at.timestamp() - time.time()
        client, inbox, _ = await watched(
            clients, server.url, tokens.token(first), namespaces=("/", CHAT), transport=transport
        )
        await inbox.wait("auth:expiring")
        later = expiring("doctor", 60)
        assert later.expires_at is not None

        ack = await call(client, "auth:refresh", {"token": tokens.token(later)})

        assert ack == {"success": True, "expiresAt": round(later.expires_at.timestamp() * 1000)}
        for namespace in ("/", CHAT):
            conn = gateway.connection(only_sid(gateway, "u-doctor", namespace))
            assert conn is not None
            assert conn.identity.expires_at == later.expires_at
            assert gateway._sessions._entries[conn.sid].expires_at == later.expires_at.timestamp()
        # Past the first credential's end (plus the time ending a socket takes), both
        # namespaces still answer and neither heard auth:expired.
        await asyncio.sleep(max(0.0, first_ends - loop.time()) + 0.5)
        for namespace in ("/", CHAT):
            assert client.connected
            ping = await call(client, "session:activity", None, namespace)
            assert ping == {"success": True}
            assert inbox.of("auth:expired", namespace) == []
        assert gateway.metrics.sessions_refreshed == 1
        assert gateway.metrics.sessions_ended == {}
        assert session_records(records) == [("u-doctor", True, "refreshed")]
        stats = await gateway.stats()
        assert stats["sessions_refreshed"] == 1
        assert "rtg_sessions_refreshed_total 1.0" in exposition(stats)


async def test_refresh_with_a_signed_token(clients: Clients, server_kind: str) -> None:
    authenticator = signed()
    gateway = lifecycle_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        client, _ = await connect_as(
            clients, server.url, authenticator.issue(USERS["nurse"], ttl=30), namespaces=("/",)
        )
        fresh = authenticator.issue(USERS["nurse"], ttl=300)
        expected = authenticator.verify(fresh).expires_at
        assert expected is not None

        ack = await call(client, "auth:refresh", {"token": fresh})

        assert ack == {"success": True, "expiresAt": round(expected.timestamp() * 1000)}
        conn = gateway.connection(only_sid(gateway, "u-nurse"))
        assert conn is not None
        assert conn.identity.expires_at == expected


async def test_another_users_credential_is_forbidden_and_the_connection_dropped(
    clients: Clients, server_kind: str
) -> None:
    tokens = Tokens()
    records: list[AuditRecord] = []
    gateway = lifecycle_gateway(tokens.authenticator, records=records)
    async with clients.serve(gateway, server_kind) as server:
        client, inbox, departure = await watched(
            clients,
            server.url,
            tokens.token(expiring("nurse", 60)),
            namespaces=("/", CHAT),
        )

        ack = await call(client, "auth:refresh", {"token": tokens.token(expiring("admin", 60))})

        assert ack["success"] is False
        assert ack["code"] == "forbidden"
        for namespace in ("/", CHAT):
            await departure.wait(namespace)
            assert inbox.of("auth:forbidden", namespace) == []
        await until(lambda: not gateway.connections)
        assert gateway.metrics.sessions_ended == {"forbidden": 2}
        assert not await gateway.is_user_connected("u-admin")
        assert ("u-nurse", False, "forbidden") in session_records(records)


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        ({"token": "no-such-token"}, "unauthenticated", None),
        ({"token": ""}, "invalid_payload", "token"),
        ({"token": 7}, "invalid_payload", "token"),
        ("token", "invalid_payload", "token"),
        (None, "invalid_payload", "token"),
    ],
)
async def test_a_bad_credential_changes_nothing(
    clients: Clients, payload: Any, code: str, field: str | None
) -> None:
    tokens = Tokens()
    gateway = lifecycle_gateway(tokens.authenticator)
    async with clients.serve(gateway, "aiohttp") as server:
        identity = expiring("doctor", 60)
        client, inbox, _ = await watched(clients, server.url, tokens.token(identity))
        sid = only_sid(gateway, "u-doctor")
        await until(lambda: sid in gateway._sessions)
        entry = gateway._sessions._entries[sid]

        ack = await call(client, "auth:refresh", payload)

        assert ack["success"] is False
        assert ack["code"] == code
        if code == "unauthenticated":
            assert ack["reason"] == "rejected"
        else:
            assert ack["field"] == field
        conn = gateway.connection(sid)
        assert conn is not None
        assert conn.identity is identity
        assert gateway._sessions._entries[sid] is entry
        assert (await call(client, "ping"))["status"] == "pong"
        assert gateway.metrics.sessions_refreshed == 0
        assert inbox.of("auth:expired") == []


async def test_a_refresh_that_drops_a_permission_revokes_the_room(
    clients: Clients, server_kind: str
) -> None:
    tokens = Tokens()
    gateway = lifecycle_gateway(tokens.authenticator)
    async with clients.serve(gateway, server_kind) as server:
        client, inbox, _ = await watched(
            clients, server.url, tokens.token(expiring("doctor", 60)), namespaces=(UPDATES,)
        )
        ack = await call(client, "subscribe:patient", "p1", UPDATES)
        assert ack["success"] is True, ack
        demoted = expiring("doctor", 60, permissions=set(), roles={"staff"})

        ack = await call(client, "auth:refresh", {"token": tokens.token(demoted)}, UPDATES)

        assert ack["success"] is True
        revoked = await inbox.wait("access:revoked", UPDATES, count=2)
        assert sorted(revoked, key=lambda notice: notice["room"]) == [
            {"room": "patient:p1", "reason": "refreshed"},
            {"room": "role:doctor", "reason": "refreshed"},
        ]
        conn = gateway.connection(only_sid(gateway, "u-doctor", UPDATES))
        assert conn is not None
        assert set(conn.rooms) == {"user:u-doctor", "role:staff"}
        await gateway.publish_update("patient", "p1", "vitals")
        await gateway.emit_to_role("staff", "barrier", namespace=UPDATES)
        await inbox.wait("barrier", UPDATES)
        assert inbox.of("patient:update", UPDATES) == []


async def test_a_revoked_credential_does_not_refresh(clients: Clients, server_kind: str) -> None:
    authenticator = signed()
    gateway = lifecycle_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        client, _ = await connect_as(
            clients, server.url, authenticator.issue(USERS["nurse"]), namespaces=("/",)
        )
        stale = authenticator.issue(attrs.evolve(USERS["nurse"], session_id="old-session"))
        await gateway.revoke_session("old-session")

        ack = await call(client, "auth:refresh", {"token": stale})

        assert ack["success"] is False
        assert ack["reason"] == "revoked"
        assert client.connected


# -- revocation --------------------------------------------------------------------------


async def test_revoke_session_ends_its_sockets_and_refuses_its_credential(
    clients: Clients, server_kind: str
) -> None:
    authenticator = signed()
    records: list[AuditRecord] = []
    gateway = lifecycle_gateway(authenticator, records=records)
    async with clients.serve(gateway, server_kind) as server:
        token = authenticator.issue(attrs.evolve(USERS["nurse"], session_id="ward-tablet"))
        other = authenticator.issue(USERS["nurse"])  # another session of the same user
        _, inbox, departure = await watched(clients, server.url, token, namespaces=("/", CHAT))
        lasting, lasting_inbox = await connect_as(clients, server.url, other, namespaces=("/",))

        assert await gateway.revoke_session("ward-tablet") == 2

        for namespace in ("/", CHAT):
            assert await inbox.wait("auth:revoked", namespace) == [{"reason": "revoked"}]
            await departure.wait(namespace)
        refusal = await clients.refusal(server.url, auth={"token": token})
        assert refusal.data["data"] == {"code": "unauthenticated", "reason": "revoked"}
        assert lasting.connected
        assert (await call(lasting, "ping"))["status"] == "pong"
        assert lasting_inbox.of("auth:revoked") == []
        assert gateway.metrics.sessions_ended == {"revoked": 2}
        assert gateway.metrics.auth_failures["revoked"] == 1
        assert session_records(records).count(("u-nurse", False, "revoked")) == 2
        assert await gateway.revoke_session("ward-tablet") == 0  # nothing left to end


async def test_naming_the_user_narrows_the_count_not_the_revocation(clients: Clients) -> None:
    authenticator = signed()
    gateway = lifecycle_gateway(authenticator)
    async with clients.serve(gateway, "aiohttp") as server:
        token = authenticator.issue(attrs.evolve(USERS["nurse"], session_id="shared"))
        _, inbox, departure = await watched(clients, server.url, token)
        await connect_as(clients, server.url, authenticator.issue(USERS["doctor"]))

        assert await gateway.revoke_session("shared", user_id="u-doctor") == 0

        assert await inbox.wait("auth:revoked") == [{"reason": "revoked"}]
        await departure.wait()
        assert await gateway.is_user_connected("u-doctor")
        with pytest.raises(InvalidPayload):
            await gateway.revoke_session("shared", user_id="")
        with pytest.raises(InvalidPayload):
            await gateway.revoke_user("")


async def test_revoke_user_refuses_earlier_credentials_only(
    clients: Clients, server_kind: str
) -> None:
    authenticator = signed()
    gateway = lifecycle_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        before = [authenticator.issue(USERS["doctor"]) for _ in range(2)]
        inboxes = []
        for token in before:
            _, inbox, departure = await watched(clients, server.url, token, namespaces=("/",))
            inboxes.append((inbox, departure))

        assert await gateway.revoke_user("u-doctor") == 2

        for inbox, departure in inboxes:
            assert await inbox.wait("auth:revoked") == [{"reason": "revoked"}]
            await departure.wait()
        for token in before:
            refusal = await clients.refusal(server.url, auth={"token": token})
            assert refusal.data["data"] == {"code": "unauthenticated", "reason": "revoked"}
        after = authenticator.issue(USERS["doctor"])
        client, _ = await connect_as(clients, server.url, after, namespaces=("/",))
        assert client.connected
        # Another user is untouched.
        nurse, _ = await connect_as(
            clients, server.url, authenticator.issue(USERS["nurse"]), namespaces=("/",)
        )
        assert nurse.connected


async def test_an_identity_without_issue_time_is_refused_after_revoke_user(
    clients: Clients,
) -> None:
    tokens = Tokens()
    gateway = lifecycle_gateway(tokens.authenticator)
    async with clients.serve(gateway, "aiohttp") as server:
        await gateway.revoke_user("u-staff")
        refusal = await clients.refusal(
            server.url, auth={"token": tokens.token(expiring("staff", 60))}
        )
        assert refusal.data["data"] == {"code": "unauthenticated", "reason": "revoked"}
        issued_later = expiring(
            "staff", 60, issued_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        )
        client, _ = await connect_as(clients, server.url, tokens.token(issued_later))
        assert client.connected


class _HeldAuthorizer:
    """The reference rules, but a ``connect`` waits until the test lets it go on."""

    def __init__(self) -> None:
        self.rules = reference_rules()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def authorize(self, identity: Identity, action: str, target: str) -> None:
        if action == "connect":
            self.entered.set()
            await self.release.wait()
        await self.rules.authorize(identity, action, target)


async def test_a_revocation_during_the_handshake_is_not_missed(clients: Clients) -> None:
    authenticator = signed()
    authorizer = _HeldAuthorizer()
    gateway = Gateway(
        authenticator=authenticator,
        authorizer=authorizer,
        config=quick_config(),
        namespaces=default_namespaces(),
    )
    async with clients.serve(gateway, "aiohttp") as server:
        token = authenticator.issue(attrs.evolve(USERS["nurse"], session_id="racing"))
        attempt = asyncio.create_task(clients.refusal(server.url, auth={"token": token}))
        async with asyncio.timeout(5):
            await authorizer.entered.wait()

        # Authenticated and checked, not yet in the connection table: nothing to end.
        assert await gateway.revoke_session("racing") == 0
        authorizer.release.set()

        refusal = await attempt
        assert refusal.data["data"] == {"code": "unauthenticated", "reason": "revoked"}
        assert not gateway.connections
        assert not await gateway.registry.users()


@pytest.mark.parametrize(
    ("path", "call_name"),
    [("/revoke/session/sess-7", "session"), ("/revoke/user/u-nurse", "user")],
)
async def test_admin_api_revokes(
    clients: Clients, server_kind: str, path: str, call_name: str
) -> None:
    authenticator = signed()
    gateway = lifecycle_gateway(authenticator)
    admin = AdminAPI(gateway)
    async with clients.serve(gateway, server_kind, admin) as server:
        nurse_token = authenticator.issue(attrs.evolve(USERS["nurse"], session_id="sess-7"))
        _, inbox, departure = await watched(
            clients, server.url, nurse_token, namespaces=("/", CHAT)
        )
        url = f"{server.url}{admin.prefix}{path}"
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {nurse_token}"}
            async with http.post(url, headers=headers) as refused:
                assert refused.status == 403
            assert gateway.connections
            admin_token = authenticator.issue(USERS["admin"])
            headers = {"Authorization": f"Bearer {admin_token}"}
            async with http.post(url, headers=headers) as answer:
                body = await answer.json()
                assert answer.status == 200, body

        assert body["success"] is True
        assert body["data"] == {"disconnected": 2}
        assert isinstance(body["message"], str)
        assert "u-nurse" not in body["message"]
        assert "sess-7" not in body["message"]
        await departure.wait("/")
        await departure.wait(CHAT)
        assert inbox.of("auth:revoked") == [{"reason": "revoked"}]
        refusal = await clients.refusal(server.url, auth={"token": nurse_token})
        assert refusal.data["data"] == {"code": "unauthenticated", "reason": "revoked"}


async def test_revoked_credentials_are_refused_by_the_admin_api(clients: Clients) -> None:
    authenticator = signed()
    gateway = lifecycle_gateway(authenticator)
    admin = AdminAPI(gateway)
    async with clients.serve(gateway, "aiohttp", admin) as server:
        admin_token = authenticator.issue(attrs.evolve(USERS["admin"], session_id="console"))
        await gateway.revoke_session("console")
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{server.url}{admin.prefix}/connections",
                headers={"Authorization": f"Bearer {admin_token}"},
            ) as answer,
        ):
            assert answer.status == 401
            body = await answer.json()
        assert body["reason"] == "revoked"


async def test_a_revocation_lasts_as_long_as_the_credentials_could() -> None:
    gateway = lifecycle_gateway(signed(max_age=600))
    started = time.time()
    await gateway.revoke_session("s-1")
    await gateway.revoke_user("u-1")
    store = gateway._revoked_here
    assert gateway.revocations is store
    until_session = store._sessions[session_digest("s-1")]
    _, until_user = store._users["u-1"]
    for until_at in (until_session, until_user):
        assert started + 600 <= until_at <= time.time() + 601
    other = lifecycle_gateway(Tokens().authenticator, revocation_ttl=90)
    await other.revoke_session("s-1")
    assert other._revoked_here._sessions[session_digest("s-1")] <= time.time() + 91


async def test_the_memory_store_forgets_lapsed_revocations() -> None:
    store = MemoryRevocationStore()
    nurse = attrs.evolve(USERS["nurse"], session_id="a")
    await store.revoke_session("a", ttl=0.05)
    await store.revoke_user("u-doctor", before=time.time(), ttl=0.05)
    assert await store.is_revoked(nurse)
    assert await store.is_revoked(USERS["doctor"])
    await asyncio.sleep(0.1)  # the revocations' own lifetime, not an event

    assert not await store.is_revoked(nurse)
    assert not await store.is_revoked(USERS["doctor"])
    await store.revoke_session("b", ttl=60)
    assert len(store) == 1
    assert store._lapses == [(store._sessions[session_digest("b")], "session", session_digest("b"))]


def test_a_revocation_store_must_follow_the_protocol() -> None:
    from realtime_gateway import ConfigurationError

    with pytest.raises(ConfigurationError, match="revocations"):
        Gateway(
            authenticator=signed(),
            authorizer=reference_rules(),
            revocations=object(),  # type: ignore[arg-type]
        )


# -- automatic logoff ------------------------------------------------------------------------


async def _keep_calling(client: Any, name: str, data: Any, every: float) -> None:
    while client.connected:
        try:
            await client.call(name, data, namespace="/", timeout=2)
        except Exception:
            return
        await asyncio.sleep(every)


async def test_a_connection_that_only_pings_is_logged_off(
    clients: Clients, server_kind: str, transport: str
) -> None:
    authenticator = signed()
    records: list[AuditRecord] = []
    gateway = lifecycle_gateway(authenticator, records=records, idle_timeout=1.0)
    async with clients.serve(gateway, server_kind) as server:
        token = authenticator.issue(attrs.evolve(USERS["nurse"], session_id="unattended"))
        started = asyncio.get_running_loop().time()
        client, inbox, departure = await watched(
            clients, server.url, token, namespaces=("/", CHAT), transport=transport
        )
        pinging = asyncio.create_task(_keep_calling(client, "ping", None, 0.2))
        refresher = asyncio.create_task(
            _keep_calling(client, "auth:refresh", {"token": token}, 0.3)
        )

        for namespace in ("/", CHAT):
            assert await inbox.wait("auth:idle", namespace, within=5) == [{"reason": "idle"}]
            gone_at = await departure.wait(namespace)
            assert gone_at - started >= 1.0
        await asyncio.gather(pinging, refresher)

        refusal = await clients.refusal(server.url, auth={"token": token})
        assert refusal.data["data"] == {"code": "unauthenticated", "reason": "revoked"}
        await until(lambda: not gateway.connections)
        assert gateway._sessions._idle == {}
        assert gateway.metrics.sessions_ended == {"idle": 2}
        assert session_records(records).count(("u-nurse", False, "idle")) == 2


async def test_session_activity_keeps_a_connection_in(clients: Clients, server_kind: str) -> None:
    authenticator = signed()
    gateway = lifecycle_gateway(authenticator, idle_timeout=0.8)
    async with clients.serve(gateway, server_kind) as server:
        busy, busy_inbox = await connect_as(
            clients, server.url, authenticator.issue(USERS["doctor"]), namespaces=("/", CHAT)
        )
        _, idle_inbox, idle_gone = await watched(
            clients, server.url, authenticator.issue(USERS["nurse"])
        )
        working = asyncio.create_task(_keep_calling(busy, "session:activity", None, 0.2))

        await idle_inbox.wait("auth:idle", within=5)
        await idle_gone.wait()
        # The busy client has now outlived two idle timeouts.
        await asyncio.sleep(0.8)
        assert busy.connected
        assert busy_inbox.of("auth:idle") == []
        assert busy_inbox.of("auth:idle", CHAT) == []
        assert (await call(busy, "ping", None, CHAT))["success"] is False  # /chat has no ping
        working.cancel()
        conn = gateway.connection(only_sid(gateway, "u-doctor"))
        assert conn is not None
        assert conn.eio_sid is not None
        idle_for = gateway._sessions.idle_for(conn.eio_sid)
        assert idle_for is not None
        assert idle_for < 0.8


async def test_without_an_idle_timeout_nothing_is_watched(clients: Clients) -> None:
    authenticator = signed()
    gateway = lifecycle_gateway(authenticator)
    async with clients.serve(gateway, "aiohttp") as server:
        await connect_as(clients, server.url, authenticator.issue(USERS["doctor"]))
        assert gateway.connections
        assert gateway._sessions._idle == {}


# -- logs ------------------------------------------------------------------------------------


async def test_lifecycle_logs_carry_no_user_or_session_in_clear(
    clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    authenticator = signed()
    gateway = lifecycle_gateway(authenticator, idle_timeout=0.5)
    user = attrs.evolve(USERS["nurse"], user_id="u-jane-doe-4471", session_id="sess-secret-9913")
    async with clients.serve(gateway, "aiohttp") as server:
        token = authenticator.issue(user)
        client, inbox, departure = await watched(clients, server.url, token)
        assert (await call(client, "auth:refresh", {"token": token}))["success"] is True
        await inbox.wait("auth:idle", within=5)
        await departure.wait()
        await gateway.revoke_user(user.user_id)
        await clients.refusal(server.url, auth={"token": token})

    whats = {getattr(r, "rtg", {}).get("what") for r in caplog.records}
    assert {"session_refreshed", "session_ended", "session_revoked", "user_revoked"} <= whats
    for record in caplog.records:
        text = record.getMessage() + repr(getattr(record, "rtg", ""))
        for secret in (user.user_id, "sess-secret-9913", token):
            assert secret not in text, record.getMessage()


def test_idle_timeout_is_validated() -> None:
    from realtime_gateway import ConfigurationError, GatewayConfig

    assert GatewayConfig().idle_timeout is None
    assert GatewayConfig(idle_timeout=900).idle_timeout == 900
    for bad in (0, -1, float("inf"), "900", True):
        with pytest.raises(ConfigurationError, match="idle_timeout"):
            GatewayConfig(idle_timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="revocation_ttl"):
        GatewayConfig(revocation_ttl=0)
