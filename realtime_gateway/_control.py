"""Control of live sockets across the cluster: what :meth:`Gateway.disconnect_socket`,
:meth:`Gateway.disconnect_user` and :meth:`Gateway.reauthorize` do, and what a
process does with the control messages and sweeps of the others.

A cluster-wide operation is done here for this process's sockets and published
as a control message (:func:`on_control` runs it on every other process); the
sockets of a process that died are announced to their rooms (:func:`announce_swept`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._cluster import identity_from_json, identity_to_json
from ._connection import Connection
from ._identity import Handshake, Identity
from ._registry import ConnectionInfo

if TYPE_CHECKING:
    from ._gateway import Gateway

__all__ = ["announce_swept", "disconnect_socket", "disconnect_user", "on_control", "reauthorize"]


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
        namespace = gateway.namespaces.get(info.namespace)
        if conn is None or namespace is None:
            continue  # on another process, which gets the control message
        if identity is not None:
            conn.identity = identity
            gateway._sessions.rearm(conn)
        if conn.identity.is_expired() or not await gateway.is_allowed(
            conn.identity, "connect", conn.namespace
        ):
            await disconnect_socket(gateway, conn.sid)
            revoked[conn.sid] = sorted(conn.rooms)
            continue
        left = await namespace.reauthorize(conn)
        if left:
            revoked[conn.sid] = left
    return revoked


async def on_control(gateway: Gateway, message: dict[str, Any]) -> None:
    """Run a control message another process published."""
    if message.get("op") == "reauthorize" and isinstance(message.get("userId"), str):
        identity = message.get("identity")
        await _reauthorize_here(
            gateway, message["userId"], None if identity is None else identity_from_json(identity)
        )


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
