"""``access_denied`` log records: one per client event, however many requests the
event's handler refused.

A handler that decides many requests in one event (``subscribe`` with a list of
channels) would otherwise write a record per refusal: at the rate limit, thousands
of lines a second from one socket. While a :class:`DenialSummary` is active (the
namespace holds one around each event's handler) refusals are summed by action,
target kind and reason and logged when the handler returns, with their ``count``.
Metrics and the audit trail still get every decision one by one.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar, Token
from typing import Any

from ._identity import Identity
from ._log import log, redact_room

__all__ = ["DenialSummary", "log_denial"]

_current: ContextVar[DenialSummary | None] = ContextVar("rtg_denial_summary", default=None)


def log_denial(identity: Identity, action: str, target: str, reason: str) -> None:
    """Log one refusal now, or add it to the active :class:`DenialSummary`."""
    summary = _current.get()
    if summary is not None and summary.identity is identity:
        summary.add(action, target, reason)
        return
    _write(identity, action, target, reason, 1)


def _write(identity: Identity, action: str, target: str, reason: str, count: int) -> None:
    log(
        logging.INFO,
        "access_denied",
        user=identity.user_id,
        action=action,
        target=target,
        reason=reason,
        count=count,
    )


class DenialSummary:
    """Within ``with DenialSummary(identity):`` (in this task and the tasks it starts),
    the refusals of ``identity`` are logged on leaving the block, one record per
    action, target kind and reason."""

    __slots__ = ("_counts", "_token", "identity")

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self._counts: dict[tuple[str, str, str], int] | None = None
        self._token: Token[DenialSummary | None] | None = None

    def add(self, action: str, target: str, reason: str) -> None:
        """Count one refusal."""
        if self._counts is None:
            self._counts = {}
        # Only the target's kind is logged anyway, so that is what tells records apart.
        key = (action, redact_room(target), reason)
        self._counts[key] = self._counts.get(key, 0) + 1

    def __enter__(self) -> DenialSummary:
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        counts, self._counts = self._counts, None
        for (action, kind, reason), count in (counts or {}).items():
            _write(self.identity, action, kind, reason, count)
