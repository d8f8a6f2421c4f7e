"""Outbox behaves as the asyncio.Queue it replaces, for what python-engineio and
the gateway ask of it, and keeps nothing while empty."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime_gateway._outbox import Outbox

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers()),
        st.tuples(st.just("get"), st.none()),
        st.tuples(st.just("done"), st.none()),
    ),
    max_size=60,
)


@given(OPS)
def test_the_same_answers_as_asyncio_queue(ops: list[tuple[str, int | None]]) -> None:
    async def run() -> None:
        model: asyncio.Queue[int | None] = asyncio.Queue()
        outbox = Outbox()
        for op, value in ops:
            if op == "put":
                model.put_nowait(value)
                outbox.put_nowait(value)
            elif op == "get":
                if model.empty():
                    with pytest.raises(asyncio.QueueEmpty):
                        outbox.get_nowait()
                else:
                    assert outbox.get_nowait() == model.get_nowait()
            else:
                try:
                    model.task_done()
                except ValueError:
                    with pytest.raises(ValueError, match="too many times"):
                        outbox.task_done()
                else:
                    outbox.task_done()
            assert (outbox.qsize(), outbox.empty()) == (model.qsize(), model.empty())

    asyncio.run(run())


async def test_get_waits_for_a_put_and_getters_are_served_in_order() -> None:
    outbox = Outbox()
    first = asyncio.create_task(outbox.get())
    second = asyncio.create_task(outbox.get())
    await asyncio.sleep(0)
    assert not first.done()
    assert not second.done()
    outbox.put_nowait("a")
    outbox.put_nowait("b")
    assert await first == "a"
    assert await second == "b"
    assert outbox._getters is None
    assert outbox._items is None


async def test_a_getter_timed_out_leaves_nothing_behind_and_loses_no_item() -> None:
    outbox = Outbox()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(outbox.get(), 0.01)
    assert outbox._getters is None
    leaving = asyncio.create_task(outbox.get())
    await asyncio.sleep(0)
    next_in_line = asyncio.create_task(outbox.get())
    await asyncio.sleep(0)
    outbox.put_nowait("x")  # wakes `leaving`, which is cancelled before it runs
    leaving.cancel()
    # The item goes to the next getter instead of being lost.
    assert await asyncio.wait_for(next_in_line, 1) == "x"
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_join_returns_when_every_item_is_done() -> None:
    outbox = Outbox()
    await asyncio.wait_for(outbox.join(), 1)  # nothing put: at once
    outbox.put_nowait(1)
    outbox.put_nowait(2)
    joining = asyncio.create_task(outbox.join())
    outbox.get_nowait()
    outbox.task_done()
    await asyncio.sleep(0)
    assert not joining.done()
    outbox.get_nowait()
    outbox.task_done()
    await asyncio.wait_for(joining, 1)
    assert outbox._joiners is None
    outbox.put_nowait(3)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(outbox.join(), 0.01)
    assert outbox._joiners is None
