"""The daemon's handle on one worker process (``WorkerProcess``): frames read from and written
to its pipes, and killing it whole - its process group, the running call's child, the
sandbox's PID 1 and its cgroups. The pool (``pool.py``) decides when.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from llmgine_daemon.aio import killpg
from llmgine_daemon.sandbox import frames
from llmgine_daemon.sandbox.isolation import Cgroups


class WorkerProcess:
    def __init__(self, proc: asyncio.subprocess.Process, tmpdir: str | None, cgroups: list[Path], pidns: bool) -> None:
        self.proc = proc
        self.tmpdir = tmpdir  # isolation "none" only: bubblewrap gives /tmp of its own
        self.cgroups = cgroups
        self.pidns = pidns
        self.zygote: int | None = None  # host pid of the worker inside bwrap
        self.child_pid: int | None = None
        self.calls = 0

    async def read(self, max_size: int) -> frames.Frame:
        assert self.proc.stdout is not None
        header = await self.proc.stdout.readexactly(frames.HEADER.size)
        (size,) = frames.HEADER.unpack(header)
        if size > max_size:
            raise frames.FrameError(f"frame of {size} bytes is over the {max_size} byte limit")
        return frames.decode(await self.proc.stdout.readexactly(size))

    def send(self, frame: frames.Frame) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(frames.encode(frame))

    def kill(self) -> None:
        """SIGKILL the whole worker: its process group, the running child's group (which it
        left with setpgid), and everything in its cgroup. Safe to call twice."""
        if self.child_pid is not None and not self.pidns:
            killpg(self.child_pid)
        killpg(self.proc.pid)
        if self.zygote is not None:  # PID 1 of the sandbox: its end ends the whole namespace
            try:
                os.kill(self.zygote, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for cgroup in self.cgroups:
            Cgroups.kill_all(cgroup)


async def wait_briefly(proc: asyncio.subprocess.Process) -> int | None:
    try:
        return await asyncio.wait_for(proc.wait(), 1)
    except TimeoutError:
        return None


def describe_failure(exc: BaseException, returncode: int | None) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        what = "it closed its pipe"
    else:
        what = str(exc) or type(exc).__name__
    if returncode is not None and returncode < 0:
        try:
            return f"{what} (killed by signal {signal.Signals(-returncode).name})"
        except ValueError:
            pass
    return what
