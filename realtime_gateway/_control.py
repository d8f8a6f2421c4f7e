"""Control of live sockets across the cluster: what :meth:`Gateway.disconnect_socket`,
:meth:`Gateway.disconnect_user`, :meth:`Gateway.reauthorize`,
:meth:`Gateway.revoke_session` and :meth:`Gateway.revoke_user` do, what a
client's ``auth:refresh`` does (:func:`refresh`), and what a process does with
the control messages and sweeps of the others.

A cluster-wide operation is done here for this process's sockets and published
as a control message (:func:`on_control` runs it on every other process); the
sockets of a process that died are announced to their rooms (:func:`announce_swept`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs

from ._auth import SignedTokenAuthenticator
from ._cluster import identity_from_json, identity_to_json
from ._connection import Connection
from ._exceptions import GatewayNotRunning
from ._identity import Handshake, Identity
from ._log import log
from ._registry import ConnectionInfo
from ._revocation import RedisRevocationStore, session_digest

if TYPE_CHECKING:
    from ._gateway import Gateway

__all__ = [
    "announce_swept",
    "disconnect_socket",
    "disconnect_user",
    "on_control",
    "reauthorize",
    "refresh",
    "revoke_session",
    "revoke_user",
]


async def disconnect_socket(gateway: Gateway, sid: str) -> bool:
    """Disconnect ``sid`` wherever it lives; ``False`` if no socket is known by it."""
    conn = gateway.connection(sid)
    if conn is not None:
        namespace = conn.namespace
    elif gateway._cluster is not None and (info := await gateway.registry.get(sid)) is not None:
        namespace = info.namespace  # on another process: the manager passes it on
    else:
        return False
    await gateway.server.disconnect(sid, namespace=namespace)
    return True


async def disconnect_user(gateway: Gateway, user_id: str) -> int:
    """Disconnect every socket of ``user_id``; returns how many there were."""
    # The registry already says where each socket is: no second lookup per socket.
    sockets = await gateway.registry.user_sockets(user_id)
    for info in sockets:
        await gateway.server.disconnect(info.sid, namespace=info.namespace)
    return len(sockets)


async def reauthorize(
    gateway: Gateway, user_id: str, identity: Identity | None
) -> dict[str, list[str]]:
    """Reauthorize ``user_id``'s sockets here and have every other process do the same."""
    revoked = await _reauthorize_here(gateway, user_id, identity)
    if gateway._cluster is not None:
        await gateway._cluster.publish_control(
            {
                "op": "reauthorize",
                "userId": user_id,
                "identity": None if identity is None else identity_to_json(identity),
            }
        )
    return revoked


async def _reauthorize_here(
    gateway: Gateway, user_id: str, identity: Identity | None
) -> dict[str, list[str]]:
    revoked: dict[str, list[str]] = {}
    for info in await gateway.registry.user_sockets(user_id):
        conn = gateway.connection(info.sid)
        if conn is None:
            continue  # on another process, which gets the control message
        if identity is not None:
            conn.identity = identity
            gateway._sessions.rearm(conn)
        left = await _reauthorize_socket(gateway, conn, "reauthorized")
        if left:
            revoked[conn.sid] = left
    return revoked


async def _reauthorize_socket(gateway: Gateway, conn: Connection, reason: str) -> list[str]:
    """Check ``conn``'s identity again: disconnect it if it may no longer be in its
    namespace, else leave the rooms it may no longer be in; returns the rooms lost."""
    namespace = gateway.namespaces.get(conn.namespace)
    if namespace is None:
        return []
    if conn.identity.is_expired() or not await gateway.is_allowed(
        conn.identity, "connect", conn.namespace
    ):
        await disconnect_socket(gateway, conn.sid)
        return sorted(conn.rooms)
    return await namespace.reauthorize(conn, reason=reason)


# -- refresh in place -------------------------------------------------------------


def client_sockets(gateway: Gateway, conn: Connection) -> list[Connection]:
    """Every socket of ``conn``'s client connection (one per namespace it joined)."""
    if conn.eio_sid is None:
        return [conn]
    manager = gateway.server.manager
    found = []
    for path in gateway.namespaces:
        sid = manager.sid_from_eio_sid(conn.eio_sid, path)
        other = gateway.connection(sid) if sid is not None else None
        if other is not None:
            found.append(other)
    return found or [conn]


async def refresh(gateway: Gateway, conn: Connection, token: str) -> dict[str, Any]:
    """``auth:refresh``: authenticate ``token`` as a handshake whose ``auth`` is
    ``{token}`` and give every socket of ``conn``'s client connection the new
    identity (rooms re-authorized, timers restarted). A failed credential raises
    :class:`AuthenticationFailed` and changes nothing; another user's raises
    :class:`PermissionDenied` and the client connection is ended once it has the
    answer. Returns the acknowledgement's fields."""
    handshake = attrs.evolve(conn.handshake, auth={"token": token})
    identity = await gateway.authenticate(handshake)
    sockets = client_sockets(gateway, conn)
    if identity.user_id != conn.identity.user_id:
        # The drain task ends them after this event's answer is on its way: it runs
        # only once the task answering the event gives the loop a turn.
        for other in sockets:
            gateway._sessions.end(other, "forbidden", tell=False)
        raise await gateway.refuse(
            conn.identity, "refresh", conn.namespace, "another user's credential"
        )
    for other in sockets:
        other.identity = identity
        gateway._sessions.arm(other)
        await _reauthorize_socket(gateway, other, "refreshed")
    gateway.metrics.sessions_refreshed += 1
    log(
        logging.INFO, "session_refreshed", sid=conn.sid, user=identity.user_id, sockets=len(sockets)
    )
    await gateway.audit(identity, "session", conn.namespace, allowed=True, reason="refreshed")
    expires = identity.expires_at
    return {"expiresAt": None if expires is None else round(expires.timestamp() * 1000)}


# -- revocation -----------------------------------------------------------------


def _credential_life(gateway: Gateway, identities: list[Identity]) -> float:
    """How long a revocation must last: the longest any credential it covers could
    still be presented."""
    authenticator = gateway.authenticator
    if isinstance(authenticator, SignedTokenAuthenticator):
        life = authenticator.max_age
    else:
        life = gateway.config.revocation_ttl
    now = time.time()
    for identity in identities:
        if identity.expires_at is not None:
            life = max(life, identity.expires_at.timestamp() - now)
    return math.ceil(life)


async def revoke_session(gateway: Gateway, session_id: str, user_id: str | None = None) -> int:
    """Revoke ``session_id`` in the store, here and on every other process; with
    ``user_id``, only that user's sockets are looked up to count them."""
    registry = gateway.registry
    candidates = (
        await registry.connections() if user_id is None else await registry.user_sockets(user_id)
    )
    infos = [info for info in candidates if info.identity.session_id == session_id]
    ttl = _credential_life(gateway, [info.identity for info in infos])
    message = {"op": "revoke", "session": session_digest(session_id), "ttl": ttl}
    store = partial(gateway.revocations.revoke_session, session_id, ttl=ttl)
    await _revoke(gateway, message, store)
    log(logging.INFO, "session_revoked", sockets=len(infos))
    return len(infos)


async def revoke_user(gateway: Gateway, user_id: str) -> int:
    """Revoke ``user_id``'s credentials issued until now, here and everywhere."""
    infos = await gateway.registry.user_sockets(user_id)
    before = time.time()
    ttl = _credential_life(gateway, [info.identity for info in infos])
    message = {"op": "revoke", "user": user_id, "before": before, "ttl": ttl}
    store = partial(gateway.revocations.revoke_user, user_id, before=before, ttl=ttl)
    await _revoke(gateway, message, store)
    log(logging.INFO, "user_revoked", user=user_id, sockets=len(infos))
    return len(infos)


async def _revoke(
    gateway: Gateway, message: dict[str, Any], store: Callable[[], Awaitable[None]]
) -> None:
    """Revoke here at once, then in the store and on the other processes."""
    _revoke_here(gateway, message)
    told = gateway._cluster is None or await gateway._cluster.publish_control(message)
    try:
        await store()
    except Exception as exc:
        log(logging.ERROR, "revocation_not_stored", error=type(exc).__name__)
        told = False
    if not told:
        raise GatewayNotRunning(
            "Redis is unreachable: the sockets of this process were ended, but the "
            "revocation may not reach the others; try again"
        )


def _revoke_here(gateway: Gateway, message: dict[str, Any]) -> None:
    """Remember a revocation in this process and end the sockets it covers here."""
    ttl = message.get("ttl")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
        return
    revoked = gateway._revoked_here
    covers: Callable[[Identity], bool]
    session, user, before = message.get("session"), message.get("user"), message.get("before")
    if isinstance(session, str):
        revoked.revoke_digest_now(session, ttl=ttl)

        def covers(identity: Identity) -> bool:
            own = identity.session_id
            return own is not None and session_digest(own) == session

    elif isinstance(user, str) and isinstance(before, int | float) and not isinstance(before, bool):
        revoked.revoke_user_now(user, before=before, ttl=ttl)

        def covers(identity: Identity) -> bool:
            return identity.user_id == user and revoked.revoked_now(identity)

    else:
        return
    for conn in list(gateway.connections.values()):
        if covers(conn.identity):
            gateway._sessions.end(conn, "revoked")


async def on_control(gateway: Gateway, message: dict[str, Any]) -> None:
    """Run a control message another process published."""
    op = message.get("op")
    if op == "reauthorize" and isinstance(message.get("userId"), str):
        identity = message.get("identity")
        await _reauthorize_here(
            gateway, message["userId"], None if identity is None else identity_from_json(identity)
        )
    elif op == "revoke":
        _revoke_here(gateway, message)
    elif op == "resubscribed":
        await recheck_revoked(gateway)


async def recheck_revoked(gateway: Gateway) -> int:
    """End every live socket whose credential the store now says is revoked (after
    this process was cut off from the others' control messages); returns how many."""
    store = gateway.revocations
    if isinstance(store, RedisRevocationStore):
        store.reachable()  # the channel is back: so is Redis, whatever the backoff says
    verdicts: dict[tuple[str, str | None, float | None], bool] = {}
    ended = 0
    for conn in list(gateway.connections.values()):
        identity = conn.identity
        issued = identity.issued_at.timestamp() if identity.issued_at else None
        key = (identity.user_id, identity.session_id, issued)
        if key not in verdicts:
            verdicts[key] = await store.is_revoked(identity)
        if verdicts[key]:
            gateway._sessions.end(conn, "revoked")
            ended += 1
    if ended:
        log(logging.WARNING, "revoked_while_cut_off", sockets=ended)
    return ended


async def announce_swept(
    gateway: Gateway, swept: list[tuple[ConnectionInfo, frozenset[str]]]
) -> None:
    """Tell the rooms that the users of a dead process have left."""
    for info, rooms in swept:
        namespace = gateway.namespaces.get(info.namespace)
        if namespace is None or not rooms:
            continue
        conn = Connection(
            sid=info.sid,
            namespace=info.namespace,
            identity=info.identity,
            handshake=Handshake(namespace=info.namespace),
        )
        for room in sorted(rooms):
            await namespace._announce(conn, room, joined=False)
