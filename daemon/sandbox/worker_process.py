"""The daemon's handle on one worker process (``WorkerProcess``): what it is started with
(``worker_config``, ``launch``, ``adopt``), frames read from and written to its pipes, and
killing it whole - its process group, the running call's child, the sandbox's PID 1 and its
cgroups. The pool (``pool.py``) decides when.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import signal
import tempfile
from pathlib import Path
from typing import Any

from llmgine_daemon.aio import killpg, spawn
from llmgine_daemon.sandbox import frames
from llmgine_daemon.sandbox.calls import SandboxLimits
from llmgine_daemon.sandbox.isolation import Cgroups, Isolation, child_pid, count_tasks, seccomp_pipe
from llmgine_daemon.sandbox.procs import uids_running

log = logging.getLogger("llmgine.sandbox")


class WorkerProcess:
    def __init__(self, proc: asyncio.subprocess.Process, tmpdir: str | None, cgroups: list[Path], pidns: bool) -> None:
        self.proc = proc
        self.tmpdir = tmpdir  # isolation "none" only: bubblewrap gives /tmp of its own
        self.cgroups = cgroups
        self.pidns = pidns
        self.zygote: int | None = None  # host pid of the worker inside bwrap
        self.child_pid: int | None = None
        self.calls = 0
        self.uid: int | None = None  # a root daemon's: the uid it runs as (worker_uid)

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


# Processes of a worker besides the call's own: the zygote, the forker and the call's child.
OVERHEAD_PROCESSES = 3


def worker_uid(iso: Isolation, uids: tuple[int, int] | None, taken: set[int | None]) -> int | None:
    """The uid a new worker of a root daemon runs as. With ``sandbox.uids``, the first of the
    range that no other worker holds (``taken``), no process on the host runs as and no user
    of this machine has: the kernel keeps some counts per uid across every namespace (message
    queue bytes, queued signals, epoll watches, pipe pages, RLIMIT_NPROC), and with one uid
    for all, one session's call could use them up for every other session's calls. Without
    the setting, or with the range used up, ``sandbox.user``. None for a daemon not run as
    root (bubblewrap's user namespace maps the daemon's own uid)."""
    if iso.uid is None or not iso.sandboxed or uids is None:
        return iso.uid
    running = uids_running()
    for uid in range(uids[0], uids[1] + 1):
        if uid in taken or uid in running:
            continue
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    log.warning("sandbox.uids %d-%d has no free uid left: a worker runs as sandbox.user", *uids)
    return iso.uid


def nproc_limit(iso: Isolation, limits: SandboxLimits, pids_cgroup: bool, uid: int | None) -> int:
    """RLIMIT_NPROC for a worker (0: not set; root uses a pids cgroup). In bubblewrap's user
    namespace the kernel counts only the namespace's own tasks: the worker's and the call's
    budget. Without one it counts every task of the uid, so the budget goes on top of what the
    uid runs now."""
    budget = limits.processes + OVERHEAD_PROCESSES
    me = os.geteuid()
    if me == 0:
        if uid is None or pids_cgroup:
            return 0
        # Root without a pids cgroup (a read-only /sys/fs/cgroup): workers run as their uid
        # (worker_uid), whom RLIMIT_NPROC binds, counted over all that uid's tasks.
        return count_tasks(uid) + budget
    if iso.user_namespace:
        return budget
    return count_tasks(me) + budget


def rlimits_of(limits: SandboxLimits, nproc: int) -> dict[str, int]:
    """What sandbox/confine.py ``set_limits`` sets (0: not set)."""
    return {
        "memory_bytes": limits.memory_bytes,
        "open_files": limits.open_files,
        "file_size_bytes": limits.file_size_bytes,
        "nproc": nproc,
    }


def worker_config(
    iso: Isolation, limits: SandboxLimits, cgroups: list[Path], name: str, nproc: int, uid: int | None
) -> tuple[dict[str, Any], str, str | None]:
    """(configuration, working directory, host directory to remove with the worker or None)."""
    rlimits = rlimits_of(limits, nproc)
    if iso.sandboxed:
        identity = [uid, iso.gid] if uid is not None else None
        config = {"daemon": os.getpid(), "limits": rlimits, "sandboxed": True, "identity": identity}
        return config, "/", None
    # isolation "none": a host directory, removed with the worker (or at the next start)
    tmpdir = tempfile.mkdtemp(prefix=f"llmgine-sandbox-{os.getpid()}-{name}-")
    pids = [c for c in cgroups if (c / "pids.max").exists()]
    config = {"daemon": os.getpid(), "limits": rlimits, "cgroup": str(pids[0]) if pids else ""}
    return config, tmpdir, tmpdir


async def launch(iso: Isolation, limits: SandboxLimits, config: dict[str, Any], cwd: str) -> asyncio.subprocess.Process:
    """Start the worker process (bubblewrap around it, with the seccomp filter, when
    sandboxed). Raises OSError if it cannot be started."""
    seccomp_fd = seccomp_pipe() if iso.sandboxed else None
    argv = iso.worker_argv(json.dumps(config), limits.tmp_bytes, seccomp_fd)
    try:
        return await spawn(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={},
            cwd=cwd,
            close_fds=True,
            start_new_session=True,
            pass_fds=(seccomp_fd,) if seccomp_fd is not None else (),
        )
    finally:
        if seccomp_fd is not None:
            os.close(seccomp_fd)


def adopt(worker: WorkerProcess, cgroups: list[Path]) -> None:
    """Move a sandboxed worker that just said Ready into its cgroups: the zygote has forked
    nothing but the forker yet, so from now on every process of every call is counted there.
    (Without cgroups bubblewrap's --die-with-parent is enough to end it, and /proc may not even
    be listable by this user, so nothing is looked up.)"""
    worker.zygote = child_pid(worker.proc.pid)
    forker = child_pid(worker.zygote) if worker.zygote is not None else None
    if worker.zygote is None or forker is None:
        raise frames.FrameError("cannot find the worker inside bubblewrap")
    for pid in (worker.zygote, forker):  # every call is forked by the forker
        Cgroups.join(cgroups, pid)
