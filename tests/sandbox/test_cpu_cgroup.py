"""As root, every process of a worker, whatever user code forks and however it detaches
(``setsid``: an autogroup of its own), is in the worker's cpu cgroup: one entity of the
scheduler, so a call cannot take more of the CPU by forking (real workers)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.conftest import create_session

SPREAD = """
import os, time

def spread():
    for _ in range(3):
        if os.fork() == 0:
            os.setsid()
            time.sleep(30)
            os._exit(0)
    time.sleep(30)
"""


def _mounts() -> dict[str, Path]:
    """cgroup v1 controller (or "" for v2) -> where its hierarchy is mounted."""
    found: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, _, options = (right.split(" ") + ["", "", ""])[:3]
        if fstype == "cgroup2":
            found.setdefault("", Path(left.split(" ")[4]))
        elif fstype == "cgroup":
            for option in options.split(","):
                found.setdefault(option, Path(left.split(" ")[4]))
    return found


def _cpu_cgroup(pid: int, mounts: dict[str, Path]) -> Path | None:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return mounts["cpu"] / path.lstrip("/")
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::") and "" in mounts:
            return mounts[""] / line[3:].lstrip("/")
    return None


def _user_code_processes() -> list[int]:
    """The processes under this test process's sandbox workers' bubblewraps."""
    marker = f'"daemon": {os.getpid()},'.encode()
    todo = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker in Path(f"/proc/{entry}/cmdline").read_bytes():
                    todo.append(int(entry))
            except OSError:
                continue
    found = []
    while todo:
        pid = todo.pop()
        try:
            children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            continue
        found += children
        todo += children
    return found


async def test_every_process_of_a_call_is_in_its_workers_cpu_cgroup(make_client):
    if os.geteuid() != 0:
        pytest.skip("cgroups are made by a daemon run as root")
    mounts = _mounts()
    client = await make_client(API_WORKERS="1")
    sid = (await create_session(client))["session_id"]
    resp = await client.post(f"/api/sessions/{sid}/tools", json={"name": "spread", "function_code": SPREAD})
    assert resp.status == 201, await resp.text()
    call = asyncio.ensure_future(client.post(f"/api/sessions/{sid}/tools/spread/execute", json={"arguments": {}}))
    try:
        for _ in range(400):  # the zygote, the forker, the call's child and its 3 children
            pids = _user_code_processes()
            if len(pids) >= 6:
                break
            await asyncio.sleep(0.05)
        assert len(pids) >= 6, pids
        for pid in pids:
            group = _cpu_cgroup(pid, mounts)
            assert group is not None and "llmgine-sandbox-" in str(group), (pid, group)
            assert (group / "cpu.weight").exists() or (group / "cpu.shares").exists(), group
    finally:
        call.cancel()
