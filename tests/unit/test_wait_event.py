"""``aio.wait_event``: a background loop's nap that a stop's ``cancel()`` always ends."""

from __future__ import annotations

import asyncio

import pytest
from llmgine_daemon.aio import cancel_and_wait, wait_event


async def test_a_cancel_that_meets_the_event_stops_the_loop() -> None:
    # asyncio.wait_for (Python 3.11) returned normally when the event was set as the task was
    # cancelled: the webhook sender went round again and the daemon's stop waited forever.
    wake = asyncio.Event()
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            await wait_event(wake, 10)
            wake.clear()
            rounds += 1

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)  # the loop waits on the event
    wake.set()  # an attempt ends and wakes it...
    task.cancel()  # ...as the stop cancels it
    async with asyncio.timeout(5):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert rounds == 0


async def test_it_says_whether_the_event_was_set() -> None:
    wake = asyncio.Event()
    assert await wait_event(wake, 0.01) is False
    wake.set()
    assert await wait_event(wake, 10) is True
    waiter = asyncio.create_task(wait_event(asyncio.Event(), 10))
    await asyncio.sleep(0)
    await cancel_and_wait(waiter)
    assert waiter.cancelled()
