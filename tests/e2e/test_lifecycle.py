"""Issue #20 through real processes: a real `llmgined` and `llmgine` as subprocesses.

- `command wait` on mixed outcomes and its exit codes (0 all completed, 1 one failed,
  7 timed out), `--any`, `batch wait`.
- `ps` across sessions (80 columns), a session token's `ps` shows only its session; `top`
  piped, and on a terminal (pexpect) quitting with q (exit 0) and Ctrl-C (exit 130).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clitools import Daemon, cleanup_home, free_port, run_cli, short_home, start_daemon, stop_process

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def d() -> Iterator[Daemon]:
    home = short_home()
    try:
        daemon = start_daemon(home)
        yield daemon
        stop_process(daemon.proc)
    finally:
        cleanup_home(home)


@pytest.fixture(scope="module")
def tcp() -> Iterator[Daemon]:
    """A daemon on the socket and on TCP (session tokens count only over TCP)."""
    home = short_home()
    try:
        daemon = start_daemon(home, port=free_port())
        yield daemon
        stop_process(daemon.proc)
    finally:
        cleanup_home(home)


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
    llmgine(d, "command", "cancel", slow, "--session", a, "-q")
    assert llmgine(d, "command", "wait", slow, "-o", "jsonl", code=1).count('"cancelled"') == 1
    # An unknown id: 4 (not found), one line.
    done = run_cli(["command", "wait", "0000nope"], d.env)
    assert done.returncode == 4 and len(done.stderr.strip().splitlines()) == 1, done.stderr


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
