"""What a walk through the README on a terminal (80 and 140 columns, piped) turned up: real
llmgined and llmgine processes, the terminal a pseudo-terminal (pexpect)."""

from __future__ import annotations

import re
import time
import uuid

import pexpect

from tests.clitools import cli_on_terminal, run_cli


def _terminal(args: list[str], env: dict[str, str | None], columns: int) -> tuple[str, int]:
    """llmgine on a terminal ``columns`` wide: what it drew (escapes removed) and its exit code."""
    child = cli_on_terminal(
        args, {**env, "TERM": "xterm-256color", "COLUMNS": None, "LINES": None}, rows=200, columns=columns
    )
    child.expect(pexpect.EOF)
    child.close()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", child.before or "")
    return text.replace("\r", ""), child.exitstatus if child.exitstatus is not None else 128 + child.signalstatus


def _failed_command(env: dict[str, str | None]) -> str:
    sid = run_cli(["session", "create", "-q"], env).stdout.strip()
    assert run_cli(["engine", "create", "DummyEngine", "-S", sid, "-q"], env).returncode == 0
    done = run_cli(["command", "run", "DummyEngineCommand", "-S", sid, "-p", "prompt=a", "-p", "fail:=true", "-q"], env)
    assert done.returncode == 1, done.stderr
    return done.stdout.strip()


def test_command_wait_shows_why_a_command_failed_when_there_is_room(daemon):
    """`command wait` cut every RESULT to 20 characters before the table was fitted: on a
    140-column terminal a failed command read `COMMAND_EXECUTION_F…` beside 50 empty columns,
    and piped the same (`command batch` shows 60, and a table cuts to the terminal itself)."""
    cid = _failed_command(daemon.env)
    text, code = _terminal(["command", "wait", cid], daemon.env, 140)
    assert code == 1, text
    row = next(line for line in text.splitlines() if "failed" in line)
    assert "COMMAND_EXECUTION_FAILED: DummyEngine" in row, text
    assert len(row.rstrip()) <= 140, text
    # At 80 columns the row still fits, cut with "…".
    text, code = _terminal(["command", "wait", cid], daemon.env, 80)
    row = next(line for line in text.splitlines() if "failed" in line)
    assert code == 1 and len(row.rstrip()) <= 80 and row.rstrip().endswith("…"), text
    piped = run_cli(["command", "wait", cid, "-o", "plain"], daemon.env)
    assert piped.returncode == 1
    assert "COMMAND_EXECUTION_FAILED: DummyEngine" in piped.stdout, piped.stdout


def test_ps_and_top_help_name_every_status_they_filter(daemon):
    """`ps --help` and `top --help` said `--status` takes "queued, blocked or executing
    (default: all three)", but the queue has a fourth unfinished status, waiting_approval
    (a tool call waiting for a person), which they take and show by default."""
    for cmd in ("ps", "top"):
        shown = run_cli([cmd, "--help"], {**daemon.env, "COLUMNS": "200"})
        assert shown.returncode == 0
        line = next(line for line in shown.stdout.splitlines() if "--status " in line and "STATUS" in line)
        assert "waiting_approval" in line and "all three" not in line, (cmd, line)
        took = run_cli([cmd, "--status", "waiting_approval", *(["-o", "json"] if cmd == "ps" else ["-h"])], daemon.env)
        assert took.returncode == 0, (cmd, took.stderr)


def test_ctrl_c_in_tool_exec_says_the_call_goes_on(daemon, tmp_path):
    """Ctrl-C while `tool exec` waited for a slow tool exited 130 with nothing said (the
    spinner cleared its line), while the call ran on in the sandbox until its deadline;
    `command run`, `engine exec` and `ask` say what goes on after a Ctrl-C."""
    sid = run_cli(["session", "create", "-q"], daemon.env).stdout.strip()
    source = tmp_path / "slow.py"
    source.write_text('import time\n\ndef slow(x: int) -> int:\n    """Slow."""\n    time.sleep(4)\n    return x\n')
    assert run_cli(["tool", "register", str(source), "-S", sid, "-q"], daemon.env).returncode == 0
    child = cli_on_terminal(["tool", "exec", "slow", "-S", sid, "-a", "x:=1"], {**daemon.env, "COLUMNS": None})
    try:
        child.expect_exact("slow running in the sandbox")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", child.before or "")
    assert child.exitstatus == 130, text
    assert "Traceback" not in text, text
    assert "interrupted: the call to slow goes on in the sandbox" in re.sub(r"\s+", " ", text), text


def test_ctrl_c_in_mcp_add_says_the_server_goes_on_starting(daemon):
    """Ctrl-C while `mcp add` waited for a server that is slow to start exited 130 saying
    nothing, while the daemon kept the server and went on starting it: the same `mcp add`
    again was exit 6 (name taken) for a server the user thought was never added."""
    name = "slow" + uuid.uuid4().hex[:6]
    child = cli_on_terminal(["mcp", "add", name, "--", "sleep", "60"], {**daemon.env, "COLUMNS": None})
    try:
        child.expect_exact(f"starting MCP server {name}")
        time.sleep(0.5)  # the request is with the daemon
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
        run_cli(["mcp", "remove", name], daemon.env)
    text = re.sub(r"\s+", " ", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", child.before or ""))
    assert child.exitstatus == 130, text
    assert "Traceback" not in text, text
    assert f"`llmgine mcp list` shows it, `llmgine mcp remove {name}` removes it" in text, text
