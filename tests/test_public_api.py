"""The package's public surface: exports, typing marker, version and error tree."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import re

import pytest

import realtime_gateway
from realtime_gateway import (
    AuthenticationFailed,
    AuthFailureReason,
    ConfigurationError,
    GatewayError,
    GatewayNotRunning,
    InvalidPayload,
    LimitExceeded,
    NotFound,
    PermissionDenied,
    RateLimited,
    _exceptions,
)

PUBLIC_ERRORS: dict[type[GatewayError], str] = {
    GatewayError: "internal",
    AuthenticationFailed: "unauthenticated",
    PermissionDenied: "forbidden",
    InvalidPayload: "invalid_payload",
    NotFound: "not_found",
    RateLimited: "rate_limited",
    LimitExceeded: "limit_exceeded",
    GatewayNotRunning: "unavailable",
}


def test_all_is_sorted_and_unique() -> None:
    names = realtime_gateway.__all__
    assert names == sorted(names)
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", realtime_gateway.__all__)
def test_every_exported_name_exists(name: str) -> None:
    obj = getattr(realtime_gateway, name)
    assert obj is not None
    if callable(obj):  # classes and functions; constants are plain data
        assert obj.__module__.startswith("realtime_gateway")


def test_star_import_yields_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from realtime_gateway import *", namespace)  # noqa: S102 (a fixed string)
    exported = {name for name in namespace if name != "__builtins__"}
    assert exported == set(realtime_gateway.__all__)


def test_public_classes_are_exported() -> None:
    # Everything a user needs for the README quick start is reachable from the top.
    for name in (
        "Gateway",
        "GatewayNamespace",
        "Rule",
        "RuleAuthorizer",
        "SignedTokenAuthenticator",
        "event",
        "Handshake",
        "Identity",
    ):
        assert name in realtime_gateway.__all__


def test_py_typed_ships_in_the_package() -> None:
    marker = importlib.resources.files("realtime_gateway") / "py.typed"
    assert marker.is_file()


def test_version_matches_installed_metadata() -> None:
    assert realtime_gateway.__version__ == importlib.metadata.version("realtime-gateway")


@pytest.mark.parametrize(
    ("error", "code"),
    list(PUBLIC_ERRORS.items()),
    ids=lambda value: getattr(value, "__name__", str(value)),
)
def test_error_codes(error: type[GatewayError], code: str) -> None:
    assert issubclass(error, GatewayError)
    assert error.code == code


def test_every_exported_exception_is_a_gateway_error() -> None:
    exported = [getattr(realtime_gateway, name) for name in realtime_gateway.__all__]
    exceptions = [obj for obj in exported if isinstance(obj, type) and issubclass(obj, Exception)]
    # Besides the errors clients see: a setting, and a recovery store's two answers.
    store_answers = {realtime_gateway.TooManyMissed, realtime_gateway.OffsetLost}
    assert set(exceptions) == {*PUBLIC_ERRORS, ConfigurationError, *store_answers}
    for exc_type in exceptions:
        assert issubclass(exc_type, GatewayError)


def test_codes_match_the_documented_hierarchy() -> None:
    doc = _exceptions.__doc__
    assert doc is not None
    documented = dict(re.findall(r"(\w+)\s+code \"(\w+)\"", doc))
    # Every documented code is the class's code, and every coded error is documented.
    assert documented == {error.__name__: code for error, code in PUBLIC_ERRORS.items()}
    subclasses = set(re.findall(r"\+-- (\w+)", doc))
    expected = {error.__name__ for error in PUBLIC_ERRORS if error is not GatewayError}
    assert subclasses == expected | {"ConfigurationError"}


def test_configuration_error_names_its_field() -> None:
    exc = ConfigurationError("ping_interval", "must be positive")
    assert isinstance(exc, GatewayError)
    assert isinstance(exc, ValueError)
    assert exc.field == "ping_interval"
    assert exc.problem == "must be positive"
    assert str(exc) == "ping_interval: must be positive"
    assert exc.message == str(exc)


@pytest.mark.parametrize("reason", sorted(AuthFailureReason.ALL))
def test_authentication_failed_reasons_have_safe_messages(reason: str) -> None:
    exc = AuthenticationFailed(reason)
    assert exc.reason == reason
    assert exc.code == "unauthenticated"
    assert exc.message.startswith("Authentication")


def test_authentication_reason_categories() -> None:
    expected = {
        "missing",
        "malformed",
        "bad_signature",
        "expired",
        "rejected",
        "revoked",
        "origin",
        "error",
    }
    assert expected == AuthFailureReason.ALL


def test_authentication_failed_refuses_unknown_reasons() -> None:
    with pytest.raises(ValueError, match="unknown authentication failure reason"):
        AuthenticationFailed("because")


def test_authentication_failed_custom_message() -> None:
    exc = AuthenticationFailed(AuthFailureReason.REJECTED, "Session ended")
    assert str(exc) == "Session ended"
    assert exc.reason == "rejected"


def test_permission_denied_carries_action_target_reason() -> None:
    exc = PermissionDenied("join", "patient:42", reason="no rule matches")
    assert (exc.action, exc.target, exc.reason) == ("join", "patient:42", "no rule matches")
    assert str(exc) == "Not allowed to join patient:42"
    assert str(PermissionDenied("admin")) == "Not allowed to admin"
    assert PermissionDenied("admin").reason == "no rule allows it"


def test_invalid_payload_names_field() -> None:
    exc = InvalidPayload("Missing field 'body'", field="body")
    assert exc.field == "body"
    assert exc.code == "invalid_payload"
    assert InvalidPayload("bad").field is None
