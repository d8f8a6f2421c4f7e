"""Revoked credentials: which sessions and users the handshake must refuse.

A :class:`RevocationStore` remembers two kinds of revocation, each only for as
long as the credentials it covers could still be presented: a revoked session
(every credential carrying that ``session_id``) and a revoked user (every
credential of that user issued before a moment). :class:`MemoryRevocationStore`
serves one process; :class:`RedisRevocationStore` serves a cluster, as keys with
a time to live, so neither grows without bound.

Session ids are kept as digests (:func:`session_digest`): an application may use
its own session cookie's value as the id, and a revocation list should not be a
list of live credentials.
"""

from __future__ import annotations

import hashlib
import heapq
import time
from typing import Any, Protocol, runtime_checkable

from ._identity import Identity
from ._outage import Outage

__all__ = [
    "MemoryRevocationStore",
    "RedisRevocationStore",
    "RevocationStore",
    "session_digest",
]


def session_digest(session_id: str) -> str:
    """The stand-in for ``session_id`` that stores and control messages carry."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:32]


def _issued_before(identity: Identity, before: float) -> bool:
    # An identity that does not say when it was issued could be older than the
    # revocation: it is refused until the revocation lapses.
    issued = identity.issued_at
    return issued is None or issued.timestamp() <= before


@runtime_checkable
class RevocationStore(Protocol):
    """Remembers revocations for ``ttl`` seconds each (the longest the credentials
    concerned could otherwise live) and answers whether an identity is revoked."""

    async def revoke_session(self, session_id: str, *, ttl: float) -> None:
        """Refuse every credential carrying ``session_id`` for ``ttl`` seconds."""
        ...

    async def revoke_user(self, user_id: str, *, before: float, ttl: float) -> None:
        """Refuse every credential of ``user_id`` issued at or before ``before`` (Unix
        time) for ``ttl`` seconds."""
        ...

    async def is_revoked(self, identity: Identity) -> bool:
        """Whether ``identity``'s session or its user's earlier credentials are revoked."""
        ...


class MemoryRevocationStore:
    """A :class:`RevocationStore` in this process's memory; lapsed entries are
    dropped as new ones come in."""

    def __init__(self) -> None:
        self._sessions: dict[str, float] = {}  # digest -> until
        self._users: dict[str, tuple[float, float]] = {}  # user -> (before, until)
        self._lapses: list[tuple[float, str, str]] = []  # (until, kind, key), a heap

    def __len__(self) -> int:
        return len(self._sessions) + len(self._users)

    async def revoke_session(self, session_id: str, *, ttl: float) -> None:
        self.revoke_session_now(session_id, ttl=ttl)

    async def revoke_user(self, user_id: str, *, before: float, ttl: float) -> None:
        self.revoke_user_now(user_id, before=before, ttl=ttl)

    async def is_revoked(self, identity: Identity) -> bool:
        return self.revoked_now(identity)

    # The same operations without a coroutine, for the gateway's own bookkeeping.

    def revoke_session_now(self, session_id: str, *, ttl: float) -> None:
        """:meth:`revoke_session`, synchronously."""
        self.revoke_digest_now(session_digest(session_id), ttl=ttl)

    def revoke_digest_now(self, digest: str, *, ttl: float) -> None:
        """Revoke the session whose :func:`session_digest` is ``digest``."""
        self._lapse()
        until = max(self._sessions.get(digest, 0.0), time.time() + ttl)
        self._sessions[digest] = until
        heapq.heappush(self._lapses, (until, "session", digest))

    def revoke_user_now(self, user_id: str, *, before: float, ttl: float) -> None:
        """:meth:`revoke_user`, synchronously."""
        self._lapse()
        old_before, old_until = self._users.get(user_id, (0.0, 0.0))
        until = max(old_until, time.time() + ttl)
        self._users[user_id] = (max(old_before, before), until)
        heapq.heappush(self._lapses, (until, "user", user_id))

    def revoked_now(self, identity: Identity) -> bool:
        """:meth:`is_revoked`, synchronously."""
        now = time.time()
        if identity.session_id is not None:
            until = self._sessions.get(session_digest(identity.session_id))
            if until is not None and until > now:
                return True
        entry = self._users.get(identity.user_id)
        return entry is not None and entry[1] > now and _issued_before(identity, entry[0])

    def _lapse(self) -> None:
        now = time.time()
        while self._lapses and self._lapses[0][0] <= now:
            _, kind, key = heapq.heappop(self._lapses)
            if kind == "session":
                if self._sessions.get(key, now + 1) <= now:
                    del self._sessions[key]
            elif key in self._users and self._users[key][1] <= now:
                del self._users[key]


class RedisRevocationStore:
    """A :class:`RevocationStore` shared by every process on one Redis: a key per
    revoked session (``{prefix}:revoked:session:{digest}``) and per revoked user
    (``{prefix}:revoked:user:{id}``, holding the cut-off in milliseconds), each
    expiring with its ``ttl``. ``redis`` is a ``redis.asyncio.Redis`` client.

    While Redis is unreachable (logged once, retried with backoff) a lookup answers
    "not revoked" at once, and the gateway goes by the revocations its own process
    made or heard (as the registry goes by its own sockets); a revocation made then
    raises, after the sockets of the revoking process have been ended.
    """

    def __init__(self, redis: Any, *, prefix: str = "rtg") -> None:
        self.redis = redis
        self.prefix = prefix
        self._outage = Outage("revocations")

    def reachable(self) -> None:
        """Redis is known to be back: look it up again at once."""
        self._outage.retry_at = 0.0

    def session_key(self, session_id: str) -> str:
        """The key that marks ``session_id`` revoked."""
        return f"{self.prefix}:revoked:session:{session_digest(session_id)}"

    def user_key(self, user_id: str) -> str:
        """The key that holds ``user_id``'s revocation cut-off."""
        return f"{self.prefix}:revoked:user:{user_id}"

    async def revoke_session(self, session_id: str, *, ttl: float) -> None:
        await self._write(self.session_key(session_id), "1", ttl)

    async def revoke_user(self, user_id: str, *, before: float, ttl: float) -> None:
        # A later cut-off replaces an earlier one: it covers everything the earlier did.
        await self._write(self.user_key(user_id), str(round(before * 1000)), ttl)

    async def _write(self, key: str, value: str, ttl: float) -> None:
        try:
            await self.redis.set(key, value, px=_millis(ttl))
        except Exception as exc:
            self._outage.failed(exc)
            raise
        self._outage.succeeded()

    async def is_revoked(self, identity: Identity) -> bool:
        keys = [self.user_key(identity.user_id)]
        if identity.session_id is not None:
            keys.append(self.session_key(identity.session_id))
        if not self._outage.may_try():
            return False
        try:
            found = await self.redis.mget(keys)
        except Exception as exc:
            self._outage.failed(exc)
            return False
        self._outage.succeeded()
        if len(found) > 1 and found[1] is not None:
            return True
        cutoff = found[0]
        return cutoff is not None and _issued_before(identity, int(cutoff) / 1000)


def _millis(seconds: float) -> int:
    return max(1, round(seconds * 1000))
