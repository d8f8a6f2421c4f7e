"""Log records: the redaction policy of ``realtime_gateway._log`` and a full scenario on
real servers in which no payload, token, cookie, name, resource id or raw user id may
reach any log record (SPEC, "Operations")."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import aiohttp
import attrs
import pytest

from realtime_gateway import (
    AdminAPI,
    Authorizer,
    ChatNamespace,
    ConfigurationError,
    Connection,
    Gateway,
    GatewayConfig,
    Identity,
    MainNamespace,
    NotificationsNamespace,
    PermissionDenied,
    SignedTokenAuthenticator,
    UpdatesNamespace,
    _log,
    pseudonym,
    redact_room,
    reference_rules,
)
from realtime_gateway._authz import REQUIREMENT_NOT_MET
from realtime_gateway._log import log, set_log_key

from .clinic import USERS, clinic_gateway, connect_as
from .conftest import Clients, call, quick_config, until

# -- capturing every record ------------------------------------------------------------


class _Keep(logging.Handler):
    """Keeps each record once, whether the record factory or the root logger saw it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._seen: set[int] = set()

    def keep(self, record: logging.LogRecord) -> None:
        if id(record) not in self._seen:  # kept records stay alive: ids are unique
            self._seen.add(id(record))
            self.records.append(record)

    def emit(self, record: logging.LogRecord) -> None:
        self.keep(record)


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """Every record emitted while the test runs, with the root and the
    ``realtime_gateway`` logger at DEBUG (both levels are restored after).

    A handler on the root logger receives what propagates; the record factory also
    sees the records of loggers that do not propagate (uvicorn's), so the list holds
    every record any logger made."""
    handler = _Keep()
    root = logging.getLogger()
    library = logging.getLogger("realtime_gateway")
    root_level, library_level = root.level, library.level
    factory = logging.getLogRecordFactory()

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        handler.keep(record)
        return record

    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    library.setLevel(logging.DEBUG)
    logging.setLogRecordFactory(make)
    try:
        yield handler.records
    finally:
        logging.setLogRecordFactory(factory)
        root.removeHandler(handler)
        root.setLevel(root_level)
        library.setLevel(library_level)


@pytest.fixture
def saved_log_key() -> Iterator[None]:
    """The pseudonym key is process-global: put it back whatever the test did."""
    saved = _log._key
    try:
        yield
    finally:
        _log._key = saved


def ours(found: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [record for record in found if record.name == "realtime_gateway"]


# -- the redaction policy --------------------------------------------------------------


def test_pseudonym_is_stable_distinct_and_keyed(saved_log_key: None) -> None:
    set_log_key("first-key-0123456789")
    first = pseudonym("u-alice")
    assert pseudonym("u-alice") == first
    assert pseudonym("u-bob") != first
    assert first.startswith("u-")
    assert "alice" not in first
    expected = hmac.new(b"first-key-0123456789", b"u-alice", hashlib.sha256).hexdigest()
    assert first == f"u-{expected[:16]}"
    set_log_key(b"second-key-0123456789")
    assert pseudonym("u-alice") != first
    set_log_key("first-key-0123456789")
    assert pseudonym("u-alice") == first


@pytest.mark.parametrize(
    ("room", "redacted"),
    [
        ("patient:123", "patient:*"),
        ("lobby", "*"),
        ("/chat", "/chat"),
        ("a:b:c", "a:*"),
        ("conversation:c-42", "conversation:*"),
        ("user:u-alice", "user:*"),
        ("", "*"),
    ],
)
def test_redact_room_keeps_only_the_kind(room: str, redacted: str) -> None:
    assert redact_room(room) == redacted


def test_log_redacts_fields_omits_none_and_fills_rtg(records: list[logging.LogRecord]) -> None:
    log(
        logging.WARNING,
        "thing_happened",
        user="u-alice",
        room="patient:123",
        target="lobby",
        count=3,
        gone=None,
    )

    [record] = ours(records)
    alias = pseudonym("u-alice")
    assert record.levelno == logging.WARNING
    assert record.rtg == {  # type: ignore[attr-defined]
        "what": "thing_happened",
        "user": alias,
        "room": "patient:*",
        "target": "*",
        "count": 3,
    }
    assert record.getMessage() == f"thing_happened user={alias} room=patient:* target=* count=3"
    assert "gone" not in record.getMessage()
    assert "u-alice" not in record.getMessage()
    assert "patient:123" not in record.getMessage()


class _Exploding:
    def __str__(self) -> str:
        raise AssertionError("a disabled log() must not look at its fields")


def test_log_is_a_no_op_when_the_level_is_disabled(records: list[logging.LogRecord]) -> None:
    logging.getLogger("realtime_gateway").setLevel(logging.WARNING)  # the fixture restores it
    log(logging.INFO, "quiet", user=_Exploding(), room=_Exploding())
    log(logging.DEBUG, "quieter", user=_Exploding())
    assert ours(records) == []
    log(logging.WARNING, "loud", user="u-alice")
    assert [record.rtg["what"] for record in ours(records)] == ["loud"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("key", ["", "too-short", "x" * 15, 12345])
def test_log_key_must_be_long_enough(key: Any) -> None:
    with pytest.raises(ConfigurationError) as raised:
        GatewayConfig(log_key=key)
    assert raised.value.field == "log_key"
    assert "log_key" in str(raised.value)


def test_log_key_is_kept_out_of_the_config_repr() -> None:
    key = "a-long-enough-log-key-" + uuid.uuid4().hex
    assert key not in repr(GatewayConfig(log_key=key))


async def test_gateways_with_the_same_log_key_give_the_same_pseudonyms(
    records: list[logging.LogRecord],
    authenticator: SignedTokenAuthenticator,
    saved_log_key: None,
) -> None:
    key = "shared-log-key-" + uuid.uuid4().hex
    someone = Identity(user_id="u-someone")

    async def denied_user_field(config: GatewayConfig | None) -> str:
        gateway = Gateway(authenticator=authenticator, authorizer=reference_rules(), config=config)
        before = len(records)
        assert not await gateway.is_allowed(someone, "subscribe", "patient:p-1")
        [record] = ours(records[before:])
        assert record.rtg["what"] == "access_denied"  # type: ignore[attr-defined]
        user: str = record.rtg["user"]  # type: ignore[attr-defined]
        return user

    first = await denied_user_field(GatewayConfig(log_key=key))
    set_log_key("some-other-key-" + uuid.uuid4().hex)  # as another process would have
    second = await denied_user_field(GatewayConfig(log_key=key))
    expected = hmac.new(key.encode(), b"u-someone", hashlib.sha256).hexdigest()[:16]
    assert first == second == f"u-{expected}"
    other = await denied_user_field(GatewayConfig(log_key="another-log-key-" + uuid.uuid4().hex))
    assert other != first
    # Without a log_key the gateway keeps the process key it found.
    assert await denied_user_field(None) == other


class _CareTeamRule:
    """An application authorizer whose denial reason names a patient."""

    async def authorize(self, identity: Identity, action: str, target: str) -> None:
        raise PermissionDenied(action, target, "patient p-4711 is not on Nat's care team")


@pytest.mark.parametrize(
    ("authorizer", "logged"),
    [(_CareTeamRule(), "application"), (reference_rules(), REQUIREMENT_NOT_MET)],
    ids=["application", "library"],
)
async def test_only_the_librarys_own_denial_reasons_are_logged_verbatim(
    records: list[logging.LogRecord],
    authenticator: SignedTokenAuthenticator,
    authorizer: Authorizer,
    logged: str,
) -> None:
    gateway = Gateway(authenticator=authenticator, authorizer=authorizer)
    before = len(records)
    assert not await gateway.is_allowed(Identity(user_id="u-1"), "subscribe", "patient:p-4711")
    [record] = ours(records[before:])
    assert record.rtg["reason"] == logged  # type: ignore[attr-defined]
    assert "4711" not in record.getMessage()


# -- the full scenario -----------------------------------------------------------------


def deep_text(value: object, depth: int = 0) -> str:
    """Every string ``value`` holds, recursively, and its repr."""
    if depth > 8:
        return repr(value)
    parts: list[str] = [repr(value)]
    if isinstance(value, str):
        parts.append(value)
    elif isinstance(value, bytes):
        parts.append(value.decode("utf-8", "replace"))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            parts += [deep_text(key, depth + 1), deep_text(item, depth + 1)]
    elif isinstance(value, list | tuple | set | frozenset):
        parts += [deep_text(item, depth + 1) for item in value]
    elif isinstance(value, BaseException):
        parts += [str(value), deep_text(value.args, depth + 1)]
    else:
        parts.append(str(value))
    return "\n".join(parts)


FORMATTER = logging.Formatter(
    "%(asctime)s %(levelname)s %(name)s %(module)s:%(lineno)d %(message)s %(rtg)s",
    defaults={"rtg": None},
)


def record_texts(record: logging.LogRecord) -> dict[str, str]:
    """Where a secret could show in ``record``: its message, its args, the output of a
    formatter and every attribute (``rtg`` included), each stringified recursively."""
    texts = {
        "formatted": FORMATTER.format(record),
        "getMessage()": record.getMessage(),
        "args": deep_text(record.args),
    }
    texts.update({f"__dict__[{key!r}]": deep_text(value) for key, value in vars(record).items()})
    return texts


def leaks(
    found: list[logging.LogRecord], secrets: Mapping[str, str]
) -> list[tuple[str, str, str, str]]:
    """(logger, what, where, secret name) for each secret that shows in a record."""
    out = []
    for record in found:
        rtg = getattr(record, "rtg", None)
        what = rtg.get("what", "?") if isinstance(rtg, dict) else record.msg
        for where, text in record_texts(record).items():
            for name, secret in secrets.items():
                if secret in text:
                    out.append((record.name, str(what), where, name))
    return out


def tamper(token: str) -> str:
    head, _, signature = token.rpartition(".")
    first = "B" if signature[0] == "A" else "A"
    return f"{head}.{first}{signature[1:]}"


def token_parts(name: str, token: str) -> dict[str, str]:
    """The token and its long parts (payload, signature), which must not show either."""
    payload = token.lstrip(".").split(".")[0]
    signature = token.rpartition(".")[2]
    return {name: token, f"{name} (payload)": payload, f"{name} (signature)": signature}


@attrs.frozen
class Scenario:
    secrets: dict[str, str]
    doctor: str
    nurse: str
    staff: str
    recipient: str


async def run_scenario(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> Scenario:
    """Auth failures, connects and disconnects, chat, updates, refusals, an admin
    notify, a handler crash and a shutdown, with markers in everything sensitive."""
    tag = "mk" + uuid.uuid4().hex[:10]  # "m" and "k" are not hex: no pseudonym holds it
    markers = {
        "doctor id": f"{tag}-doctor",
        "doctor name": f"Dr {tag} Doctorname",
        "nurse id": f"{tag}-nurse",
        "nurse name": f"{tag} Nursename",
        "staff id": f"{tag}-staff",
        "staff name": f"{tag} Staffname",
        "admin id": f"{tag}-admin",
        "admin name": f"{tag} Adminname",
        "recipient name": f"{tag} Recipientname",
        "expired user id": f"{tag}-expired",
        "conversation id": f"{tag}-conversation",
        "chat content": f"chat about {tag}-chatcontent",
        "patient id": f"{tag}-patient",
        "update data": f"{tag}-updatedata",
        "denied patient id": f"{tag}-deniedpatient",
        "denied room": f"{tag}-deniedroom",
        "notify title": f"{tag}-title",
        "notify message": f"{tag}-message",
        "message payload": f"{tag}-messagepayload",
        "exception text": f"{tag}-exceptiontext",
        "cookie value": f"{tag}-cookievalue",
        "tag": tag,
    }
    doctor = attrs.evolve(
        USERS["doctor"], user_id=markers["doctor id"], display_name=markers["doctor name"]
    )
    nurse = attrs.evolve(
        USERS["nurse"], user_id=markers["nurse id"], display_name=markers["nurse name"]
    )
    staff = attrs.evolve(
        USERS["staff"], user_id=markers["staff id"], display_name=markers["staff name"]
    )
    admin = attrs.evolve(
        USERS["admin"], user_id=markers["admin id"], display_name=markers["admin name"]
    )
    # The admin API takes the user id in its URL, which web servers' access logs
    # record; this user's id is therefore not a marker (see the test).
    recipient = Identity(
        user_id="rcpt" + uuid.uuid4().hex[:10], display_name=markers["recipient name"]
    )
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    expired_identity = attrs.evolve(doctor, user_id=markers["expired user id"], expires_at=past)
    tokens = {
        "doctor token": authenticator.issue(doctor),
        "nurse token": authenticator.issue(nurse),
        "staff token": authenticator.issue(staff),
        "admin token": authenticator.issue(admin),
        "recipient token": authenticator.issue(recipient),
        "expired token": authenticator.issue(expired_identity),
        "cookie token": authenticator.issue(doctor, ttl=300),
    }
    tokens["tampered token"] = tamper(tokens["doctor token"])

    async def crash(conn: Connection, data: dict[str, Any]) -> None:
        raise RuntimeError(f"database said {markers['exception text']} {data}")

    # Any origin may connect with a token, so that the handshake with a cookie from a
    # foreign origin reaches the gateway, which must refuse it (reason "origin").
    gateway = clinic_gateway(
        authenticator,
        config=quick_config(allowed_origins="*"),
        namespaces=[
            MainNamespace(on_message=crash),
            NotificationsNamespace(),
            ChatNamespace(),
            UpdatesNamespace(),
        ],
    )
    admin_api = AdminAPI(gateway)
    async with clients.serve(gateway, server_kind, admin_api) as server:
        url = server.url
        # -- authentication failures
        refusals = [
            await clients.refusal(url),
            await clients.refusal(url, auth={"token": tokens["tampered token"]}),
            await clients.refusal(url, auth={"token": tokens["expired token"]}),
            await clients.refusal(
                url,
                headers={
                    "Cookie": (
                        f"rtg_session={tokens['cookie token']}; theme={markers['cookie value']}"
                    ),
                    "Origin": "https://evil.example",
                },
            ),
        ]
        assert [refusal.data["data"]["reason"] for refusal in refusals] == [
            "missing",
            "bad_signature",
            "expired",
            "origin",
        ]

        # -- connections
        doc, doc_inbox = await connect_as(clients, url, tokens["doctor token"])
        nur, nur_inbox = await connect_as(clients, url, tokens["nurse token"])
        stf, _ = await connect_as(clients, url, tokens["staff token"], namespaces=("/", "/updates"))
        _, rcpt_inbox = await connect_as(
            clients, url, tokens["recipient token"], namespaces=("/notifications",)
        )

        # -- chat
        conversation = markers["conversation id"]
        for client in (doc, nur):
            ack = await call(client, "join:conversation", conversation, "/chat")
            assert ack["success"] is True, ack
        sent = await call(
            doc,
            "send:message",
            {"conversationId": conversation, "content": markers["chat content"]},
            "/chat",
        )
        assert sent["success"] is True, sent
        [delivered] = await nur_inbox.wait("new:message", "/chat")
        assert delivered["content"] == markers["chat content"]
        assert delivered["senderName"] == markers["doctor name"]

        # -- updates
        ack = await call(doc, "subscribe:patient", markers["patient id"], "/updates")
        assert ack["success"] is True, ack
        await gateway.publish_update(
            "patient", markers["patient id"], "changed", {"note": markers["update data"]}
        )
        [update] = await doc_inbox.wait("patient:update", "/updates")
        assert update["data"] == {"note": markers["update data"]}

        # -- refusals of a connected user
        ack = await call(stf, "subscribe:patient", markers["denied patient id"], "/updates")
        assert ack["success"] is False, ack
        assert ack["code"] == "forbidden", ack
        ack = await call(stf, "join:room", markers["denied room"])
        assert ack["success"] is False, ack
        assert ack["code"] == "forbidden", ack

        # -- an admin notify over HTTP
        notify = f"{url}{admin_api.prefix}/notify/{recipient.user_id}"
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                notify,
                json={"title": markers["notify title"], "message": markers["notify message"]},
                headers={"Authorization": f"Bearer {tokens['admin token']}"},
            ) as answer,
        ):
            assert answer.status == 200, await answer.text()
        [note] = await rcpt_inbox.wait("notification", "/notifications")
        assert note["title"] == markers["notify title"]

        # -- a handler that crashes
        ack = await call(doc, "message", {"text": markers["message payload"]})
        assert ack["success"] is False, ack
        assert ack["code"] == "internal", ack

        # -- a disconnect, then the shutdown
        await nur.disconnect()
        await until(
            lambda: all(
                conn.identity.user_id != nurse.user_id for conn in gateway.connections.values()
            )
        )
        await gateway.shutdown(grace=0)
        assert gateway.connections == {}

    secrets = dict(markers)
    for name, token in tokens.items():
        secrets.update(token_parts(name, token))
    return Scenario(
        secrets=secrets,
        doctor=doctor.user_id,
        nurse=nurse.user_id,
        staff=staff.user_id,
        recipient=recipient.user_id,
    )


async def test_no_secret_reaches_any_log_record(
    records: list[logging.LogRecord],
    clients: Clients,
    authenticator: SignedTokenAuthenticator,
    server_kind: str,
) -> None:
    scenario = await run_scenario(clients, authenticator, server_kind)
    found = list(records)

    # Scope: every record captured, whatever its logger; nothing is left out. With the
    # root at DEBUG, what shows besides realtime_gateway's own records is aiohttp's
    # access log (request lines) and asyncio's selector notice. No raw websocket frames
    # show: uvicorn hands the websockets library its "uvicorn.error" logger, which the
    # test servers keep at WARNING (and whose records stop at "uvicorn", which does not
    # propagate; the record factory would still see them, and sees none).
    found_leaks = leaks(found, scenario.secrets)
    summary = sorted({(name, what, secret) for name, what, _, secret in found_leaks})
    assert found_leaks == [], f"secrets in log records (logger, what, secret): {summary}"

    # The scenario logged what it should have, so the check above is not vacuous.
    rtg = [record.rtg for record in ours(found)]  # type: ignore[attr-defined]
    whats = {fields["what"] for fields in rtg}
    assert {
        "auth_failed",
        "connect",
        "disconnect",
        "access_denied",
        "handler_failed",
        "shutdown_started",
        "shutdown_finished",
    } <= whats
    assert sorted(fields["reason"] for fields in rtg if fields["what"] == "auth_failed") == [
        "bad_signature",
        "expired",
        "missing",
        "origin",
    ]
    everyone = {scenario.doctor, scenario.nurse, scenario.staff, scenario.recipient}
    aliases = {pseudonym(user_id) for user_id in everyone}
    assert len(aliases) == len(everyone)
    assert {fields["user"] for fields in rtg if fields["what"] == "connect"} == aliases
    assert {fields["user"] for fields in rtg if fields["what"] == "disconnect"} == aliases
    assert all(
        re.fullmatch(r"u-[0-9a-f]{16}", fields["user"]) for fields in rtg if "user" in fields
    )
    denied = {
        fields["action"]: (fields["user"], fields["target"])
        for fields in rtg
        if fields["what"] == "access_denied"
    }
    assert denied == {
        "subscribe": (pseudonym(scenario.staff), "patient:*"),
        "join": (pseudonym(scenario.staff), "*"),
    }
    [crash] = [fields for fields in rtg if fields["what"] == "handler_failed"]
    assert (crash["event"], crash["error"]) == ("message", "RuntimeError")

    # The recipient of the admin notify has a plain user id because the admin API takes
    # it in the URL, and a web server's access log (aiohttp.access here; uvicorn.access,
    # which the test server keeps quiet) records request lines: that is the host's log,
    # not this library's. It must show nowhere else.
    showing = {
        record.name
        for record in found
        if any(scenario.recipient in text for text in record_texts(record).values())
    }
    assert showing <= {"aiohttp.access", "uvicorn.access"}


def test_the_scan_finds_a_secret_wherever_a_record_holds_it(
    records: list[logging.LogRecord],
) -> None:
    secret = "mk" + uuid.uuid4().hex[:10]
    quiet = logging.getLogger("tests.test_logging.quiet")
    quiet.propagate = False  # like uvicorn's loggers: only the record factory sees it
    try:
        logging.getLogger("tests.test_logging").info("in the message %s", secret)
        logging.getLogger("tests.test_logging").info("plain", extra={"rtg": {"id": [secret]}})
        logging.getLogger("tests.test_logging").info("plain", extra={"other": {secret: 1}})
        quiet.warning("%s", {"nested": (secret,)})
    finally:
        quiet.propagate = True
    where = {(name, place) for name, _, place, _ in leaks(records, {"secret": secret})}
    assert ("tests.test_logging", "getMessage()") in where
    assert ("tests.test_logging", "args") in where
    assert ("tests.test_logging", "formatted") in where
    assert ("tests.test_logging", "__dict__['rtg']") in where
    assert ("tests.test_logging", "__dict__['other']") in where
    assert ("tests.test_logging.quiet", "args") in where
