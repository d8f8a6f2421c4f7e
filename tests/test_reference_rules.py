"""The reference rule set, every role against every kind of target, in one table."""

from __future__ import annotations

import pytest

from realtime_gateway import Identity, PermissionDenied, reference_rules

ROLES = ("admin", "doctor", "nurse", "staff", "patient")
# Permissions the reference roles carry in the clinical app.
PERMISSIONS = {
    "admin": (),
    "doctor": ("view:patient", "view:clinical_notes"),
    "nurse": ("view:patient",),
    "staff": (),
    "patient": (),
}

# (action, target) -> the roles allowed; "{me}" stands for the identity's own user id.
MATRIX: list[tuple[str, str, set[str]]] = [
    ("connect", "/", set(ROLES)),
    ("connect", "/notifications", set(ROLES)),
    ("connect", "/chat", set(ROLES)),
    ("connect", "/updates", set(ROLES)),
    ("connect", "/unknown", {"admin"}),
    ("join", "user:{me}", set(ROLES)),
    ("join", "user:somebody-else", {"admin"}),
    ("join", "role:nurse", {"admin", "nurse"}),
    ("join", "role:doctor", {"admin", "doctor"}),
    ("join", "role:patient", {"admin", "patient"}),
    ("subscribe", "channel:system", set(ROLES)),
    ("subscribe", "channel:admin", {"admin"}),
    ("subscribe", "channel:clinical", {"admin", "doctor", "nurse"}),
    ("subscribe", "channel:billing", {"admin", "staff"}),
    ("subscribe", "channel:unknown", set()),
    ("join", "conversation:c1", {"admin", "doctor", "nurse", "staff"}),
    ("send", "conversation:c1", {"admin", "doctor", "nurse", "staff"}),
    ("subscribe", "patient:42", {"admin", "doctor", "nurse"}),
    ("subscribe", "encounter:7", {"admin", "doctor"}),
    ("subscribe", "invoice:1", {"admin"}),
    ("join", "patient:42", {"admin"}),
    ("join", "lobby", {"admin"}),
    ("join", "ward:3:bed:2", {"admin"}),
    ("admin", "/broadcast", {"admin"}),
    ("admin", "/notify/role/{role}", {"admin"}),
]


def identity(role: str) -> Identity:
    return Identity(user_id=f"{role}-1", roles={role}, permissions=PERMISSIONS[role])


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("action", "target", "allowed"), MATRIX)
async def test_role_against_target(role: str, action: str, target: str, allowed: set[str]) -> None:
    who = identity(role)
    rules = reference_rules()
    target = target.replace("{me}", who.user_id)
    if role in allowed:
        await rules.authorize(who, action, target)
    else:
        with pytest.raises(PermissionDenied):
            await rules.authorize(who, action, target)


async def test_conversation_membership_is_the_apps_rule() -> None:
    members = {("nurse-1", "c1")}

    async def is_member(who: Identity, params: object) -> bool:
        assert isinstance(params, dict)
        return (who.user_id, params["conversation_id"]) in members

    rules = reference_rules(conversation_member=is_member)
    await rules.authorize(identity("nurse"), "join", "conversation:c1")
    with pytest.raises(PermissionDenied):
        await rules.authorize(identity("nurse"), "join", "conversation:c2")
    with pytest.raises(PermissionDenied):
        await rules.authorize(identity("doctor"), "send", "conversation:c1")


async def test_channels_and_resources_are_configuration() -> None:
    rules = reference_rules(channels={"ops": frozenset({"staff"})}, resources={"ward": "view:ward"})
    staff = Identity(user_id="s1", roles={"staff"}, permissions={"view:ward"})
    await rules.authorize(staff, "subscribe", "channel:ops")
    await rules.authorize(staff, "subscribe", "ward:3")
    with pytest.raises(PermissionDenied):
        await rules.authorize(staff, "subscribe", "channel:billing")
    with pytest.raises(PermissionDenied):
        await rules.authorize(identity("doctor"), "subscribe", "ward:3")
