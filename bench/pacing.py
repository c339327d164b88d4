"""Open-loop load: work started at a fixed rate against the clock, whatever is still running
(bench_streams.py's publisher and commands alongside, pg_cluster.py's fan-out publisher)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def paced(
    rate: float,
    spawn: Callable[[int], Awaitable[Any]],
    *,
    count: int | None = None,
    until: asyncio.Event | None = None,
) -> None:
    """Start ``spawn(0)``, ``spawn(1)``... as tasks, ``rate`` a second against the clock (not by
    sleeping a fixed interval: sleep overshoots) and not awaited in turn, until ``count`` have
    started or ``until`` is set; then wait for all of them."""
    running: set[asyncio.Task[Any]] = set()
    i, begin = 0, time.monotonic()
    while (count is None or i < count) and not (until is not None and until.is_set()):
        delay = begin + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(spawn(i))
        running.add(task)
        task.add_done_callback(running.discard)
        i += 1
    await asyncio.gather(*list(running))
