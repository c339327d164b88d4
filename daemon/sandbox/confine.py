"""Resource limits and identity for what runs in the sandbox: the workers (worker.py, at
boot) and a session token's stdio MCP servers (mcp/launch.py, which runs ``main`` in the
sandbox before the server's own command). Standard library only: it runs inside the sandbox
with no site-packages.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
from typing import Any, NoReturn


def set_limits(limits: dict[str, int]) -> None:
    """``memory_bytes``, ``open_files``, ``file_size_bytes``, ``nproc`` and ``cpu_seconds``
    (each not set when 0) as soft and hard limits, never above the hard limit there is; no
    core files. Past ``cpu_seconds`` the process gets SIGXCPU, and SIGKILL 5 s later."""

    def cap(which: int, value: int) -> None:
        if value <= 0:
            return
        _soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))

    cap(resource.RLIMIT_AS, limits["memory_bytes"])
    cap(resource.RLIMIT_NOFILE, limits["open_files"])
    cap(resource.RLIMIT_FSIZE, limits["file_size_bytes"])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Computed by the daemon: RLIMIT_NPROC counts every task of the uid (outside a user
    # namespace), so it is what runs now plus the budget. Root ignores it.
    cap(resource.RLIMIT_NPROC, limits.get("nproc", 0))
    cpu = limits.get("cpu_seconds", 0)
    if cpu > 0:
        _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
        top = cpu + 5 if hard == resource.RLIM_INFINITY else min(cpu + 5, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (min(cpu, top), top))


def lower_priority() -> None:
    """The lowest CPU priority, for good: SCHED_IDLE (runs only when a CPU has nothing else to
    run; nice 19 where the policy cannot be set), and RLIMIT_NICE 0, so that neither this
    process nor its children can raise it again (unprivileged, as they are here)."""
    resource.setrlimit(resource.RLIMIT_NICE, (0, 0))
    os.setpriority(os.PRIO_PROCESS, 0, 19)
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        pass  # nice 19 stays: the lowest the classic scheduler has


def drop_identity(identity: list[int] | None) -> None:
    """A daemon run as root hands over uid/gid: become them for good, before anything else
    (bwrap left this process CAP_SETUID and CAP_SETGID only; setresuid clears them)."""
    if not identity:
        return
    uid, gid = identity
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise SystemExit("could not drop privileges")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise SystemExit("privileges could be regained")


def main() -> None:
    """``python -I -S -c BOOT CONFIG_JSON``: ``{"identity", "limits", "idle", "argv"}``; the
    identity is dropped, the limits set (the lowest CPU priority with ``idle``), then ``argv``
    replaces this process. With an identity to drop (a root daemon), this process stays as the
    sandbox's init (``_stay_init``) and the server runs in a child."""
    config = json.loads(sys.argv[1])
    if config["identity"]:
        _stay_init(config)
    _become_server(config)


def _become_server(config: dict[str, Any]) -> NoReturn:
    drop_identity(config["identity"])
    set_limits(config["limits"])
    if config.get("idle"):
        lower_priority()
    os.execv(config["argv"][0], config["argv"])


def _stay_init(config: dict[str, Any]) -> NoReturn:
    """Run the server in a child and wait for it as the PID namespace's init, keeping the
    parent-death signal bubblewrap set (--die-with-parent): changing uid clears it (and set
    again, a process of sandbox.user as the namespace's init is not killed by it), and
    bubblewrap puts the sandbox in a session of its own, so a server that dropped its uid in
    this process outlived bubblewrap: stopping it, its session's end and the daemon's (even
    by SIGKILL) left it and everything it started running. When bubblewrap goes, this init
    gets SIGKILL, and with it every process of the namespace. It holds none of the server's
    pipes, and stays root only in a process the server (another uid) can neither signal nor
    trace."""
    child = os.fork()
    if child == 0:
        _become_server(config)
    try:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
    except OSError:
        for fd in (0, 1, 2):
            with contextlib.suppress(OSError):
                os.close(fd)
    while True:  # as init, reap the orphans too; end with the server
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)
