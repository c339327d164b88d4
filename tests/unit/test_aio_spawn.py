"""aio.spawn: a child process whose start is cancelled half-way is killed and reaped, and
the cancelled caller never hangs (CPython gh-125502: asyncio.create_subprocess_exec does)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from llmgine_daemon.aio import spawn, wait_discarded

PIPE = asyncio.subprocess.PIPE
# Like a sandbox worker under `unshare --fork`: the direct child runs the real work in a
# grandchild that holds the pipes too, so killing the direct child alone is not enough.
SLEEPER = ["/bin/sh", "-c", f"{sys.executable} -c 'import time; time.sleep(30)' & wait"]


async def test_cancel_at_every_step_of_the_start():
    """Cancel after 0, 1, 2, ... turns of the loop: whichever step of the pipe set-up the
    cancellation lands in, the caller gets CancelledError at once and no child survives."""
    started: list[asyncio.subprocess.Process] = []
    real_exec = asyncio.create_subprocess_exec

    async def recording_exec(*argv, **kwargs):
        proc = await real_exec(*argv, **kwargs)
        started.append(proc)
        return proc

    asyncio.create_subprocess_exec = recording_exec  # type: ignore[assignment]
    try:
        for turns in range(12):
            task = asyncio.ensure_future(spawn(*SLEEPER, stdin=PIPE, stdout=PIPE, start_new_session=True))
            for _ in range(turns):
                await asyncio.sleep(0)
            if task.done():  # started before the cancel: the caller owns the child
                os.killpg(task.result().pid, signal.SIGKILL)
                continue
            task.cancel()
            # The caller is released at once, whatever state the start was in.
            done, _ = await asyncio.wait({task}, timeout=10)
            assert done and task.cancelled()
        await asyncio.wait_for(wait_discarded(), 30)
    finally:
        asyncio.create_subprocess_exec = real_exec  # type: ignore[assignment]
    assert started, "no child was ever started"
    # wait() returns once the child exited and its pipes closed: the whole group is gone.
    for proc in started:
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL


async def test_uncancelled_spawn_is_an_ordinary_process():
    proc = await spawn(sys.executable, "-c", "print('hi')", stdout=PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert out.strip() == b"hi" and proc.returncode == 0
