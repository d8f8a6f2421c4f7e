"""The gateway's python-socketio plumbing: its ``AsyncServer`` subclass, the origin
policy, the loggers it hands python-socketio and python-engineio, and how a server
is built for a gateway (engine.io server class, drivers, compression, limits).

Everything here runs under :class:`Gateway`; nothing is patched in python-socketio
or python-engineio, so other servers in the host's process keep their behaviour.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import socketio
from socketio.packet import ACK, BINARY_ACK, BINARY_EVENT, CONNECT, CONNECT_ERROR, DISCONNECT, EVENT

from ._engine import EngineServer, EngineSocket
from ._exceptions import AuthenticationFailed, AuthFailureReason
from ._fanout import FanOutManager
from ._identity import Handshake
from ._log import log
from ._namespace import GatewayNamespace
from ._protocol import GatewayPacket, ProtocolViolation, packet_class

if TYPE_CHECKING:
    from ._gateway import Gateway

__all__ = ["GatewayServer", "OriginPolicy", "UpstreamLog", "build_server"]

# Events of one client connection answered at the same time; a further event is
# answered before the connection is read again (backpressure on a flooding client).
MAX_EVENTS_IN_FLIGHT = 16
_REFUSED_CLOSE_DELAY = 0.1
"""Seconds a transport left with no namespace by a refused CONNECT stays open."""


class OriginPolicy:
    """Which browser origins may reach the gateway.

    python-engineio asks :meth:`transport_allows` on every request that carries an
    ``Origin`` header; the gateway asks :meth:`credentials_allowed` of handshakes
    that carry cookies, which a wildcard does not cover.
    """

    def __init__(self, allowed: tuple[str, ...] | None) -> None:
        self.wildcard = allowed is not None and "*" in allowed
        self.listed = frozenset(origin.rstrip("/") for origin in allowed or () if origin != "*")

    def transport_allows(self, origin: str | None, environ: Mapping[str, Any]) -> bool:
        if origin is None or self.wildcard:
            return True
        return self.credentials_allowed(origin, environ)

    def credentials_allowed(self, origin: str | None, environ: Mapping[str, Any]) -> bool:
        if origin is None:
            # Browsers send Origin on every cross-site request and WebSocket handshake;
            # its absence means a same-origin GET or a non-browser client.
            return True
        return origin in self.listed or origin == own_origin(environ)


def own_origin(environ: Mapping[str, Any]) -> str | None:
    host = environ.get("HTTP_HOST")
    if not host:
        return None
    return f"{environ.get('wsgi.url_scheme', 'http')}://{host}"


class UpstreamLog(logging.Logger):
    """The logger the gateway gives python-socketio and python-engineio.

    Their messages interpolate session ids, ``Origin`` headers and exception text,
    and given ``False`` they attach a stream handler of their own to their global
    loggers; here a warning or worse becomes a library record that names only its
    source and the exception's type.
    """

    def __init__(self, source: str) -> None:
        super().__init__(f"realtime_gateway.{source}", logging.WARNING)
        self.source = source

    def handle(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        log(
            record.levelno,
            "upstream_log",
            source=self.source,
            error=None if error is None else type(error).__name__,
        )


class GatewayServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server with the gateway's protocol checks.

    - The connect timeout socket.io servers have: a transport that joins no
      namespace within ``connect_timeout`` is closed.
    - Every packet is decoded by the gateway's :class:`GatewayPacket` and checked
      before python-socketio acts on it; one the gateway cannot answer (a bad
      header, an inconsistent binary packet) closes the client's connection at once.
    - Client events reach a :class:`GatewayNamespace` only through its declared
      handlers: python-socketio passes them to the same ``trigger_event`` as its
      own ``connect`` and ``disconnect``, so an event named ``connect`` would
      re-run admission.
    """

    def __init__(self, *, connect_timeout: float, gateway: Gateway, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._connect_timeout = connect_timeout
        self._gateway = gateway
        self._event_tasks: set[asyncio.Task[None]] = set()
        self._in_flight: dict[str, int] = {}  # events being answered, by connection
        self.transport_closed = asyncio.Event()
        self.eio.on_slow_consumer = self._slow_consumer

    def _engineio_server_class(self) -> type[EngineServer]:
        return EngineServer

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any = None) -> None:
        if reason == self.reason.CLIENT_DISCONNECT:
            # An engine.io CLOSE without the namespaces' socket.io DISCONNECT first
            # (a polling client whose transport was closed under it): no client
            # left, its transport went, as Node's engine.io reports it.
            reason = self.reason.TRANSPORT_CLOSE
        await super()._handle_eio_disconnect(eio_sid, reason)
        self.transport_closed.set()

    async def _handle_eio_connect(self, eio_sid: str, environ: Any) -> Any:
        result = await super()._handle_eio_connect(eio_sid, environ)
        # A timer handle is far lighter than a task per connection.
        asyncio.get_running_loop().call_later(self._connect_timeout, self._check_joined, eio_sid)
        return result

    async def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        await super()._handle_connect(eio_sid, namespace, data)
        namespace = namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None or not self.manager.is_connected(sid, namespace):
            await self._refused_connect(eio_sid)
            return
        self.eio.session_joined(eio_sid)
        # The client now has its CONNECT packet: events emitted from here on reach it.
        handler = self.namespace_handlers.get(namespace)
        if isinstance(handler, GatewayNamespace):
            await handler._ready(sid)

    async def _refused_connect(self, eio_sid: str) -> None:
        """After a CONNECT_ERROR: a client with no other namespace has nothing left
        to do on its transport (the official client closes it itself), so it is
        closed within ``_REFUSED_CLOSE_DELAY`` rather than at ``connect_timeout``;
        the CONNECT_ERROR goes first."""
        if eio_sid in self.environ and not self._joined_any(eio_sid):
            # A client opening several namespaces sends their CONNECTs together and
            # python-socketio reads them one at a time: the next one may already be
            # here, unread. Closing at once would cut it off (the official client
            # then reconnects a second later).
            asyncio.get_running_loop().call_later(
                _REFUSED_CLOSE_DELAY, self._close_if_alone, eio_sid
            )

    def _close_if_alone(self, eio_sid: str) -> None:
        if eio_sid in self.environ and not self._joined_any(eio_sid):
            log(logging.INFO, "refused_connect_closed")
            self.start_background_task(self._close_transport, eio_sid)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        if eio_sid not in self.environ:
            return  # the connection is closing: nothing more is read from it
        try:
            pending = self._binary_packet.get(eio_sid)
            if pending is not None:
                if pending.take_attachment(data):
                    del self._binary_packet[eio_sid]
                    await self._handle_packet(eio_sid, pending)
                return
            pkt = self.packet_class(encoded_packet=data)
            if pkt.packet_type in (BINARY_EVENT, BINARY_ACK) and not pkt.malformed:
                if self.manager.sid_from_eio_sid(eio_sid, pkt.namespace or "/") is None:
                    raise ProtocolViolation("binary packet outside a namespace")
                pkt.hold(data, self._attachment_budget(pkt.namespace))
                self._binary_packet[eio_sid] = pkt
                return
            await self._handle_packet(eio_sid, pkt)
        except ProtocolViolation as exc:
            await self._close_for(eio_sid, exc.reason)

    async def _handle_packet(self, eio_sid: str, pkt: GatewayPacket) -> None:
        kind = pkt.packet_type
        if kind == CONNECT:
            if pkt.malformed:
                await self._refuse_malformed_connect(eio_sid, pkt.namespace or "/")
            else:
                await self._handle_connect(eio_sid, pkt.namespace, pkt.data)
        elif kind == DISCONNECT:
            await self._handle_disconnect(eio_sid, pkt.namespace, self.reason.CLIENT_DISCONNECT)
        elif kind in (EVENT, BINARY_EVENT):
            await self._handle_event(eio_sid, pkt.namespace, pkt.id, pkt.data)
        elif kind in (ACK, BINARY_ACK):
            if isinstance(pkt.data, list):
                await self._handle_ack(eio_sid, pkt.namespace, pkt.id, pkt.data)
        else:
            raise ProtocolViolation("unexpected packet type")

    async def _refuse_malformed_connect(self, eio_sid: str, namespace: str) -> None:
        refusal = AuthenticationFailed(AuthFailureReason.MALFORMED)
        self._gateway._refused(Handshake(namespace=namespace), refusal)
        error = {
            "message": refusal.message,
            "data": {"code": refusal.code, "reason": refusal.reason},
        }
        await self._send_packet(
            eio_sid, self.packet_class(CONNECT_ERROR, data=error, namespace=namespace)
        )
        await self._refused_connect(eio_sid)

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: Any, data: Any) -> None:
        namespace = namespace or "/"
        handler = self.namespace_handlers.get(namespace)
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None or not self.manager.is_connected(sid, namespace):
            return  # as python-socketio: no events outside a connected namespace
        if not isinstance(handler, GatewayNamespace):
            if isinstance(data, list) and data and isinstance(data[0], str):
                await super()._handle_event(eio_sid, namespace, id, data)
            return
        busy = self._in_flight.get(eio_sid, 0)
        if busy >= MAX_EVENTS_IN_FLIGHT:
            # Answered before anything more is read from this connection: a client
            # sending faster than it is answered waits, instead of making the
            # gateway hold a task for every event it sends.
            await self._answer(handler, sid, eio_sid, id, data)
            return
        self._in_flight[eio_sid] = busy + 1
        task = self.start_background_task(self._answer, handler, sid, eio_sid, id, data)
        self._event_tasks.add(task)
        task.add_done_callback(partial(self._answered, eio_sid))

    def _answered(self, eio_sid: str, task: asyncio.Task[None]) -> None:
        self._event_tasks.discard(task)
        left = self._in_flight.pop(eio_sid, 1) - 1
        if left > 0:
            self._in_flight[eio_sid] = left

    async def _answer(
        self, handler: GatewayNamespace, sid: str, eio_sid: str, id: Any, data: Any
    ) -> None:
        if isinstance(data, list) and data and isinstance(data[0], str):
            ack = await handler._dispatch(data[0], sid, tuple(data[1:]))
        else:
            ack = await handler._dispatch(None, sid, ())
        if id is not None:
            await self._send_packet(
                eio_sid, self.packet_class(ACK, namespace=handler.namespace, id=id, data=[ack])
            )

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:
        if pkt.packet_type == CONNECT and isinstance(pkt.data, dict):
            # python-socketio's CONNECT reply is {sid}; with recovery on the official
            # client also expects the socket's private id, {sid, pid}.
            conn = self._gateway.connection(str(pkt.data.get("sid")))
            if conn is not None and conn.recovery is not None:
                pkt.data = {**pkt.data, "pid": conn.recovery[0]}
        await super()._send_packet(eio_sid, pkt)

    def _attachment_budget(self, namespace: str | None) -> int:
        handler = self.namespace_handlers.get(namespace or "/")
        if isinstance(handler, GatewayNamespace):
            return handler.largest_event_size
        return int(self._gateway.config.max_event_size)

    async def _close_for(self, eio_sid: str, reason: str) -> None:
        """Close a client's connection that broke the protocol, at once and without
        waiting for its queue: python-socketio hears the disconnect now, so every
        namespace socket of it leaves the registry before this returns."""
        self._gateway.metrics.protocol_errors[reason] += 1
        log(logging.WARNING, "protocol_error", reason=reason)
        self._binary_packet.pop(eio_sid, None)
        await self._close_transport(eio_sid)

    async def _close_transport(self, eio_sid: str) -> None:
        socket = self.eio.sockets.get(eio_sid)
        if socket is None or socket.closed:
            return
        await socket.close(wait=False, reason=self.reason.SERVER_DISCONNECT)
        socket.end_transport()

    def _slow_consumer(self, socket: EngineSocket, pending: int) -> None:
        # The engine.io sid names the session (polling requests carry it): the
        # record names the namespace sockets instead.
        sids = []
        for namespace in list(self.manager.get_namespaces()):
            sid = self.manager.sid_from_eio_sid(socket.sid, namespace)
            if sid is not None:
                sids.append(sid)
        log(
            logging.WARNING,
            "slow_consumer",
            sid=",".join(sids) or None,
            transport="websocket" if socket.upgraded else "polling",
            pending_bytes=pending,
            limit=self.eio.max_pending_output,
        )

    def transport_open(self, sid: str, namespace: str) -> bool:
        """Whether socket ``sid``'s engine.io connection is still open."""
        try:
            eio_sid = self.manager.eio_sid_from_sid(sid, namespace)
        except KeyError:
            return False
        return eio_sid is not None and eio_sid in self.environ

    def _joined_any(self, eio_sid: str) -> bool:
        """Whether the client has a namespace joined or being admitted."""
        return any(
            self.manager.sid_from_eio_sid(eio_sid, namespace) is not None
            for namespace in list(self.manager.get_namespaces())
        )

    def _check_joined(self, eio_sid: str) -> None:
        if eio_sid not in self.environ or self._joined_any(eio_sid):
            return
        log(logging.INFO, "connect_timeout")
        self.start_background_task(self.eio.disconnect, eio_sid)


def build_server(
    gateway: Gateway, async_mode: str, *, origins: OriginPolicy, client_manager: Any = None
) -> GatewayServer:
    """A :class:`GatewayServer` for ``gateway`` under ``async_mode`` (``"aiohttp"`` or
    ``"asgi"``) that lets in the browser ``origins``, with the gateway's namespaces
    registered. ``client_manager`` is the cluster's manager; by default the
    in-process :class:`FanOutManager`."""
    config = gateway.config
    server = GatewayServer(
        connect_timeout=config.connect_timeout,
        gateway=gateway,
        serializer=packet_class(
            max_depth=config.max_nesting_depth, max_attachments=config.max_attachments
        ),
        async_mode=async_mode,
        cors_allowed_origins=origins.transport_allows,
        cors_credentials=True,
        ping_interval=config.ping_interval,
        ping_timeout=config.ping_timeout,
        max_http_buffer_size=config.max_payload_size,
        http_compression=config.compression,
        transports=list(config.transports),
        logger=UpstreamLog("socketio"),
        engineio_logger=UpstreamLog("engineio"),
        always_connect=False,
        client_manager=client_manager or FanOutManager(),
        websocket_compression=config.websocket_compression,
        cookie_path=config.path,
        metrics=gateway.metrics,
        max_pending_output=config.max_pending_output,
        handshake_rate=config.handshake_rate,
        handshake_burst=config.handshake_burst,
        trusted_proxy_header=config.trusted_proxy_header,
        max_pending_sessions=config.max_pending_sessions,
    )
    for namespace in gateway.namespaces.values():
        server.register_namespace(namespace)
    return server
