"""The real llmgined process: start-up failures are one line, shutdown leaves nothing behind."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests import clitools
from tests.clitools import DAEMON_DEFAULTS, default_signals
from tests.eventually import tcp_listening

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_daemon(home, *args, env=None):
    full_env = {**DAEMON_DEFAULTS, **os.environ, **clitools.BACKEND_ENV, "LLMGINE_HOME": str(home), **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmgine_daemon", *args],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )
    return proc


def wait_for_http(port, proc, timeout=60.0):
    """The daemon ``proc`` answers on ``port``. Its own: a port chosen free may be bound by
    another test's daemon before this one starts (this one then exits, and the other answers),
    so ``proc`` must hold the listening socket too (a daemon on a ``--socket`` of its own
    writes no pid file)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited: {proc.stderr.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1) as r:
                health = json.load(r)
            if tcp_listening(proc.pid, port):  # run_daemon's
                return health
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("daemon did not answer")


def exit_code(proc, timeout=30.0):
    """The daemon's exit status; if it does not exit in time, fail with what it logged."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"daemon did not exit within {timeout:g} s; its log:\n{err[-4000:]}") from None


def fails_with(home, *args, env=None):
    proc = run_daemon(home, *args, env=env)
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:  # it started after all: stop it, never leave it running
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"llmgined {' '.join(args)} did not refuse to start: {err[-2000:]}") from None
    assert proc.returncode != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert not (home / "run" / "llmgined.sock").exists()
    assert not (home / "run" / "llmgined.pid").exists()
    return lines[0]


@pytest.fixture
def daemon_home(home):
    yield home


def test_sigterm_is_graceful_and_cleans_up(daemon_home):
    port = free_port()
    proc = run_daemon(daemon_home, "--port", str(port))
    try:
        assert wait_for_http(port, proc)["status"] == "healthy"
        sock = daemon_home / "run" / "llmgined.sock"
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert stat.S_IMODE((daemon_home / "run").stat().st_mode) == 0o700
        assert (daemon_home / "run" / "llmgined.pid").read_text().strip() == str(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert exit_code(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (daemon_home / "run" / "llmgined.sock").exists()
    assert not (daemon_home / "run" / "llmgined.pid").exists()
    if clitools.BACKEND_ENV:  # on PostgreSQL the data lives in the server, not in the home
        assert not (daemon_home / "data" / "llmgine.db").exists()
    else:
        assert stat.S_IMODE((daemon_home / "data" / "llmgine.db").stat().st_mode) == 0o600


def test_shutdown_endpoint_exits_zero(daemon_home):
    port = free_port()
    proc = run_daemon(daemon_home, "--port", str(port))
    try:
        wait_for_http(port, proc)
        # Over TCP the local CLI's key (minted by the daemon into the config dir) is needed.
        key = (daemon_home / "config" / "local.key").read_text().strip()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/shutdown", method="POST", headers={"Authorization": f"Bearer {key}"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 202
        assert exit_code(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_port_in_use(daemon_home):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = fails_with(daemon_home, "--port", str(port))
    assert f"server.port {port}" in line and "in use" in line


def test_bad_config_file(daemon_home):
    (daemon_home / "config").mkdir()
    (daemon_home / "config" / "config.toml").write_text("[server]\nport = 'x'\n")
    line = fails_with(daemon_home)
    assert "config.toml" in line and "server.port" in line and "'x'" in line


@pytest.mark.own_database(reason="sets its own DATABASE_URL")
def test_unsupported_database(daemon_home):
    line = fails_with(daemon_home, env={"DATABASE_URL": "mysql://u:p@db/x"})
    assert "'mysql' backend is not supported" in line and ":p@" not in line


@pytest.mark.own_database(reason="sets its own DATABASE_URL")
def test_unreachable_postgresql_names_the_host_not_the_password(daemon_home):
    line = fails_with(daemon_home, env={"DATABASE_URL": "postgresql://u:hunter2@db.invalid/x"})
    assert "db.invalid" in line and "hunter2" not in line


@pytest.mark.own_database(reason="sets its own DATABASE_URL")
def test_unwritable_data_dir(daemon_home):
    if os.geteuid() == 0:
        target = "/proc/llmgine.db"  # not writable even for root
    else:
        target = "/llmgine-denied/x.db"
    line = fails_with(daemon_home, env={"DATABASE_URL": f"sqlite:///{target}"})
    assert "database.url" in line


def test_non_loopback_without_credential_refused(daemon_home):
    line = fails_with(daemon_home, "--host", "0.0.0.0", "--port", str(free_port()))
    assert "non-loopback" in line


def test_second_daemon_on_same_socket_refused(daemon_home):
    port = free_port()
    proc = run_daemon(daemon_home, "--port", str(port))
    try:
        wait_for_http(port, proc)
        second = run_daemon(daemon_home)
        _, err = second.communicate(timeout=20)
        assert second.returncode != 0 and "already listening" in err
        # ...and it did not take the first one's socket or pidfile away.
        assert (daemon_home / "run" / "llmgined.sock").exists()
        assert (daemon_home / "run" / "llmgined.pid").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.mark.own_database(reason="each daemon has a database of its own")
def test_daemons_starting_together_leave_one_owner_of_the_pidfile(daemon_home):
    # Three TCP-only daemons of one home (no socket to fight over) started at once: each
    # claims the pidfile, and exactly one may own it (a look at the file, then a write, let
    # several believe they did, and each removed it on its way out).
    ports = [free_port() for _ in range(3)]
    procs = [
        run_daemon(
            daemon_home,
            "--no-socket",
            "--port",
            str(port),
            env={"DATABASE_URL": f"sqlite:///{daemon_home}/db{i}.db", "LOG_LEVEL": "warning"},
        )
        for i, port in enumerate(ports)
    ]
    pidfile = daemon_home / "run" / "llmgined.pid"
    try:
        for port, proc in zip(ports, procs, strict=True):
            wait_for_http(port, proc)
        owner = int(pidfile.read_text())
        assert owner in {p.pid for p in procs}
        for proc in procs:
            if proc.pid != owner:
                proc.send_signal(signal.SIGTERM)
                assert exit_code(proc) == 0
                assert "writes no pidfile" in proc.stderr.read()
        assert int(pidfile.read_text()) == owner  # the others left it alone
        (last,) = [p for p in procs if p.pid == owner]
        last.send_signal(signal.SIGTERM)
        assert exit_code(last) == 0
        assert "writes no pidfile" not in last.stderr.read()
        assert not pidfile.exists()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.sqlite_only(reason="a SQLite file made by hand; the PostgreSQL store already closed what it opened")
def test_a_database_of_a_newer_llmgined_is_refused_and_the_daemon_exits(daemon_home):
    # The store refused the schema after it had opened its connections and left them open: their
    # threads kept the process from exiting after "cannot start" (and a Ctrl-C during the same
    # steps of a start hung it the same way).
    data = daemon_home / "data"
    data.mkdir(mode=0o700)
    db = sqlite3.connect(data / "llmgine.db")
    with db:
        db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT)")
        db.execute("INSERT INTO schema_migrations VALUES (9999, 'future', '2030-01-01T00:00:00Z')")
    db.close()
    line = fails_with(daemon_home)
    assert "newer than this llmgined" in line and "9999" in line


@pytest.mark.sqlite_only(reason="a SQLite file that cannot grow")
def test_a_disk_that_fills_during_the_migrations_is_named(daemon_home):
    # Files may not grow past 60 kB (RLIMIT_FSIZE: EFBIG, which SQLite reports as an I/O error;
    # a full disk, ENOSPC, reads "database or disk is full"): the first start's migrations fail.
    # SQLite had rolled their transaction back itself, the migration's ROLLBACK then failed, and
    # the one line said "cannot rollback - no transaction is active" instead of the cause.
    def small_files() -> None:
        default_signals()
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

    proc = subprocess.Popen(
        [sys.executable, "-m", "llmgine_daemon"],
        env={**DAEMON_DEFAULTS, **os.environ, "LLMGINE_HOME": str(daemon_home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=small_files,
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "cannot start: database.url:" in err and "disk I/O error" in err and "cannot rollback" not in err, err


@pytest.mark.sqlite_only(reason="storage plays no part: the daemon is stopped before it opens any")
@pytest.mark.parametrize("how", ["python -m", "console script"])
def test_ctrl_c_while_the_modules_load_is_quiet(daemon_home, how):
    # Ctrl-C in the first second or two of `python -m llmgine_daemon` or `llmgined` (a loaded
    # machine: more) printed a KeyboardInterrupt traceback from the middle of an import (the
    # console script imported the server before any of our code ran). -X importtime tells when
    # the imports are under way (aiohttp's application module loaded, ours still loading).
    script = Path(sys.executable).parent / "llmgined"
    command = [sys.executable, "-X", "importtime", "-m", "llmgine_daemon"]
    if how == "console script":
        assert script.exists(), f"{script}: the package is not installed (pip install -e .)"
        command = [sys.executable, "-X", "importtime", str(script)]
    proc = subprocess.Popen(
        command,
        env={**DAEMON_DEFAULTS, **os.environ, "LLMGINE_HOME": str(daemon_home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "aiohttp.web_app" in line or "listening on" in line:  # (never wait past the start)
                break
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        assert exit_code(proc) == 0, rest
        assert "Traceback" not in rest and "KeyboardInterrupt" not in rest, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
