"""A pool stopped at any moment of its start stops promptly and leaves no worker behind
(the daemon shutting down right after it started once hung here: CPython gh-125502); its
workers start when user code needs them, not with the pool."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest
from llmgine_daemon.sandbox.calls import CallContext, SandboxUnavailable
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
        pool.warm()  # the workers too (else only the isolation probe runs)
        await asyncio.sleep(delay)
        await asyncio.wait_for(pool.stop(), 30)
    assert set(_workers_of(os.getpid())) - before == set()


async def test_workers_start_when_user_code_needs_them():
    """start() checks the isolation only; warm() (or a call) starts the workers."""
    before = set(_workers_of(os.getpid()))
    pool = SandboxPool(2)
    await pool.start()
    try:
        await pool.wait_probed()
        info = pool.info()
        assert info["state"] == "standby" and info["isolation"] == "bubblewrap", info
        assert info["idle"] == 0 and info["busy"] == 0
        assert set(_workers_of(os.getpid())) - before == set()
        pool.warm()
        pool.warm()  # once only
        assert pool.info()["state"] == "starting"
        await pool.wait_ready()
        info = pool.info()
        assert info["state"] == "running" and info["idle"] == 2 and info["python"], info
        assert len({*_workers_of(os.getpid())} - before) >= 2  # each: bwrap and the zygote
    finally:
        await asyncio.wait_for(pool.stop(), 30)
    assert pool.info()["state"] == "stopped"
    assert set(_workers_of(os.getpid())) - before == set()
    pool.warm()  # stopped: starts nothing
    assert pool.info()["state"] == "stopped" and set(_workers_of(os.getpid())) - before == set()


async def test_a_call_on_a_pool_in_standby_starts_the_workers_and_waits_for_them():
    pool = SandboxPool(1)
    await pool.start()
    try:
        context = CallContext(session_id=None, kind="tool", name="f")
        outcome = await pool.run("tool", "def f():\n    return 6 * 7\n", "f", {}, context=context)
        assert outcome.ok and outcome.result == 42, outcome
        assert pool.info()["state"] == "running"
    finally:
        await pool.stop()


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


def _python_failing(tmp_path, runs: int) -> str:
    """A python that exits 1 on its first ``runs`` starts, then is the real one."""
    wrapper = tmp_path / "python"
    marks = " ".join(str(tmp_path / f"failed-{i}") for i in range(runs))
    wrapper.write_text(
        f'#!/bin/sh\nfor m in {marks}; do if mkdir $m 2>/dev/null; then exit 1; fi; done\nexec {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper)


async def test_a_failed_start_of_the_workers_is_tried_again_later(tmp_path, monkeypatch):
    """A start that failed once (a spawn timeout on a busy machine, fork failing) does not
    disable user code until a restart: after RETRY_START_S a call or warm() starts them again;
    before that, calls fail at once (no start per call)."""
    from llmgine_daemon.sandbox import pool as pool_module

    pool = SandboxPool(1, isolation="none", python=_python_failing(tmp_path, 1))
    await pool.start()
    context = CallContext(session_id=None, kind="tool", name="f")
    try:
        first = await pool.run("tool", "def f():\n    return 42\n", "f", {}, context=context)
        assert not first.ok and pool.info()["state"] == "failed", first
        again = await pool.run("tool", "def f():\n    return 42\n", "f", {}, context=context)
        assert not again.ok and pool.info()["state"] == "failed"  # within RETRY_START_S
        monkeypatch.setattr(pool_module, "RETRY_START_S", 0.0)
        later = await pool.run("tool", "def f():\n    return 42\n", "f", {}, context=context)
        assert later.ok and later.result == 42, later
        assert pool.info()["state"] == "running"
    finally:
        await pool.stop()


async def test_a_partly_failed_start_leaves_no_worker_running(tmp_path):
    """One worker of three failing to start fails the start; the two that did start are
    stopped, not left running unused until the daemon stops."""
    pool = SandboxPool(3, isolation="none", python=_python_failing(tmp_path, 1))
    await pool.start()
    try:
        with pytest.raises(Exception, match="did not start"):
            await pool.wait_ready()
        assert pool.info()["state"] == "failed"
        assert not [w for w in pool._all if w.proc.returncode is None]
    finally:
        await pool.stop()


async def test_a_probe_that_breaks_is_logged_and_reported(tmp_path, monkeypatch, caplog):
    """Not SandboxUnavailable (logged where raised) but anything else going wrong in the start
    (a bug, the probe failing oddly) is logged with its traceback and shown as the reason."""
    from llmgine_daemon.sandbox import pool as pool_module

    async def broken_probe(*args, **kwargs):
        raise RuntimeError("probe broke")

    monkeypatch.setattr(pool_module, "probe", broken_probe)
    pool = SandboxPool(1, python=str(tmp_path / "a-python-no-other-test-probed"))
    await pool.start()
    try:
        with pytest.raises(SandboxUnavailable, match="probe broke"):  # never a bare error: no 500
            await pool.wait_probed()
        await asyncio.sleep(0)  # the done-callbacks run
        assert pool.info()["state"] == "failed" and "probe broke" in pool.info()["reason"]
        context = CallContext(session_id=None, kind="tool", name="f")
        outcome = await pool.run("tool", "def f():\n    return 1\n", "f", {}, context=context)
        assert not outcome.ok and outcome.error is not None and outcome.error["code"] == "SANDBOX_UNAVAILABLE"
        logged = [r for r in caplog.records if "cannot start" in r.getMessage() and r.exc_info]
        assert len(logged) == 1, logged  # once, by the step that failed
    finally:
        await pool.stop()
