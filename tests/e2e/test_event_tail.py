"""`llmgine event tail` as a real process against a real daemon, across `llmgine daemon restart`.

Events are published continuously (each `session create` records a SessionStarted) while the
daemon restarts twice; the tail must print every seq in the log exactly once, in order.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from llmgine_cli.client import Client, DaemonUnreachable, LlmgineError
from tests.clitools import cleanup_home, cli_env, default_signals, full_env, run_cli, short_home
from tests.dbtools import open_home_db

pytestmark = pytest.mark.e2e


@pytest.fixture
def tail_home():
    home = short_home()
    yield home
    cleanup_home(home)


def _tail(env, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "llmgine_cli", "event", "tail", *args],
        env=full_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        preexec_fn=default_signals,
    )


def _read_lines(proc, out: list[dict], done: threading.Event) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        out.append(json.loads(line))
    done.set()


def _read_stderr(proc, out: list[str]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        out.append(line)


def test_tail_jsonl_survives_daemon_restart(tail_home):
    env = cli_env(tail_home)
    started = run_cli(["daemon", "start"], env)
    assert started.returncode == 0, started.stderr
    tail = _tail(env, "--all", "--since", "all", "-o", "jsonl")
    lines: list[dict] = []
    finished = threading.Event()
    reader = threading.Thread(target=_read_lines, args=(tail, lines, finished), daemon=True)
    reader.start()
    said: list[str] = []
    err_reader = threading.Thread(target=_read_stderr, args=(tail, said), daemon=True)
    err_reader.start()

    def reconnects() -> int:
        return sum("reconnected to" in line for line in list(said))

    stop = threading.Event()
    created: list[str] = []

    def publisher() -> None:
        client = Client(env=full_env(env), timeout=5)
        while not stop.is_set():
            try:
                created.append(client.create_session(name="tail").session_id)
            except (DaemonUnreachable, LlmgineError):
                time.sleep(0.05)  # restarting: the write was not acknowledged

    pub = threading.Thread(target=publisher, daemon=True)
    pub.start()
    try:
        for n in (1, 2):
            time.sleep(1.0)
            restarted = run_cli(["daemon", "restart"], env)
            assert restarted.returncode == 0, restarted.stderr
            # The next restart only once the tail is back: two restarts within one of its
            # reconnect waits would be one reconnect, which is right but not what is tested.
            deadline = time.monotonic() + 20
            while reconnects() < n and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(1.0)
        stop.set()
        pub.join(10)
        # Everything in the log has been printed once the tail reaches the last seq.
        with open_home_db(tail_home) as conn:
            expected = [r[0] for r in conn.execute("SELECT seq FROM events ORDER BY seq")]
        deadline = time.monotonic() + 20
        while (not lines or lines[-1]["seq"] < expected[-1]) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        tail.send_signal(signal.SIGINT)  # Ctrl-C: exit 130, as every wait
        try:
            code = tail.wait(15)
        finally:
            if tail.poll() is None:
                tail.kill()
        finished.wait(5)
        err_reader.join(5)
    stderr = "".join(said)
    assert code == 130, stderr
    assert "Traceback" not in stderr
    seqs = [line["seq"] for line in lines]
    assert seqs == expected  # no gap, no duplicate, in order
    assert len(created) >= 3 and len(seqs) >= len(created)
    assert stderr.count("reconnected to") >= 2, stderr  # it said so, on stderr


def test_tail_no_reconnect_exits_3(tail_home):
    env = cli_env(tail_home)
    assert run_cli(["daemon", "start"], env).returncode == 0
    tail = _tail(env, "--all", "--no-reconnect", "-o", "jsonl")
    time.sleep(1.0)
    assert run_cli(["daemon", "stop"], env).returncode == 0
    code = tail.wait(20)
    stderr = tail.stderr.read() if tail.stderr else ""
    assert code == 3, stderr
    assert "Traceback" not in stderr and stderr.strip()


def test_tail_of_a_session_ends_when_it_is_deleted(tail_home):
    env = cli_env(tail_home)
    assert run_cli(["daemon", "start"], env).returncode == 0
    sid = run_cli(["session", "create", "-q"], env).stdout.strip()
    tail = _tail(env, sid, "--since", "0")
    time.sleep(0.5)
    assert run_cli(["session", "delete", sid], env).returncode == 0
    out, err = tail.communicate(timeout=20)
    assert tail.returncode == 0, err
    types = [json.loads(line)["event_type"] for line in out.splitlines()]  # piped: JSON lines
    assert types == ["SessionStarted", "SessionEnded"]


def test_tail_on_a_terminal_is_a_live_view(tail_home):
    pexpect = pytest.importorskip("pexpect")
    env = cli_env(tail_home)
    assert run_cli(["daemon", "start"], env).returncode == 0
    sid = run_cli(["session", "create", "-q"], env).stdout.strip()
    child = pexpect.spawn(
        sys.executable,
        ["-m", "llmgine_cli", "event", "tail", sid, "--since", "all"],
        env=full_env(env),
        encoding="utf-8",
        timeout=20,
        dimensions=(40, 160),
        preexec_fn=default_signals,
    )
    try:
        child.expect("SessionStarted")
        child.expect("live")  # the footer: state and counters
        assert run_cli(["session", "delete", sid], env).returncode == 0
        child.expect("SessionEnded")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
