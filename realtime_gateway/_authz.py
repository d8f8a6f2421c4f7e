"""Authorization: may this identity do this action on this target?

An :class:`Authorizer` has one coroutine, ``authorize(identity, action, target)``,
which returns ``None`` to allow and raises :class:`PermissionDenied` to refuse.
Targets are strings such as a namespace (``/chat``), a room (``patient:42``) or a
channel (``channel:billing``). Everything is denied unless a rule allows it.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol, runtime_checkable

import attrs

from ._exceptions import ConfigurationError, PermissionDenied
from ._identity import Identity

__all__ = [
    "AllOf",
    "AllowAll",
    "AnyOf",
    "Authorizer",
    "DenyAll",
    "Rule",
    "RuleAuthorizer",
    "param_is_role",
    "param_is_user",
]

RuleCheck = Callable[[Identity, Mapping[str, str]], bool | Awaitable[bool]]
"""Extra condition of a :class:`Rule`: gets the identity and the pattern's parameters."""

NO_RULE = "no rule matches"
REQUIREMENT_NOT_MET = "a matching rule's requirements are not met"


@runtime_checkable
class Authorizer(Protocol):
    """Decides whether ``identity`` may do ``action`` on ``target``.

    Return ``None`` to allow; raise :class:`PermissionDenied` to refuse. Actions used
    by the library: ``connect`` (target: the namespace), ``join`` (a room),
    ``subscribe`` (a channel or resource room), ``send`` (a room) and ``admin``
    (an admin API path).
    """

    async def authorize(self, identity: Identity, action: str, target: str) -> None: ...


class AllowAll:
    """Allows everything. For development and for namespaces with no restrictions."""

    async def authorize(self, identity: Identity, action: str, target: str) -> None:
        """Allow."""


class DenyAll:
    """Denies everything."""

    async def authorize(self, identity: Identity, action: str, target: str) -> None:
        """Refuse."""
        raise PermissionDenied(action, target, reason="deny all")


class AllOf:
    """Allows only when every authorizer allows (the first refusal is raised)."""

    def __init__(self, *authorizers: Authorizer) -> None:
        if not authorizers:
            raise ConfigurationError("authorizers", "at least one is required")
        self.authorizers = authorizers

    async def authorize(self, identity: Identity, action: str, target: str) -> None:
        """Ask each authorizer; any refusal refuses."""
        for authorizer in self.authorizers:
            await authorizer.authorize(identity, action, target)


class AnyOf:
    """Allows when any authorizer allows; refuses with the first refusal otherwise."""

    def __init__(self, *authorizers: Authorizer) -> None:
        if not authorizers:
            raise ConfigurationError("authorizers", "at least one is required")
        self.authorizers = authorizers

    async def authorize(self, identity: Identity, action: str, target: str) -> None:
        """Ask each authorizer until one allows."""
        first: PermissionDenied | None = None
        for authorizer in self.authorizers:
            try:
                await authorizer.authorize(identity, action, target)
            except PermissionDenied as exc:
                first = first or exc
            else:
                return
        assert first is not None
        raise first


def _strings(value: str | Iterable[str]) -> frozenset[str]:
    return frozenset({value}) if isinstance(value, str) else frozenset(value)


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _compile(pattern: str) -> re.Pattern[str]:
    """``patient:{patient_id}`` -> a regex with a named group per placeholder.

    A placeholder matches one segment (no ``:``); ``*`` matches anything.
    """
    parts: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(pattern):
        parts.append(re.escape(pattern[position : match.start()]).replace(r"\*", ".*"))
        parts.append(f"(?P<{match.group(1)}>[^:]+)")
        position = match.end()
    parts.append(re.escape(pattern[position:]).replace(r"\*", ".*"))
    stray = _PLACEHOLDER.sub("", pattern)
    if "{" in stray or "}" in stray:
        raise ConfigurationError(
            "target",
            f"invalid pattern {pattern!r}: a brace that is not part of a placeholder"
            " such as {ward_id} (a name of letters, digits and _)",
        )
    try:
        return re.compile("".join(parts), re.DOTALL)
    except re.error as exc:
        raise ConfigurationError("target", f"invalid pattern {pattern!r}: {exc}") from None


def _valid_pattern(instance: Rule, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(attribute.name, "must be a non-empty pattern")
    _compile(value)


def _non_empty(
    instance: Rule, attribute: attrs.Attribute[frozenset[str]], value: frozenset[str]
) -> None:
    if not value or not all(isinstance(item, str) and item for item in value):
        raise ConfigurationError(attribute.name, "must name at least one non-empty string")


@attrs.frozen(kw_only=True)
class Rule:
    """Allows ``actions`` on targets matching ``target`` to identities that qualify.

    ``target`` is a pattern: literal text, ``{name}`` placeholders (one segment,
    passed to ``when``) and ``*`` wildcards; ``"*"`` alone matches every target.
    An identity qualifies if it holds any of ``roles`` (when given), all of
    ``permissions`` (when given) and ``when(identity, params)`` is true (when given).
    """

    actions: frozenset[str] = attrs.field(converter=_strings, validator=_non_empty)
    target: str = attrs.field(validator=_valid_pattern)
    roles: frozenset[str] = attrs.field(default=frozenset(), converter=_strings)
    permissions: frozenset[str] = attrs.field(default=frozenset(), converter=_strings)
    when: RuleCheck | None = None
    _regex: re.Pattern[str] = attrs.field(init=False, repr=False, eq=False)

    @_regex.default
    def _default_regex(self) -> re.Pattern[str]:
        return _compile(self.target)

    def match(self, action: str, target: str) -> Mapping[str, str] | None:
        """The pattern's parameters if this rule speaks of ``action`` on ``target``."""
        if "*" not in self.actions and action not in self.actions:
            return None
        found = self._regex.fullmatch(target)
        return found.groupdict() if found else None

    async def allows(self, identity: Identity, params: Mapping[str, str]) -> bool:
        """True if ``identity`` meets the rule's requirements."""
        if self.roles and not identity.has_role(*self.roles):
            return False
        if self.permissions and not identity.has_permissions(*self.permissions):
            return False
        if self.when is None:
            return True
        verdict = self.when(identity, params)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        return verdict is True


class RuleAuthorizer:
    """Allows what one of its rules allows, denies everything else."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)
        for rule in self.rules:
            if not isinstance(rule, Rule):
                raise ConfigurationError("rules", f"expected Rule instances, got {rule!r}")

    async def authorize(self, identity: Identity, action: str, target: str) -> None:
        """Allow if a rule matching ``action`` and ``target`` qualifies ``identity``."""
        reason = NO_RULE
        for rule in self.rules:
            params = rule.match(action, target)
            if params is None:
                continue
            if await rule.allows(identity, params):
                return
            reason = REQUIREMENT_NOT_MET
        raise PermissionDenied(action, target, reason=reason)

    def __add__(self, other: RuleAuthorizer) -> RuleAuthorizer:
        """The rules of both: allows what either allows. Only rule sets add up; to
        combine with another authorizer use :class:`AnyOf` or :class:`AllOf`."""
        if not isinstance(other, RuleAuthorizer):
            raise TypeError(
                f"a RuleAuthorizer adds only to another RuleAuthorizer, not to"
                f" {type(other).__name__}: use AnyOf(rules, other) to allow what either"
                f" allows, or AllOf(rules, other) to need both"
            )
        return RuleAuthorizer((*self.rules, *other.rules))


def param_is_user(param: str) -> RuleCheck:
    """A ``when`` check: the placeholder ``param`` equals the identity's user id."""

    def check(identity: Identity, params: Mapping[str, str]) -> bool:
        return params.get(param) == identity.user_id

    return check


def param_is_role(param: str) -> RuleCheck:
    """A ``when`` check: the placeholder ``param`` is one of the identity's roles."""

    def check(identity: Identity, params: Mapping[str, str]) -> bool:
        return params.get(param) in identity.roles

    return check
