"""What a walk through the README on a terminal (80 and 140 columns, piped) turned up: real
llmgined and llmgine processes, the terminal a pseudo-terminal (pexpect)."""

from __future__ import annotations

import re
import subprocess
import time
import uuid

import pexpect

from tests.clitools import cli_env, cli_on_terminal, drawn_on_terminal, free_port, run_cli, spawn_cli


def _failed_command(env: dict[str, str | None]) -> str:
    sid = run_cli(["session", "create", "-q"], env).stdout.strip()
    assert run_cli(["engine", "create", "DummyEngine", "-S", sid, "-q"], env).returncode == 0
    done = run_cli(["command", "run", "DummyEngineCommand", "-S", sid, "-p", "prompt=a", "-p", "fail:=true", "-q"], env)
    assert done.returncode == 1, done.stderr
    return done.stdout.strip()


def test_command_wait_shows_why_a_command_failed_when_there_is_room(daemon):
    """`command wait` cut every RESULT to 20 characters before the table was fitted: on a
    140-column terminal a failed command read `COMMAND_EXECUTION_F…` beside 50 empty columns
    (a table cuts to the terminal itself, as `command batch`'s)."""
    cid = _failed_command(daemon.env)
    text, code = drawn_on_terminal(["command", "wait", cid], daemon.env, 140)
    assert code == 1, text
    row = next(line for line in text.splitlines() if "failed" in line)
    assert "COMMAND_EXECUTION_FAILED: DummyEngine" in row, text
    assert len(row.rstrip()) <= 140, text
    # At 80 columns the row still fits, cut with "…".
    text, code = drawn_on_terminal(["command", "wait", cid], daemon.env, 80)
    row = next(line for line in text.splitlines() if "failed" in line)
    assert code == 1 and len(row.rstrip()) <= 80 and row.rstrip().endswith("…"), text
    # Piped (plain) output keeps to 80 columns, as before (tests/e2e/test_lifecycle.py).
    piped = run_cli(["command", "wait", cid, "-o", "plain"], daemon.env)
    assert piped.returncode == 1 and all(len(line) <= 80 for line in piped.stdout.splitlines()), piped.stdout


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


def test_restart_keeps_its_flags_while_waiting_clients_auto_start(cold_home):
    """`daemon restart --log-level debug` while `command wait`s were waiting: between its stop
    and its start a waiting client found no daemon and auto-started one with no flags, and the
    restart said "llmgined ... is already running" (exit 0): the flags given to restart, and
    those of the last start (--port), were dropped without a word. The restart now holds the
    start lock from its stop to its start, so the clients find the restarted daemon."""
    env = cli_env(cold_home, LLMGINE_NO_AUTOSTART=None)
    port = free_port()
    waiters: list[subprocess.Popen[str]] = []
    try:
        assert run_cli(["daemon", "start", "--port", str(port), "-q"], env).returncode == 0
        sid = run_cli(["session", "create", "-q"], env).stdout.strip()
        assert run_cli(["engine", "create", "DummyEngine", "-S", sid, "-q"], env).returncode == 0
        for n in range(3):
            other = run_cli(["session", "create", "-q"], env).stdout.strip()
            assert run_cli(["engine", "create", "DummyEngine", "-S", other, "-q"], env).returncode == 0
            cid = run_cli(
                ["command", "run", "DummyEngineCommand", "-S", other, "-p", f"prompt={n}", "-p", "delay_ms:=60000"]
                + ["--no-wait", "-q"],
                env,
            ).stdout.strip()
            waiters.append(spawn_cli(["command", "wait", cid], env))
        time.sleep(1.0)  # the waits are with the daemon
        restarted = run_cli(["daemon", "restart", "--log-level", "debug"], env)
        assert restarted.returncode == 0, restarted.stderr
        assert "already running" not in restarted.stdout + restarted.stderr, (restarted.stdout, restarted.stderr)
        for proc in waiters:
            proc.wait(timeout=30)
        assert run_cli(["config", "get", "logging.level"], env).stdout.strip() == "debug"
        listeners = run_cli(["status", "-o", "json"], env).stdout
        assert f"http://127.0.0.1:{port}" in listeners, listeners
    finally:
        for proc in waiters:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        run_cli(["daemon", "stop"], env)


def test_a_page_past_the_end_does_not_say_the_listing_is_empty(daemon):
    """`session list --offset 100` on a terminal with fewer sessions said "no active sessions
    (--all lists closed ones too)" while there were some: a page past the end is not an empty
    listing. It says where the listing ends instead (commands and engines the same)."""
    sid = run_cli(["session", "create", "-q"], daemon.env).stdout.strip()
    text, code = drawn_on_terminal(["session", "list", "--offset", "100000"], daemon.env, 80)
    assert code == 0
    assert "no active sessions" not in text, text
    assert re.search(r"nothing at --offset 100000: there are \d+ in all", text), text
    text, code = drawn_on_terminal(["command", "list", "-S", sid, "--offset", "5"], daemon.env, 80)
    assert code == 0 and "no commands" in text, text  # an empty session's listing is empty


def test_a_stale_llmgine_session_is_named_as_the_cause(daemon):
    """After the README's `export LLMGINE_SESSION=$(llmgine session create -q)`, once that
    session was deleted (or purged), every command said `SESSION_CLOSED: session '…' is
    closed` (or not found) with no word of where the session came from: the user had typed
    none. Taken from LLMGINE_SESSION, the error says so and what to do; given with -S, not."""
    hint = "(it is LLMGINE_SESSION's: `export LLMGINE_SESSION=$(llmgine session create -q)` starts a new session"
    closed = run_cli(["session", "create", "-q"], daemon.env).stdout.strip()
    assert run_cli(["session", "delete", closed, "-q"], daemon.env).returncode == 0
    for stale, code in (("nope-gone", 4), (closed, 6)):
        env = {**daemon.env, "LLMGINE_SESSION": stale}
        # command run and event publish take the fast path (hot.py), the others Typer's.
        for args in (
            ["command", "run", "DummyEngineCommand", "-p", "prompt=a"],
            ["event", "publish", "Ping"],
            ["engine", "create", "DummyEngine"],
        ):
            done = run_cli(args, env)
            assert done.returncode == code, (args, done.stderr)
            assert hint in done.stderr and done.stderr.count("\n") == 1, (args, done.stderr)
            given = run_cli([*args, "-S", stale], {**daemon.env, "LLMGINE_SESSION": None})
            assert given.returncode == code and "LLMGINE_SESSION" not in given.stderr, (args, given.stderr)
    done = run_cli(["command", "list"], {**daemon.env, "LLMGINE_SESSION": "nope-gone"})
    assert done.returncode == 4 and hint in done.stderr, done.stderr


def test_an_unreachable_context_is_named_with_the_way_back(cold_home):
    """After `llmgine context use far`, a daemon there that did not answer was `error: cannot
    connect to http://…: Connection refused` and nothing more: which context was in use (set
    days before), and how to talk to the local daemon, were not said."""
    env = cli_env(cold_home)
    url = f"http://127.0.0.1:{free_port()}"
    assert run_cli(["context", "add", "far", "--url", url, "-q"], env).returncode == 0
    assert run_cli(["context", "use", "far", "-q"], env).returncode == 0
    hint = "(the daemon of context 'far': `--context default` talks to the local one, `llmgine context ls` lists them)"
    # session list and command run take the fast path (hot.py), health Typer's.
    for args in (["session", "list"], ["health"], ["command", "run", "T", "-S", "s"]):
        done = run_cli(args, env)
        assert done.returncode == 3, (args, done.stderr)
        assert done.stderr.startswith(f"error: cannot connect to {url}") and hint in done.stderr, (args, done.stderr)
        assert done.stderr.count("\n") == 1, done.stderr
    # An address given for this command is not the context's.
    done = run_cli(["--url", url, "health"], env)
    assert done.returncode == 3 and "context" not in done.stderr, done.stderr
    done = run_cli(["health"], {**env, "LLMGINE_URL": url})
    assert done.returncode == 3 and "context" not in done.stderr, done.stderr
