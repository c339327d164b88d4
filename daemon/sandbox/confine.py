"""Resource limits and identity for what runs in the sandbox: the workers (worker.py, at
boot) and a session token's stdio MCP servers (mcp/launch.py, which runs ``main`` in the
sandbox before the server's own command). Standard library only: it runs inside the sandbox
with no site-packages.
"""

from __future__ import annotations

import json
import os
import resource
import sys


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
    replaces this process."""
    config = json.loads(sys.argv[1])
    drop_identity(config["identity"])
    set_limits(config["limits"])
    if config.get("idle"):
        lower_priority()
    os.execv(config["argv"][0], config["argv"])
