"""Mistakes a new user makes fail when the thing is defined or registered, with a
message that says what is wrong, instead of being accepted and failing later."""

from __future__ import annotations

import functools
from typing import Any

import attrs
import pytest
from aiohttp import web

from realtime_gateway import (
    AdminAPI,
    AllowAll,
    AnyOf,
    ConfigurationError,
    Connection,
    Gateway,
    GatewayConfig,
    GatewayNamespace,
    Identity,
    PermissionDenied,
    Rule,
    RuleAuthorizer,
    SignedTokenAuthenticator,
    event,
    reference_rules,
)

from .conftest import quick_config


def gateway(authenticator: SignedTokenAuthenticator) -> Gateway:
    return Gateway(authenticator=authenticator, authorizer=AllowAll(), config=quick_config())


# -- handlers and payload specs -------------------------------------------------------


def test_a_plain_function_handler_is_refused_by_event() -> None:
    with pytest.raises(TypeError, match="'note:add' must be a coroutine function"):

        class Notes(GatewayNamespace):
            @event("note:add")  # type: ignore[type-var]
            def add(self, conn: Connection, payload: Any) -> None:
                return None


def test_a_plain_function_handler_is_refused_by_add_event() -> None:
    def add(conn: Connection, payload: Any) -> None:
        return None

    namespace = GatewayNamespace("/notes")
    with pytest.raises(TypeError, match="'note:add' must be a coroutine function"):
        namespace.add_event("note:add", add)  # type: ignore[arg-type]
    assert "note:add" not in namespace.event_names


def test_a_coroutine_callable_object_is_a_handler() -> None:
    class Handler:
        async def __call__(self, conn: Connection, payload: Any) -> None:
            return None

    namespace = GatewayNamespace("/notes")
    namespace.add_event("note:add", Handler())
    assert "note:add" in namespace.event_names


def test_a_wrapped_coroutine_function_is_a_handler() -> None:
    async def add(conn: Connection, payload: Any) -> None:
        return None

    @functools.wraps(add)
    def logged(conn: Connection, payload: Any) -> Any:
        return add(conn, payload)

    namespace = GatewayNamespace("/notes")
    namespace.add_event("note:add", logged)
    assert "note:add" in namespace.event_names


def test_a_type_name_in_quotes_is_refused() -> None:
    with pytest.raises(TypeError, match=r"got the string 'str' \(write payload=str"):
        event("note:add", payload="str")  # type: ignore[arg-type]
    namespace = GatewayNamespace("/notes")

    async def add(conn: Connection, payload: Any) -> None:
        return None

    with pytest.raises(TypeError, match="got the string 'int'"):
        namespace.add_event("note:add", add, payload="int")  # type: ignore[arg-type]


@attrs.frozen
class Later:
    # Names a class this module defines only below: resolved at registration.
    child: Child | None = None


@attrs.frozen
class Child:
    name: str


@attrs.frozen
class Bad:
    at: set[str]


def test_payload_annotations_are_resolved_when_the_namespace_is_built() -> None:
    class Tree(GatewayNamespace):
        @event("later", payload=Later)
        async def later(self, conn: Connection, value: Later) -> None:
            return None

    Tree("/tree")  # no error: Child exists by now

    class Broken(GatewayNamespace):
        @event("bad", payload=Bad)
        async def bad(self, conn: Connection, value: Bad) -> None:
            return None

    with pytest.raises(ConfigurationError, match=r"Bad\.at: set\[str\] is not a type"):
        Broken("/broken")


# -- rules and authorizers ------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["ward:{", "ward:}", "ward:{1x}", "{ward", "ward:{a-b}"])
def test_a_pattern_with_a_stray_brace_is_refused(pattern: str) -> None:
    with pytest.raises(ConfigurationError, match="a brace that is not part of a placeholder"):
        Rule(actions="join", target=pattern)


def test_placeholders_still_compile() -> None:
    rule = Rule(actions="join", target="ward:{ward_id}:bed:{bed}")
    assert rule.match("join", "ward:3:bed:7") == {"ward_id": "3", "bed": "7"}


async def test_rules_add_only_to_rules() -> None:
    with pytest.raises(TypeError, match=r"not to AllowAll: use AnyOf\(rules, other\)"):
        reference_rules() + AllowAll()  # type: ignore[operator]
    combined = reference_rules() + RuleAuthorizer([Rule(actions="join", target="ward:{w}")])
    await combined.authorize(Identity(user_id="u"), "join", "ward:3")
    either = AnyOf(reference_rules(), AllowAll())
    await either.authorize(Identity(user_id="u"), "join", "anything")
    with pytest.raises(PermissionDenied):
        await reference_rules().authorize(Identity(user_id="u"), "join", "anything")


# -- mounting -------------------------------------------------------------------------


def test_attaching_the_admin_api_twice_is_refused(
    authenticator: SignedTokenAuthenticator,
) -> None:
    gw = gateway(authenticator)
    app = web.Application()
    admin = AdminAPI(gw)
    admin.attach(app)
    with pytest.raises(ConfigurationError, match=r"attached to this app at /api/socket\.io"):
        admin.attach(app)
    with pytest.raises(ConfigurationError, match="already attached"):
        AdminAPI(gw).attach(app)
    AdminAPI(gw, prefix="/ops").attach(app)  # another prefix is another API
    admin.attach(web.Application())  # and another app another mount


@pytest.mark.parametrize(
    ("first", "second"), [("attach", "attach"), ("asgi", "attach"), ("attach", "asgi")]
)
def test_mounting_a_gateway_twice_says_so(
    authenticator: SignedTokenAuthenticator, first: str, second: str
) -> None:
    gw = gateway(authenticator)

    def mount(how: str) -> None:
        if how == "attach":
            gw.attach(web.Application())
        else:
            gw.asgi_app()

    mount(first)
    with pytest.raises(ConfigurationError) as caught:
        mount(second)
    assert caught.value.field == "gateway"
    assert "already mounted (attach() or asgi_app() was called before)" in str(caught.value)
    assert "async_mode" not in str(caught.value)


# -- settings that cannot work --------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "minimum"),
    [
        ("cluster_ttl", 0.1, "1"),
        ("cluster_canary_interval", 0.01, "0.1"),
        ("ping_interval", 0.5, "1"),
        ("ping_timeout", 0.2, "1"),
        ("revocation_ttl", 0.5, "1"),
        ("reconnect_window", 0.01, "0.1"),
        ("log_repeat_interval", 0.001, "0.1"),
    ],
)
def test_settings_below_their_minimum_are_refused(field: str, value: float, minimum: str) -> None:
    too_little: dict[str, Any] = {field: value}
    with pytest.raises(ConfigurationError, match=f"must be at least {minimum} s") as caught:
        GatewayConfig(**too_little)
    assert caught.value.field == field
    enough: dict[str, Any] = {field: float(minimum)}
    GatewayConfig(**enough)
