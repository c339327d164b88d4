"""Issue #20 through real processes: a real `llmgined` and `llmgine` as subprocesses.

- `command wait` on mixed outcomes and its exit codes (0 all completed, 1 one failed,
  7 timed out), `--any`, `batch wait`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clitools import Daemon, cleanup_home, run_cli, short_home, start_daemon, stop_process

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
