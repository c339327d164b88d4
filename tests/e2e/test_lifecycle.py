"""Issue #20 through real processes: a real `llmgined` and `llmgine` as subprocesses.

- `command wait` on mixed outcomes and its exit codes (0 all completed, 1 one failed,
  7 timed out), `--any`, `batch wait`.
- `ps` across sessions (80 columns), a session token's `ps` shows only its session; `top`
  piped, and on a terminal (pexpect) quitting with q (exit 0) and Ctrl-C (exit 130).
- dependencies (`--after`) across sessions, a failure cancelling the chain, `--after-policy
  always`, and blocked commands across a daemon restart.
- retries: a handler that fails twice then succeeds, its exponential delays recorded, a
  restart in the middle of a delay, dead letters listed and run again (`command retry`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.clitools import (
    Daemon,
    cleanup_home,
    one_line,
    run_cli,
    running_daemon,
    short_home,
    start_daemon,
    stop_process,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def d(module_backend_env: Callable[[], dict[str, str]]) -> Iterator[Daemon]:
    with running_daemon(env=module_backend_env(), tcp=False) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def tcp(module_backend_env: Callable[[], dict[str, str]]) -> Iterator[Daemon]:
    """A daemon on the socket and on TCP (session tokens count only over TCP)."""
    with running_daemon(env=module_backend_env()) as daemon:
        yield daemon


def llmgine(d: Daemon, *args: str, code: int = 0) -> str:
    done = run_cli(args, d.env)
    assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
    return done.stdout.strip()


def session_with_engine(d: Daemon) -> str:
    sid = llmgine(d, "session", "create", "-q")
    llmgine(d, "engine", "create", "DummyEngine", "--session", sid, "-q")
    return sid


def submit(d: Daemon, sid: str, *params: str) -> str:
    return llmgine(d, "command", "run", "DummyEngineCommand", "--session", sid, "--no-wait", "-q", *params)


def test_wait_on_mixed_outcomes_and_exit_codes(d: Daemon) -> None:
    a, b = session_with_engine(d), session_with_engine(d)
    ok = submit(d, a, "-p", "prompt=one", "-p", "delay_ms:=300")
    bad = submit(d, b, "-p", "prompt=two", "-p", "delay_ms:=100", "-p", "fail:=true")
    # All completed: 0; one failed: 1, with both printed (jsonl: one record per line).
    assert llmgine(d, "command", "wait", ok, "-q") == ok
    out = llmgine(d, "command", "wait", ok, bad, "-o", "jsonl", code=1)
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["command_id"], r["status"]) for r in records] == [(ok, "completed"), (bad, "failed")]
    # The table fits 80 columns.
    table = run_cli(["command", "wait", ok, bad], {**d.env, "COLUMNS": "80"})
    assert table.returncode == 1 and all(len(line) <= 80 for line in table.stdout.splitlines()), table.stdout
    # --any: the first to finish decides.
    slow = submit(d, a, "-p", "prompt=slow", "-p", "delay_ms:=600000")
    fast = submit(d, b, "-p", "prompt=fast")
    assert llmgine(d, "command", "wait", slow, fast, "--any", "-q") == f"{slow}\n{fast}"
    # Still running when --timeout passes: 7.
    done = run_cli(["command", "wait", slow, "--timeout", "0.3"], d.env)
    assert done.returncode == 7, (done.stdout, done.stderr)
    assert "timed out" in done.stderr
    # --status executing: it is.
    assert llmgine(d, "command", "wait", slow, "--status", "executing", "-o", "json").count('"executing"') == 1
    # Its short id or a prefix, as `llmgine ps` shows it (they were COMMAND_NOT_FOUND).
    for given in (slow[-8:], slow[:13]):
        assert llmgine(d, "command", "wait", given, "--status", "executing", "-q") == slow
    llmgine(d, "command", "cancel", slow, "--session", a, "-q")
    assert llmgine(d, "command", "wait", slow, "-o", "jsonl", code=1).count('"cancelled"') == 1
    # An unknown id: 4 (not found), one line; a finished command's short id says it needs the full id.
    done = run_cli(["command", "wait", "0000nope"], d.env)
    assert done.returncode == 4 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    done = run_cli(["command", "wait", slow[-8:]], d.env)
    assert done.returncode == 4 and "session too (-S SESSION) or its full id" in one_line(done.stderr), done.stderr
    # With its session (-S was a usage error), a finished command's short id is found.
    assert llmgine(d, "command", "wait", slow[-8:], "-S", a, "-o", "jsonl", code=1).count('"cancelled"') == 1


def test_batch_wait(d: Daemon, tmp_path: Path) -> None:
    sid = session_with_engine(d)
    lines = [{"command_type": "DummyEngineCommand", "parameters": {"prompt": str(i), "delay_ms": 50}} for i in range(3)]
    path = tmp_path / "batch.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    batch = json.loads(llmgine(d, "command", "batch", "--session", sid, "-f", str(path), "--no-wait", "-o", "json"))
    out = llmgine(d, "batch", "wait", batch["batch_id"], "-o", "json")
    assert [c["status"] for c in json.loads(out)["commands"]] == ["completed"] * 3


def test_ps_across_sessions_and_a_session_token_sees_its_own(tcp: Daemon) -> None:
    env = {**tcp.env, "LLMGINE_URL": tcp.tcp_url}
    created = json.loads(run_cli(["session", "create", "-o", "json"], env).stdout)
    mine, token = created["session_id"], created["session_token"]
    llmgine(tcp, "engine", "create", "DummyEngine", "--session", mine, "-q")
    other = session_with_engine(tcp)
    a = submit(tcp, mine, "-p", "prompt=a", "-p", "delay_ms:=600000")
    b = submit(tcp, other, "-p", "prompt=b", "-p", "delay_ms:=600000")
    queued = submit(tcp, other, "-p", "prompt=c")
    try:
        out = llmgine(tcp, "ps", "-o", "json")
        by_id = {c["command_id"]: c for c in json.loads(out)["commands"]}
        assert {a, b, queued} <= set(by_id)
        assert by_id[queued]["status"] == "queued" and by_id[queued]["position"] == 1
        table = run_cli(["ps"], {**tcp.env, "COLUMNS": "80"})
        assert table.returncode == 0 and all(len(line) <= 80 for line in table.stdout.splitlines()), table.stdout
        assert "1 queued" in table.stderr and "2 executing" in table.stderr
        # Over TCP with the session's token: its own command only.
        as_token = run_cli(["ps", "-q"], {**env, "LLMGINE_API_KEY": token})
        assert as_token.returncode == 0, as_token.stderr
        assert as_token.stdout.split() == [a]
        # `top` piped: plain frames; --count ends it.
        frames = run_cli(["top", "--count", "2", "--interval", "0.2"], tcp.env)
        assert frames.returncode == 0 and frames.stdout.count("finished in the last minute") == 2
    finally:
        llmgine(tcp, "command", "cancel", a, "--session", mine, "-q")
        llmgine(tcp, "command", "cancel", b, "--session", other, "-q")
    llmgine(tcp, "command", "wait", queued, "-q")


def test_top_quits_on_q_and_on_ctrl_c(tcp: Daemon) -> None:
    import pexpect

    from tests.clitools import full_env

    env = full_env({**tcp.env, "COLUMNS": "80", "LINES": "30"})
    for key, code in (("q", 0), ("\x03", 130)):
        child = pexpect.spawn(
            sys.executable, ["-m", "llmgine_cli", "top", "--interval", "0.2"], env=env, timeout=20, encoding="utf-8"
        )
        try:
            child.expect("q or Ctrl-C quits")
            child.send(key)
            child.expect(pexpect.EOF)
        finally:
            child.close()
        assert child.exitstatus == code, (key, child.exitstatus, child.signalstatus)


def test_dependencies_across_sessions_failure_and_a_restart_while_blocked() -> None:
    home = short_home()
    try:
        d = start_daemon(home)
        a, b = session_with_engine(d), session_with_engine(d)
        # Each dependency waits behind a blocker until what depends on it is submitted, and is
        # let go by cancelling the blocker (a dependency that merely ran for 4 s had ended
        # before the next CLI call on a loaded machine).
        blocker = submit(d, a, "-p", "prompt=blocker", "-p", "delay_ms:=600000")
        first = submit(d, a, "-p", "prompt=first")
        shown = llmgine(d, "command", "run", "DummyEngineCommand", "-S", b, "-p", "prompt=then", "--after", first,
                        "--no-wait", "-o", "json")  # fmt: skip
        then = json.loads(shown)["command_id"]
        assert json.loads(shown)["status"] == "blocked"
        llmgine(d, "command", "cancel", blocker, "-S", a, "-q")
        assert llmgine(d, "command", "wait", then, "-q") == then  # first completed, then ran: exit 0
        # A failure travels down the chain; --after-policy always runs anyway.
        blocker = submit(d, a, "-p", "prompt=blocker", "-p", "delay_ms:=600000")
        bad = submit(d, a, "-p", "prompt=bad", "-p", "fail:=true")
        child = submit(d, b, "-p", "prompt=child", "--after", bad)
        grandchild = submit(d, a, "-p", "prompt=gc", "--after", child)
        anyway = submit(d, b, "-p", "prompt=anyway", "--after", bad, "--after-policy", "always")
        llmgine(d, "command", "cancel", blocker, "-S", a, "-q")
        out = llmgine(d, "command", "wait", child, grandchild, anyway, "-o", "jsonl", code=1)
        records = [json.loads(line) for line in out.splitlines()]
        assert [r["status"] for r in records] == ["cancelled", "cancelled", "completed"]
        assert records[0]["error"]["details"]["reason"] == "dependency_failed"
        # An unknown dependency: 4, one line.
        done = run_cli(["command", "run", "DummyEngineCommand", "-S", a, "-p", "prompt=x", "--after", "nope"], d.env)
        assert done.returncode == 4 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        # Restart while blocked: the dependency is still queued behind a long command.
        long = submit(d, a, "-p", "prompt=long", "-p", "delay_ms:=600000")
        queued = submit(d, a, "-p", "prompt=queued")
        blocked = submit(d, b, "-p", "prompt=blocked", "--after", queued)
        strict = submit(d, b, "-p", "prompt=strict", "--after", long)
        assert json.loads(llmgine(d, "ps", "--status", "blocked", "-o", "json"))["total"] == 2
        stop_process(d.proc)
        d = start_daemon(home)
        # long: interrupted by the stop; queued: resumed and completed; so blocked runs, strict
        # is cancelled.
        out = llmgine(d, "command", "wait", blocked, strict, "-o", "jsonl", code=1)
        assert [json.loads(line)["status"] for line in out.splitlines()] == ["completed", "cancelled"]
        stop_process(d.proc)
    finally:
        cleanup_home(home)


FLAKY = """
def flaky(command):
    if command.attempt < 3:
        raise RuntimeError(f"attempt {command.attempt} fails")
    return {"attempt": command.attempt}
"""


def test_retries_a_restart_mid_delay_and_dead_letters(tmp_path: Path) -> None:
    home = short_home()
    try:
        d = start_daemon(home)
        sid = llmgine(d, "session", "create", "-q")
        code = tmp_path / "flaky.py"
        code.write_text(FLAKY)
        llmgine(d, "handler", "add", "command", "Flaky", str(code), "--session", sid, "-q")
        # Fails twice then succeeds, exponential delays (0.2 s, 0.4 s) recorded in the events.
        quick = llmgine(d, "command", "run", "Flaky", "-S", sid, "--retries", "3", "--backoff", "exponential:0.2:10",
                        "-o", "json")  # fmt: skip
        assert json.loads(quick)["attempt"] == 3 and json.loads(quick)["result"] == {"attempt": 3}
        out = llmgine(d, "event", "list", "-S", sid, "--type", "CommandRetrying", "-o", "jsonl")
        delays = [json.loads(line)["data"]["delay_s"] for line in out.splitlines()]
        assert delays == [0.2, 0.4]
        # A restart in the middle of a 3 s delay: the next attempt still comes, not before it is due.
        slow = submit_type(d, sid, "Flaky", "--retries", "2", "--backoff", "fixed:3")
        out = llmgine(d, "command", "wait", slow, "--status", "queued", "--timeout", "60", "-o", "json")
        assert json.loads(out)["commands"][0]["attempt"] == 2
        stop_process(d.proc)
        d = start_daemon(home)
        out = llmgine(d, "command", "wait", slow, "-o", "json")
        assert json.loads(out)["commands"][0]["attempt"] == 3
        events = [json.loads(x) for x in llmgine(d, "event", "list", "-S", sid, "-o", "jsonl").splitlines()]
        mine = [e for e in events if e["data"].get("command_id") == slow]
        due = next(e["data"]["retry_at"] for e in mine if e["event_type"] == "CommandRetrying")
        second = [e for e in mine if e["event_type"] == "CommandStarted"][1]
        assert second["timestamp"] >= due
        # Dead letters: listed by --dead, run again by id and by --failed.
        dead = submit_type(d, sid, "Flaky", "--retries", "1", "--backoff", "fixed:0.05")
        ended = json.loads(llmgine(d, "command", "wait", dead, "-o", "json", code=1))["commands"][0]
        assert (ended["status"], ended["attempt"]) == ("failed", 2), ended
        assert llmgine(d, "command", "list", "-S", sid, "--dead", "-q") == dead
        assert llmgine(d, "command", "retry", dead, "-S", sid, "-q") == dead
        assert llmgine(d, "command", "wait", dead, "-o", "jsonl").count('"completed"') == 1  # attempt 3
        assert llmgine(d, "command", "list", "-S", sid, "--dead", "-q") == ""
        plain = submit_type(d, sid, "Flaky")
        llmgine(d, "command", "wait", plain, "-q", code=1)
        assert llmgine(d, "command", "retry", "--failed", "-S", sid, "-q") == plain
        stop_process(d.proc)
    finally:
        cleanup_home(home)


def submit_type(d: Daemon, sid: str, command_type: str, *args: str) -> str:
    return llmgine(d, "command", "run", command_type, "--session", sid, "--no-wait", "-q", *args)
