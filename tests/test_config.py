"""GatewayConfig validation, Identity validation and Handshake construction."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import attrs
import pytest

from realtime_gateway import ConfigurationError, GatewayConfig, Handshake, Identity

# --- GatewayConfig -------------------------------------------------------------------------


def test_defaults() -> None:
    config = GatewayConfig()
    assert config.ping_interval == 25
    assert config.ping_timeout == 20
    assert config.connect_timeout == 45
    assert config.path == "/socket.io"
    assert config.transports == ("polling", "websocket")
    assert config.allowed_origins is None
    assert not config.allows_any_origin
    assert config.compression is True
    assert config.max_event_size <= config.max_payload_size
    assert config.rate_limit is not None
    assert config.rate_limit > 0
    assert config.max_pending_output == 1_048_576


def test_config_is_frozen() -> None:
    config = GatewayConfig()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.ping_interval = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://app.example.com", ("https://app.example.com",)),
        (
            ["https://a.example.com", "http://localhost:3000"],
            ("https://a.example.com", "http://localhost:3000"),
        ),
        ("*", ("*",)),
        ([], ()),
    ],
)
def test_allowed_origins_are_normalised_to_a_tuple(
    value: str | list[str], expected: tuple[str, ...]
) -> None:
    assert GatewayConfig(allowed_origins=value).allowed_origins == expected


def test_allows_any_origin() -> None:
    assert GatewayConfig(allowed_origins=["https://a.example.com", "*"]).allows_any_origin
    assert not GatewayConfig(allowed_origins=["https://a.example.com"]).allows_any_origin


def test_valid_non_defaults() -> None:
    # Passed through a dict: the attrs plugin cannot type ``transports`` (converter=tuple).
    kwargs: dict[str, Any] = {"transports": ["websocket"]}
    config = GatewayConfig(
        ping_interval=1.5,
        path="/rt",
        max_payload_size=1000,
        max_event_size=1000,
        compression=False,
        rate_limit=None,
        rate_burst=1,
        **kwargs,
    )
    assert config.transports == ("websocket",)
    assert config.rate_limit is None
    assert config.max_event_size == config.max_payload_size == 1000


NUMERIC_FIELDS = (
    "ping_interval",
    "ping_timeout",
    "connect_timeout",
    "max_payload_size",
    "max_event_size",
    "rate_limit",
    "rate_burst",
    "max_pending_output",
    "user_rate_limit",
    "user_rate_burst",
    "rate_limit_disconnect_after",
    "max_rooms_per_socket",
    "max_sockets_per_user",
)

BAD_FIELDS: list[tuple[str, object]] = [
    ("allowed_origins", "https://app.example.com/path"),
    ("allowed_origins", "https://app.example.com/"),
    ("allowed_origins", "https://app.example.com?x=1"),
    ("allowed_origins", "ftp://app.example.com"),
    ("allowed_origins", "ws://app.example.com"),
    ("allowed_origins", "app.example.com"),
    ("allowed_origins", "https://"),
    ("allowed_origins", ["https://ok.example.com", "javascript:alert(1)"]),
    ("allowed_origins", [42]),
    *[(name, value) for name in NUMERIC_FIELDS for value in (0, -1, True, False, "10")],
    ("max_payload_size", 1.5),
    ("max_event_size", 100.0),
    ("rate_burst", 2.5),
    ("max_pending_output", 65536.0),
    ("max_pending_output", None),
    ("path", "socket.io"),
    ("path", "/"),
    ("path", ""),
    ("path", "/socket io"),
    ("path", 5),
    ("transports", []),
    ("transports", ["carrier-pigeon"]),
    ("transports", ["websocket", "smoke-signals"]),
    ("compression", 1),
    ("compression", "yes"),
    ("compression", None),
    *[
        (name, value)
        for name in ("refresh_ahead", "expiry_grace")
        for value in (-1, -0.5, True, "10", None, float("inf"), float("nan"))
    ],
]


@pytest.mark.parametrize(
    ("field", "value"), BAD_FIELDS, ids=[f"{field}={value!r}" for field, value in BAD_FIELDS]
)
def test_bad_field(field: str, value: object) -> None:
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises(ConfigurationError) as info:
        GatewayConfig(**kwargs)
    assert info.value.field == field
    assert field in str(info.value)
    assert isinstance(info.value, ValueError)


def test_event_size_may_not_exceed_payload_size() -> None:
    with pytest.raises(ConfigurationError) as info:
        GatewayConfig(max_payload_size=1000, max_event_size=1001)
    assert info.value.field == "max_event_size"
    assert "max_event_size" in str(info.value)
    assert "max_payload_size" in str(info.value)


def test_default_event_size_must_fit_a_small_payload_size() -> None:
    with pytest.raises(ConfigurationError) as info:
        GatewayConfig(max_payload_size=1024)
    assert info.value.field == "max_event_size"


# --- Identity ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("user_id", "", ValueError),
        ("user_id", 7, ValueError),
        ("expires_at", dt.datetime(2030, 1, 1), ValueError),  # naive
        ("expires_at", "2030-01-01T00:00:00Z", ValueError),
        ("roles", ["nurse", ""], ValueError),
        ("permissions", [3], ValueError),
        ("session_id", 5, TypeError),
        ("display_name", ["Joy"], TypeError),
    ],
    ids=repr,
)
def test_identity_validation(field: str, value: object, error: type[Exception]) -> None:
    kwargs: dict[str, Any] = {"user_id": "u1", field: value}
    with pytest.raises(error, match=field):
        Identity(**kwargs)


def test_identity_roles_from_a_single_string() -> None:
    identity = Identity(user_id="u1", roles="admin", permissions="view:patient")
    assert identity.roles == frozenset({"admin"})
    assert identity.permissions == frozenset({"view:patient"})


def test_identity_helpers() -> None:
    identity = Identity(user_id="u1", roles=["nurse", "admin"], permissions={"a", "b"})
    assert identity.has_role("nurse")
    assert identity.has_role("billing", "admin")
    assert not identity.has_role("billing")
    assert identity.has_permissions("a", "b")
    assert not identity.has_permissions("a", "c")
    assert identity.name == "u1"
    assert Identity(user_id="u1", display_name="Joy").name == "Joy"


def test_identity_expiry() -> None:
    moment = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    identity = Identity(user_id="u1", expires_at=moment)
    assert not identity.is_expired(moment - dt.timedelta(seconds=1))
    assert identity.is_expired(moment)
    assert not identity.is_expired()
    assert not Identity(user_id="u1").is_expired(moment)
    assert Identity(user_id="u1", expires_at=dt.datetime(2000, 1, 1, tzinfo=dt.UTC)).is_expired()


def test_identity_attributes_are_a_read_only_copy() -> None:
    source = {"ward": "3B"}
    identity = Identity(user_id="u1", attributes=source)
    source["ward"] = "4C"
    assert identity.attributes["ward"] == "3B"
    with pytest.raises(TypeError):
        identity.attributes["ward"] = "5D"  # type: ignore[index]
    assert hash(identity) == hash(Identity(user_id="u1"))


# --- Handshake -----------------------------------------------------------------------------


def test_handshake_headers_are_case_insensitive() -> None:
    handshake = Handshake(namespace="/", headers={"X-Request-Id": "abc"})
    assert handshake.headers["x-request-id"] == "abc"
    assert handshake.headers["X-REQUEST-ID"] == "abc"
    assert handshake.headers.get("x-missing") is None


def test_handshake_mappings_are_read_only_copies() -> None:
    auth = {"token": "t"}
    handshake = Handshake(namespace="/", auth=auth, cookies={"a": "b"}, query={"q": "1"})
    auth["token"] = "changed"
    assert handshake.auth["token"] == "t"
    with pytest.raises(TypeError):
        handshake.cookies["a"] = "c"  # type: ignore[index]


@pytest.mark.parametrize(
    ("authorization", "expected"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        ("Basic dTE6cHc=", None),
        ("Bearer", None),
        ("Bearer    ", None),
        ("Bearerabc", None),
        ("", None),
        ("Token abc", None),
    ],
)
def test_bearer_token(authorization: str, expected: str | None) -> None:
    handshake = Handshake(namespace="/", headers={"authorization": authorization})
    assert handshake.bearer_token == expected


def test_bearer_token_absent() -> None:
    assert Handshake(namespace="/").bearer_token is None


ENVIRON: dict[str, Any] = {
    "HTTP_COOKIE": "rtg_session=abc.def.ghi; theme=dark",
    "HTTP_ORIGIN": "https://app.example.com",
    "HTTP_AUTHORIZATION": "Bearer tok.en.x",
    "HTTP_HOST": "gw.example.com",
    "HTTP_X_FORWARDED_FOR": "203.0.113.9",
    "QUERY_STRING": "EIO=4&transport=websocket&room=a%3Ab",
    "CONTENT_TYPE": "application/json",
    "REMOTE_ADDR": "10.0.0.1",
    "REQUEST_METHOD": "GET",
    "wsgi.url_scheme": "https",
}


def test_handshake_from_environ() -> None:
    handshake = Handshake.from_environ("/chat", ENVIRON, {"token": "t1"})
    assert handshake.namespace == "/chat"
    assert handshake.cookies == {"rtg_session": "abc.def.ghi", "theme": "dark"}
    assert handshake.origin == "https://app.example.com"
    assert handshake.bearer_token == "tok.en.x"
    assert handshake.headers["authorization"] == "Bearer tok.en.x"
    assert handshake.headers["X-Forwarded-For"] == "203.0.113.9"
    assert handshake.headers["content-type"] == "application/json"
    assert "REQUEST-METHOD" not in handshake.headers
    assert handshake.query == {"EIO": "4", "transport": "websocket", "room": "a:b"}
    assert handshake.auth == {"token": "t1"}
    assert handshake.host == "gw.example.com"
    assert handshake.scheme == "https"
    assert handshake.remote_address == "10.0.0.1"


def test_handshake_from_minimal_environ() -> None:
    handshake = Handshake.from_environ("/", {})
    assert handshake.cookies == {}
    assert handshake.query == {}
    assert handshake.auth == {}
    assert handshake.origin is None
    assert handshake.host is None
    assert handshake.scheme == "http"
    assert handshake.remote_address is None


@pytest.mark.parametrize("auth", [None, "token-string", ["token"], 42])
def test_handshake_from_environ_ignores_non_mapping_auth(auth: object) -> None:
    assert Handshake.from_environ("/", ENVIRON, auth).auth == {}


def test_remote_address_prefers_the_framework_request() -> None:
    aiohttp_environ = {**ENVIRON, "aiohttp.request": SimpleNamespace(remote="192.0.2.1")}
    assert Handshake.from_environ("/", aiohttp_environ).remote_address == "192.0.2.1"
    asgi_environ = {**ENVIRON, "asgi.scope": {"client": ("198.51.100.2", 5555)}}
    assert Handshake.from_environ("/", asgi_environ).remote_address == "198.51.100.2"


def test_handshake_from_http() -> None:
    handshake = Handshake.from_http(
        path="/admin/sessions",
        headers={
            "cookie": "rtg_session=abc",
            "origin": "https://app.example.com",
            "Host": "gw.example.com",
        },
        query={"user": "u1"},
        remote_address="10.0.0.2",
        scheme="https",
    )
    assert handshake.namespace == "/admin/sessions"
    assert handshake.cookies == {"rtg_session": "abc"}
    assert handshake.origin == "https://app.example.com"
    assert handshake.host == "gw.example.com"
    assert handshake.query == {"user": "u1"}
    assert handshake.auth == {}
    assert handshake.remote_address == "10.0.0.2"
    assert handshake.scheme == "https"


def test_handshake_repr_hides_credentials() -> None:
    handshake = Handshake(
        namespace="/",
        headers={"Authorization": "Bearer secret-token"},
        cookies={"rtg_session": "secret-cookie"},
        auth={"token": "secret-auth"},
    )
    assert "secret" not in repr(handshake)
