"""User code runs as the same uid as its worker's zygote and forker: it must not change their
priority, scheduling or resource limits, which every later call on that worker (another
session's) would inherit from the forker (real workers, one of them so that both sessions'
calls run on it)."""

from __future__ import annotations

import textwrap

from tests.conftest import create_session

POISON = """
import os, resource

def poison():
    # Its own settings stay its own to change.
    os.setpriority(os.PRIO_PROCESS, 0, 5)
    resource.setrlimit(resource.RLIMIT_NOFILE, (30, 30))
    os.sched_setaffinity(0, os.sched_getaffinity(0))
    out = {}
    for target in (os.getppid(), 1):  # the forker, the zygote
        for name, change in [
            ("nice", lambda: os.setpriority(os.PRIO_PROCESS, target, 19)),
            ("idle", lambda: os.sched_setscheduler(target, os.SCHED_IDLE, os.sched_param(0))),
            ("param", lambda: os.sched_setparam(target, os.sched_param(0))),
            ("cpus", lambda: os.sched_setaffinity(target, {0})),
            ("as", lambda: resource.prlimit(target, resource.RLIMIT_AS, (64 * 2**20, 64 * 2**20))),
            ("nofile", lambda: resource.prlimit(target, resource.RLIMIT_NOFILE, (20, 20))),
        ]:
            try:
                change()
                out[f"{target}:{name}"] = "changed"
            except OSError as exc:
                out[f"{target}:{name}"] = type(exc).__name__
    for which in (os.PRIO_PGRP, os.PRIO_USER):  # who 0: its group, every process of its uid
        try:
            os.setpriority(which, 0, 19)
            out[f"which{which}"] = "changed"
        except OSError as exc:
            out[f"which{which}"] = type(exc).__name__
    return out
"""
STATE = """
import os, resource

def state():
    return {
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "policy": os.sched_getscheduler(0),
        "cpus": sorted(os.sched_getaffinity(0)),
        "as": resource.getrlimit(resource.RLIMIT_AS),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        "worker": os.readlink("/proc/self/ns/pid"),
    }
"""


async def test_user_code_cannot_change_the_workers_processes(make_client):
    client = await make_client(API_WORKERS="1")
    a = (await create_session(client))["session_id"]
    b = (await create_session(client))["session_id"]

    async def run(sid: str, name: str, code: str) -> dict:
        resp = await client.post(
            f"/api/sessions/{sid}/tools?replace=true", json={"name": name, "function_code": textwrap.dedent(code)}
        )
        assert resp.status == 201, await resp.text()
        resp = await client.post(f"/api/sessions/{sid}/tools/{name}/execute", json={"arguments": {}})
        body = await resp.json()
        assert body["error"] is None, body
        return body["result"]

    before = await run(b, "state", STATE)
    tried = await run(a, "poison", POISON)
    assert set(tried.values()) == {"PermissionError"}, tried
    after = await run(b, "state", STATE)
    assert after == before
