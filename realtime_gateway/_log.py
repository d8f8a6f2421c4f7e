"""Structured log records through the standard ``logging`` module, PHI-free.

Each record's message is ``"<what> key=value ..."``; the same fields are on the record
as ``record.rtg`` (a dict with ``what`` and the fields) for JSON formatters.

Redaction policy, applied here so that no caller can forget it: callers pass only
ids and categories, never payloads, tokens, cookies or display names; a ``user``
field is replaced by a keyed pseudonym (:func:`pseudonym`: the same user gives the
same value while the key stays, and nobody without the key can tell who it is); a
``room`` or ``target`` field keeps only its kind (``patient:123`` -> ``patient:*``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from typing import Any

__all__ = ["log", "pseudonym", "redact_room", "set_log_key"]

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


def log(level: int, what: str, /, **fields: Any) -> None:
    """Log ``what`` happened with key/value ``fields`` (``None`` values are left out)."""
    if not logger.isEnabledFor(level):
        return
    context: dict[str, Any] = {}
    for key, value in fields.items():
        if value is None:
            continue
        redact = _REDACT.get(key)
        context[key] = redact(str(value)) if redact is not None else value
    text = " ".join(f"{key}={value}" for key, value in context.items())
    logger.log(level, "%s %s", what, text, extra={"rtg": {"what": what, **context}})
