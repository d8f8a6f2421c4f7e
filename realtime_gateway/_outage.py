"""Whether Redis is reachable, for each part of the gateway that uses it."""

from __future__ import annotations

import logging
import time

from ._log import log

__all__ = ["Outage"]


class Outage:
    """Tracks whether Redis is reachable: logs the first failure and the recovery
    once each, and spaces out reconnection attempts with exponential backoff."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.down = False
        self.retry_at = 0.0
        self.backoff = 0.5

    def may_try(self) -> bool:
        return not self.down or time.monotonic() >= self.retry_at

    def failed(self, exc: BaseException) -> None:
        if not self.down:
            log(logging.WARNING, "redis_unavailable", part=self.what, error=type(exc).__name__)
            self.down = True
            self.backoff = 0.5
        else:
            self.backoff = min(self.backoff * 2, 30.0)
        self.retry_at = time.monotonic() + self.backoff

    def succeeded(self) -> None:
        if self.down:
            log(logging.WARNING, "redis_recovered", part=self.what)
        self.down = False
