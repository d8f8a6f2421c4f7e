"""Audit records: one per authorization decision, for an application's access trail."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from ._clock import iso_timestamp
from ._log import log

if TYPE_CHECKING:
    from ._identity import Identity

__all__ = ["AuditRecord", "AuditSink", "deliver", "target_kind"]


def target_kind(target: str) -> str:
    """What kind of thing ``target`` is: ``patient`` for ``patient:42``, ``namespace``
    for ``/chat``, ``room`` for a bare room name. (Records of action ``admin`` have
    kind ``admin``: their targets are admin API routes.)"""
    if target.startswith("/"):
        return "namespace"
    kind, colon, _ = target.partition(":")
    return kind if colon else "room"


@attrs.frozen(kw_only=True)
class AuditRecord:
    """Who asked to do what to which kind of target, and the answer.

    ``target`` is the full target (``patient:42``): it may hold resource ids, so a
    sink must store it as carefully as the records it points to. ``reason`` says
    why a request was denied (``None`` when allowed). ``timestamp`` is ISO 8601 UTC.
    ``dropped``: for a recovery (action ``recover``), the rooms the socket had that
    it was not given back.
    """

    user_id: str
    session_id: str | None
    action: str
    target: str
    target_kind: str
    allowed: bool
    reason: str | None
    timestamp: str
    dropped: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        identity: Identity,
        action: str,
        target: str,
        *,
        allowed: bool,
        reason: str | None,
        dropped: tuple[str, ...] = (),
    ) -> AuditRecord:
        """The record of one decision, made now."""
        return cls(
            user_id=identity.user_id,
            session_id=identity.session_id,
            action=action,
            target=target,
            target_kind="admin" if action == "admin" else target_kind(target),
            allowed=allowed,
            reason=reason,
            timestamp=iso_timestamp(),
            dropped=dropped,
        )

    def to_json(self) -> dict[str, Any]:
        """The record as JSON data."""
        record: dict[str, Any] = {
            "userId": self.user_id,
            "sessionId": self.session_id,
            "action": self.action,
            "target": self.target,
            "targetKind": self.target_kind,
            "allowed": self.allowed,
            "reason": self.reason,
            "timestamp": self.timestamp,
        }
        if self.action == "recover":
            record["dropped"] = list(self.dropped)
        return record


class AuditSink(Protocol):
    """Receives every :class:`AuditRecord`: a plain function or a coroutine function."""

    def __call__(self, record: AuditRecord, /) -> Awaitable[None] | None: ...


async def deliver(sink: AuditSink, record: AuditRecord) -> bool:
    """Hand ``record`` to ``sink``; ``False`` (and an error record in the log, with
    the exception's type only) if the sink failed."""
    try:
        result = sink(record)
        if inspect.isawaitable(result):
            await result
    except Exception as exc:
        log(logging.ERROR, "audit_sink_failed", action=record.action, error=type(exc).__name__)
        return False
    return True
