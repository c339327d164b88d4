"""A cgroup for each run of a session token's stdio MCP server: memory and processes for the
server and everything it starts, as one.

RLIMIT_AS caps one process, and RLIMIT_NPROC (in bubblewrap's user namespace, or the budget
above what sandbox.user runs) the number of them: a server could hold 32 processes of 1 GiB
each, and a session may have 20 servers. Where the sandbox's worker pool has cgroups (a daemon
run as root with a writable cgroup file system, sandbox/isolation.py ``Cgroups``), each run
of such a server gets a cgroup of its own under its session's, ``g<session id>``, under
``llmgine-sandbox-PID-mcp``, next to the pool's ``llmgine-sandbox-PID``. The session's cgroup
holds the limits its servers share (a limit per server let a session of 20 servers hold 20
times it): ``mcp.session_token_memory_mb`` (memory.max, no swap) and
``mcp.session_token_max_processes`` (pids.max). The process joins it before it runs
(bubblewrap is started in it), and the cgroup is emptied and removed when the run ends; the
parent goes when the daemon stops, and a daemon killed with SIGKILL leaves it to the next
one, whose pool removes the cgroups of daemons that are gone (``remove_stale``).

Without cgroups, nothing changes (the per-process limits stay) and the log says so once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from pathlib import Path

from llmgine_daemon.sandbox.isolation import Cgroups, release

log = logging.getLogger("llmgine.mcp")

_SUFFIX = "-mcp"
_PID_MAX_LIMIT = 4 * 2**20  # the kernel's PID_MAX_LIMIT: pids.max takes no more
_NO_MEMORY_LIMIT = 2**62  # rounded down to a page count: no limit in effect
_names = itertools.count(1)  # unique in the process: several apps may share it (tests)


class ServerCgroups:
    """The cgroups of session tokens' stdio servers for one daemon; made when the first such
    server starts."""

    def __init__(self, memory_bytes: int, processes: int) -> None:
        self.memory_bytes = memory_bytes
        self.processes = processes
        # 0: no limit of that kind (the largest each file takes)
        self._limits = (processes or _PID_MAX_LIMIT, memory_bytes or _NO_MEMORY_LIMIT)
        self._cgroups: Cgroups | None = None
        self._probed = False
        self._lock = asyncio.Lock()
        self._made: set[Path] = set()

    async def make(self, label: str, session_id: str) -> list[Path]:
        """A new cgroup (one path per controller) for one run of a server, in its session's
        cgroup, whose limits its servers share; [] without cgroups."""
        async with self._lock:
            if not self._probed:
                self._probed = True
                self._cgroups = await Cgroups.create(_SUFFIX)
                if self._cgroups is None:
                    log.warning(
                        "mcp: no cgroups here (they need a daemon run as root and a writable cgroup "
                        "file system): a session token's stdio servers are capped per process only "
                        "(RLIMIT_AS, RLIMIT_NPROC), not as a whole"
                    )
                else:
                    log.info(
                        "mcp: a session's token stdio servers share a cgroup (%s): memory %s MB, %s processes",
                        ",".join(self._cgroups.controllers),
                        self.memory_bytes // 2**20 or "unlimited",
                        self.processes or "unlimited",
                    )
        if self._cgroups is None:
            return []
        # The session's own (made again, or its limits written again: harmless) holds no process.
        group = f"g{session_id}"
        if not self._cgroups.make(group, *self._limits, nest=True):
            return []  # (each failure logged) per-process limits only, as without cgroups
        # Under each controller whose session cgroup could be made (a failure is logged).
        paths = self._cgroups.make(f"{group}/s{next(_names)}", *self._limits)
        self._made.update(paths)
        if paths:
            log.debug("mcp server %s: cgroup %s", label, paths[0].name)
        return paths

    async def release(self, paths: list[Path]) -> None:
        """Kill what is left in the run's cgroup and remove it; its session's too once empty."""
        for path in paths:
            await release(path)
            self._made.discard(path)
            try:
                path.parent.rmdir()  # fails while the session has another server's run
            except OSError:
                pass

    async def close(self) -> None:
        """Remove what is left (servers stopped first) and the parent, when it is empty: other
        apps of the same process (tests) may still have theirs in it."""
        await self.release(list(self._made))
        if self._cgroups is not None:
            for parent in self._cgroups.parents.values():
                try:
                    parent.rmdir()
                except OSError:
                    pass
        self._cgroups, self._probed = None, False


def killed_for_memory(paths: list[Path], memory_bytes: int) -> str | None:
    """What ``last_error`` says when the kernel killed a process of the run for memory."""
    if not paths or Cgroups.oom_kills(paths) <= 0:
        return None
    return (
        f"killed: out of memory (the session's servers and their processes may use "
        f"{memory_bytes // 2**20} MB together, mcp.session_token_memory_mb)"
    )


def refused_for_processes(paths: list[Path], processes: int) -> str | None:
    """What ``last_error`` says when a fork of the run was refused at pids.max: the session's
    servers share it, and the one that could not start its processes said only "Connection
    closed". Counted in the run's own cgroup, made for this run (``max`` of pids.events, or of
    pids.events.local where a kernel counts the other in the cgroup whose limit was hit)."""
    if not paths or not processes:
        return None
    for path in paths:
        for name in ("pids.events", "pids.events.local"):
            try:
                lines = (path / name).read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                key, _, value = line.partition(" ")
                if key == "max" and value.strip() not in ("", "0"):
                    return (
                        f"refused: a process could not start (the session's servers may run {processes} "
                        "processes together, theirs and the sandbox's: mcp.session_token_max_processes)"
                    )
    return None


def join(paths: list[Path]) -> None:
    """In the child, before exec (``preexec_fn``): move this process into the cgroups."""
    pid = str(os.getpid()).encode()
    for path in paths:
        fd = os.open(path / "cgroup.procs", os.O_WRONLY)
        try:
            os.write(fd, pid)
        finally:
            os.close(fd)
