"""The cgroups of a session token's stdio MCP servers (daemon/mcp/cgroups.py) with a real
llmgined: gone when the daemon stops on SIGTERM; left by one killed with SIGKILL (nothing of
it runs), they are removed by the next daemon's start, as the sandbox pool's are."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from llmgine_daemon.sandbox.isolation import _hierarchies

from tests.api.test_mcp_confined import SERVER
from tests.clitools import cleanup_home, free_port, run_cli, short_home, start_daemon, stop_process
from tests.eventually import eventually_blocking

pytestmark = pytest.mark.e2e


@pytest.fixture
def home() -> Any:
    if os.geteuid() != 0 or not {"pids", "memory"} <= {c for c, _ in _hierarchies()}:
        pytest.skip("no cgroups here (needs root and the pids and memory controllers)")
    path = short_home()
    try:
        yield path
    finally:
        cleanup_home(path)


def _start_with_a_server(home: Path) -> tuple[Any, list[Path]]:
    """A daemon with one session token's server running; its MCP parent cgroups."""
    port = free_port()
    daemon = start_daemon(home, port=port, env={"LLMGINE_MCP_SESSION_TOKEN_STDIO": "true"})
    result = run_cli(("session", "create", "-o", "json"), daemon.env)
    assert result.returncode == 0, result.stderr
    session = json.loads(result.stdout)
    body = {"name": "stays", "command": "/usr/bin/python3", "args": ["-c", SERVER]}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/sessions/{session['session_id']}/mcp-servers",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Session-Token": session["session_token"]},
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        assert resp.status == 201 and json.load(resp)["status"] == "running"
    name = f"llmgine-sandbox-{daemon.proc.pid}-mcp"
    parents = [base / name for c, base in _hierarchies() if c in ("pids", "memory")]
    assert all(any(p.iterdir()) for p in parents), parents  # the server's cgroup in each
    return daemon, parents


def test_the_daemons_stop_removes_the_servers_cgroups(home: Path) -> None:
    daemon, parents = _start_with_a_server(home)
    try:
        stop_process(daemon.proc)  # SIGTERM
        assert daemon.proc.returncode == 0
        assert not any(p.exists() for p in parents)
    finally:
        stop_process(daemon.proc)


def test_the_cgroups_of_a_killed_daemon_go_at_the_next_start(home: Path) -> None:
    daemon, parents = _start_with_a_server(home)
    try:
        os.kill(daemon.proc.pid, signal.SIGKILL)
        daemon.proc.wait()
        assert all(p.exists() for p in parents)  # nothing of the daemon ran to remove them
        # (its sandbox ends with it: bubblewrap's --die-with-parent, then the cgroup is empty)
        daemon = start_daemon(home)
        eventually_blocking(lambda: not any(p.exists() for p in parents), timeout=30)
    finally:
        stop_process(daemon.proc)
