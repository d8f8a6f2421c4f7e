"""Authentication: turn a :class:`Handshake` into an :class:`Identity`, or refuse.

An :class:`Authenticator` has one coroutine, ``authenticate(handshake)``, which
returns the caller's identity or raises :class:`AuthenticationFailed` with a
reason category. Built-ins: :class:`SignedTokenAuthenticator` (itsdangerous
timed tokens), :class:`CallbackAuthenticator` (an application lookup) and
:class:`ChainAuthenticator` (the first that succeeds).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from itsdangerous import (
    BadData,
    BadPayload,
    BadSignature,
    SignatureExpired,
    URLSafeTimedSerializer,
)
from itsdangerous.encoding import base64_decode, base64_encode, bytes_to_int, int_to_bytes

from ._exceptions import AuthenticationFailed, AuthFailureReason, ConfigurationError
from ._identity import Handshake, Identity

__all__ = [
    "Authenticator",
    "CallbackAuthenticator",
    "ChainAuthenticator",
    "SignedTokenAuthenticator",
]

DEFAULT_COOKIE_NAME = "rtg_session"
DEFAULT_TOKEN_SALT = "realtime_gateway.session"  # noqa: S105 (a salt, not a secret)
MIN_SECRET_KEY_LENGTH = 16
MAX_TOKEN_LENGTH = 8192
TOKEN_SOURCES = ("auth", "header", "cookie")

# payload.timestamp.signature, base64url; a leading "." marks a compressed payload.
_TOKEN_SHAPE = re.compile(r"\.?[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+")


@runtime_checkable
class Authenticator(Protocol):
    """Turns a handshake into an identity.

    Return the :class:`Identity` of the caller, or raise :class:`AuthenticationFailed`
    with a reason from :class:`AuthFailureReason`. Any other exception is treated as
    ``AuthFailureReason.ERROR`` and the caller is refused.
    """

    async def authenticate(self, handshake: Handshake) -> Identity: ...


class SignedTokenAuthenticator:
    """Accepts tokens signed with itsdangerous' ``URLSafeTimedSerializer``.

    ``secret_keys`` lists the keys in use, newest last: tokens are issued with the
    newest and accepted under any listed key, so a key rotates by appending the new
    one and, once old tokens have expired, dropping the old. ``salt`` separates these
    tokens from anything else signed with the same key. ``max_age`` (seconds) bounds a
    token's life whatever it says of itself.

    The token is read from the first of ``sources`` that carries one: ``"auth"`` (the
    socket.io auth payload, ``{"token": ...}``), ``"header"`` (``Authorization:
    Bearer ...``) and ``"cookie"`` (the cookie named ``cookie_name``).
    """

    def __init__(
        self,
        secret_keys: str | bytes | Sequence[str | bytes],
        *,
        salt: str,
        max_age: float | dt.timedelta,
        cookie_name: str = DEFAULT_COOKIE_NAME,
        sources: Sequence[str] = TOKEN_SOURCES,
    ) -> None:
        keys = [secret_keys] if isinstance(secret_keys, str | bytes) else list(secret_keys)
        if not keys:
            raise ConfigurationError("secret_keys", "at least one key is required")
        for key in keys:
            if not isinstance(key, str | bytes) or len(key) < MIN_SECRET_KEY_LENGTH:
                raise ConfigurationError(
                    "secret_keys", f"each key must be at least {MIN_SECRET_KEY_LENGTH} characters"
                )
        if not isinstance(salt, str) or not salt:
            raise ConfigurationError("salt", "a non-empty salt is required")
        seconds = max_age.total_seconds() if isinstance(max_age, dt.timedelta) else max_age
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
            raise ConfigurationError("max_age", "must be a positive number of seconds")
        if not isinstance(cookie_name, str) or not cookie_name:
            raise ConfigurationError("cookie_name", "must be a non-empty string")
        unknown = set(sources) - set(TOKEN_SOURCES)
        if unknown or not sources:
            raise ConfigurationError("sources", f"must be drawn from {', '.join(TOKEN_SOURCES)}")
        self.max_age = float(seconds)
        self.cookie_name = cookie_name
        self.sources = tuple(sources)
        self._serializer = URLSafeTimedSerializer(
            [key.encode() if isinstance(key, str) else key for key in keys], salt=salt
        )

    async def authenticate(self, handshake: Handshake) -> Identity:
        """Verify the token the handshake carries and return its identity."""
        return self.verify(self._find_token(handshake))

    def secret_keys(self) -> list[bytes]:
        """The signing keys, oldest first (the gateway signs cluster messages with them
        under another salt)."""
        return list(self._serializer.secret_keys)

    def issue(self, identity: Identity, *, ttl: float | None = None) -> str:
        """Sign a token for ``identity`` with the newest key.

        ``ttl`` (seconds) shortens the token's life below ``max_age``; an identity's
        own ``expires_at`` does the same. The token carries a session id (``sid``:
        the identity's ``session_id``, else a new random one), which
        :meth:`Gateway.revoke_session` revokes, and its issue time in milliseconds
        (``iat``), which :meth:`Gateway.revoke_user` compares with.
        """
        expiry = identity.expires_at.timestamp() if identity.expires_at else None
        if ttl is not None:
            if ttl <= 0:
                raise ValueError("ttl must be positive")
            expiry = min(expiry or float("inf"), time.time() + ttl)
        claims: dict[str, Any] = {"sub": identity.user_id}
        if identity.roles:
            claims["roles"] = sorted(identity.roles)
        if identity.permissions:
            claims["perms"] = sorted(identity.permissions)
        claims["sid"] = identity.session_id or secrets.token_urlsafe(16)
        claims["iat"] = int(time.time() * 1000)
        if identity.display_name is not None:
            claims["name"] = identity.display_name
        if expiry is not None:
            claims["exp"] = int(expiry)
        if identity.attributes:
            claims["attrs"] = dict(identity.attributes)
        token: str = self._serializer.dumps(claims)
        return token

    def verify(self, token: object) -> Identity:
        """Return the identity in ``token`` or raise :class:`AuthenticationFailed`.

        A token is accepted in one spelling only, the one :meth:`issue` produces: any
        segment in non-canonical base64url (say, a last character differing only in
        unused bits, which itsdangerous alone would accept) is ``malformed``.
        """
        if token is None or token == "":
            raise AuthenticationFailed(AuthFailureReason.MISSING)
        if (
            not isinstance(token, str)
            or len(token) > MAX_TOKEN_LENGTH
            or not _TOKEN_SHAPE.fullmatch(token)
            or not _is_canonical(token)
        ):
            raise AuthenticationFailed(AuthFailureReason.MALFORMED)
        try:
            claims, signed_at = self._serializer.loads(
                token, max_age=math.ceil(self.max_age), return_timestamp=True
            )
        except SignatureExpired:
            raise AuthenticationFailed(AuthFailureReason.EXPIRED) from None
        except BadPayload:
            raise AuthenticationFailed(AuthFailureReason.MALFORMED) from None
        except BadSignature:
            raise AuthenticationFailed(AuthFailureReason.BAD_SIGNATURE) from None
        return self._identity(claims, signed_at)

    def _find_token(self, handshake: Handshake) -> object:
        for source in self.sources:
            if source == "auth":
                token = handshake.auth.get("token")
            elif source == "header":
                token = handshake.bearer_token
            else:
                token = handshake.cookies.get(self.cookie_name)
            if token is not None and token != "":
                return token
        return None

    def _identity(self, claims: object, signed_at: dt.datetime) -> Identity:
        if not isinstance(claims, Mapping):
            raise AuthenticationFailed(AuthFailureReason.MALFORMED)
        expires_at = signed_at + dt.timedelta(seconds=self.max_age)
        exp = claims.get("exp")
        if exp is not None:
            if isinstance(exp, bool) or not isinstance(exp, int | float):
                raise AuthenticationFailed(AuthFailureReason.MALFORMED)
            expires_at = min(expires_at, _utc(exp))
        if expires_at <= dt.datetime.now(dt.UTC):
            raise AuthenticationFailed(AuthFailureReason.EXPIRED)
        issued_at = signed_at
        iat = claims.get("iat")
        if iat is not None:
            if isinstance(iat, bool) or not isinstance(iat, int) or iat < 0:
                raise AuthenticationFailed(AuthFailureReason.MALFORMED)
            # The signing timestamp has whole seconds; iat tells tokens of one second apart.
            issued_at = _utc(iat / 1000)
        try:
            return Identity(
                user_id=claims["sub"],
                roles=_string_list(claims.get("roles", [])),
                permissions=_string_list(claims.get("perms", [])),
                session_id=claims.get("sid"),
                display_name=claims.get("name"),
                issued_at=issued_at,
                expires_at=expires_at,
                attributes=claims.get("attrs") or {},
            )
        except (KeyError, TypeError, ValueError):
            raise AuthenticationFailed(AuthFailureReason.MALFORMED) from None


def _utc(timestamp: float) -> dt.datetime:
    try:
        return dt.datetime.fromtimestamp(timestamp, dt.UTC)
    except (OverflowError, OSError, ValueError):
        raise AuthenticationFailed(AuthFailureReason.MALFORMED) from None


def _is_canonical(token: str) -> bool:
    """Whether every segment of a token-shaped string is spelled as itsdangerous
    spells it, so that one credential has exactly one spelling."""
    # itsdangerous decodes leniently: a last character that differs only in its
    # unused (padding) bits, or a timestamp with leading zero bytes, decodes to the
    # same value, and a changed signature character of that kind still verifies.
    payload, timestamp, signature = token.removeprefix(".").split(".")
    decoded = []
    for segment in (payload, timestamp, signature):
        try:
            raw = base64_decode(segment)
        except BadData:
            return False
        if base64_encode(raw).decode("ascii") != segment:
            return False
        decoded.append(raw)
    raw_timestamp = decoded[1]
    return len(raw_timestamp) <= 8 and int_to_bytes(bytes_to_int(raw_timestamp)) == raw_timestamp


def _string_list(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TypeError("expected a list of strings")
    return value


class CallbackAuthenticator:
    """Authenticates with an application coroutine, e.g. a database session lookup.

    ``callback(handshake)`` returns the :class:`Identity` or ``None`` to refuse
    (reason ``rejected``); it may also raise :class:`AuthenticationFailed` itself.
    """

    def __init__(self, callback: Callable[[Handshake], Awaitable[Identity | None]]) -> None:
        if not callable(callback):
            raise ConfigurationError("callback", "must be an async callable")
        self._callback = callback

    async def authenticate(self, handshake: Handshake) -> Identity:
        """Run the callback; ``None`` means refused."""
        identity = await self._callback(handshake)
        if identity is None:
            raise AuthenticationFailed(AuthFailureReason.REJECTED)
        if not isinstance(identity, Identity):
            raise TypeError("an authentication callback must return an Identity or None")
        return identity


class ChainAuthenticator:
    """Tries each authenticator in turn and returns the first identity.

    When all refuse, the first refusal that is not ``missing`` is raised (it says
    more about what went wrong), else ``missing``.
    """

    def __init__(self, *authenticators: Authenticator) -> None:
        if not authenticators:
            raise ConfigurationError("authenticators", "at least one is required")
        self.authenticators = authenticators

    async def authenticate(self, handshake: Handshake) -> Identity:
        """Return the first identity any authenticator grants."""
        refusal: AuthenticationFailed | None = None
        for authenticator in self.authenticators:
            try:
                return await authenticator.authenticate(handshake)
            except AuthenticationFailed as exc:
                if refusal is None or refusal.reason == AuthFailureReason.MISSING:
                    refusal = exc
        assert refusal is not None
        raise refusal
