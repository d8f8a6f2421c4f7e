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
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from typing import Any

__all__ = ["escape", "log", "pseudonym", "redact_room", "set_log_key"]

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


def log(level: int, what: str, /, **fields: Any) -> None:
    """Log ``what`` happened with key/value ``fields`` (``None`` values are left out)."""
    if not logger.isEnabledFor(level):
        return
    what = escape(what)
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
    text = " ".join(f"{key}={_quoted(str(value))}" for key, value in context.items())
    logger.log(level, "%s %s", what, text, extra={"rtg": {"what": what, **context}})
