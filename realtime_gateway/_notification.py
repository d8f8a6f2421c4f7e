"""The payload of a ``notification`` event, shared by the ``/notifications``
namespace and the gateway's publish API (``notify_user``, ``notify_role``)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from ._clock import epoch_ms
from ._exceptions import InvalidPayload

__all__ = ["NOTIFICATION_TYPES", "make_notification"]

NOTIFICATION_TYPES = ("info", "success", "warning", "error")
"""The values a notification's ``type`` may take."""


def make_notification(
    title: str,
    message: str,
    *,
    type: str = "info",
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``notification`` payload with a fresh id and timestamp; raises
    :class:`InvalidPayload` naming the bad argument."""
    if not isinstance(title, str) or not title.strip():
        raise InvalidPayload("'title' must be non-empty text", field="title")
    if not isinstance(message, str):
        raise InvalidPayload("'message' must be text", field="message")
    if type not in NOTIFICATION_TYPES:
        raise InvalidPayload(f"'type' must be one of {', '.join(NOTIFICATION_TYPES)}", field="type")
    if data is not None and not isinstance(data, Mapping):
        raise InvalidPayload("'data' must be an object", field="data")
    return {
        "id": str(uuid.uuid4()),
        "type": type,
        "title": title,
        "message": message,
        "data": dict(data or {}),
        "timestamp": epoch_ms(),
    }
