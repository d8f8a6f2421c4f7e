"""Who a caller is (:class:`Identity`) and what they presented (:class:`Handshake`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from http.cookies import CookieError, SimpleCookie
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl

import attrs
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = ["Handshake", "Identity"]


def _frozen_strings(value: Iterable[str] | str) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset({value})
    return frozenset(value)


_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if not value:
        return _EMPTY  # one for every handshake without cookies, auth or query
    return MappingProxyType(dict(value))


def _all_non_empty_strings(
    instance: object, attribute: attrs.Attribute[frozenset[str]], value: frozenset[str]
) -> None:
    for item in value:
        if not isinstance(item, str) or not item:
            raise ValueError(f"{attribute.name} must hold non-empty strings, got {item!r}")


def _non_empty_string(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{attribute.name} must be a non-empty string, got {value!r}")


def _aware_datetime(
    instance: object, attribute: attrs.Attribute[dt.datetime | None], value: dt.datetime | None
) -> None:
    if value is not None and (not isinstance(value, dt.datetime) or value.tzinfo is None):
        raise ValueError(f"{attribute.name} must be a timezone-aware datetime or None")


@attrs.frozen(kw_only=True)
class Identity:
    """An authenticated caller.

    ``user_id`` is the only required field. ``roles`` and ``permissions`` feed the
    authorizer; ``session_id`` ties the identity to an application session (what
    :meth:`Gateway.revoke_session` revokes); ``issued_at`` and ``expires_at``
    (timezone-aware) are when the credential was issued (what
    :meth:`Gateway.revoke_user` compares with) and when it stops being valid;
    ``attributes`` carries anything else the application needs (tenant, care team).
    ``display_name`` is shown to other users (chat) and is never logged.
    """

    user_id: str = attrs.field(validator=_non_empty_string)
    roles: frozenset[str] = attrs.field(
        default=frozenset(), converter=_frozen_strings, validator=_all_non_empty_strings
    )
    permissions: frozenset[str] = attrs.field(
        default=frozenset(), converter=_frozen_strings, validator=_all_non_empty_strings
    )
    session_id: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str))
    )
    display_name: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str))
    )
    issued_at: dt.datetime | None = attrs.field(default=None, validator=_aware_datetime)
    expires_at: dt.datetime | None = attrs.field(default=None, validator=_aware_datetime)
    attributes: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_frozen_mapping, eq=False, hash=False
    )

    def has_role(self, *roles: str) -> bool:
        """True if the identity holds any of ``roles``."""
        return not self.roles.isdisjoint(roles)

    def has_permissions(self, *permissions: str) -> bool:
        """True if the identity holds every one of ``permissions``."""
        return self.permissions.issuperset(permissions)

    def is_expired(self, now: dt.datetime | None = None) -> bool:
        """True once ``expires_at`` has passed."""
        if self.expires_at is None:
            return False
        return (now or dt.datetime.now(dt.UTC)) >= self.expires_at

    @property
    def name(self) -> str:
        """The name to show other users: the display name, else the user id."""
        return self.display_name or self.user_id


def _headers(value: Mapping[str, str]) -> CIMultiDictProxy[str]:
    if isinstance(value, CIMultiDictProxy):
        return value
    return CIMultiDictProxy(CIMultiDict(value))


def _parse_cookies(header: str) -> dict[str, str]:
    # Each pair is parsed on its own so that one malformed cookie (set by some other
    # part of the site) cannot hide the others.
    cookies: dict[str, str] = {}
    for part in header.split(";"):
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(part.strip())
        except CookieError:
            continue
        cookies.update((name, morsel.value) for name, morsel in jar.items())
    return cookies


@attrs.frozen(kw_only=True)
class Handshake:
    """What a client presented when connecting to a namespace (or calling the admin API).

    ``headers`` is case-insensitive. ``auth`` is the socket.io ``auth`` payload
    (``io(url, {auth: {...}})``), empty for HTTP callers. ``origin`` is the
    ``Origin`` header, ``None`` when the client sent none (non-browser clients and
    same-origin GET requests).
    """

    namespace: str = attrs.field(validator=attrs.validators.instance_of(str))
    headers: CIMultiDictProxy[str] = attrs.field(factory=dict, converter=_headers, repr=False)
    cookies: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping, repr=False)
    auth: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping, repr=False)
    query: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping, repr=False)
    remote_address: str | None = None
    origin: str | None = None
    scheme: str = "http"
    host: str | None = None

    @classmethod
    def from_environ(
        cls, namespace: str, environ: Mapping[str, Any], auth: object = None
    ) -> Handshake:
        """Build a handshake from python-socketio's environ (aiohttp or ASGI drivers)."""
        headers = _environ_headers(environ)
        return cls(
            namespace=namespace,
            headers=headers,
            cookies=_parse_cookies(headers.get("Cookie", "")),
            auth=auth if isinstance(auth, Mapping) else {},
            query=dict(parse_qsl(str(environ.get("QUERY_STRING", "")))),
            remote_address=_remote_address(environ),
            origin=headers.get("Origin"),
            scheme=str(environ.get("wsgi.url_scheme", "http")),
            host=headers.get("Host"),
        )

    @classmethod
    def from_http(
        cls,
        *,
        path: str,
        headers: Mapping[str, str],
        query: Mapping[str, str] | None = None,
        remote_address: str | None = None,
        scheme: str = "http",
    ) -> Handshake:
        """Build a handshake for a plain HTTP request (the admin API)."""
        ci = _headers(headers)
        return cls(
            namespace=path,
            headers=ci,
            cookies=_parse_cookies(ci.get("Cookie", "")),
            query=query or {},
            remote_address=remote_address,
            origin=ci.get("Origin"),
            scheme=scheme,
            host=ci.get("Host"),
        )

    @property
    def bearer_token(self) -> str | None:
        """The token of an ``Authorization: Bearer ...`` header, if any."""
        value = self.headers.get("Authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None


_HEADERS = "realtime_gateway.headers"  # the environ key of the headers, once made


def _environ_headers(environ: Mapping[str, Any]) -> CIMultiDictProxy[str]:
    """The request's headers, shared by every socket of its connection: aiohttp's
    own (the request lives as long as the websocket), else made once from the
    environ's ``HTTP_*`` keys and kept in it."""
    request = environ.get("aiohttp.request")
    own = getattr(request, "headers", None)
    if isinstance(own, CIMultiDictProxy):
        return own
    made = environ.get(_HEADERS)
    if isinstance(made, CIMultiDictProxy):
        return made
    headers: CIMultiDict[str] = CIMultiDict()
    for key, value in environ.items():
        if key.startswith("HTTP_") and isinstance(value, str):
            headers.add(key[5:].replace("_", "-"), value)
    if "CONTENT_TYPE" in environ:
        headers.add("Content-Type", str(environ["CONTENT_TYPE"]))
    proxy = CIMultiDictProxy(headers)
    if isinstance(environ, dict):
        environ[_HEADERS] = proxy
    return proxy


def _remote_address(environ: Mapping[str, Any]) -> str | None:
    # python-engineio's drivers put a placeholder in REMOTE_ADDR; the real peer is
    # on the framework's own request object.
    request = environ.get("aiohttp.request")
    if request is not None:
        remote = getattr(request, "remote", None)
        return str(remote) if remote else None
    scope = environ.get("asgi.scope")
    if isinstance(scope, Mapping):
        client = scope.get("client")
        if client:
            return str(client[0])
    value = environ.get("REMOTE_ADDR")
    return str(value) if value else None
