"""A pool stopped at any moment of its start stops promptly and leaves no worker behind
(the daemon shutting down right after it started once hung here: CPython gh-125502)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest
from llmgine_daemon.sandbox.isolation import Cgroups
from llmgine_daemon.sandbox.pool import SandboxPool


def _workers_of(pid: int) -> list[int]:
    """Processes still running a sandbox worker started by this test process's pools."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()  # bwrap and the worker carry the daemon's pid in their config
            with open(f"/proc/{entry}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f'"daemon": {pid},'.encode() in cmdline and state != "Z":
            found.append(int(entry))
    return found


async def test_stop_at_any_moment_of_the_start():
    before = set(_workers_of(os.getpid()))
    for delay in (0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3):
        pool = SandboxPool(2)
        await pool.start()
        await asyncio.sleep(delay)
        await asyncio.wait_for(pool.stop(), 30)
    assert set(_workers_of(os.getpid())) - before == set()


def _dead_pid() -> int:
    pid = 4_000_000
    while os.path.exists(f"/proc/{pid}"):
        pid += 1
    return pid


async def test_cgroups_of_a_killed_daemon_are_removed_at_the_next_start():
    probe = await Cgroups.create()
    if probe is None or "pids" not in probe.parents:
        pytest.skip("no pids cgroup here (needs root and a pids controller)")
    base = probe.parents["pids"].parent
    await probe.close()
    # Built under a name no daemon looks for, then renamed at once: a daemon starting in a
    # parallel test must not find it half-made (any daemon that starts may remove it).
    building = base / f"test-stale-{os.getpid()}"
    building.mkdir()
    (building / "w1").mkdir()
    (building / "w2").mkdir()
    # A worker that outlived its daemon, still in its cgroup.
    survivor = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")
    (building / "w2" / "cgroup.procs").write_text(str(survivor.pid))
    stale = base / f"llmgine-sandbox-{_dead_pid()}"
    building.rename(stale)
    cgroup = await Cgroups.create()
    assert cgroup is not None
    try:
        assert not stale.exists()
        assert await asyncio.wait_for(survivor.wait(), 10) == -signal.SIGKILL
    finally:
        await cgroup.close()
        if survivor.returncode is None:
            survivor.kill()
            await survivor.wait()
        for path in (stale / "w1", stale / "w2", stale):
            try:
                path.rmdir()
            except FileNotFoundError:  # removed (by this daemon start or a parallel one)
                pass
