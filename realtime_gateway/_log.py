"""Structured log records through the standard ``logging`` module, PHI-free.

Each record's message is ``"<what> key=value ..."``; the same fields are on the record
as ``record.rtg`` (a dict with ``what`` and the fields) for JSON formatters.

Redaction policy, applied here so that no caller can forget it: callers pass only
ids and categories, never payloads, tokens, cookies or display names; a ``user``
field is replaced by a keyed pseudonym (:func:`pseudonym`: the same user gives the
same value while the key stays, and nobody without the key can tell who it is); a
``room`` or ``target`` field keeps only its kind (``patient:123`` -> ``patient:*``).

Values can come from the client (a remote address, a reason), so each is written with
:func:`escape` (no control character, line break or unbalanced quote survives) and
quoted when it holds a space, ``=`` or ``"``: a value can neither start a record of its
own nor pass for another ``key=value`` field. ``record.rtg`` holds the escaped values,
unquoted; numbers and booleans stay as they are.

Records at WARNING and above are rate limited per kind (``what``), process-wide, as
clients can trigger many of them (``auth_failed`` for each refused handshake): the
first ``limit`` of a kind in an interval are written, the rest
are counted, and when the interval ends one ``log_suppressed kind=<what>
suppressed=<n>`` record says how many were left out (see :func:`set_log_limit`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
import traceback
from typing import Any

__all__ = [
    "escape",
    "log",
    "log_stack",
    "pseudonym",
    "redact_room",
    "set_log_key",
    "set_log_limit",
    "suppressed_total",
]

logger = logging.getLogger("realtime_gateway")

_key = secrets.token_bytes(32)


def set_log_key(key: str | bytes) -> None:
    """Use ``key`` for :func:`pseudonym` in this process (by default a random key,
    so pseudonyms differ between processes and restarts)."""
    global _key
    _key = key.encode() if isinstance(key, str) else bytes(key)


def pseudonym(user_id: str) -> str:
    """The stable, keyed stand-in for ``user_id`` that log records carry."""
    digest = hmac.new(_key, user_id.encode(), hashlib.sha256).hexdigest()
    return f"u-{digest[:16]}"


def redact_room(room: str) -> str:
    """A room or target reduced to its kind: ``patient:123`` -> ``patient:*``; a name
    without a kind (``lobby``) -> ``*``; a namespace path is kept as is."""
    if room.startswith("/"):
        return room
    kind, colon, _ = room.partition(":")
    return f"{kind}:*" if colon else "*"


_REDACT = {"user": pseudonym, "room": redact_room, "target": redact_room}


def _escape_char(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if char == '"':
        return '\\"'
    if char.isprintable():
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(text: str) -> str:
    r"""``text`` on one line: a backslash, a double quote and every character that is
    not printable (CR, LF, other controls, Unicode line separators) become backslash
    escapes (``\\``, ``\"``, ``\x0d``, ``\u2028``)."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return "".join(map(_escape_char, text))


def _quoted(text: str) -> str:
    if not text or " " in text or "=" in text or '"' in text:
        return f'"{text}"'
    return text


class _Window:
    """The records of one kind in the current interval."""

    __slots__ = ("count", "level", "start", "suppressed")

    def __init__(self, start: float) -> None:
        self.start = start
        self.count = 1
        self.suppressed = 0
        self.level = logging.WARNING


_limit: int | None = 20
_interval = 10.0
_windows: dict[str, _Window] = {}
_suppressed_total = 0


def set_log_limit(limit: int | None, interval: float) -> None:
    """Write at most ``limit`` records of one kind at WARNING or above per
    ``interval`` seconds in this process (``None``: no limit), and start counting
    afresh. :class:`Gateway` calls it with ``GatewayConfig.log_repeat_limit`` and
    ``log_repeat_interval``."""
    global _limit, _interval
    _limit, _interval = limit, interval
    _windows.clear()


def suppressed_total() -> int:
    """How many records the limit has left out in this process."""
    return _suppressed_total


def _suppressed(level: int, what: str) -> bool:
    """Whether this record is one too many of its kind; counts it either way."""
    global _suppressed_total
    now = time.monotonic()
    window = _windows.get(what)
    if window is None or now - window.start >= _interval:
        if window is not None:
            _summarize(what, window)
        _windows[what] = _Window(now)
        return False
    window.count += 1
    if window.count <= (_limit or 0):
        return False
    window.suppressed += 1
    window.level = max(window.level, level)
    _suppressed_total += 1
    if window.suppressed == 1:
        # Say so when the interval ends even if no record of this kind comes after.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            pass  # then the next record of this kind says so
        else:
            loop.call_later(window.start + _interval - now, _end_window, what, window)
    return True


def _end_window(what: str, window: _Window) -> None:
    if _windows.get(what) is window:
        del _windows[what]
        _summarize(what, window)


def _summarize(what: str, window: _Window) -> None:
    if window.suppressed:
        suppressed, window.suppressed = window.suppressed, 0
        _write(
            window.level,
            "log_suppressed",
            {"kind": what, "suppressed": suppressed, "interval_s": _interval},
        )


def _write(level: int, what: str, context: dict[str, Any]) -> None:
    text = " ".join(f"{key}={_quoted(str(value))}" for key, value in context.items())
    logger.log(level, "%s %s", what, text, extra={"rtg": {"what": what, **context}})


def log(level: int, what: str, /, **fields: Any) -> None:
    """Log ``what`` happened with key/value ``fields`` (``None`` values are left out);
    at WARNING and above, within the limit of :func:`set_log_limit`."""
    if not logger.isEnabledFor(level):
        return
    what = escape(what)
    if level >= logging.WARNING and _limit is not None and _suppressed(level, what):
        return
    context: dict[str, Any] = {}
    for key, value in fields.items():
        if value is None:
            continue
        redact = _REDACT.get(key)
        if redact is not None:
            value = redact(str(value))
        if not isinstance(value, int | float):  # bool is an int
            value = escape(str(value))
        context[key] = value
    _write(level, what, context)


# Chained exceptions (``raise ... from``, an error while handling another) written
# at most: a cycle of contexts must not loop.
_MAX_CHAIN = 8


def log_stack(what: str, exc: BaseException, /, **fields: Any) -> None:
    """At DEBUG only, log ``what`` with the stack of ``exc`` (and of the exceptions
    it was raised from or during): files, lines, functions and source lines, and
    each exception's type. Neither the exceptions' messages nor the frames' local
    variables are written: either may hold a payload. The stack lines come from
    the application's own code, so they are written on lines of their own."""
    if not logger.isEnabledFor(logging.DEBUG):
        return
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < _MAX_CHAIN:
        chain.append(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    blocks = []
    for one in reversed(chain):
        frames = traceback.StackSummary.extract(
            traceback.walk_tb(one.__traceback__), capture_locals=False
        )
        blocks.append("".join(frames.format()) + type(one).__qualname__)
    stack = "\nwhich led to\n".join(blocks)
    context: dict[str, str] = {}
    for key, value in fields.items():
        if value is not None:
            redact = _REDACT.get(key)
            context[key] = escape(redact(str(value)) if redact else str(value))
    text = " ".join(f"{key}={_quoted(value)}" for key, value in context.items())
    logger.debug(
        "%s %s\n%s",
        what,
        text,
        stack,
        extra={"rtg": {"what": what, **context, "stack": stack}},
    )
