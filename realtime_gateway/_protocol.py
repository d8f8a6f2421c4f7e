"""What the gateway accepts of the socket.io protocol, decoded defensively.

python-socketio decodes whatever a client sends and trusts its shape: a payload
nested a thousand deep raises ``RecursionError`` before any handler runs, event
data that is not a list raises while it is logged, and a binary packet with a
declared attachment count of 0 or 999,999,999, or a placeholder pointing at no
attachment, stays pending forever so that every later packet of the connection
fails. The gateway hands python-socketio :class:`GatewayPacket` (its own packet
class, so other servers in the process keep theirs) and checks every packet
before it is dispatched:

- JSON goes through :class:`JsonCodec`, which refuses nesting deeper than
  ``max_depth`` without recursing; a packet whose data does not decode is kept
  with :attr:`GatewayPacket.malformed` set, so the gateway can still answer it;
- binary packets declare 1 to ``max_attachments`` attachments, every placeholder
  names one of them, and the attachments are binary; while a binary packet waits
  for its attachments, its text and the attachments received so far together stay
  within a byte budget (python-socketio holds any number of bytes there, and
  neither the event size check nor the rate limit runs before the packet is whole).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, ClassVar

from socketio import packet

__all__ = ["BadJson", "GatewayPacket", "JsonCodec", "ProtocolViolation", "packet_class"]

# Room in a binary packet's budget for what its text holds besides the event's
# payload (type, namespace, ack id, event name), and per attachment for a
# placeholder, which is longer than the bytes' share of an event's measured size.
_HEADER_ALLOWANCE = 512
_PLACEHOLDER_ALLOWANCE = 32

# Escapes occur only inside strings; without them, every quote opens or closes one.
_ESCAPE = re.compile(r"\\.", re.S)
# What is left of the text outside strings: its brackets, all made square.
_STRUCTURE = {code: None for code in range(128) if chr(code) not in "[]{}"} | {
    ord("{"): "[",
    ord("}"): "]",
}


class ProtocolViolation(ValueError):
    """A packet the gateway will not process; the connection is closed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadJson(ValueError):
    """Text that is not JSON the gateway accepts (malformed, too deep, huge numbers)."""


def _safe_int(text: str) -> int:
    # As python-engineio's JSON module: a 100,000-digit integer costs seconds.
    if len(text) > 100:
        raise ValueError("integer too large")
    return int(text)


class JsonCodec:
    """A JSON module for python-socketio whose ``loads`` refuses deep nesting.

    Depth is measured on the text before decoding, with string operations only,
    so a hostile document costs at most ``max_depth`` linear passes and never a
    recursion.
    """

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth

    def check_depth(self, text: str) -> None:
        """Raise :class:`BadJson` if ``text`` nests arrays and objects deeper than
        ``max_depth`` (unbalanced text also fails; it would not decode anyway)."""
        if text.count("[") + text.count("{") <= self.max_depth:
            return
        if "\\" in text:
            text = _ESCAPE.sub("", text)
        structure = "".join(text.split('"')[0::2]).translate(_STRUCTURE)
        # Each pass removes the innermost pairs, one level of every branch.
        for _ in range(self.max_depth):
            if not structure:
                return
            shorter = structure.replace("[]", "")
            if len(shorter) == len(structure):
                break
            structure = shorter
        if structure:
            raise BadJson(f"nested deeper than {self.max_depth}")

    def loads(self, text: str | bytes, **kwargs: Any) -> Any:
        """Decode ``text`` as JSON; raises :class:`BadJson` (a ``ValueError``) if it is
        not JSON, nests too deep or holds an integer of over 100 digits."""
        try:
            if isinstance(text, bytes | bytearray):
                text = bytes(text).decode()
            self.check_depth(text)
            kwargs.setdefault("parse_int", _safe_int)
            return json.loads(text, **kwargs)
        except BadJson:
            raise
        except (ValueError, RecursionError) as exc:
            raise BadJson(type(exc).__name__) from None

    @staticmethod
    def dumps(value: Any, **kwargs: Any) -> str:
        """Encode ``value`` as JSON."""
        return json.dumps(value, **kwargs)


class GatewayPacket(packet.Packet):  # type: ignore[misc]
    """python-socketio's packet, decoded with the gateway's checks (see the module)."""

    json: ClassVar[Any] = JsonCodec(32)
    max_attachments: ClassVar[int] = 10

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.malformed = False
        self.held_bytes = 0
        self.held_limit = 0
        super().__init__(*args, **kwargs)

    def decode(self, encoded_packet: Any) -> int:
        """Decode the packet's header and data; data that is not acceptable JSON
        leaves :attr:`malformed` set and ``data`` ``None``. Raises
        :class:`ProtocolViolation` for a header the gateway cannot answer."""
        if not isinstance(encoded_packet, str) or not encoded_packet:
            raise ProtocolViolation("not a text packet")
        try:
            count: int = super().decode(encoded_packet)
        except BadJson:
            # python-socketio reads the header (type, namespace, id) before the
            # data, so a packet whose data failed can still be answered.
            self.malformed = True
            self.data = None
            count = 0
        except (ValueError, TypeError):
            raise ProtocolViolation("bad packet header") from None
        if not isinstance(self.packet_type, int) or not 0 <= self.packet_type <= 6:
            raise ProtocolViolation("unknown packet type")
        if self.malformed:
            return 0
        if self.packet_type in (packet.BINARY_EVENT, packet.BINARY_ACK):
            if not 1 <= count <= self.max_attachments:
                raise ProtocolViolation("attachment count out of range")
            _check_placeholders(self.data, count)
        elif count:
            raise ProtocolViolation("attachments on a text packet")
        return count

    def hold(self, encoded_packet: str, budget: int) -> None:
        """Start waiting for the attachments of this binary packet, decoded from
        ``encoded_packet``: from now on its text and attachments together may hold
        ``budget`` bytes (the largest event the namespace accepts) plus room for the
        header. Raises :class:`ProtocolViolation` if the text alone is over it."""
        allowance = _HEADER_ALLOWANCE + _PLACEHOLDER_ALLOWANCE * self.attachment_count
        self.held_limit = budget + allowance
        self.held_bytes = (
            len(encoded_packet) if encoded_packet.isascii() else len(encoded_packet.encode())
        )
        if self.held_bytes > self.held_limit:
            raise ProtocolViolation("binary packet too large")

    def take_attachment(self, attachment: object) -> bool:
        """Add one attachment; ``True`` once the packet is complete. Raises
        :class:`ProtocolViolation` for text, too many bytes held or one too many."""
        if not isinstance(attachment, bytes):
            raise ProtocolViolation("attachment is not binary")
        self.held_bytes += len(attachment)
        if self.held_bytes > self.held_limit:
            raise ProtocolViolation("attachments too large")
        if len(self.attachments) >= self.attachment_count:
            raise ProtocolViolation("unexpected attachment")
        complete: bool = self.add_attachment(attachment)
        return complete


def _check_placeholders(data: object, count: int) -> None:
    """Every dict python-socketio would take for a placeholder must name one of the
    ``count`` attachments by an integer index."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, dict):
            if value.get("_placeholder") and "num" in value:
                num = value["num"]
                if isinstance(num, bool) or not isinstance(num, int) or not 0 <= num < count:
                    raise ProtocolViolation("bad attachment placeholder")
            else:
                stack.extend(value.values())


def packet_class(*, max_depth: int, max_attachments: int) -> type[GatewayPacket]:
    """A :class:`GatewayPacket` subclass with these limits, for one server."""
    attributes: dict[str, Any] = {
        "json": JsonCodec(max_depth),
        "max_attachments": max_attachments,
    }
    made: Callable[..., type[GatewayPacket]] = type
    return made("GatewayPacket", (GatewayPacket,), attributes)
