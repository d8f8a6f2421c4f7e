"""Structured log records through the standard ``logging`` module.

Each record's message is ``"<what> key=value ..."``; the same fields are on the record
as ``record.rtg`` (a dict with ``what`` and the fields) for JSON formatters. Callers
pass only values that are safe to log: ids and categories, never payloads, tokens
or names.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("realtime_gateway")


def log(level: int, what: str, /, **fields: Any) -> None:
    """Log ``what`` happened with key/value ``fields`` (``None`` values are left out)."""
    if not logger.isEnabledFor(level):
        return
    context = {key: value for key, value in fields.items() if value is not None}
    text = " ".join(f"{key}={value}" for key, value in context.items())
    logger.log(level, "%s %s", what, text, extra={"rtg": {"what": what, **context}})
