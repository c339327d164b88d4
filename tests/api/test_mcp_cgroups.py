"""A session token's stdio MCP server runs in a cgroup of its own (memory, processes) where
the sandbox has cgroups (a daemon run as root): it was capped per process only (RLIMIT_AS,
RLIMIT_NPROC), so one server could hold 32 processes of 1 GiB each, and a session 20 servers.
The cgroup is made before the process starts and removed when it stops."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from llmgine_daemon.sandbox.isolation import _hierarchies

from tests.api.test_mcp_confined import PYTHON, SERVER
from tests.api.test_mcp_servers import add_server
from tests.conftest import create_session
from tests.eventually import eventually

# The `ident` server of test_mcp_confined, whose tool forks instead: children that sleep until
# a fork fails, then how many there are.
FORKS = SERVER.replace(
    "def ident():",
    "def ident():\n    n = 0\n    try:\n        while n < 200:\n            if os.fork() == 0:\n"
    "                import time; time.sleep(600); os._exit(0)\n            n += 1\n"
    "    except OSError:\n        pass\n    return {'forked': n}\ndef _ident():",
)


def _parents() -> dict[str, Path]:
    """controller -> this process's parent cgroup of MCP servers (the apps run in it)."""
    found = dict(_hierarchies())
    if os.geteuid() != 0 or not {"pids", "memory"} <= set(found):
        pytest.skip("no cgroups here (needs root and the pids and memory controllers)")
    return {c: base / f"llmgine-sandbox-{os.getpid()}-mcp" for c, base in found.items() if c in ("pids", "memory")}


def _groups(parents: dict[str, Path]) -> list[Path]:
    """The sessions' cgroups there are now (each holds its servers'), in every hierarchy."""
    return [child for parent in parents.values() if parent.is_dir() for child in parent.iterdir() if child.is_dir()]


def _runs(parents: dict[str, Path]) -> list[Path]:
    """The servers' cgroups there are now, in every hierarchy."""
    return [run for group in _groups(parents) for run in group.iterdir() if run.is_dir()]


def _cgroup_of(parents: dict[str, Path], pid: int) -> list[Path]:
    return [run for run in _runs(parents) if str(pid) in (run / "cgroup.procs").read_text().split()]


async def _token_client(make_client: Any, **env: str) -> tuple[Any, str, dict[str, str]]:
    client = await make_client(LLMGINE_MCP_SESSION_TOKEN_STDIO="true", **env)
    session = await create_session(client)
    client.session.headers.pop("Authorization")
    return client, session["session_id"], {"X-Session-Token": session["session_token"]}


async def test_a_server_past_its_memory_is_killed_and_says_so(make_client: Any) -> None:
    parents = _parents()
    client, sid, token = await _token_client(make_client, LLMGINE_MCP_SESSION_TOKEN_MEMORY_MB="64")
    # 256 MB, written (RLIMIT_AS, sandbox.memory_mb, allows 1 GiB), before it answers.
    hog = "x = b'\\x01' * (256 * 2**20)\n" + SERVER
    server = await add_server(client, sid, headers=token, name="hog", command=PYTHON, args=["-c", hog])
    assert server["status"] != "running", server
    assert "out of memory" in (server["last_error"] or ""), server
    assert "mcp.session_token_memory_mb" in server["last_error"]
    resp = await client.delete(f"/api/sessions/{sid}/mcp-servers/hog", headers=token)
    assert resp.status == 204
    assert not _runs(parents)  # each crashed run's cgroup went with it, the last with the removal


async def test_a_fork_bomb_stops_at_the_servers_process_limit(make_client: Any) -> None:
    parents = _parents()
    client, sid, token = await _token_client(make_client, LLMGINE_MCP_SESSION_TOKEN_MAX_PROCESSES="12")
    server = await add_server(client, sid, headers=token, name="bomb", command=PYTHON, args=["-c", FORKS])
    assert server["status"] == "running", server
    runs = _cgroup_of(parents, server["pid"])  # bubblewrap was started in it
    assert {run.parent.parent for run in runs} == set(parents.values()), runs
    assert (runs[0] / ("pids.max" if runs[0].parent == parents["pids"] else "memory.limit_in_bytes")).exists()
    resp = await client.post(f"/api/sessions/{sid}/tools/bomb.ident/execute", json={"arguments": {}}, headers=token)
    out = await resp.json()
    assert resp.status == 200 and out["error"] is None, out
    # bubblewrap, the sandbox's init and the server count too (RLIMIT_NPROC alone: 32 more)
    assert 0 < json.loads(out["result"])["forked"] < 12
    resp = await client.delete(f"/api/sessions/{sid}/mcp-servers/bomb", headers=token)
    assert resp.status == 204
    assert not any(run.exists() for run in runs)


async def test_no_cgroup_is_left_by_a_session_end_or_the_daemons_stop(make_client: Any) -> None:
    parents = _parents()
    client = await make_client(LLMGINE_MCP_SESSION_TOKEN_STDIO="true")
    sessions = [await create_session(client) for _ in range(2)]
    client.session.headers.pop("Authorization")
    runs = []
    for session in sessions:
        sid, token = session["session_id"], {"X-Session-Token": session["session_token"]}
        server = await add_server(client, sid, headers=token, name="s", command=PYTHON, args=["-c", SERVER])
        assert server["status"] == "running", server
        runs.append(_cgroup_of(parents, server["pid"]))
        assert runs[-1]
    sid, token = sessions[0]["session_id"], {"X-Session-Token": sessions[0]["session_token"]}
    resp = await client.delete(f"/api/sessions/{sid}", headers=token)
    assert resp.status in (200, 204), await resp.text()
    await eventually(lambda: not any(run.exists() for run in runs[0]), message="the ended session's cgroup is left")
    assert all(run.exists() for run in runs[1])
    await client.close()  # the daemon stops: the servers, their cgroups, the parent
    assert not any(run.exists() for run in runs[1])
    assert not any(parent.exists() for parent in parents.values())


async def test_a_sessions_servers_share_one_memory_limit(make_client: Any) -> None:
    """mcp.session_token_memory_mb is what a session's servers may use together: it was each
    server's, and a session may have 20 (10 GiB at the default 512 MiB)."""
    parents = _parents()
    client, sid, token = await _token_client(make_client, LLMGINE_MCP_SESSION_TOKEN_MEMORY_MB="64")
    hold = "x = b'\\x01' * (28 * 2**20)\n" + SERVER  # with Python itself, over half of 64 MB
    await add_server(client, sid, headers=token, name="a", command=PYTHON, args=["-c", hold])

    async def running() -> Any:
        got = await (await client.get(f"/api/sessions/{sid}/mcp-servers/a", headers=token)).json()
        return got if got["status"] == "running" else None

    first = await eventually(running, timeout=30, message="a server of 28 MB did not run in 64 MB")
    (group,) = {run.parent for run in _cgroup_of(parents, first["pid"]) if run.parent.parent == parents["memory"]}
    assert group.name == f"g{sid}"
    await add_server(client, sid, headers=token, name="b", command=PYTHON, args=["-c", hold])

    async def killed() -> bool:
        resp = await client.get(f"/api/sessions/{sid}/mcp-servers", headers=token)
        return any("out of memory" in (s["last_error"] or "") for s in (await resp.json())["servers"])

    await eventually(killed, timeout=30, message="two servers of 28 MB each ran in a session's 64 MB")
    for name in ("a", "b"):
        assert (await client.delete(f"/api/sessions/{sid}/mcp-servers/{name}", headers=token)).status == 204
    assert not _groups(parents)  # the session's cgroup goes with its last server


async def test_a_server_past_the_sessions_process_limit_says_so(make_client: Any) -> None:
    """The session's servers share mcp.session_token_max_processes (32 by default: about ten
    of the smallest servers, three processes each, of the 20 a session may have). The one that
    could not start its processes said only "Connection closed"; it names the limit now."""
    parents = _parents()
    # Two servers need 6 processes running, and one more for a moment while bubblewrap makes the
    # second one's namespaces (at 7, it failed its first start now and then: EAGAIN); a third
    # needs 3 more.
    client, sid, token = await _token_client(make_client, LLMGINE_MCP_SESSION_TOKEN_MAX_PROCESSES="8")
    for name in ("a", "b"):  # bubblewrap, the sandbox's init and the server: 3 each
        server = await add_server(client, sid, headers=token, name=name, command=PYTHON, args=["-c", SERVER])
        assert server["status"] == "running", server
    third = await add_server(client, sid, headers=token, name="c", command=PYTHON, args=["-c", SERVER])
    assert third["status"] != "running", third
    assert "mcp.session_token_max_processes" in (third["last_error"] or ""), third
    assert "8 processes" in third["last_error"], third
    for name in ("a", "b", "c"):
        assert (await client.delete(f"/api/sessions/{sid}/mcp-servers/{name}", headers=token)).status == 204
    assert not _groups(parents)
