"""Several gateway processes as one, over Redis.

:class:`Cluster` is this process's membership, switched on by
``GatewayConfig.redis_url``; it holds two parts:

- :class:`ClusterManager`, python-socketio's Redis client manager with messages
  that are JSON signed with itsdangerous (an unsigned or badly signed message is
  dropped and counted), that carries the gateway's own control messages
  (reauthorization), and that survives Redis going away: local delivery goes on,
  the outage is logged once, and publishing resumes, with backoff, when Redis is back.
  Every ``cluster_canary_interval`` it publishes a canary and listens for it: a
  process that has not heard its own for three intervals is deaf to the cluster
  (its listener died, or its subscription is gone), which :meth:`Cluster.bus_deaf`
  reports (``/health`` answers 503 ``degraded``) until the canary is heard again.
- :class:`RedisRegistry`, the :class:`Registry` whose view is the whole cluster.
  Each process keeps its own sockets in a :class:`MemoryRegistry` and mirrors them
  to Redis; a heartbeat every ``cluster_ttl / 3`` seconds refreshes and
  reconciles that mirror, and removes the processes whose heartbeat is older
  than ``cluster_ttl``: a process that dies leaves every other process's view
  within ``cluster_ttl`` plus one heartbeat.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import logging
import os
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import socketio
from itsdangerous import BadSignature, URLSafeSerializer
from socketio.packet import Packet

from ._auth import SignedTokenAuthenticator
from ._config import GatewayConfig, redis_address
from ._connection import Connection
from ._exceptions import ConfigurationError
from ._fanout import RoomIndex, deliver, encode_event
from ._identity import Identity
from ._log import log
from ._metrics import Metrics
from ._outage import Outage
from ._recovery import OffsetKey, offset_key
from ._registry import ConnectionInfo, MemoryRegistry

if TYPE_CHECKING:
    from ._recover import Recovery
    from ._recovery_redis import RedisRecoveryStore

__all__ = [
    "Cluster",
    "ClusterManager",
    "RedisRegistry",
    "identity_from_json",
    "identity_to_json",
]

CLUSTER_SALT = "realtime_gateway.cluster"
DEAF_AFTER = 3  # canary intervals without this process's own canary
_SEP = "\x1f"  # joins namespace, room and user in one hash field; never in a name

Control = Callable[[dict[str, Any]], Awaitable[None]]

# Records a socket unless its user already has ARGV[2] (> 0) sockets in the cluster;
# answers -1 then, else 1 if the user left this namespace within the reconnection
# window (the departed key existed), else 0.
_ADD_SCRIPT = """
local limit = tonumber(ARGV[2])
if limit > 0 and tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') >= limit then
  return -1
end
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
redis.call('SADD', KEYS[4], ARGV[3])
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('SADD', KEYS[5], ARGV[3])
return redis.call('DEL', KEYS[6])
"""
_OVER_LIMIT = -1

# A socket joins (ARGV[5] = 1) or leaves (-1) a room: the user's presence count in
# the room (KEYS[1], field ARGV[1]) and this process's share of it (KEYS[2], field
# ARGV[2]) move, the socket's record (KEYS[3], field ARGV[3]) becomes ARGV[4]; on
# a leave (ARGV[6] = '1') that empties the room of the user, both count fields go.
# Answers the room's count for the user. One command where a transaction was five.
_MOVE_SCRIPT = """
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[5])
redis.call('HINCRBY', KEYS[2], ARGV[2], ARGV[5])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
if ARGV[6] == '1' and n <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[2])
end
return n
"""
# A socket joins several rooms at once (the gateway's own rooms, at connect): for
# each room KEYS[i >= 3] (the room's presence, field ARGV[1], the user) the count
# moves up, and this process's share of it (KEYS[1], field ARGV[i + 1]); the
# socket's record (KEYS[2], field ARGV[2]) becomes ARGV[3]. Answers the counts.
_JOIN_ALL_SCRIPT = """
local counts = {}
for i = 3, #KEYS do
  counts[#counts + 1] = redis.call('HINCRBY', KEYS[i], ARGV[1], 1)
  redis.call('HINCRBY', KEYS[1], ARGV[i + 1], 1)
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return counts
"""
REDIS_CONNECTIONS = 100  # connections per process to Redis for commands (the bus has its own)
PENDING_LIMIT = 1_000  # own logged emits awaiting their echo (past it: checked as any)
PUBLISH_BATCH = 256  # messages per pipeline of the publish queue
FLUSH_WITHIN = 5.0  # seconds a clean stop waits for the publish queue to empty
PUBLISH_TIMEOUT = 5.0  # seconds a publish (or append) may take before Redis counts as down


def process_id() -> str:
    """A name for this process that is unique in the cluster."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def identity_to_json(identity: Identity) -> dict[str, Any]:
    """An identity as JSON data (attributes that are not JSON are left out)."""
    try:
        attributes = json.loads(json.dumps(dict(identity.attributes)))
    except (TypeError, ValueError):
        attributes = {}
    return {
        "userId": identity.user_id,
        "roles": sorted(identity.roles),
        "permissions": sorted(identity.permissions),
        "sessionId": identity.session_id,
        "displayName": identity.display_name,
        "issuedAt": identity.issued_at.isoformat() if identity.issued_at else None,
        "expiresAt": identity.expires_at.isoformat() if identity.expires_at else None,
        "attributes": attributes,
    }


def identity_from_json(data: Mapping[str, Any]) -> Identity:
    """The inverse of :func:`identity_to_json`."""
    expires, issued = data.get("expiresAt"), data.get("issuedAt")
    return Identity(
        user_id=data["userId"],
        roles=data.get("roles", ()),
        permissions=data.get("permissions", ()),
        session_id=data.get("sessionId"),
        display_name=data.get("displayName"),
        issued_at=dt.datetime.fromisoformat(issued) if issued else None,
        expires_at=dt.datetime.fromisoformat(expires) if expires else None,
        attributes=data.get("attributes") or {},
    )


def _ignore() -> None:
    return None


def _ignore_count(count: int) -> None:
    return None


class _Append:
    """An emit to append to its namespace's stream (and publish), by script."""

    __slots__ = ("namespace", "room", "signed", "skip", "stream")

    def __init__(self, stream: RedisRecoveryStore, namespace: str, signed: str) -> None:
        self.stream = stream
        self.namespace = namespace
        self.signed = signed
        self.room: Any = None
        self.skip: Any = None


class _Outgoing:
    """One entry of the publish queue: a message to publish, or an append; with a
    future for who waits for its result (``None``: not sent)."""

    __slots__ = ("future", "what")

    def __init__(self, what: str | _Append, future: asyncio.Future[Any] | None) -> None:
        self.what = what
        self.future = future


class ClusterManager(RoomIndex, socketio.AsyncRedisManager):  # type: ignore[misc]
    """python-socketio's Redis manager with signed JSON messages and quiet recovery.

    ``signer`` signs every published message and verifies every received one;
    ``None`` sends them unsigned (and accepts only unsigned ones). ``dropped`` is
    called for every message refused. ``control`` receives the gateway's own
    control messages (those with a ``"rtg"`` key) from other processes.

    Local delivery is python-socketio's, but task-free (the fan-out of
    :mod:`._fanout`, shared with the in-process manager). With missed-message
    recovery on (``stream`` set, by :class:`~._recovery_redis.RedisRecoveryStore`),
    an emit to a room without a callback is appended to its namespace's stream
    and published by one script; the stream id is its offset, carried outside
    the signed part of the message. Every process, this one included, delivers
    it when it hears it on the bus: each socket then gets events in the stream's
    order, which exactly-once recovery needs (the client keeps only its last
    offset). While Redis is unreachable an emit is delivered here without an
    offset, and nothing is logged.

    Publishing never holds an emit up for a Redis round trip: every message for
    the bus (emits, control messages, appends) goes into one queue that one task
    drains in order, pipelining whatever is waiting, so the other processes hear
    this process's messages in the order it sent them. The queue holds at most
    ``publish_queue`` messages; past that an emit waits for room (Redis is slower
    than this process), which ``backpressure`` counts. While Redis is unreachable
    messages for the others are dropped, and ``unsent`` counts them; local
    delivery goes on. :meth:`close` publishes what is still queued first.
    """

    connected: bool
    host_id: str
    recovery: Recovery | None = None
    stream: RedisRecoveryStore | None = None

    def __init__(
        self,
        url: str,
        *,
        channel: str,
        signer: URLSafeSerializer | None,
        dropped: Callable[[], None],
        control: Control,
        redis_options: Mapping[str, Any] | None = None,
        publish_queue: int = 10_000,
        unsent: Callable[[int], None] | None = None,
        backpressure: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(
            url=url,
            channel=channel,
            logger=logging.getLogger("socketio.cluster"),
            redis_options=dict(redis_options or {}),
        )
        self._publisher: Any = None
        self._signer = signer
        self._dropped = dropped
        self._control = control
        self._outage = Outage("publish")
        self._listen_outage = Outage("subscribe")
        self._canaries_sent = 0
        self._canary_heard = 0
        self.heard_at = time.monotonic()
        """When this process last heard its own canary (``time.monotonic()``)."""
        self.listening = False
        """Whether this process is subscribed to the channel (so hears its own emits)."""
        self.heads: dict[str, tuple[str, OffsetKey]] = {}
        """The newest offset delivered here, by namespace."""
        # Namespaces with events sent here unlogged (Redis unreachable) since the
        # last append: the next append marks the gap.
        self._unlogged: set[str] = set()
        # This process's logged emits until it hears them back, by nonce.
        self._pending: dict[str, dict[str, Any]] = {}
        self._sent = 0
        # Who waits for an offset of a namespace to be delivered here (heard()).
        self._awaited: dict[str, list[tuple[OffsetKey, asyncio.Future[None]]]] = {}
        # The publish queue: (a signed message to PUBLISH, or the append script's
        # call) and, for who waits for the outcome, a future.
        self._outbox: deque[_Outgoing] = deque()
        self._outbox_limit = publish_queue
        self._unsent = unsent or _ignore_count
        self._backpressure = backpressure or _ignore
        self._drainer: asyncio.Task[None] | None = None
        self._queued = asyncio.Event()  # set when the queue has something
        self._drained = asyncio.Event()  # set after each batch
        self._busy = False  # a batch is on its way to Redis
        # Own messages start with this, outside the signature: the listener drops
        # them unread (python-socketio's listener would drop them after checking).
        self._own = f'{{"h":{json.dumps(self.host_id)},'
        self._own_raw = self._own.encode()

    def _encode(self, data: Mapping[str, Any]) -> str:
        if self._signer is None:
            return json.dumps(data, separators=(",", ":"))
        return json.dumps({"signed": self._signer.dumps(data)}, separators=(",", ":"))

    def _decode(self, raw: bytes | str) -> dict[str, Any] | None:
        try:
            message = json.loads(raw)
            offset = message.get("offset") if isinstance(message, dict) else None
            # This process's own logged emit, heard back: the message it sent, with
            # no signature to check again (it never left this process's hands).
            mine = self._pending.pop(message.get("p"), None) if offset is not None else None
            if mine is not None:
                message = dict(mine)
            elif self._signer is not None:
                message = self._signer.loads(message["signed"])
        except (ValueError, TypeError, AttributeError, KeyError, BadSignature):
            return None
        if not isinstance(message, dict):
            return None
        # The offset is the stream id Redis gave the event, added by the append
        # script outside the signature: only a well-formed one is taken.
        message.pop("offset", None)
        if offset is not None:
            if offset_key(offset) is None:
                return None
            message["offset"] = offset
        return message

    # -- emitting ---------------------------------------------------------------------

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str | None = None,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        room = to or room
        namespace = namespace or "/"
        stream = self.stream
        if (
            stream is None
            or callback is not None
            or kwargs.get("ignore_queue")
            or (isinstance(room, str) and self.is_sid_room(namespace, room))
        ):
            await super().emit(
                event,
                data,
                namespace=namespace,
                room=room,
                skip_sid=skip_sid,
                callback=callback,
                **kwargs,
            )
            return
        # python-socketio's message, as AsyncPubSubManager.emit builds it.
        args = list(data) if isinstance(data, tuple) else [data]
        binary = Packet.data_is_binary(args)
        if binary:
            args, attachments = Packet.deconstruct_binary(args)
            args = [args, *[base64.b64encode(a).decode() for a in attachments]]
        message = {
            "method": "emit",
            "event": event,
            "data": args,
            "binary": binary,
            "namespace": namespace,
            "room": room,
            "skip_sid": skip_sid,
            "callback": None,
            "host_id": self.host_id,
        }
        self._sent += 1
        nonce = f"{self.host_id[:16]}{self._sent:x}"
        self._pending[nonce] = message
        if len(self._pending) > PENDING_LIMIT:  # echoes that never came
            del self._pending[next(iter(self._pending))]
        offset = await self._append(stream, message, nonce)
        if offset is None:
            self._unlogged.add(namespace)
        if offset is None or not self.listening:
            # Not on the bus (Redis is unreachable), or this process cannot hear it.
            self._pending.pop(nonce, None)
            await self._deliver(message, offset)

    async def _append(
        self, stream: RedisRecoveryStore, message: dict[str, Any], nonce: str
    ) -> str | None:
        """Log and publish ``message``: its offset, ``None`` if Redis is unreachable.
        ``nonce`` (outside the signature) lets this process know its own echo."""
        if not self._outage.may_try():
            return None
        signed = self._encode(message)
        append = _Append(stream, message["namespace"], f'{signed[:-1]},"p":{json.dumps(nonce)}}}')
        append.room, append.skip = message["room"], message["skip_sid"]
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not await self._enqueue(_Outgoing(append, future)):
            return None
        offset = await future
        if offset is None:
            return None
        return offset.decode() if isinstance(offset, bytes) else str(offset)

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        if message.get("callback") is not None:
            await super()._handle_emit(message)
            return
        await self._deliver(message, message.get("offset"))

    def frames_of(self, message: Mapping[str, Any], offset: str | None) -> tuple[Any, ...]:
        """The frames of an emit ``message`` (``offset`` as its last argument)."""
        data = message["data"]
        if message.get("binary"):
            attachments = [base64.b64decode(a) for a in data[1:]]
            data = Packet.reconstruct_binary(data[0], attachments)
        # python-socketio's arguments: a list of one is that one (None is none).
        if isinstance(data, list) and len(data) == 1:
            args = [] if data[0] is None else [data[0]]
        else:
            args = list(data) if isinstance(data, list | tuple) else [data]
        if offset is not None:
            args.append(offset)
        return encode_event(self.server, message["event"], args, message["namespace"] or "/")

    async def _deliver(self, message: dict[str, Any], offset: str | None) -> None:
        """Deliver an emit ``message`` to this process's sockets, task-free."""
        namespace = message.get("namespace") or "/"
        key = None
        if offset is not None:
            key = self.saw(namespace, offset)
        frames = self.frames_of(message, offset)
        skip_sid = message.get("skip_sid")
        skip = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
        await deliver(self, namespace, message.get("room"), skip, frames, key)

    def saw(self, namespace: str, offset: str) -> OffsetKey | None:
        """Note that ``offset`` was delivered here; its key."""
        key = offset_key(offset)
        if key is not None:
            seen = self.heads.get(namespace)
            if seen is None or key > seen[1]:
                self.heads[namespace] = (offset, key)
                if self._awaited:
                    self._wake(namespace, key)
        return key

    async def heard(self, namespace: str, key: OffsetKey, within: float) -> bool:
        """Wait until the event at offset ``key`` of ``namespace``, or a later one,
        has been delivered here (heard on the bus); ``False`` if not ``within``
        seconds. At once while this process is not listening: then nothing more
        comes from the bus."""
        seen = self.heads.get(namespace)
        if not self.listening or (seen is not None and seen[1] >= key):
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self._awaited.setdefault(namespace, [])
        entry = (key, future)
        waiting.append(entry)
        try:
            async with asyncio.timeout(within):
                await future
            return True
        except TimeoutError:
            return False
        finally:
            waiting = self._awaited.get(namespace, [])
            if entry in waiting:
                waiting.remove(entry)
            if not waiting:
                self._awaited.pop(namespace, None)

    def _wake(self, namespace: str, key: OffsetKey) -> None:
        """Those waiting for an offset of ``namespace`` up to ``key``: it is here."""
        waiting = self._awaited.get(namespace)
        for wanted, future in waiting or ():
            if wanted <= key and not future.done():
                future.set_result(None)

    def _client(self) -> Any:
        if self._publisher is None:
            # A client of its own: the listener's connection is never disturbed, and
            # the client's pool reconnects by itself once Redis is back.
            self._publisher = self._get_redis_module().Redis.from_url(
                self.redis_url, **self.redis_options
            )
        return self._publisher

    async def _publish(self, data: Any) -> Any:
        # python-socketio's emits and room changes for the other processes: queued,
        # published in order; local delivery already happened.
        return await self._enqueue(_Outgoing(self._own + self._encode(data)[1:], None)) or None

    async def _publish_now(self, raw: str) -> bool:
        """Queue ``raw`` and wait until it is published: ``False`` if it was not."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not await self._enqueue(_Outgoing(raw, future)):
            return False
        return await future is not None

    async def _enqueue(self, item: _Outgoing) -> bool:
        """Put ``item`` on the publish queue; ``False`` (counted) while Redis is
        unreachable. Waits while the queue is full."""
        if not self._outage.may_try():
            self._unsent(1)
            return False
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        if len(self._outbox) >= self._outbox_limit:
            self._backpressure()
            while len(self._outbox) >= self._outbox_limit:
                self._drained.clear()
                await self._drained.wait()
            if not self._outage.may_try():
                self._unsent(1)
                return False
        self._outbox.append(item)
        self._queued.set()
        return True

    async def _drain(self) -> None:
        """Publish the queue in order, a pipeline of what is waiting at a time."""
        outbox, queued, drained = self._outbox, self._queued, self._drained
        while True:
            if not outbox:
                drained.set()
                queued.clear()
                await queued.wait()
                continue
            batch = [outbox.popleft() for _ in range(min(len(outbox), PUBLISH_BATCH))]
            self._busy = True
            results: list[Any] | None = None
            try:
                results = await self._send_batch(batch)
            finally:
                self._busy = False
                sent = 0
                for index, item in enumerate(batch):
                    result = None if results is None else results[index]
                    if item.future is None:
                        sent += results is not None
                    elif not item.future.done():
                        item.future.set_result(result)
                if sent < len(batch) and results is None:
                    self._unsent(sum(1 for item in batch if item.future is None))
                drained.set()

    async def _send_batch(self, batch: list[_Outgoing]) -> list[Any] | None:
        """One pipeline for ``batch``: each message's result, ``None`` if Redis
        could not be reached."""
        if not self._outage.may_try():
            return None
        publisher = self._client()
        gaps: set[str] = set()
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                async with publisher.pipeline(transaction=False) as pipe:
                    for item in batch:
                        what = item.what
                        if isinstance(what, str):
                            pipe.publish(self.channel, what)
                            continue
                        # The first append of a namespace after events it could
                        # not log marks the gap.
                        gap = what.namespace in self._unlogged and what.namespace not in gaps
                        gaps.add(what.namespace)
                        call = what.stream.append_args(
                            what.namespace, what.signed, what.room, what.skip, gap=gap
                        )
                        await what.stream.append_script(**call, client=pipe)
                    results: list[Any] = await pipe.execute()
        except Exception as exc:
            self._outage.failed(exc)
            return None
        self._outage.succeeded()
        self._unlogged.difference_update(gaps)
        return results

    async def flush(self, within: float = FLUSH_WITHIN) -> bool:
        """Wait until the publish queue is empty (published, or dropped with Redis
        unreachable); ``False`` if it is not within ``within`` seconds."""
        drained = self._drained
        if self._drainer is None or self._drainer.done():
            return not self._outbox
        try:
            async with asyncio.timeout(within):
                while self._outbox or self._busy:
                    drained.clear()
                    await drained.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Publish what is queued (at most ``FLUSH_WITHIN`` seconds), then close the
        publishing client and the listener's (the listener stopped)."""
        await self.flush()
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
            self._drainer = None
        left = [self._outbox.popleft() for _ in range(len(self._outbox))]
        for item in left:
            if item.future is not None and not item.future.done():
                item.future.set_result(None)
        if left:
            self._unsent(len(left))
        if self._publisher is not None:
            await self._publisher.aclose()
        pubsub = getattr(self, "pubsub", None)
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()

    async def publish_control(self, data: Mapping[str, Any]) -> bool:
        """Send a control message to the other processes; ``False`` if it could not
        be sent (Redis is unreachable)."""
        message = {**data, "rtg": True, "host_id": self.host_id}
        return await self._publish_now(self._own + self._encode(message)[1:])

    async def send_canary(self) -> None:
        """Publish the next canary, which only this process takes as its own."""
        self._canaries_sent += 1
        # Without the own mark: this process must hear it.
        await self._enqueue(
            _Outgoing(
                self._encode(
                    {"rtg": True, "op": "canary", "host_id": self.host_id, "n": self._canaries_sent}
                ),
                None,
            )
        )

    def _heard_canary(self, data: Mapping[str, Any]) -> None:
        number = data.get("n")
        # A replayed (older) canary proves nothing about the subscription now.
        if isinstance(number, int) and self._canary_heard < number <= self._canaries_sent:
            self._canary_heard = number
            self.heard_at = time.monotonic()

    async def _redis_listen_with_retries(self) -> AsyncIterator[Any]:
        subscribed = False
        while True:
            try:
                if not subscribed:
                    self._redis_connect()
                    await self.pubsub.subscribe(self.channel)
                    subscribed = self.listening = True
                    if self._listen_outage.down:
                        self._listen_outage.succeeded()
                        # Whatever was published meanwhile never reached this process.
                        await self._run_control({"op": "resubscribed"})
                async for message in self.pubsub.listen():
                    yield message
                # listen() ends when the client thinks it holds no subscription;
                # going round at once would spin without ever yielding.
                raise ConnectionError("the subscription ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                subscribed = self.listening = False
                self._listen_outage.failed(exc)
                await asyncio.sleep(self._listen_outage.backoff)

    async def _listen(self) -> AsyncIterator[dict[str, Any]]:
        channel = self.channel.encode()
        mark = self._own_raw
        async for message in self._redis_listen_with_retries():
            if message.get("channel") != channel or message.get("type") != "message":
                continue
            raw = message.get("data", b"")
            if isinstance(raw, bytes) and raw.startswith(mark):
                continue  # this process's own, sent for the others
            data = self._decode(raw)
            if data is None:
                self._dropped()
                continue
            if "offset" in data and data.get("method") == "emit":
                # A logged emit, this process's own included (python-socketio's
                # listener would skip those): delivered in the bus's order.
                try:
                    await self._handle_emit(data)
                except Exception as exc:
                    log(logging.ERROR, "cluster_delivery_failed", error=type(exc).__name__)
                continue
            if data.get("rtg"):
                own = data.get("host_id") == self.host_id
                if data.get("op") == "canary":
                    if own:  # the others' canaries are theirs to hear
                        self._heard_canary(data)
                elif not own:
                    await self._run_control(data)
                continue
            yield data

    async def _run_control(self, data: dict[str, Any]) -> None:
        try:
            await self._control(data)
        except Exception as exc:
            log(logging.ERROR, "control_failed", error=type(exc).__name__)


class RedisRegistry:
    """A :class:`Registry` shared by every gateway process on one Redis.

    Keys (all under ``prefix``): ``sockets`` (sid -> connection JSON), ``users``
    (user -> socket count), ``user:{id}`` (its sids), ``presence:{ns}|{room}``
    (user -> socket count), ``processes`` (process -> last heartbeat), and per
    process ``process:{id}:sids`` and ``process:{id}:presence``, which is what a
    dead process's sweep undoes. While Redis is unreachable every answer comes
    from this process alone and the next heartbeat after it returns reconciles.
    """

    def __init__(
        self,
        redis: Any,
        *,
        prefix: str,
        ttl: float,
        reconnect_window: float,
        process: str | None = None,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl = ttl
        self.reconnect_window = reconnect_window
        self.process = process or process_id()
        self.local = MemoryRegistry(reconnect_window=reconnect_window)
        self._outage = Outage("registry")
        self._swept: Callable[[list[tuple[ConnectionInfo, frozenset[str]]]], Awaitable[None]]
        self._swept = _nothing
        self._add_script = redis.register_script(_ADD_SCRIPT)
        self._move_script = redis.register_script(_MOVE_SCRIPT)
        self._join_all_script = redis.register_script(_JOIN_ALL_SCRIPT)
        # Each local socket's identity as JSON data, kept while its identity is the
        # same object: a socket's record is written at each join and heartbeat.
        self._identities: dict[str, tuple[Identity, dict[str, Any]]] = {}

    # -- keys ------------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _presence_key(self, namespace: str, room: str) -> str:
        return self._key("presence", f"{namespace}{_SEP}{room}")

    def on_swept(
        self, callback: Callable[[list[tuple[ConnectionInfo, frozenset[str]]]], Awaitable[None]]
    ) -> None:
        """Call ``callback`` with the sockets of dead processes a sweep removed and
        the rooms their users left with them."""
        self._swept = callback

    async def _attempt(self, operation: Callable[[], Awaitable[Any]]) -> Any:
        """Run a Redis operation; ``None`` while Redis is unreachable."""
        if not self._outage.may_try():
            return None
        try:
            result = await operation()
        except Exception as exc:
            self._outage.failed(exc)
            return None
        self._outage.succeeded()
        return result

    def _identity_json(self, conn: Connection) -> dict[str, Any]:
        cached = self._identities.get(conn.sid)
        if cached is None or cached[0] is not conn.identity:
            cached = self._identities[conn.sid] = (conn.identity, identity_to_json(conn.identity))
        return cached[1]

    def _info_json(self, conn: Connection, rooms: Iterable[str]) -> str:
        return json.dumps(
            {
                "sid": conn.sid,
                "namespace": conn.namespace,
                "identity": self._identity_json(conn),
                "rooms": sorted(rooms),
                "connectedAt": conn.connected_at,
                "lastActivity": conn.last_activity,
                "process": self.process,
            }
        )

    @staticmethod
    def _info_from_json(raw: bytes | str) -> ConnectionInfo:
        data = json.loads(raw)
        return ConnectionInfo(
            sid=data["sid"],
            namespace=data["namespace"],
            identity=identity_from_json(data["identity"]),
            rooms=frozenset(data["rooms"]),
            connected_at=data["connectedAt"],
            last_activity=data["lastActivity"],
            process=data.get("process"),
        )

    # -- the Registry protocol -------------------------------------------------------

    async def add(self, conn: Connection) -> bool:
        return bool(await self.add_within(conn, None))

    async def add_within(self, conn: Connection, limit: int | None) -> bool | None:
        """:meth:`add`, unless the user has ``limit`` sockets in the cluster already:
        then nothing is recorded and the answer is ``None``. Checked and counted in
        one script, so processes admitting the same user at once cannot together
        pass the cap. While Redis is unreachable only this process is counted."""
        await self.local.add(conn)
        user_id = conn.identity.user_id
        keys = [
            self._key("users"),
            self._key("process", self.process, "users"),
            self._key("sockets"),
            self._key("user", user_id),
            self._key("process", self.process, "sids"),
            self._key("departed", conn.namespace, user_id),
        ]
        args = [user_id, 0 if limit is None else limit, conn.sid, self._info_json(conn, ())]

        async def write() -> int:
            return int(await self._add_script(keys=keys, args=args))

        result: int | None = await self._attempt(write)
        if result == _OVER_LIMIT:
            await self.local.remove(conn.sid, departed=False)
            self._identities.pop(conn.sid, None)
            return None
        return result == 1

    async def remove(self, sid: str, *, departed: bool = True) -> frozenset[str]:
        conn = self.local._sockets.get(sid)
        if conn is None:
            return frozenset()
        rooms = set(self.local._rooms.get(sid, ()))
        local_gone = await self.local.remove(sid, departed=departed)
        self._identities.pop(sid, None)
        user_id = conn.identity.user_id

        async def write() -> frozenset[str]:
            async with self.redis.pipeline(transaction=True) as pipe:
                for room in sorted(rooms):
                    self._count(pipe, conn.namespace, room, user_id, -1)
                pipe.hdel(self._key("sockets"), sid)
                pipe.srem(self._key("user", user_id), sid)
                self._count_user(pipe, user_id, -1)
                pipe.srem(self._key("process", self.process, "sids"), sid)
                if departed:
                    key = self._key("departed", conn.namespace, user_id)
                    pipe.set(key, "1", px=int(self.reconnect_window * 1000))
                results = await pipe.execute()
            counts = results[: 2 * len(rooms) : 2]
            await self._tidy(user_id, [(conn.namespace, r) for r in sorted(rooms)], counts)
            if int(results[2 * len(rooms) + 2]) <= 0:
                await self.redis.hdel(self._key("users"), user_id)
                await self.redis.hdel(self._key("process", self.process, "users"), user_id)
            return frozenset(r for r, n in zip(sorted(rooms), counts, strict=True) if n <= 0)

        gone = await self._attempt(write)
        return local_gone if gone is None else gone

    async def join(self, sid: str, room: str) -> bool:
        conn = self.local._sockets.get(sid)
        rooms = self.local._rooms.get(sid)
        if conn is None or rooms is None or room in rooms:
            return False
        local_new = await self.local.join(sid, room)
        call = self._move(conn, room, rooms, 1)

        async def write() -> bool:
            return int(await self._move_script(**call)) == 1

        present = await self._attempt(write)
        return local_new if present is None else bool(present)

    async def join_all(self, sid: str, rooms: Sequence[str]) -> dict[str, bool]:
        """:meth:`join` for each of ``rooms`` in one script call (a connect joins the
        gateway's own rooms: one round trip, not one per room); for each room
        joined, whether the socket's user became present in it."""
        conn = self.local._sockets.get(sid)
        current = self.local._rooms.get(sid)
        if conn is None or current is None:
            return {}
        new = [room for room in dict.fromkeys(rooms) if room not in current]
        if not new:
            return {}
        local = {room: await self.local.join(sid, room) for room in new}
        user_id = conn.identity.user_id
        keys = [
            self._key("process", self.process, "presence"),
            self._key("sockets"),
            *(self._presence_key(conn.namespace, room) for room in new),
        ]
        args = [
            user_id,
            sid,
            self._info_json(conn, current),
            *(f"{conn.namespace}{_SEP}{room}{_SEP}{user_id}" for room in new),
        ]

        async def write() -> list[int]:
            return [int(count) for count in await self._join_all_script(keys=keys, args=args)]

        counts = await self._attempt(write)
        if counts is None:
            return local
        return {room: count == 1 for room, count in zip(new, counts, strict=True)}

    async def leave(self, sid: str, room: str) -> bool:
        conn = self.local._sockets.get(sid)
        rooms = self.local._rooms.get(sid)
        if conn is None or rooms is None or room not in rooms:
            return False
        local_gone = await self.local.leave(sid, room)
        call = self._move(conn, room, rooms, -1)

        async def write() -> bool:
            return int(await self._move_script(**call)) <= 0

        gone = await self._attempt(write)
        return local_gone if gone is None else bool(gone)

    async def get(self, sid: str) -> ConnectionInfo | None:
        local = await self.local.get(sid)
        if local is not None:
            return self._stamped(local)
        raw = await self._attempt(lambda: self.redis.hget(self._key("sockets"), sid))
        return None if raw is None else self._info_from_json(raw)

    async def connections(self) -> list[ConnectionInfo]:
        everything = await self._attempt(lambda: self.redis.hgetall(self._key("sockets")))
        if everything is None:
            return [self._stamped(info) for info in await self.local.connections()]
        remote = [self._info_from_json(raw) for raw in everything.values()]
        local = {info.sid: self._stamped(info) for info in await self.local.connections()}
        return [local.get(info.sid, info) for info in remote] + [
            info for sid, info in local.items() if sid.encode() not in everything
        ]

    async def user_sockets(self, user_id: str) -> list[ConnectionInfo]:
        async def read() -> list[ConnectionInfo]:
            sids = await self.redis.smembers(self._key("user", user_id))
            if not sids:
                return []
            raws = await self.redis.hmget(self._key("sockets"), sorted(sids))
            return [self._info_from_json(raw) for raw in raws if raw is not None]

        found = await self._attempt(read)
        local = [self._stamped(info) for info in await self.local.user_sockets(user_id)]
        if found is None:
            return local
        here = {info.sid for info in local}
        return local + [info for info in found if info.sid not in here]

    async def users(self) -> frozenset[str]:
        counts = await self._attempt(lambda: self.redis.hgetall(self._key("users")))
        if counts is None:
            return await self.local.users()
        return frozenset(user.decode() for user, n in counts.items() if int(n) > 0)

    async def presence(self, namespace: str, room: str) -> frozenset[str]:
        key = self._presence_key(namespace, room)
        counts = await self._attempt(lambda: self.redis.hgetall(key))
        if counts is None:
            return await self.local.presence(namespace, room)
        return frozenset(user.decode() for user, n in counts.items() if int(n) > 0)

    def _stamped(self, info: ConnectionInfo) -> ConnectionInfo:
        return ConnectionInfo(
            sid=info.sid,
            namespace=info.namespace,
            identity=info.identity,
            rooms=info.rooms,
            connected_at=info.connected_at,
            last_activity=info.last_activity,
            process=self.process,
        )

    # -- counting ----------------------------------------------------------------------

    def _move(
        self, conn: Connection, room: str, rooms: Iterable[str], delta: int
    ) -> dict[str, Any]:
        """The keys and arguments of the move script: ``conn`` joins (``delta`` 1) or
        leaves (-1) ``room``, and is then in ``rooms``."""
        user_id = conn.identity.user_id
        return {
            "keys": [
                self._presence_key(conn.namespace, room),
                self._key("process", self.process, "presence"),
                self._key("sockets"),
            ],
            "args": [
                user_id,
                f"{conn.namespace}{_SEP}{room}{_SEP}{user_id}",
                conn.sid,
                self._info_json(conn, rooms),
                delta,
                "1" if delta < 0 else "0",
            ],
        }

    def _count(self, pipe: Any, namespace: str, room: str, user_id: str, delta: int) -> None:
        """Queue a presence count change, global first (its result is what callers
        read) and this process's share second."""
        pipe.hincrby(self._presence_key(namespace, room), user_id, delta)
        pipe.hincrby(
            self._key("process", self.process, "presence"),
            f"{namespace}{_SEP}{room}{_SEP}{user_id}",
            delta,
        )

    def _count_user(self, pipe: Any, user_id: str, delta: int) -> None:
        """Queue a change of the user's socket count, global first, share second."""
        pipe.hincrby(self._key("users"), user_id, delta)
        pipe.hincrby(self._key("process", self.process, "users"), user_id, delta)

    async def _tidy(self, user_id: str, places: list[tuple[str, str]], counts: list[int]) -> None:
        """Delete the count fields that reached zero, so that hashes do not grow."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for (namespace, room), count in zip(places, counts, strict=True):
                if int(count) <= 0:
                    pipe.hdel(self._presence_key(namespace, room), user_id)
                    pipe.hdel(
                        self._key("process", self.process, "presence"),
                        f"{namespace}{_SEP}{room}{_SEP}{user_id}",
                    )
            await pipe.execute()

    # -- heartbeat and sweep ---------------------------------------------------------

    async def heartbeat(self) -> None:
        """Refresh this process's entries, reconcile its presence counts with its
        sockets, and sweep the processes whose heartbeat is older than ``ttl``."""
        await self._attempt(self._refresh)
        swept = await self._attempt(self._sweep)
        if swept:
            await self._swept(swept)

    async def _refresh(self) -> None:
        now = time.time()
        wanted: Counter[str] = Counter()
        infos: dict[str, str] = {}
        for sid, conn in self.local._sockets.items():
            rooms = self.local._rooms.get(sid, set())
            infos[sid] = self._info_json(conn, rooms)
            for room in rooms:
                wanted[f"{conn.namespace}{_SEP}{room}{_SEP}{conn.identity.user_id}"] += 1
        share_key = self._key("process", self.process, "presence")
        recorded = {
            field.decode(): int(n) for field, n in (await self.redis.hgetall(share_key)).items()
        }
        users_key = self._key("process", self.process, "users")
        recorded_users = {
            user.decode(): int(n) for user, n in (await self.redis.hgetall(users_key)).items()
        }
        # Sockets that left while Redis was unreachable are still listed there.
        listed = await self.redis.smembers(self._key("process", self.process, "sids"))
        stale = sorted(sid for sid in listed if sid.decode() not in self.local._sockets)
        stale_infos = await self.redis.hmget(self._key("sockets"), stale) if stale else []
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self._key("processes"), {self.process: now})
            for sid, raw in zip(stale, stale_infos, strict=True):
                pipe.hdel(self._key("sockets"), sid)
                pipe.srem(self._key("process", self.process, "sids"), sid)
                if raw is not None:
                    pipe.srem(self._key("user", self._info_from_json(raw).user_id), sid)
            if infos:
                pipe.hset(self._key("sockets"), mapping=infos)
                pipe.sadd(self._key("process", self.process, "sids"), *infos)
                for sid, conn in self.local._sockets.items():
                    pipe.sadd(self._key("user", conn.identity.user_id), sid)
            for field in set(wanted) | set(recorded):
                delta = wanted[field] - recorded.get(field, 0)
                if delta:
                    namespace, room, user_id = field.split(_SEP)
                    self._count(pipe, namespace, room, user_id, delta)
            users = Counter(conn.identity.user_id for conn in self.local._sockets.values())
            for user_id in set(users) | set(recorded_users):
                delta = users[user_id] - recorded_users.get(user_id, 0)
                if delta:
                    self._count_user(pipe, user_id, delta)
            await pipe.execute()

    async def _sweep(self) -> list[tuple[ConnectionInfo, frozenset[str]]]:
        horizon = time.time() - self.ttl
        dead = await self.redis.zrangebyscore(self._key("processes"), "-inf", horizon)
        swept: list[tuple[ConnectionInfo, frozenset[str]]] = []
        for raw in dead:
            process = raw.decode()
            # One survivor sweeps each dead process.
            claimed = await self.redis.set(
                self._key("sweep", process), self.process, nx=True, ex=max(int(self.ttl), 1)
            )
            if claimed:
                swept += await self._sweep_process(process)
        return swept

    async def _sweep_process(self, process: str) -> list[tuple[ConnectionInfo, frozenset[str]]]:
        sids = sorted(await self.redis.smembers(self._key("process", process, "sids")))
        raws = await self.redis.hmget(self._key("sockets"), sids) if sids else []
        infos = [self._info_from_json(raw) for raw in raws if raw is not None]
        shares = await self.redis.hgetall(self._key("process", process, "presence"))
        users = await self.redis.hgetall(self._key("process", process, "users"))
        fields = [(field.decode(), int(n)) for field, n in shares.items() if int(n) > 0]
        async with self.redis.pipeline(transaction=True) as pipe:
            for field, count in fields:
                namespace, room, user_id = field.split(_SEP)
                pipe.hincrby(self._presence_key(namespace, room), user_id, -count)
            for info in infos:
                pipe.hdel(self._key("sockets"), info.sid)
                pipe.srem(self._key("user", info.user_id), info.sid)
            for user, count in users.items():
                pipe.hincrby(self._key("users"), user.decode(), -int(count))
            pipe.delete(
                self._key("process", process, "sids"),
                self._key("process", process, "presence"),
                self._key("process", process, "users"),
            )
            pipe.zrem(self._key("processes"), process)
            pipe.hdel(self._key("stats"), process)
            results = await pipe.execute()
        gone_by_user: dict[tuple[str, str], set[str]] = {}
        for (field, _), left in zip(fields, results[: len(fields)], strict=True):
            namespace, room, user_id = field.split(_SEP)
            if int(left) <= 0:
                await self.redis.hdel(self._presence_key(namespace, room), user_id)
                gone_by_user.setdefault((namespace, user_id), set()).add(room)
        log(logging.WARNING, "process_swept", sockets=len(infos))
        swept: list[tuple[ConnectionInfo, frozenset[str]]] = []
        announced: set[tuple[str, str]] = set()
        for info in infos:
            key = (info.namespace, info.user_id)
            rooms = frozenset(gone_by_user.get(key, set()) & info.rooms)
            if key in announced:
                rooms = frozenset()
            announced.add(key)
            swept.append((info, rooms))
        return swept

    async def publish_stats(self, stats: Mapping[str, Any]) -> None:
        """Record this process's figures for the cluster view of the metrics."""
        payload = json.dumps(stats)
        await self._attempt(lambda: self.redis.hset(self._key("stats"), self.process, payload))

    async def cluster_stats(self) -> dict[str, dict[str, Any]]:
        """The last figures of every live process, by process."""

        async def read() -> dict[str, dict[str, Any]]:
            alive = await self.redis.zrangebyscore(
                self._key("processes"), time.time() - self.ttl, "+inf"
            )
            if not alive:
                return {}
            raws = await self.redis.hmget(self._key("stats"), alive)
            return {
                process.decode(): json.loads(raw)
                for process, raw in zip(alive, raws, strict=True)
                if raw is not None
            }

        found = await self._attempt(read)
        return found or {}

    async def ping(self) -> None:
        """Raise if Redis cannot be reached."""
        await self.redis.ping()

    async def close(self) -> None:
        """Remove this process's entries (a clean stop) and close the connection."""
        for sid in list(self.local._sockets):
            await self.remove(sid, departed=False)

        async def goodbye() -> None:
            await self.redis.zrem(self._key("processes"), self.process)
            await self.redis.hdel(self._key("stats"), self.process)
            await self.redis.delete(
                self._key("process", self.process, "sids"),
                self._key("process", self.process, "presence"),
                self._key("process", self.process, "users"),
            )

        await self._attempt(goodbye)
        await self.redis.aclose()


async def _nothing(swept: list[tuple[ConnectionInfo, frozenset[str]]]) -> None:
    return None


Stats = Callable[[], Awaitable[dict[str, Any]]]
Swept = Callable[[list[tuple[ConnectionInfo, frozenset[str]]]], Awaitable[None]]


class Cluster:
    """This process's membership of a cluster: the :class:`ClusterManager` that
    carries emits and control messages, the :class:`RedisRegistry`, and the
    heartbeat that refreshes the mirror, sweeps dead processes and publishes this
    process's figures.

    Built by :meth:`Gateway.__init__` when ``redis_url`` is set, from the config,
    the keys that sign cluster messages, and three callbacks into the gateway:
    ``stats`` (this process's figures), ``control`` (a control message from another
    process) and ``swept`` (the sockets of dead processes, so their rooms can be
    told). :meth:`start` joins, :meth:`close` leaves.
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        keys: Iterable[bytes],
        metrics: Metrics,
        stats: Stats,
        control: Control,
        swept: Swept,
    ) -> None:
        try:
            import redis.asyncio as aioredis
            from redis.backoff import NoBackoff
            from redis.exceptions import ConnectionError as RedisConnectionError
            from redis.retry import Retry
        except ImportError:
            raise ConfigurationError(
                "redis_url", "needs the redis extra: pip install 'realtime_gateway[redis]'"
            ) from None
        assert config.redis_url is not None
        self.config = config
        self._metrics = metrics
        self._stats = stats
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._canary_task: asyncio.Task[None] | None = None
        self._deaf = False
        self._beats: list[Callable[[], Awaitable[None]]] = []
        # One retry on a dropped connection: after a Redis restart the first command
        # on each pooled connection fails although Redis is back.
        options: dict[str, Any] = {
            "socket_connect_timeout": 2,
            "retry": Retry(NoBackoff(), 1),
            "retry_on_error": [RedisConnectionError],
        }
        process = process_id()
        self.manager = ClusterManager(
            config.redis_url,
            channel=config.redis_prefix,
            signer=URLSafeSerializer(list(keys), salt=CLUSTER_SALT),
            dropped=self._dropped,
            control=control,
            # Named, so that CLIENT LIST tells which process a subscription is.
            redis_options={**options, "client_name": f"{config.redis_prefix}:bus:{process}"},
            publish_queue=config.cluster_publish_queue,
            unsent=self._unsent,
            backpressure=self._backpressure,
        )
        # redis-py's default pool refuses a command at once (MaxConnectionsError)
        # while 100 are in flight, as in a connect storm: this one waits for a
        # connection instead, as long as a command may take.
        pool = aioredis.BlockingConnectionPool.from_url(
            config.redis_url,
            max_connections=REDIS_CONNECTIONS,
            timeout=5,
            socket_timeout=5,
            **options,
        )
        client = aioredis.Redis.from_pool(pool)  # closing the client closes the pool
        self.registry = RedisRegistry(
            client,
            prefix=config.redis_prefix,
            ttl=config.cluster_ttl,
            reconnect_window=config.reconnect_window,
            process=process,
        )
        self.registry.on_swept(swept)

    @staticmethod
    def keys_for(config: GatewayConfig, authenticator: object) -> list[bytes]:
        """The keys that sign cluster messages: ``cluster_key``, else the keys of a
        :class:`SignedTokenAuthenticator`; unsigned clustering is refused."""
        if config.cluster_key is not None:
            return [config.cluster_key.encode()]
        if isinstance(authenticator, SignedTokenAuthenticator):
            return list(authenticator.secret_keys())
        raise ConfigurationError(
            "cluster_key",
            "is required with redis_url unless the authenticator is a "
            "SignedTokenAuthenticator, whose keys then sign cluster messages",
        )

    def _unsent(self, count: int) -> None:
        self._metrics.cluster_messages_unsent += count

    def _backpressure(self) -> None:
        self._metrics.cluster_publish_waits += 1
        log(logging.WARNING, "cluster_publish_queue_full", limit=self.config.cluster_publish_queue)

    def _dropped(self) -> None:
        self._metrics.cluster_messages_dropped += 1
        if self._metrics.cluster_messages_dropped == 1:
            log(logging.WARNING, "cluster_message_dropped")

    @property
    def process(self) -> str:
        """This process's name in the cluster."""
        return self.registry.process

    async def start(self, server: Any) -> None:
        """Join: fail fast (``ConfigurationError``) if Redis is unreachable, beat once,
        start the heartbeat and subscribe ``server``'s manager."""
        try:
            await asyncio.wait_for(self.registry.ping(), 5)
        except Exception as exc:
            where = redis_address(self.config.redis_url or "")
            raise ConfigurationError(
                "redis_url", f"Redis at {where} is unreachable ({type(exc).__name__})"
            ) from None
        await self._beat()
        self._heartbeat_task = asyncio.create_task(self._heartbeat())
        if server is not None and not server.manager_initialized:
            # python-socketio would subscribe only when the first client connects; a
            # process must hear the others from the start.
            server.manager_initialized = True
            server.manager.initialize()
        if server is not None and server.manager is self.manager:
            self.manager.heard_at = time.monotonic()
            self._canary_task = asyncio.create_task(self._canary())

    async def _canary(self) -> None:
        while True:
            try:
                await self.manager.send_canary()
            except Exception as exc:
                log(logging.ERROR, "canary_failed", error=type(exc).__name__)
            await asyncio.sleep(self.config.cluster_canary_interval)
            self.bus_deaf()

    def bus_deaf(self) -> bool:
        """Whether this process has gone ``DEAF_AFTER`` canary intervals without
        hearing its own canary; the change either way is counted and logged."""
        if self._canary_task is None:
            return False
        silent = time.monotonic() - self.manager.heard_at
        deaf = silent > DEAF_AFTER * self.config.cluster_canary_interval
        if deaf != self._deaf:
            self._deaf = deaf
            self._metrics.cluster_bus_deaf = int(deaf)
            if deaf:
                self._metrics.cluster_bus_deafened += 1
                log(logging.WARNING, "cluster_bus_deaf", silent_s=round(silent, 1))
            else:
                log(logging.WARNING, "cluster_bus_heard")
        return deaf

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.config.cluster_ttl / 3)
            try:
                await self._beat()
            except Exception as exc:
                log(logging.ERROR, "heartbeat_failed", error=type(exc).__name__)

    def on_beat(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Also run ``callback`` at each heartbeat (its failures are logged)."""
        self._beats.append(callback)

    async def _beat(self) -> None:
        await self.registry.heartbeat()
        await self.registry.publish_stats(await self._stats())
        for callback in self._beats:
            try:
                await callback()
            except Exception as exc:
                log(logging.ERROR, "heartbeat_failed", error=type(exc).__name__)

    async def publish_control(self, message: Mapping[str, Any]) -> bool:
        """Send a control message to every other process; ``False`` if it could not
        be sent."""
        return await self.manager.publish_control(message)

    async def cluster_stats(self, own: Mapping[str, Any]) -> dict[str, Any]:
        """``{"processes": {name: figures}, "total": figures}`` over every live process,
        this one's being ``own``; the total's ``users_connected`` counts each user once."""
        processes = await self.registry.cluster_stats()
        processes[self.process] = dict(own)
        total: dict[str, Any] = {}
        for figures in processes.values():
            for name, value in figures.items():
                if isinstance(value, dict):
                    merged = total.setdefault(name, {})
                    for label, count in value.items():
                        merged[label] = merged.get(label, 0) + count
                else:
                    total[name] = total.get(name, 0) + value
        total["users_connected"] = len(await self.registry.users())
        return {"processes": processes, "total": total}

    async def close(self) -> None:
        """Leave: stop the heartbeat and the listener, close both Redis clients."""
        for task in (self._heartbeat_task, self._canary_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._canary_task = None
        if getattr(self.manager, "thread", None) is not None:
            self.manager.thread.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.manager.thread
        await self.manager.close()
        await self.registry.close()
