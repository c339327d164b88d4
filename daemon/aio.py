"""asyncio helpers shared by the daemon's background tasks."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has stopped (its cancellation swallowed)."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """``event.wait()`` for at most ``timeout`` seconds; whether the event was set.

    ``asyncio.wait_for`` on Python 3.11 swallows a cancellation that arrives as the event is
    set (it returns the result instead): a background loop stopped by ``cancel()`` at that
    moment went round again and its stop waited for it forever (seen: the webhook sender at
    shutdown, woken by an attempt ending). ``asyncio.timeout`` tells the two apart."""
    try:
        async with asyncio.timeout(max(0.0, timeout)):
            await event.wait()
    except TimeoutError:
        return False
    return True


def killpg(pgid: int) -> None:
    """SIGKILL a process group; one that is already gone (or not ours) is nothing to do."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# Children whose creation outlived a cancelled caller, until they are killed and reaped.
_DISCARDING: set[asyncio.Task[None]] = set()


async def spawn(*argv: str, **kwargs: Any) -> asyncio.subprocess.Process:
    """``asyncio.create_subprocess_exec``, safe to cancel.

    CPython (gh-125502, gh-133536, through 3.13): a task cancelled while
    create_subprocess_exec connects the child's pipes waits forever for an exit notification
    that never comes, so a daemon stopping while a sandbox worker was being started never
    exited. Here the creation runs in a task of its own that is never cancelled; a cancelled
    caller leaves it a clean-up task that kills the child (its process group when it has
    one) and reaps it, and ``wait_discarded`` waits for those.
    """
    creating = asyncio.ensure_future(asyncio.create_subprocess_exec(*argv, **kwargs))
    try:
        return await asyncio.shield(creating)
    except asyncio.CancelledError:
        cleanup = asyncio.ensure_future(_discard(creating, group=bool(kwargs.get("start_new_session"))))
        _DISCARDING.add(cleanup)
        cleanup.add_done_callback(_DISCARDING.discard)
        raise


async def _discard(creating: asyncio.Future[asyncio.subprocess.Process], group: bool) -> None:
    try:
        proc = await creating
    except Exception:  # it never started: nothing to kill
        return
    if group:
        killpg(proc.pid)
    else:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), 5)
    except TimeoutError:
        pass


async def wait_discarded() -> None:
    """Wait until every child left behind by a cancelled ``spawn`` on this event loop is
    killed and reaped."""
    loop = asyncio.get_running_loop()
    while mine := [t for t in _DISCARDING if t.get_loop() is loop]:
        await asyncio.gather(*mine, return_exceptions=True)
