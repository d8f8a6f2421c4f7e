"""The built-in namespaces: ``/`` (rooms), ``/notifications``, ``/chat`` and ``/updates``.

Each speaks the default wire protocol existing socket.io front-ends use, asks the
gateway's authorizer before putting a socket in any room, and can be used as is,
configured through its constructor, or subclassed. What a room needs is decided
by the :class:`Authorizer` (see :func:`reference_rules`), never here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import partial
from typing import Any

import attrs

from ._clock import epoch_ms, iso_timestamp
from ._connection import Connection
from ._exceptions import InvalidPayload, LimitExceeded, PermissionDenied
from ._namespace import GatewayNamespace, event
from ._notification import NOTIFICATION_TYPES, make_notification
from ._rules import REFERENCE_RESOURCES

__all__ = [
    "NOTIFICATION_TYPES",
    "ChatNamespace",
    "MainNamespace",
    "NotificationsNamespace",
    "UpdatesNamespace",
    "default_namespaces",
    "make_notification",
]

MessageHook = Callable[[Connection, dict[str, Any]], Awaitable[Mapping[str, Any] | None]]
MarkReadHook = Callable[[Connection, list[str]], Awaitable[Iterable[str] | None]]

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")
_CHANNEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_RESOURCE_TYPE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_ROOM_NAME = 200
MAX_LIST = 100


# -- payload parsers -------------------------------------------------------------


def _to_id(field: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidPayload(f"'{field}' must be a string or an integer", field=field)
    text = str(value)
    if not _ID.fullmatch(text):
        raise InvalidPayload(
            f"'{field}' must be 1 to 128 letters, digits or '_.@-' characters", field=field
        )
    return text


def _id_payload(field: str) -> Callable[[object], str]:
    """An id, bare or as ``{field: id}``."""

    def parse(payload: object) -> str:
        if isinstance(payload, Mapping):
            if field not in payload:
                raise InvalidPayload(f"Missing field '{field}'", field=field)
            payload = payload[field]
        return _to_id(field, payload)

    return parse


def _conversation_id(value: object) -> str:
    return _to_id("conversationId", value)


def _room_name(payload: object) -> str:
    if isinstance(payload, Mapping):
        payload = payload.get("room")
    if (
        not isinstance(payload, str)
        or not payload.strip()
        or len(payload) > MAX_ROOM_NAME
        or _CONTROL.search(payload)
    ):
        raise InvalidPayload(
            f"Room must be a name of 1 to {MAX_ROOM_NAME} printable characters", field="room"
        )
    return payload


def _one_or_many(payload: object, field: str, item: Callable[[object], str]) -> list[str]:
    items = payload if isinstance(payload, list) else [payload]
    if not items or len(items) > MAX_LIST:
        raise InvalidPayload(f"'{field}' must hold 1 to {MAX_LIST} items", field=field)
    return list(dict.fromkeys(item(value) for value in items))


def _channel(value: object) -> str:
    if not isinstance(value, str) or not _CHANNEL.fullmatch(value):
        raise InvalidPayload(
            "A channel is a name of 1 to 64 letters, digits or '_.-' characters",
            field="channels",
        )
    return value


def _channels(payload: object) -> list[str]:
    if isinstance(payload, Mapping):
        payload = payload.get("channels", payload.get("channel"))
    return _one_or_many(payload, "channels", _channel)


def _ids(payload: object) -> list[str]:
    if isinstance(payload, Mapping):
        payload = payload.get("ids", payload.get("notificationIds"))
    return _one_or_many(payload, "ids", partial(_to_id, "ids"))


def _non_empty_text(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidPayload(f"'{attribute.alias}' must be non-empty text", field=attribute.alias)


def _short_text(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not _CHANNEL.fullmatch(value):
        raise InvalidPayload(f"'{attribute.alias}' must be a short name", field=attribute.alias)


@attrs.frozen
class ChatMessageIn:
    """The ``send:message`` payload."""

    conversation_id: str = attrs.field(alias="conversationId", converter=_conversation_id)
    content: str = attrs.field(validator=_non_empty_text)
    type: str = attrs.field(default="text", validator=_short_text)


def _resource_ref(payload: object) -> tuple[str, str]:
    if isinstance(payload, list) and len(payload) == 2:
        kind, resource_id = payload
    elif isinstance(payload, Mapping):
        for field in ("resourceType", "resourceId"):
            if field not in payload:
                raise InvalidPayload(f"Missing field '{field}'", field=field)
        kind, resource_id = payload["resourceType"], payload["resourceId"]
    else:
        raise InvalidPayload("Send (resourceType, resourceId) as two arguments")
    if not isinstance(kind, str) or not _RESOURCE_TYPE.fullmatch(kind):
        raise InvalidPayload("'resourceType' must be a resource type", field="resourceType")
    return kind, _to_id("resourceId", resource_id)


# -- notifications ----------------------------------------------------------------


# -- the namespaces ------------------------------------------------------------------


class MainNamespace(GatewayNamespace):
    """``/``: a welcome event, ``ping``, rooms and free-form messages.

    On connect the client gets ``connected`` ``{socketId, userId, timestamp,
    serverTime}`` (``timestamp`` epoch milliseconds, ``serverTime`` ISO 8601).
    ``join:room`` asks the authorizer for ``join`` on the room name. ``message``
    (an object) is passed to ``on_message(conn, data)``, whose returned mapping, if
    any, is added to the ``{success, messageId, receivedAt}`` acknowledgement.
    Users present in a room hear ``presence:join`` / ``presence:leave``.
    """

    announce_presence = True

    def __init__(self, namespace: str = "/", *, on_message: MessageHook | None = None) -> None:
        super().__init__(namespace)
        self.on_message = on_message

    async def on_ready(self, conn: Connection) -> None:
        await self.gateway.server.emit(
            "connected",
            {
                "socketId": conn.sid,
                "userId": conn.identity.user_id,
                "timestamp": epoch_ms(),
                "serverTime": iso_timestamp(),
            },
            to=conn.sid,
            namespace=self.namespace,
        )

    @event("ping")
    async def ping(self, conn: Connection, payload: object) -> dict[str, Any]:
        """Answer ``{status: "pong", timestamp}`` (epoch milliseconds)."""
        return {"status": "pong", "timestamp": epoch_ms()}

    @event("join:room", payload=_room_name)
    async def join_room(self, conn: Connection, room: str) -> dict[str, Any]:
        """Join ``room`` if the authorizer allows ``join`` on it."""
        await self.join(conn, room)
        return {"room": room}

    @event("leave:room", payload=_room_name)
    async def leave_room(self, conn: Connection, room: str) -> dict[str, Any]:
        """Leave a room joined with ``join:room``."""
        await self.leave(conn, room)
        return {"room": room}

    @event("message", payload=dict)
    async def message(self, conn: Connection, data: dict[str, Any]) -> dict[str, Any]:
        """Hand ``data`` to ``on_message`` and acknowledge it with an id."""
        ack: dict[str, Any] = {"messageId": str(uuid.uuid4()), "receivedAt": epoch_ms()}
        if self.on_message is not None:
            ack.update(await self.on_message(conn, data) or {})
        return ack


class NotificationsNamespace(GatewayNamespace):
    """``/notifications``: each socket is in its ``user:{id}`` and ``role:{role}``
    rooms (so :meth:`Gateway.notify_user` / :meth:`Gateway.notify_role` reach it)
    and may ``subscribe`` to channels, each in room ``channel:{name}`` and allowed
    by the authorizer's ``subscribe`` on that room. ``mark:read`` passes the ids to
    ``on_mark_read(conn, ids)``, which persists them and may return the ids it
    actually marked.
    """

    def __init__(
        self, namespace: str = "/notifications", *, on_mark_read: MarkReadHook | None = None
    ) -> None:
        super().__init__(namespace)
        self.on_mark_read = on_mark_read

    @staticmethod
    def channel_room(channel: str) -> str:
        """The room of ``channel``."""
        return f"channel:{channel}"

    @event("subscribe", payload=_channels)
    async def subscribe(self, conn: Connection, channels: list[str]) -> dict[str, Any]:
        """Subscribe to each allowed channel; list the subscribed and the denied.
        Channels beyond ``max_rooms_per_socket`` are denied too and also listed in
        ``limitedChannels`` (only present then); those before them stay subscribed."""
        subscribed: list[str] = []
        denied: list[str] = []
        limited: list[str] = []
        for channel in channels:
            room = self.channel_room(channel)
            if limited and room not in conn.rooms:
                # Full: the rest is not asked for again (one refusal counted and logged).
                limited.append(channel)
                continue
            try:
                await self.join(conn, room, action="subscribe")
            except PermissionDenied:
                denied.append(channel)
            except LimitExceeded:
                limited.append(channel)
            else:
                subscribed.append(channel)
        ack: dict[str, Any] = {
            "subscribedChannels": subscribed,
            "deniedChannels": denied + limited,
        }
        if limited:
            ack["limitedChannels"] = limited
        return ack

    @event("unsubscribe", payload=_channels)
    async def unsubscribe(self, conn: Connection, channels: list[str]) -> dict[str, Any]:
        """Leave each subscribed channel; channels never subscribed are left out."""
        left: list[str] = []
        for channel in channels:
            room = self.channel_room(channel)
            if conn.rooms.get(room, None) is not None:
                await self.leave(conn, room)
                left.append(channel)
        return {"unsubscribedChannels": left}

    @event("mark:read", payload=_ids)
    async def mark_read(self, conn: Connection, ids: list[str]) -> dict[str, Any]:
        """Have ``on_mark_read`` persist the read state of ``ids``."""
        marked = ids
        if self.on_mark_read is not None:
            result = await self.on_mark_read(conn, ids)
            if result is not None:
                marked = [str(marked_id) for marked_id in result]
        return {"markedIds": marked}


class ChatNamespace(GatewayNamespace):
    """``/chat``: conversations in rooms ``conversation:{id}``.

    ``join:conversation`` asks the authorizer for ``join`` (membership is the
    application's rule); the others hear ``user:joined`` when a user's first socket
    joins and ``user:left`` when their last leaves. Only a socket in the
    conversation, whose user the authorizer allows to ``send``, may
    ``send:message`` (content capped by ``GatewayConfig.max_message_length``, type
    among ``message_types``) or signal typing, which is never echoed to the
    sender's own sockets. ``on_message(conn, message)`` may persist a message before
    it is delivered, or refuse it by raising a :class:`GatewayError`.
    """

    announce_presence = True

    def __init__(
        self,
        namespace: str = "/chat",
        *,
        on_message: MessageHook | None = None,
        message_types: Iterable[str] = ("text",),
    ) -> None:
        super().__init__(namespace)
        self.on_message = on_message
        self.message_types = frozenset(message_types)

    @staticmethod
    def conversation_room(conversation_id: str) -> str:
        """The room of conversation ``conversation_id``."""
        return f"conversation:{conversation_id}"

    @event("join:conversation", payload=_id_payload("conversationId"))
    async def join_conversation(self, conn: Connection, conversation_id: str) -> dict[str, Any]:
        """Join a conversation the authorizer allows; ack lists the members present."""
        room = self.conversation_room(conversation_id)
        await self.join(conn, room)
        members = await self.gateway.presence(room, namespace=self.namespace)
        return {"conversationId": conversation_id, "members": sorted(members)}

    @event("leave:conversation", payload=_id_payload("conversationId"))
    async def leave_conversation(self, conn: Connection, conversation_id: str) -> dict[str, Any]:
        """Leave a joined conversation."""
        await self.leave(conn, self.conversation_room(conversation_id))
        return {"conversationId": conversation_id}

    @event("send:message", payload=ChatMessageIn)
    async def send_message(self, conn: Connection, incoming: ChatMessageIn) -> dict[str, Any]:
        """Deliver a message to the conversation, sender included."""
        room = await self._member_room(conn, incoming.conversation_id, "send")
        limit = self.gateway.config.max_message_length
        if len(incoming.content) > limit:
            raise InvalidPayload(f"'content' is longer than {limit} characters", field="content")
        if incoming.type not in self.message_types:
            raise InvalidPayload(
                f"'type' must be one of {', '.join(sorted(self.message_types))}", field="type"
            )
        message = {
            "id": str(uuid.uuid4()),
            "conversationId": incoming.conversation_id,
            "senderId": conn.identity.user_id,
            "senderName": conn.identity.name,
            "content": incoming.content,
            "type": incoming.type,
            "timestamp": epoch_ms(),
        }
        if self.on_message is not None:
            await self.on_message(conn, message)
        await self.gateway.server.emit("new:message", message, to=room, namespace=self.namespace)
        return {"message": message}

    @event("typing:start", payload=_id_payload("conversationId"))
    async def typing_start(self, conn: Connection, conversation_id: str) -> None:
        """Tell the others in the conversation this user is typing."""
        await self._typing(conn, conversation_id, "user:typing")

    @event("typing:stop", payload=_id_payload("conversationId"))
    async def typing_stop(self, conn: Connection, conversation_id: str) -> None:
        """Tell the others in the conversation this user stopped typing."""
        await self._typing(conn, conversation_id, "user:stopped_typing")

    async def on_presence(self, conn: Connection, room: str, *, joined: bool) -> None:
        await super().on_presence(conn, room, joined=joined)
        if not room.startswith("conversation:"):
            return
        await self.gateway.server.emit(
            "user:joined" if joined else "user:left",
            {
                "userId": conn.identity.user_id,
                "userName": conn.identity.name,
                "conversationId": room.partition(":")[2],
                "timestamp": epoch_ms(),
            },
            to=room,
            skip_sid=conn.sid,
            namespace=self.namespace,
        )

    async def _typing(self, conn: Connection, conversation_id: str, event_name: str) -> None:
        room = await self._member_room(conn, conversation_id, "send")
        own = [
            info.sid
            for info in await self.gateway.user_sockets(conn.identity.user_id)
            if info.namespace == self.namespace
        ]
        await self.gateway.server.emit(
            event_name,
            {
                "userId": conn.identity.user_id,
                "userName": conn.identity.name,
                "conversationId": conversation_id,
            },
            to=room,
            skip_sid=own or conn.sid,
            namespace=self.namespace,
        )

    async def _member_room(self, conn: Connection, conversation_id: str, action: str) -> str:
        room = self.conversation_room(conversation_id)
        if room not in conn.rooms:
            raise await self.gateway.refuse(
                conn.identity, action, room, "join the conversation first"
            )
        await self.gateway.authorize(conn.identity, action, room)
        return room


class UpdatesNamespace(GatewayNamespace):
    """``/updates``: live updates of records, by resource type.

    For each type in ``resource_types`` (reference: ``patient``, ``encounter``) a
    client sends ``subscribe:{type}`` with an id, allowed when the authorizer
    allows ``subscribe`` on room ``{type}:{id}`` (the permission each type needs is
    the rule set's business; the ack is ``{success, {type}Id}``), and leaves with
    ``unsubscribe`` sent as two arguments ``(resourceType, resourceId)`` (ack
    ``{success, room}``). :meth:`Gateway.publish_update` sends ``{type}:update``
    ``{{type}Id, updateType, data, timestamp}`` (epoch milliseconds) to the subscribers.
    """

    def __init__(
        self, namespace: str = "/updates", *, resource_types: Iterable[str] = REFERENCE_RESOURCES
    ) -> None:
        super().__init__(namespace)
        types = tuple(resource_types)
        for kind in types:
            if not isinstance(kind, str) or not _RESOURCE_TYPE.fullmatch(kind):
                raise ValueError(f"a resource type is a lowercase name, got {kind!r}")
            self.add_event(
                f"subscribe:{kind}",
                partial(self._subscribe, kind),
                payload=_id_payload(f"{kind}Id"),
            )
        if not types:
            raise ValueError("resource_types must name at least one resource type")
        self.resource_types = frozenset(types)

    @staticmethod
    def resource_room(resource_type: str, resource_id: str) -> str:
        """The room of one resource's subscribers."""
        return f"{resource_type}:{resource_id}"

    async def _subscribe(
        self, resource_type: str, conn: Connection, resource_id: str
    ) -> dict[str, Any]:
        await self.join(conn, self.resource_room(resource_type, resource_id), action="subscribe")
        return {f"{resource_type}Id": resource_id}

    @event("unsubscribe", payload=_resource_ref)
    async def unsubscribe(self, conn: Connection, ref: tuple[str, str]) -> dict[str, Any]:
        """Stop receiving one resource's updates: ``(resourceType, resourceId)`` as
        two arguments (or one ``{resourceType, resourceId}`` object); acks ``{room}``."""
        resource_type, resource_id = ref
        self._check_type(resource_type)
        room = self.resource_room(resource_type, resource_id)
        await self.leave(conn, room)
        return {"room": room}

    def update(
        self, resource_type: str, resource_id: str | int, update_type: str, data: Any
    ) -> tuple[str, str, dict[str, Any]]:
        """The event, room and payload of one update; raises :class:`InvalidPayload`
        naming a bad argument."""
        self._check_type(resource_type)
        resource_id = _to_id("resourceId", resource_id)
        if not isinstance(update_type, str) or not update_type.strip():
            raise InvalidPayload("'updateType' must be non-empty text", field="updateType")
        payload = {
            f"{resource_type}Id": resource_id,
            "updateType": update_type,
            "data": data if data is not None else {},
            "timestamp": epoch_ms(),
        }
        return f"{resource_type}:update", self.resource_room(resource_type, resource_id), payload

    def _check_type(self, resource_type: str) -> None:
        if resource_type not in self.resource_types:
            raise InvalidPayload("Unknown resource type", field="resourceType")


def default_namespaces() -> list[GatewayNamespace]:
    """The four built-in namespaces with their default settings."""
    return [MainNamespace(), NotificationsNamespace(), ChatNamespace(), UpdatesNamespace()]
