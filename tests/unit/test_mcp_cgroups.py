"""A session token's stdio MCP servers' cgroups. Without cgroups (a daemon not run as root),
they start as before, capped per process only, and the log says so once."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from llmgine_daemon.mcp.cgroups import ServerCgroups
from llmgine_daemon.sandbox.isolation import Cgroups


async def test_without_cgroups_servers_get_none_and_the_log_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # cgroups are made by a root daemon only
    cgroups = ServerCgroups(512 * 2**20, 32)
    with caplog.at_level(logging.INFO, logger="llmgine.mcp"):
        assert await cgroups.make("a@1", "s1") == []
        assert await cgroups.make("b@1", "s1") == []
    said = [r for r in caplog.records if "no cgroups here" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert "per process only" in said[0].getMessage()
    await cgroups.close()


def test_a_sessions_cgroup_leaves_a_kill_for_memory_to_one_run(tmp_path: Path) -> None:
    """cgroup v2: the kernel's OOM killer kills together every process of the highest cgroup
    with memory.oom.group set between the victim and the cgroup whose limit was hit. Set on a
    session's cgroup, one server past the session's memory killed all the session's servers;
    it is set on each run's only. (The files are those the kernel makes in a v2 cgroup.)"""
    parent = tmp_path / "llmgine-sandbox-1-mcp"
    for group in (parent / "g1", parent / "g1" / "s1"):
        group.mkdir(parents=True)
        for name in ("memory.max", "memory.swap.max", "memory.oom.group", "cgroup.subtree_control"):
            (group / name).write_text("0")
    cgroups = Cgroups({"memory": parent})
    assert cgroups.make("g1", 32, 64 * 2**20, nest=True) == [parent / "g1"]
    assert cgroups.make("g1/s1", 32, 64 * 2**20) == [parent / "g1" / "s1"]
    assert (parent / "g1" / "memory.oom.group").read_text() == "0"
    assert (parent / "g1" / "s1" / "memory.oom.group").read_text() == "1"
    assert (parent / "g1" / "memory.max").read_text() == str(64 * 2**20)
    assert (parent / "g1" / "cgroup.subtree_control").read_text() == "+memory"


async def test_a_server_keeps_the_limits_of_the_cgroups_that_could_be_made(tmp_path: Path) -> None:
    """A session's cgroup made under some controllers only (one hierarchy refused it): the run
    gets a cgroup under those, as each run's own did before there were sessions' cgroups; it
    ran under none, capped per process only."""
    memory = tmp_path / "memory" / "llmgine-sandbox-1-mcp"
    memory.mkdir(parents=True)
    pids = tmp_path / "pids-not-a-directory"
    pids.write_text("")
    cgroups = ServerCgroups(64 * 2**20, 32)
    cgroups._cgroups, cgroups._probed = Cgroups({"memory": memory, "pids": pids}), True
    (run,) = await cgroups.make("s@1", "1")
    assert run.parent == memory / "g1" and (run / "memory.limit_in_bytes").read_text() == str(64 * 2**20)
    assert (memory / "g1" / "memory.limit_in_bytes").read_text() == str(64 * 2**20)
