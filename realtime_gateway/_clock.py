"""Timestamps as the wire protocol carries them."""

from __future__ import annotations

import datetime as dt
import time

__all__ = ["epoch_ms", "iso_timestamp"]


def iso_timestamp(when: float | None = None) -> str:
    """UTC time as ISO 8601 with milliseconds, e.g. ``2026-01-31T09:30:00.123Z``
    (what JavaScript's ``Date.prototype.toISOString`` produces)."""
    moment = dt.datetime.fromtimestamp(time.time() if when is None else when, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_ms() -> int:
    """Milliseconds since the Unix epoch (what JavaScript's ``Date.now()`` returns)."""
    return time.time_ns() // 1_000_000
