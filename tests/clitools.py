"""Helpers for tests that run the real `llmgine` against a real `llmgined`.

Homes are short folders under tests/scratch.py's SCRATCH (AF_UNIX paths max out at 107 bytes). Every daemon a test
starts, directly or through `llmgine daemon start`, is found by its pidfile and stopped in
teardown, so a failing test leaves no process behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmgine_daemon.settings import SETTINGS as SETTING_TABLE
from llmgine_daemon.settings import get_paths
from typer.testing import CliRunner, Result

from llmgine_cli.app import app
from llmgine_cli.client import parse_url
from llmgine_cli.daemonctl import pid_alive, probe, read_pid
from tests.scratch import scratch_dir

# Variables of the person running the tests that must not leak into them.
# The client's own variables plus every setting's (derived, so new settings are covered).
SCRUBBED = (
    "LLMGINE_URL",
    "LLMGINE_CONTEXT",
    "LLMGINE_API_KEY",
    "LLMGINE_CONFIG",
    "LLMGINE_NO_AUTOSTART",
    "LLMGINE_DEBUG",
    *sorted({s.env for s in SETTING_TABLE}),
)


# What a daemon a test starts gets unless the test says otherwise (tests/e2e/test_llmgined.py's
# run_daemon too): one sandbox worker, not one per CPU. A daemon starts its workers once it has
# user code, and a test that runs some needs one; tests of the pool set their own (a second
# call that finds no idle worker starts another one anyway).
DAEMON_DEFAULTS = {"API_WORKERS": "1"}

# The storage of the daemons a test starts (and of the CLI beside them): empty for SQLite in the
# home, or {"DATABASE_URL": ...} of a fresh PostgreSQL database. tests/e2e/conftest.py sets it
# for each test, so the e2e suites run on both backends; an ``env`` a test passes wins.
BACKEND_ENV: dict[str, str] = {}


def default_signals() -> None:
    """``preexec_fn`` for every process a test starts: SIGINT back to its default.

    A suite started with ``&`` from a script runs with SIGINT ignored, and an ignored signal
    stays ignored across exec (Python then does not even install its KeyboardInterrupt
    handler): the child would never see the Ctrl-C a test sends it.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def short_home() -> Path:
    return scratch_dir()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_env(home: Path, **extra: str | None) -> dict[str, str | None]:
    """Overrides for a CLI run: this home, auto-start off unless a test turns it on."""
    env: dict[str, str | None] = {name: None for name in SCRUBBED}
    # LLMGINE_TRACE_SAMPLE_RATE: every trace stored (the default keeps 1%), for the tests that
    # read back the spans of what they ran; a test of sampling overrides it.
    env.update(LLMGINE_HOME=str(home), LLMGINE_NO_AUTOSTART="1", COLUMNS="200", LLMGINE_TRACE_SAMPLE_RATE="1")
    env.update(BACKEND_ENV)
    env.update(extra)
    return env


def full_env(overrides: Mapping[str, str | None]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in overrides}
    env.update({k: v for k, v in overrides.items() if v is not None})
    return env


def cli_on_terminal(args: Sequence[str], env: Mapping[str, str | None], *, rows: int = 30, columns: int = 80) -> Any:
    """The CLI as a real process on a pseudo-terminal ``columns`` wide (a ``pexpect.spawn``;
    ``TERM`` xterm-256color unless ``env`` says otherwise)."""
    import pexpect

    return pexpect.spawn(
        sys.executable,
        ["-m", "llmgine_cli", *args],
        env=full_env({"TERM": "xterm-256color", **env}),
        encoding="utf-8",
        timeout=30,
        dimensions=(rows, columns),
        preexec_fn=default_signals,
    )


def drawn_on_terminal(args: list[str], env: Mapping[str, str | None], columns: int) -> tuple[str, int]:
    """llmgine on a terminal ``columns`` wide: what it drew (escapes removed) and its exit code."""
    import pexpect

    child = cli_on_terminal(
        args, {**env, "TERM": "xterm-256color", "COLUMNS": None, "LINES": None}, rows=200, columns=columns
    )
    child.expect(pexpect.EOF)
    child.close()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", child.before or "")
    return text.replace("\r", ""), child.exitstatus if child.exitstatus is not None else 128 + child.signalstatus


def invoke(args: Sequence[str], env: Mapping[str, str | None]) -> Result:
    """The CLI in-process (fast); stdout and stderr are captured apart."""
    return CliRunner().invoke(app, list(args), env=dict(env), catch_exceptions=False)


def run_cli(
    args: Sequence[str], env: Mapping[str, str | None], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The CLI as a real process: stdout is a pipe, as in `llmgine ... | grep`."""
    return subprocess.run(
        [sys.executable, "-m", "llmgine_cli", *args],
        env=full_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        preexec_fn=default_signals,
    )


def spawn_cli(args: Sequence[str], env: Mapping[str, str | None]) -> subprocess.Popen[str]:
    """The CLI as a real process left running (a wait, a tail, a chat turn): stdout and stderr
    are pipes, stdin is empty; the caller reads or stops it."""
    return subprocess.Popen(
        [sys.executable, "-m", "llmgine_cli", *args],
        env=full_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        preexec_fn=default_signals,
    )


def shell(
    script: str, env: Mapping[str, str | None], stdin: str = "", cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``script`` in bash as a user types it: ``llmgine`` on PATH is this interpreter's CLI (a
    script in the home's bin/, so xargs finds it too)."""
    bin_dir = Path(str(env["LLMGINE_HOME"])) / "bin"
    if not (bin_dir / "llmgine").exists():
        bin_dir.mkdir(exist_ok=True)
        (bin_dir / "llmgine").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m llmgine_cli "$@"\n')
        (bin_dir / "llmgine").chmod(0o755)
    path = f"{bin_dir}:{os.environ.get('PATH', '')}"
    return subprocess.run(
        ["bash", "-c", script],
        env=full_env({**env, "PATH": path}),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        preexec_fn=default_signals,
    )


@dataclass
class Daemon:
    home: Path
    proc: subprocess.Popen[bytes]
    port: int | None
    env: dict[str, str | None]

    @property
    def socket_url(self) -> str:
        return f"unix://{get_paths({'LLMGINE_HOME': str(self.home)}).socket}"

    @property
    def tcp_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_daemon(
    home: Path,
    *args: str,
    env: Mapping[str, str | None] | None = None,
    port: int | None = None,
    wrap: Sequence[str] = (),
) -> Daemon:
    """llmgined in the foreground as our child (not through the CLI under test); ``wrap``: a
    command that runs it (``nsenter --net=...``: in another network namespace)."""
    overrides = cli_env(home, **(env or {}))
    argv = [*wrap, sys.executable, "-m", "llmgine_daemon", *args]
    if port is not None:
        argv += ["--port", str(port)]
    given = env or {}
    daemon_env = full_env({**overrides, **{k: v for k, v in DAEMON_DEFAULTS.items() if k not in given}})
    with open(home / "daemon-under-test.log", "ab") as log:
        proc = subprocess.Popen(
            argv, env=daemon_env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=default_signals
        )
    target = (
        parse_url(f"http://127.0.0.1:{port}")
        if port and "--no-socket" in args
        else parse_url(f"unix://{get_paths({'LLMGINE_HOME': str(home)}).socket}")
    )
    deadline = time.monotonic() + 60  # a start on a loaded machine (PostgreSQL: migrations)
    while probe(target, timeout=0.5) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise AssertionError((home / "daemon-under-test.log").read_text())
        time.sleep(0.05)
    return Daemon(home, proc, port, overrides)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def kill_leftovers(home: Path) -> None:
    """Stop whatever daemon the pidfile of ``home`` names (started by `daemon start`)."""
    pid = read_pid(get_paths({"LLMGINE_HOME": str(home)}))
    if pid is None or not pid_alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while pid_alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


@contextlib.contextmanager
def running_daemon(*args: str, env: Mapping[str, str | None] | None = None, tcp: bool = True) -> Iterator[Daemon]:
    """``start_daemon`` in a fresh short home (on a free TCP port too, unless ``tcp`` is
    False), stopped and its home removed afterwards: the fixtures' daemon."""
    home = short_home()
    try:
        daemon = start_daemon(home, *args, env=env, port=free_port() if tcp else None)
        yield daemon
        stop_process(daemon.proc)
    finally:
        cleanup_home(home)


def cleanup_home(home: Path) -> None:
    kill_leftovers(home)
    shutil.rmtree(home, ignore_errors=True)


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def no_traceback(*texts: Any) -> None:
    for text in texts:
        assert "Traceback" not in (text or ""), text
