"""Authorizers: the trivial ones, their composition and the rule engine."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from realtime_gateway import (
    AllOf,
    AllowAll,
    AnyOf,
    Authorizer,
    ConfigurationError,
    DenyAll,
    Identity,
    PermissionDenied,
    Rule,
    RuleAuthorizer,
    param_is_role,
    param_is_user,
)
from realtime_gateway._authz import RuleCheck

NO_RULE = "no rule matches"
NOT_QUALIFIED = "a matching rule's requirements are not met"

NURSE = Identity(user_id="u1", roles={"nurse"}, permissions={"view:patient"})
BILLING = Identity(user_id="u2", roles={"billing"})
ADMIN = Identity(user_id="root", roles={"admin"}, permissions={"view:patient", "edit:patient"})
NOBODY = Identity(user_id="u9")


async def verdict(
    authorizer: Authorizer, identity: Identity, action: str, target: str
) -> str | None:
    """``None`` if allowed, else the refusal's reason (checking the refusal's details)."""
    denied: PermissionDenied | None = None
    try:
        await authorizer.authorize(identity, action, target)
    except PermissionDenied as exc:
        denied = exc
    if denied is None:
        return None
    assert (denied.action, denied.target) == (action, target)
    assert denied.code == "forbidden"
    return denied.reason


class Recorder:
    """An authorizer that allows or refuses as told and records what it was asked."""

    def __init__(self, allow: bool, reason: str = "recorder says no") -> None:
        self.allow = allow
        self.reason = reason
        self.calls: list[tuple[str, str, str]] = []

    async def authorize(self, identity: Identity, action: str, target: str) -> None:
        self.calls.append((identity.user_id, action, target))
        if not self.allow:
            raise PermissionDenied(action, target, reason=self.reason)


# --- Trivial authorizers and composition ---------------------------------------------------


async def test_allow_all() -> None:
    assert await verdict(AllowAll(), NOBODY, "admin", "/admin/kick") is None


async def test_deny_all() -> None:
    assert await verdict(DenyAll(), ADMIN, "connect", "/") == "deny all"


async def test_all_of_allows_only_when_every_authorizer_allows() -> None:
    assert await verdict(AllOf(AllowAll(), AllowAll()), NOBODY, "join", "r") is None
    assert await verdict(AllOf(AllowAll(), DenyAll()), NOBODY, "join", "r") == "deny all"


async def test_all_of_raises_the_first_refusal_and_stops() -> None:
    first, second, third = Recorder(True), Recorder(False, "second"), Recorder(False, "third")
    assert await verdict(AllOf(first, second, third), NURSE, "join", "r") == "second"
    assert first.calls == [("u1", "join", "r")]
    assert second.calls == [("u1", "join", "r")]
    assert third.calls == []


async def test_any_of_allows_when_one_allows_and_stops() -> None:
    first, second, third = Recorder(False), Recorder(True), Recorder(True)
    assert await verdict(AnyOf(first, second, third), NURSE, "send", "r") is None
    assert len(first.calls) == len(second.calls) == 1
    assert third.calls == []


async def test_any_of_raises_the_first_refusal_when_all_refuse() -> None:
    authorizer = AnyOf(Recorder(False, "first"), DenyAll(), Recorder(False, "third"))
    assert await verdict(authorizer, NURSE, "send", "r") == "first"


async def test_composition_nests() -> None:
    rules = RuleAuthorizer([Rule(actions="join", target="ward:{ward}", roles="nurse")])
    authorizer = AllOf(AnyOf(DenyAll(), rules), AllowAll())
    assert await verdict(authorizer, NURSE, "join", "ward:3") is None
    assert await verdict(authorizer, BILLING, "join", "ward:3") == "deny all"


@pytest.mark.parametrize("combinator", [AllOf, AnyOf])
def test_combinators_need_an_authorizer(combinator: type[AllOf] | type[AnyOf]) -> None:
    with pytest.raises(ConfigurationError) as info:
        combinator()
    assert info.value.field == "authorizers"


def test_builtins_satisfy_the_protocol() -> None:
    for candidate in (
        AllowAll(),
        DenyAll(),
        AllOf(AllowAll()),
        AnyOf(DenyAll()),
        RuleAuthorizer([]),
        Recorder(True),
    ):
        assert isinstance(candidate, Authorizer)
    assert not isinstance(object(), Authorizer)


# --- RuleAuthorizer ------------------------------------------------------------------------

CLINIC = RuleAuthorizer(
    [
        Rule(actions="connect", target="*"),
        Rule(actions="subscribe", target="patient:{patient_id}", permissions="view:patient"),
        Rule(actions=("join", "send"), target="user:{user_id}", when=param_is_user("user_id")),
        Rule(actions="join", target="role:{role}", when=param_is_role("role")),
        Rule(actions="join", target="channel:billing", roles=("billing", "admin")),
        Rule(actions="join", target="lobby.main"),
        Rule(actions="*", target="admin:*", roles="admin"),
        Rule(
            actions="edit",
            target="patient:{patient_id}:notes",
            roles="nurse",
            permissions=("view:patient", "edit:patient"),
        ),
    ]
)

CASES: list[tuple[Identity, str, str, str | None]] = [
    # "*" matches every target, namespaces included.
    (NOBODY, "connect", "/", None),
    (NURSE, "connect", "/chat", None),
    (NOBODY, "connect", "", None),
    # A placeholder plus a required permission.
    (NURSE, "subscribe", "patient:42", None),
    (ADMIN, "subscribe", "patient:p-7", None),
    (BILLING, "subscribe", "patient:42", NOT_QUALIFIED),
    # Placeholders match one non-empty segment, never across ":".
    (NURSE, "subscribe", "patient:42:notes", NO_RULE),
    (NURSE, "subscribe", "patient:", NO_RULE),
    (NURSE, "subscribe", "patients:42", NO_RULE),
    (NURSE, "subscribe", "xpatient:42", NO_RULE),
    # The action must be one the rule names.
    (NURSE, "join", "patient:42", NO_RULE),
    # param_is_user: only your own user room.
    (NURSE, "join", "user:u1", None),
    (NURSE, "send", "user:u1", None),
    (NURSE, "join", "user:u2", NOT_QUALIFIED),
    (NURSE, "subscribe", "user:u1", NO_RULE),
    # param_is_role: only rooms of roles you hold.
    (NURSE, "join", "role:nurse", None),
    (NURSE, "join", "role:admin", NOT_QUALIFIED),
    (ADMIN, "join", "role:admin", None),
    # Literal targets match exactly; any of the listed roles will do.
    (BILLING, "join", "channel:billing", None),
    (ADMIN, "join", "channel:billing", None),
    (NURSE, "join", "channel:billing", NOT_QUALIFIED),
    (BILLING, "join", "channel:billing2", NO_RULE),
    (BILLING, "join", "channel:BILLING", NO_RULE),
    (NOBODY, "join", "lobby.main", None),
    (NOBODY, "join", "lobbyXmain", NO_RULE),
    # action "*" with a trailing wildcard, which does cross ":".
    (ADMIN, "kick", "admin:users:42", None),
    (ADMIN, "delete", "admin:", None),
    (NURSE, "kick", "admin:users:42", NOT_QUALIFIED),
    (ADMIN, "kick", "administrator", NO_RULE),
    # roles and permissions together: any role AND every permission.
    (ADMIN, "edit", "patient:42:notes", NOT_QUALIFIED),
    (NURSE, "edit", "patient:42:notes", NOT_QUALIFIED),
    (
        Identity(user_id="n2", roles={"nurse"}, permissions={"view:patient", "edit:patient"}),
        "edit",
        "patient:42:notes",
        None,
    ),
]


@pytest.mark.parametrize(
    ("identity", "action", "target", "expected"),
    CASES,
    ids=[f"{who.user_id}-{action}-{target or 'empty'}" for who, action, target, _ in CASES],
)
async def test_rule_table(
    identity: Identity, action: str, target: str, expected: str | None
) -> None:
    assert await verdict(CLINIC, identity, action, target) == expected


async def test_empty_rule_list_denies_everything() -> None:
    authorizer = RuleAuthorizer([])
    for action, target in (("connect", "/"), ("join", "room"), ("admin", "*")):
        assert await verdict(authorizer, ADMIN, action, target) == NO_RULE


async def test_a_later_rule_can_allow_what_an_earlier_one_did_not() -> None:
    authorizer = RuleAuthorizer(
        [
            Rule(actions="join", target="ward:{ward}", roles="admin"),
            Rule(actions="join", target="ward:{ward}", roles="nurse"),
        ]
    )
    assert await verdict(authorizer, NURSE, "join", "ward:3") is None
    assert await verdict(authorizer, BILLING, "join", "ward:3") == NOT_QUALIFIED


async def test_async_when_gets_identity_and_params() -> None:
    seen: list[tuple[str, dict[str, str]]] = []

    async def same_ward(identity: Identity, params: Mapping[str, str]) -> bool:
        seen.append((identity.user_id, dict(params)))
        return identity.attributes.get("ward") == params["ward"]

    authorizer = RuleAuthorizer(
        [Rule(actions="join", target="ward:{ward}:bed:{bed}", when=same_ward)]
    )
    on_ward = Identity(user_id="n1", attributes={"ward": "3"})
    assert await verdict(authorizer, on_ward, "join", "ward:3:bed:7") is None
    assert await verdict(authorizer, on_ward, "join", "ward:4:bed:7") == NOT_QUALIFIED
    assert seen == [("n1", {"ward": "3", "bed": "7"}), ("n1", {"ward": "4", "bed": "7"})]


async def test_when_is_not_asked_when_roles_fail() -> None:
    calls: list[str] = []

    def check(identity: Identity, params: Mapping[str, str]) -> bool:
        calls.append(identity.user_id)
        return True

    authorizer = RuleAuthorizer([Rule(actions="join", target="x", roles="nurse", when=check)])
    assert await verdict(authorizer, BILLING, "join", "x") == NOT_QUALIFIED
    assert calls == []
    assert await verdict(authorizer, NURSE, "join", "x") is None
    assert calls == ["u1"]


async def test_sync_when_false_denies() -> None:
    authorizer = RuleAuthorizer([Rule(actions="join", target="x", when=lambda i, p: False)])
    assert await verdict(authorizer, ADMIN, "join", "x") == NOT_QUALIFIED


async def test_adding_rule_authorizers_unions_their_rules() -> None:
    rooms = RuleAuthorizer([Rule(actions="join", target="room:{room}")])
    admin = RuleAuthorizer([Rule(actions="*", target="*", roles="admin")])
    combined = rooms + admin
    assert isinstance(combined, RuleAuthorizer)
    assert combined.rules == (*rooms.rules, *admin.rules)
    assert await verdict(combined, NURSE, "join", "room:1") is None
    assert await verdict(combined, ADMIN, "kick", "anything") is None
    assert await verdict(combined, NURSE, "kick", "anything") == NOT_QUALIFIED
    # The operands are unchanged.
    assert await verdict(rooms, ADMIN, "kick", "anything") == NO_RULE
    assert len(rooms.rules) == len(admin.rules) == 1


def test_rule_match_returns_parameters() -> None:
    rule = Rule(actions=("join", "send"), target="ward:{ward}:bed:{bed}")
    assert rule.match("join", "ward:3:bed:7") == {"ward": "3", "bed": "7"}
    assert rule.match("send", "ward:3:bed:7") == {"ward": "3", "bed": "7"}
    assert rule.match("subscribe", "ward:3:bed:7") is None
    assert rule.match("join", "ward:3:bed:7:extra") is None
    assert Rule(actions="*", target="lobby").match("anything", "lobby") == {}


def test_rule_normalises_strings_to_sets() -> None:
    rule = Rule(actions="join", target="x", roles="nurse", permissions="view:patient")
    assert rule.actions == {"join"}
    assert rule.roles == {"nurse"}
    assert rule.permissions == {"view:patient"}


@pytest.mark.parametrize(
    ("actions", "target", "field"),
    [
        ((), "x", "actions"),
        (("join", ""), "x", "actions"),
        ("join", "", "target"),
        ("join", "x:{id}:{id}", "target"),
    ],
)
def test_rule_validation(actions: str | tuple[str, ...], target: str, field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Rule(actions=actions, target=target)
    assert info.value.field == field


def test_rule_authorizer_only_takes_rules() -> None:
    not_a_rule: object = {"actions": "join", "target": "x"}
    with pytest.raises(ConfigurationError) as info:
        RuleAuthorizer([not_a_rule])  # type: ignore[list-item]
    assert info.value.field == "rules"


@pytest.mark.parametrize(
    ("check", "params", "expected"),
    [
        (param_is_user("user_id"), {"user_id": "u1"}, True),
        (param_is_user("user_id"), {"user_id": "u2"}, False),
        (param_is_user("user_id"), {"other": "u1"}, False),
        (param_is_role("role"), {"role": "nurse"}, True),
        (param_is_role("role"), {"role": "admin"}, False),
        (param_is_role("role"), {}, False),
    ],
)
def test_param_checks(check: RuleCheck, params: dict[str, str], expected: bool) -> None:
    assert check(NURSE, params) is expected
