"""Writes the command runner cannot give up on (``Runner.durable_write``)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from llmgine_daemon.store.errors import StorageError

log = logging.getLogger("llmgine.commands")
T = TypeVar("T")

# How long a stopping runner keeps retrying a write the store refuses (disk full, locked).
STOP_RETRY_S = 2.0


async def durable_write(store: Any, fn: Callable[[sqlite3.Connection], T], stopping: Callable[[], bool]) -> T:
    """``store.write`` that outlasts a full disk or a database locked by another process.

    The runner cannot answer "try again" to anyone: a result must be recorded before anybody
    is told it. So it keeps the outcome in memory and retries, with backoff, until the write
    commits (the daemon recovers by itself when space or the lock comes back). Only a stopping
    runner (``stopping()``) gives up, after ``STOP_RETRY_S``; what did not commit is then
    recovered from the store at the next start. Write functions must be re-runnable: a failed
    attempt was rolled back.
    """
    delay, gave_up_at = 0.05, None
    while True:
        try:
            return await store.write(fn)  # type: ignore[no-any-return]
        except StorageError as exc:
            if stopping():
                gave_up_at = gave_up_at or time.monotonic() + STOP_RETRY_S
                if time.monotonic() > gave_up_at:
                    raise
            if delay == 0.05:
                log.warning("storage unavailable (%s); the runner retries until it is back", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
