"""The packets waiting for one engine.io connection: what python-engineio's socket
uses of an :class:`asyncio.Queue`, in a fraction of its memory.

An ``asyncio.Queue`` holds three deques, an ``Event`` (with a fourth) and more:
about 3 KB per connection, kept for its whole life. A websocket whose frames the
socket writes itself (see :mod:`._engine`) uses its queue only for the handshake,
and a long-poll's queue is mostly empty between polls. :class:`Outbox` makes its
deque and its waiters only while it has some.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

__all__ = ["Outbox"]


class Outbox:
    """A FIFO with ``asyncio.Queue``'s methods that python-engineio and the gateway
    call (``put``, ``put_nowait``, ``get``, ``get_nowait``, ``empty``, ``qsize``,
    ``task_done``, ``join``), unbounded, for one event loop."""

    __slots__ = ("_getters", "_items", "_joiners", "_unfinished")

    def __init__(self) -> None:
        self._items: deque[Any] | None = None
        self._getters: list[asyncio.Future[None]] | None = None
        self._joiners: list[asyncio.Future[None]] | None = None
        self._unfinished = 0

    def qsize(self) -> int:
        return 0 if self._items is None else len(self._items)

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: Any) -> None:
        items = self._items
        if items is None:
            items = self._items = deque()
        items.append(item)
        self._unfinished += 1
        self._wake_next()

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        items = self._items
        if not items:
            raise asyncio.QueueEmpty()
        item = items.popleft()
        if not items:
            self._items = None  # an empty deque keeps a whole block
        return item

    async def get(self) -> Any:
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                if self._getters is not None and getter in self._getters:
                    self._getters.remove(getter)
                if self._items and not getter.cancelled():
                    # Woken but leaving: the next waiter takes the item instead.
                    self._wake_next()
                raise
            finally:
                if not self._getters:
                    self._getters = None
        return self.get_nowait()

    def _wake_next(self) -> None:
        getters = self._getters
        while getters:
            getter = getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                return

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0 and self._joiners:
            joiners, self._joiners = self._joiners, None
            for joiner in joiners:
                if not joiner.done():
                    joiner.set_result(None)

    async def join(self) -> None:
        if self._unfinished == 0:
            return
        joiner = asyncio.get_running_loop().create_future()
        if self._joiners is None:
            self._joiners = []
        self._joiners.append(joiner)
        try:
            await joiner
        finally:
            if self._joiners is not None and joiner in self._joiners:
                self._joiners.remove(joiner)
                if not self._joiners:
                    self._joiners = None
