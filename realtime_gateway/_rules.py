"""The reference rule set: roles, channels and resources of a clinical app.

Deny by default: what no rule here allows is refused. Targets follow the room
names the built-in namespaces use: ``user:{id}``, ``role:{role}``,
``channel:{name}``, ``conversation:{id}``, ``patient:{id}``, ``encounter:{id}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ._authz import Rule, RuleAuthorizer, RuleCheck, param_is_role, param_is_user
from ._identity import Identity

__all__ = ["REFERENCE_CHANNELS", "REFERENCE_RESOURCES", "reference_rules"]

REFERENCE_CHANNELS: Mapping[str, frozenset[str] | None] = {
    "system": None,  # everyone
    "admin": frozenset({"admin"}),
    "clinical": frozenset({"admin", "doctor", "nurse"}),
    "billing": frozenset({"admin", "staff"}),
}
"""Notification channels and the roles that may subscribe (``None``: every user)."""

REFERENCE_RESOURCES: Mapping[str, str] = {
    "patient": "view:patient",
    "encounter": "view:clinical_notes",
}
"""Resource types of live updates and the permission each requires."""

CARE_TEAM_ROLES = frozenset({"admin", "doctor", "nurse", "staff"})
BUILT_IN_NAMESPACES = ("/", "/notifications", "/chat", "/updates")


def _not_a_channel(identity: Identity, params: Mapping[str, str]) -> bool:
    return params["kind"] != "channel"


def reference_rules(
    *,
    namespaces: Iterable[str] = BUILT_IN_NAMESPACES,
    channels: Mapping[str, frozenset[str] | None] = REFERENCE_CHANNELS,
    resources: Mapping[str, str] = REFERENCE_RESOURCES,
    conversation_roles: Iterable[str] = CARE_TEAM_ROLES,
    conversation_member: RuleCheck | None = None,
) -> RuleAuthorizer:
    """Build the reference :class:`RuleAuthorizer`.

    - every authenticated user may connect to ``namespaces``;
    - a user may join only their own ``user:{id}`` room and ``role:{role}`` rooms of
      roles they hold;
    - ``channels`` maps each channel to the roles that may subscribe (``None``: all);
      unknown channels are denied;
    - ``resources`` maps each resource type to the permission its updates require;
    - conversations may be joined and written to by ``conversation_roles``, and, when
      ``conversation_member(identity, params)`` is given, only where it says so
      (``params["conversation_id"]``): that is where an app plugs in membership;
    - ``admin`` may do everything, the admin API included, except subscribe to a
      channel that is not in ``channels``: an unknown channel is refused to all.
    """
    rules = [
        Rule(actions="*", target="{name}", roles="admin"),
        Rule(actions="*", target="{kind}:*", roles="admin", when=_not_a_channel),
    ]
    rules += [Rule(actions="connect", target=namespace) for namespace in namespaces]
    rules += [
        Rule(actions="join", target="user:{user_id}", when=param_is_user("user_id")),
        Rule(actions="join", target="role:{role}", when=param_is_role("role")),
    ]
    for channel, roles in channels.items():
        allowed = () if roles is None else frozenset(roles) | {"admin"}
        rules.append(Rule(actions="subscribe", target=f"channel:{channel}", roles=allowed))
    for resource, permission in resources.items():
        rules.append(Rule(actions="subscribe", target=f"{resource}:{{id}}", permissions=permission))
    rules.append(
        Rule(
            actions=("join", "send"),
            target="conversation:{conversation_id}",
            roles=frozenset(conversation_roles),
            when=conversation_member,
        )
    )
    return RuleAuthorizer(rules)
