"""`llmgine mcp ...` and `llmgine tool exec NAME.tool` as real processes against a real
llmgined, with a real MCP server (tests/fakes/mcp_server.py, the official SDK): add, list,
tools, exec, the registration back after a restart, remove; and no server process left
behind when the daemon is killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.clitools import cleanup_home, free_port, run_cli, short_home, start_daemon, stop_process
from tests.e2e.test_shutdown import alive, descendants
from tests.eventually import eventually_blocking

pytestmark = pytest.mark.e2e

SERVER = str(Path(__file__).resolve().parents[1] / "fakes" / "mcp_server.py")


@pytest.fixture
def home() -> Any:
    path = short_home()
    try:
        yield path
    finally:
        cleanup_home(path)


def cli(daemon: Any, *args: str) -> Any:
    result = run_cli(args, daemon.env)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return json.loads(result.stdout) if "json" in args else result.stdout


def test_mcp_add_list_tools_exec_restart_remove(home: Path) -> None:
    daemon = start_daemon(home)
    try:
        server = cli(daemon, "mcp", "add", "fake", "-o", "json", "--", sys.executable, SERVER)
        assert server["status"] == "running" and server["scope"] == "global", server
        listed = cli(daemon, "mcp", "list", "-o", "json")
        assert [s["name"] for s in listed["servers"]] == ["fake"]
        table = cli(daemon, "mcp", "list", "-o", "table")
        assert "fake" in table and "running" in table
        tools = cli(daemon, "mcp", "tools", "fake", "-o", "json")
        assert "fake.add" in [t["name"] for t in tools["tools"]]

        sid = cli(daemon, "session", "create", "-q").strip()
        assert "fake.add" in cli(daemon, "tool", "list", "--session", sid)
        result = cli(daemon, "tool", "exec", "fake.add", "--session", sid, "-a", "a:=2", "-a", "b:=3", "-o", "json")
        assert result["result"] == {"result": 5} and result["error"] is None
        failed = run_cli(["tool", "exec", "fake.fail", "--session", sid, "-a", "message=no"], daemon.env)
        assert failed.returncode == 1 and "EXECUTION_FAILED" in failed.stderr and "Traceback" not in failed.stderr
        taken = run_cli(["mcp", "add", "fake", "--", sys.executable, SERVER], daemon.env)
        assert taken.returncode == 6 and "CONFLICT" in taken.stderr and "--replace replaces it" in taken.stderr
        replaced = cli(daemon, "mcp", "add", "fake", "--replace", "-o", "json", "--", sys.executable, SERVER)
        assert replaced["status"] == "running" and replaced["pid"] != server["pid"], replaced
        usage = run_cli(["mcp", "add", "nothing"], daemon.env)
        assert usage.returncode == 2 and "Traceback" not in usage.stderr
        # Registered but not connected: the table says `failed` among 15 lines; stderr says so.
        down = run_cli(["mcp", "add", "down", "--url", "http://127.0.0.1:9/mcp", "-q"], daemon.env)
        assert down.returncode == 0 and down.stdout.strip() == "down", down.stderr
        assert "MCP server down failed: " in down.stderr and "llmgine mcp list" in down.stderr, down.stderr
        assert run_cli(["mcp", "remove", "down"], daemon.env).returncode == 0

        # The registration comes back with the daemon; the old process went with the old daemon.
        stop_process(daemon.proc)
        assert not alive(server["pid"])
        daemon = start_daemon(home)
        result = cli(daemon, "tool", "exec", "fake.add", "--session", sid, "-a", "a:=20", "-a", "b:=22", "-o", "json")
        assert result["result"] == {"result": 42}
        pid = cli(daemon, "mcp", "get", "fake", "-o", "json")["pid"]

        removed = run_cli(["mcp", "remove", "fake"], daemon.env)
        assert removed.returncode == 0 and "removed MCP server fake" in removed.stderr
        assert not alive(pid)
        assert cli(daemon, "mcp", "list", "-o", "json")["total"] == 0
        missing = run_cli(["mcp", "remove", "fake"], daemon.env)
        assert missing.returncode == 4
    finally:
        stop_process(daemon.proc)


def test_no_server_outlives_a_killed_daemon(home: Path) -> None:
    daemon = start_daemon(home)
    try:
        sandboxed = cli(daemon, "mcp", "add", "boxed", "-o", "json", "--", sys.executable, SERVER)
        trusted = cli(daemon, "mcp", "add", "host", "--trusted", "-o", "json", "--", sys.executable, SERVER)
        # A tool: the sandbox's workers start once the daemon has user code (validating it
        # runs in one).
        tool = home / "tool.py"
        tool.write_text("def f():\n    return 1\n")
        sid = cli(daemon, "session", "create", "-q").strip()
        cli(daemon, "tool", "register", str(tool), "--session", sid, "-q")
        # Everything the daemon started: the servers (bubblewrap and the server inside it, the
        # trusted one) and the sandbox workers.
        pids = sorted(descendants(daemon.proc.pid))
        assert {sandboxed["pid"], trusted["pid"]} <= set(pids) and len(pids) > 3
        os.kill(daemon.proc.pid, signal.SIGKILL)
        daemon.proc.wait()
        eventually_blocking(lambda: not any(alive(pid) for pid in pids), timeout=15)
    finally:
        stop_process(daemon.proc)


def test_no_session_token_server_outlives_a_killed_daemon(home: Path) -> None:
    """A session token's stdio server runs as sandbox.user under a root daemon; it drops its
    uid in a child of the sandbox's init, which keeps bubblewrap's parent-death signal: one
    that dropped it itself (and ignored the end of its input) outlived the daemon."""
    port = free_port()
    # The server never answers `initialize`: its registration answers after mcp.start_timeout
    # (2 s here, 15 by default), the server still running.
    env = {"LLMGINE_MCP_SESSION_TOKEN_STDIO": "true", "LLMGINE_MCP_START_TIMEOUT": "2"}
    daemon = start_daemon(home, port=port, env=env)
    pids: list[int] = []
    try:
        session = cli(daemon, "session", "create", "-o", "json")
        stays = "import time\nwhile True:\n    time.sleep(60)\n"  # never reads, never exits
        body = {"name": "stays", "command": "/usr/bin/python3", "args": ["-c", stays]}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/sessions/{session['session_id']}/mcp-servers",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "X-Session-Token": session["session_token"]},
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            assert resp.status == 201

        def running() -> list[int] | None:
            # Bubblewrap and what runs in it (on a loaded machine, maybe after the answer).
            found = sorted(descendants(daemon.proc.pid))
            return found if len(found) >= 2 else None

        pids = eventually_blocking(running, timeout=30)
        os.kill(daemon.proc.pid, signal.SIGKILL)
        daemon.proc.wait()
        eventually_blocking(lambda: not any(alive(pid) for pid in pids), timeout=15)
    finally:
        stop_process(daemon.proc)
        for pid in pids:  # what a failure left
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
