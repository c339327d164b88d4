"""What an operator meets when the machine misbehaves, with the real llmgined and llmgine
processes and real files: a database file damaged (at start, and under a running daemon) or
emptied, a home on a read-only file system, a full disk (a tmpfs of a few KiB or MiB mounted in
the test's directory and always unmounted; skipped without root), a daemon paused with SIGSTOP,
two daemons of one home, a setting too large to use, files made under umask 000. Each is a
clear answer or one line, never a traceback or a 500, and nothing acknowledged is lost."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from llmgine_daemon.settings import get_paths

from llmgine_cli.daemonctl import pid_alive, read_pid
from tests.clitools import cli_env, run_cli
from tests.e2e.test_bus_crash import call
from tests.e2e.test_llmgined import exit_code, fails_with, free_port, run_daemon, wait_for_http
from tests.eventually import eventually_blocking

pytestmark = pytest.mark.e2e

GARBAGE = bytes(range(256)) * 16  # one 4 KiB page of bytes no b-tree page starts with


def made_home(home: Path, sessions: int = 3) -> None:
    """A home whose database holds a few sessions, the daemon stopped and the log folded in."""
    port = free_port()
    proc = run_daemon(home, "--port", str(port))
    try:
        wait_for_http(port, proc)
        for _ in range(sessions):
            assert call(port, "POST", "/api/sessions", {}, home=home)[0] == 201
    finally:
        proc.send_signal(signal.SIGTERM)
        assert exit_code(proc) == 0


def checkpoint(db: Path) -> None:
    """Fold the write-ahead log into the file, so damage to the file is what readers see."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        eventually_blocking(lambda: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0)
    finally:
        conn.close()


def damage_pages(db: Path, pages: list[int]) -> None:
    with db.open("r+b") as fh:
        for page in pages:
            fh.seek((page - 1) * 4096)
            fh.write(GARBAGE)
        fh.flush()
        os.fsync(fh.fileno())


@pytest.mark.sqlite_only(reason="an SQLite file damaged on disk")
def test_a_database_damaged_where_start_up_reads_it_is_one_line(home):
    # The file opens (its first pages are whole) but a table start-up reads is damaged: the
    # daemon printed a traceback from deep in the stream hub's start and exited 1.
    made_home(home)
    db = home / "data" / "llmgine.db"
    with sqlite3.connect(db) as conn:
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone()
    damage_pages(db, [root])
    proc = run_daemon(home)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("llmgined: cannot start: database.url: ") and str(db) in last, err
    assert "database disk image is malformed" in last and "restore it from a backup" in last, err
    assert not (home / "run" / "llmgined.sock").exists()
    assert not (home / "run" / "llmgined.pid").exists()


@pytest.mark.sqlite_only(reason="an SQLite file damaged on disk")
def test_a_database_damaged_under_a_running_daemon_is_503_and_no_traceback(home):
    # Every request touching the damaged file answered 500 INTERNAL_ERROR with a traceback in
    # the log, the stream hub and the webhook rounds logged a traceback every second, and
    # GET /api/health said "healthy".
    made_home(home)
    db = home / "data" / "llmgine.db"
    log = home / "daemon.log"
    port = free_port()
    proc = run_daemon(home, "--port", str(port), env={"LOG_FILE": str(log), "LOG_FORMAT": "text"})
    try:
        wait_for_http(port, proc)
        checkpoint(db)
        pages = db.stat().st_size // 4096
        damage_pages(db, list(range(2, pages + 1)))  # page 1 (the header) stays whole
        for method, path, body in (("GET", "/api/sessions", None), ("POST", "/api/sessions", {})):
            status, answer = call(port, method, path, body, home=home)
            assert status == 503 and answer["error"]["code"] == "STORAGE_DAMAGED", (method, answer)
            assert "restore it from a backup" in answer["error"]["message"]
        status, health = call(port, "GET", "/api/health", home=home)
        assert status == 200 and health["status"] == "degraded", health
        # The background rounds (the stream hub's poll, once a second) find it too: one line,
        # not one a round (about two lines a second with the webhooks' and the scheduler's).
        eventually_blocking(lambda: round_failures(port, home, "streams") >= 3, timeout=30)
        assert log.read_text().count("streams: cannot read the event log head: ") == 1, log.read_text()[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    text = log.read_text()
    assert "Traceback" not in text + err, (text + err)[-4000:]
    assert "storage damaged: " in text and "database disk image is malformed" in text, text[-4000:]


def round_failures(port: int, home: Path, name: str) -> float:
    """``background_round_failures_total{round=name}``: how many of that loop's rounds failed."""
    status, snapshot = call(port, "GET", "/api/observability/metrics", home=home)
    assert status == 200, snapshot
    series = [s for m in snapshot["metrics"] if m["name"] == "background_round_failures_total" for s in m["series"]]
    return sum(s["value"] for s in series if s["labels"].get("round") == name)


def llmgine(home: Path, *args: str, **env: str | None) -> subprocess.CompletedProcess[str]:
    proc = run_cli(args, cli_env(home, **env))
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@contextlib.contextmanager
def tmpfs(mnt: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``mnt`` (made here) for the block's length, then unmounted; the test
    is skipped where this process may not mount (not root)."""
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.fixture
def read_only_home(cli_home: Path) -> Iterator[Path]:
    """A home on a file system mounted read-only (a tmpfs in the test's own directory)."""
    with tmpfs(cli_home / "ro", "size=1m,mode=0700") as mnt:
        home = mnt / "h"
        for sub in ("run", "state", "config", "data"):
            (home / sub).mkdir(parents=True, mode=0o700)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        yield home


@pytest.mark.sqlite_only(reason="the CLI's own files in the home; the storage plays no part")
def test_daemon_start_on_a_read_only_home_says_so(read_only_home):
    # `llmgine daemon start` (and every command's auto-start) said "internal error: OSError:
    # [Errno 30] ..." when it could not create its start lock in the runtime directory.
    for args, env in ((("daemon", "start"), {}), (("session", "list"), {"LLMGINE_NO_AUTOSTART": None})):
        proc = llmgine(read_only_home, *args, **env)
        assert proc.returncode == 1, proc.stderr
        assert "internal error" not in proc.stderr and "Errno" not in proc.stderr, proc.stderr
        assert "cannot start llmgined: " in proc.stderr and "Read-only file system" in proc.stderr, proc.stderr
        assert str(read_only_home / "run") in proc.stderr, proc.stderr


@pytest.mark.sqlite_only(reason="signals to the daemon's process; the storage plays no part")
def test_a_paused_daemon_is_named_by_status_and_ended_by_stop(cli_home):
    # SIGSTOP (Ctrl-Z, a debugger): `daemon stop` sent SIGTERM, which a stopped process holds
    # until it is continued, so it waited its 20 s and said "still running ... kill it with:
    # kill PID" (which it had just done). `daemon status` only said no answer came.
    assert llmgine(cli_home, "daemon", "start").returncode == 0
    pid = read_pid(get_paths({"LLMGINE_HOME": str(cli_home)}))
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        status = llmgine(cli_home, "daemon", "status")
        assert status.returncode == 7, status.stderr
        assert f"llmgined (pid {pid}) is stopped" in status.stderr and f"kill -CONT {pid}" in status.stderr
        stop = llmgine(cli_home, "daemon", "stop")
        assert stop.returncode == 0, stop.stderr
        assert f"llmgined stopped (pid {pid})" in stop.stdout
        assert not pid_alive(pid)
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.sqlite_only(reason="a setting refused before any storage is opened")
@pytest.mark.parametrize("value", ["1e308", "1e300"])
def test_a_number_of_seconds_too_large_is_a_configuration_error(home, value):
    # 1e308 seconds passed the check (finite, positive) and overflowed later, in the store's
    # busy timeout in milliseconds: a traceback.
    line = fails_with(home, env={"LLMGINE_DB_BUSY_TIMEOUT": value})
    assert "LLMGINE_DB_BUSY_TIMEOUT" in line or "database.busy_timeout" in line, line
    assert "at most" in line, line


@pytest.fixture
def small_disk(home: Path) -> Iterator[Path]:
    """A home on a 3 MiB tmpfs of its own (in the test's directory); ``remount(size)``."""
    with tmpfs(home / "disk", "size=3m,mode=0700") as mnt:
        yield mnt


def fill_up(disk: Path) -> None:
    """Write a file on ``disk`` until its file system has no room left."""
    filler = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError):
            while True:
                os.write(filler, b"\0" * 4096)
    finally:
        os.close(filler)


def fill(port: int, home: Path, sid: str) -> tuple[list[str], set[int]]:
    """Publish 2 KiB events from 6 threads until each has been refused for a full disk: (the
    ids of those acknowledged, every status seen)."""
    from concurrent.futures import ThreadPoolExecutor

    body = {"event_type": "Filler", "data": {"pad": "x" * 2048}}

    def client(_: int) -> tuple[list[str], set[int]]:
        acked, seen = [], set()
        for _ in range(2000):
            status, answer = call(port, "POST", f"/api/sessions/{sid}/events", body, home=home)
            seen.add(status)
            if status == 201:
                acked.append(answer["event_id"])
            elif status == 507:
                assert answer["error"]["code"] == "INSUFFICIENT_STORAGE", answer
                break
            else:
                raise AssertionError((status, answer))
        return acked, seen

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(client, range(6)))
    return [e for acked, _ in results for e in acked], set().union(*(seen for _, seen in results))


@pytest.mark.sqlite_only(reason="an SQLite file on a file system that fills up")
def test_a_real_full_disk_is_507_survives_kill_9_and_recovers_when_space_returns(small_disk):
    # Measured, not a defect found: the page-limit test (tests/api/test_durability.py) stands
    # in for a full disk; this one fills a real file system, WAL and -shm included.
    home = small_disk / "h"
    port = free_port()
    proc = run_daemon(home, "--port", str(port))
    try:
        wait_for_http(port, proc)
        status, session = call(port, "POST", "/api/sessions", {}, home=home)
        assert status == 201
        sid = session["session_id"]
        acked, seen = fill(port, home, sid)
        assert seen == {201, 507} and acked, seen  # never a 500, nothing else
        status, health = call(port, "GET", "/api/health", home=home)
        assert status == 200 and health["status"] == "degraded"
        assert call(port, "GET", f"/api/sessions/{sid}/events/{acked[-1]}", home=home)[0] == 200  # reads work
    finally:
        proc.kill()  # kill -9 with the disk still full
        proc.wait()
    proc = run_daemon(home, "--port", str(port))  # starts on the full disk
    try:
        wait_for_http(port, proc)
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
        # Space is back: writes go through again without a restart.
        eventually_blocking(
            lambda: call(port, "POST", f"/api/sessions/{sid}/events", {"event_type": "Back"}, home=home)[0] == 201
        )
        status, health = call(port, "GET", "/api/health", home=home)
        assert status == 200 and health["status"] == "healthy"
        lost = [e for e in acked if call(port, "GET", f"/api/sessions/{sid}/events/{e}", home=home)[0] != 200]
        assert not lost, f"{len(lost)} of {len(acked)} acknowledged events lost"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert exit_code(proc) == 0


@pytest.mark.sqlite_only(reason="the home's socket and pidfile; the storage plays no part")
def test_a_home_held_by_a_starting_daemon_keeps_its_socket(home):
    # Two daemons of one home started at once, with a stale socket left by a kill -9: each
    # looked at the socket, found no one listening (the first had bound but not yet listened,
    # or not bound yet) and removed it; the second could remove the first one's new socket,
    # which then ran unreachable. The home's pidfile is now held from before the socket is
    # looked at: here this test holds it, as a daemon that is starting does.
    import fcntl
    import socket as sockets

    run = home / "run"
    run.mkdir(mode=0o700)
    path = run / "llmgined.sock"
    stale = sockets.socket(sockets.AF_UNIX)
    stale.bind(str(path))  # bound, never listening: as a starting daemon's, or a dead one's
    fd = os.open(run / "llmgined.pid", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        inode = path.stat().st_ino
        proc = run_daemon(home)
        try:
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:  # it started after all: never leave it running
                proc.kill()
                proc.wait()
        assert proc.returncode == 1 and "Traceback" not in err, err
        (line,) = err.strip().splitlines()
        assert "already listening there, or starting" in line and str(run / "llmgined.pid") in line, line
        assert path.stat().st_ino == inode  # left alone
    finally:
        os.close(fd)
        stale.close()
    # Let go (the other daemon died): the stale socket is taken over, as after any kill -9.
    port = free_port()
    proc = run_daemon(home, "--port", str(port))
    try:
        wait_for_http(port, proc)
        assert path.stat().st_ino != inode
    finally:
        proc.send_signal(signal.SIGTERM)
        assert exit_code(proc) == 0


@pytest.mark.sqlite_only(reason="the daemon's log file; the storage plays no part")
def test_a_log_file_on_a_full_disk_is_one_line_not_a_traceback_per_record(home):
    # logging's default: "--- Logging error ---", a traceback and the call stack on stderr for
    # every record the file could not take (with `daemon start`, stderr is a file too).
    with tmpfs(home / "logs", "size=64k") as disk:
        fill_up(disk)  # before the daemon starts
        port = free_port()
        proc = run_daemon(home, "--port", str(port), "--log-file", str(disk / "llmgined.log"))
        try:
            wait_for_http(port, proc)  # it runs: its database is elsewhere
            assert call(port, "POST", "/api/sessions", {}, home=home)[0] == 201
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "Logging error" not in err and "Traceback" not in err, err[-3000:]
        assert err.count("llmgined: cannot write the log file ") == 1, err
        assert "No space left on device; log lines are dropped until it can" in err, err


@pytest.mark.sqlite_only(reason="the home on a full file system")
def test_daemon_start_on_a_full_disk_says_the_disk_is_full(small_disk):
    # The daemon's reason (its database cannot be made) goes to its log, on the same full
    # disk: `daemon start` said only "llmgined exited with status 1: no output".
    home = small_disk / "h"
    fill_up(small_disk)
    proc = llmgine(home, "daemon", "start")
    assert proc.returncode == 1, proc.stderr
    assert "llmgined exited with status 1: nothing in its log: " in proc.stderr, proc.stderr
    assert f"the file system of {home / 'state'} is full" in proc.stderr, proc.stderr


@pytest.mark.sqlite_only(reason="the modes of the files of an SQLite home")
def test_nothing_in_a_home_made_under_umask_0_is_readable_by_others(cli_home):
    # Measured, not a defect found: with umask 000 every file the CLI and the daemon make (the
    # local key, the databases with their -wal, -shm and locks, the socket, the pidfile, the
    # logs, a secret) is 0600 and every directory 0700.
    import stat
    import sys

    from tests.clitools import default_signals, full_env

    def as_umask_0() -> None:
        default_signals()
        os.umask(0)

    env = full_env(cli_env(cli_home))
    for args, stdin in (
        (("daemon", "start"), ""),
        (("session", "create", "-q"), ""),
        (("secret", "set", "X_KEY"), "v"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "llmgine_cli", *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=as_umask_0,
        )
        assert done.returncode == 0, done.stderr
    seen = set()
    for path in [cli_home, *cli_home.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        seen.add(path.name)
        assert mode & 0o077 == 0, f"{path}: {mode:04o}"
    wanted = {"local.key", "llmgine.db", "llmgine.db-wal", "llmgine.db-shm", "llmgine-telemetry.db", "llmgined.sock"}
    assert wanted | {"llmgined.pid", "llmgined.log"} <= seen, seen


@pytest.mark.sqlite_only(reason="SQLite files damaged on disk")
@pytest.mark.parametrize("name", ["llmgine.db", "llmgine-telemetry.db"])
def test_a_file_damaged_where_it_opens_says_what_to_do(home, name):
    # One line before too, but without what to do: for the telemetry file that it holds only
    # logs and spans, so moving it away is an answer.
    made_home(home)
    path = home / "data" / name
    os.truncate(path, 5000)  # cut mid-page, far short of its header's page count
    proc = run_daemon(home)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Traceback" not in err, err
    (line,) = err.strip().splitlines()
    assert f"{path}: cannot open database: database disk image is malformed: the file is damaged" in line, line
    if name == "llmgine.db":
        assert "restore it from a backup" in line, line
    else:
        assert "it holds only logs and spans" in line and "move it away" in line, line


@pytest.mark.sqlite_only(reason="an SQLite file emptied on disk")
def test_an_emptied_database_is_refused_not_started_as_new(home):
    # `cp backup.db llmgine.db` on a full disk leaves 0 bytes; SQLite takes an empty file for
    # a new database: the daemon started without a word, with no sessions, and took writes.
    made_home(home)
    db = home / "data" / "llmgine.db"
    os.truncate(db, 0)
    proc = run_daemon(home)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # it started: never leave it running
            proc.kill()
            proc.wait()
    assert proc.returncode == 1 and "Traceback" not in err, err
    (line,) = err.strip().splitlines()
    assert f"{db}: the database is empty (0 bytes) but llmgine-telemetry.db beside it is not" in line, line
    assert db.stat().st_size == 0  # left as it was
    db.unlink()  # removed on purpose: starts anew
    port = free_port()
    proc = run_daemon(home, "--port", str(port))
    try:
        wait_for_http(port, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert exit_code(proc) == 0


@pytest.mark.sqlite_only(reason="the home's pidfile; the storage plays no part")
def test_daemon_start_waits_for_a_daemon_of_the_home_that_is_starting(cli_home):
    # A daemon a service manager started holds the home's pidfile from before it listens:
    # `daemon start` meanwhile said "llmgined (pid N) is running but does not answer" at once.
    # Here the first daemon is paused (SIGSTOP) until `daemon start` has begun waiting.
    import threading

    from tests.clitools import DAEMON_DEFAULTS, full_env

    env = full_env({**cli_env(cli_home), **DAEMON_DEFAULTS})
    first = subprocess.Popen(
        [sys.executable, "-m", "llmgine_daemon"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    pidfile = cli_home / "run" / "llmgined.pid"
    try:
        eventually_blocking(lambda: pidfile.exists() and pidfile.read_text().strip() == str(first.pid))
        os.kill(first.pid, signal.SIGSTOP)
        resume = threading.Timer(3.0, os.kill, (first.pid, signal.SIGCONT))
        resume.start()
        try:
            proc = llmgine(cli_home, "daemon", "start", "--timeout", "60")
        finally:
            resume.join()
        assert proc.returncode == 0, proc.stderr
        assert f"is already running (pid {first.pid})" in proc.stdout, proc.stdout
    finally:
        os.kill(first.pid, signal.SIGCONT)
        first.send_signal(signal.SIGTERM)
        assert exit_code(first) == 0


@pytest.mark.sqlite_only(reason="the home's runtime files; the storage plays no part")
def test_a_runtime_dir_removed_under_the_daemon_is_made_again(cli_home):
    # A temp-file cleaner (systemd-tmpfiles: /tmp files unused for 10 days; the runtime dir is
    # in /tmp without XDG_RUNTIME_DIR) removed the socket and the pidfile of a long-running
    # daemon: it ran on unreachable, `daemon status`/`stop` said it was not running (and left
    # it running), and an auto-start failed on the database lock the old one still held.
    import shutil

    assert llmgine(cli_home, "daemon", "start").returncode == 0
    run = cli_home / "run"
    pid = read_pid(get_paths({"LLMGINE_HOME": str(cli_home)}))
    assert pid is not None
    try:
        shutil.rmtree(run)
        eventually_blocking(lambda: (run / "llmgined.sock").exists() and (run / "llmgined.pid").exists())
        assert stat_mode(run) == 0o700 and stat_mode(run / "llmgined.sock") == 0o600
        assert (run / "llmgined.pid").read_text().strip() == str(pid)
        listed = llmgine(cli_home, "session", "list", "-q")
        assert listed.returncode == 0, listed.stderr
        stop = llmgine(cli_home, "daemon", "stop")
        assert stop.returncode == 0 and f"llmgined stopped (pid {pid})" in stop.stdout, stop.stdout + stop.stderr
        assert not pid_alive(pid)
        assert not (run / "llmgined.sock").exists() and not (run / "llmgined.pid").exists()
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


@pytest.mark.sqlite_only(reason="SQLite's write-ahead log file")
def test_the_write_ahead_log_shrinks_after_a_burst(home):
    # A reader holding a snapshot (a backup, `sqlite3` left open) keeps the checkpoints from
    # finishing: the log grows with every write. Once the reader went, the log was reused but
    # never cut back: the file stayed the size of its largest burst for the daemon's life.
    from concurrent.futures import ThreadPoolExecutor

    from llmgine_daemon.store.db import WAL_SIZE_LIMIT

    port = free_port()
    proc = run_daemon(home, "--port", str(port))
    wal = home / "data" / "llmgine.db-wal"
    try:
        wait_for_http(port, proc)
        reader = sqlite3.connect(f"{(home / 'data' / 'llmgine.db').as_uri()}?mode=ro", uri=True, isolation_level=None)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM sessions").fetchone()  # the snapshot is held from here
            body = {"event_type": "Burst", "data": {"pad": "x" * 900_000}}

            def burst(_: int) -> None:
                sid = call(port, "POST", "/api/sessions", {}, home=home)[1]["session_id"]
                for _ in range(20):
                    assert call(port, "POST", f"/api/sessions/{sid}/events", body, home=home)[0] == 201

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(burst, range(4)))
            assert wal.stat().st_size > WAL_SIZE_LIMIT
        finally:
            reader.close()

        def small_write_then_size() -> bool:
            call(port, "POST", "/api/sessions", {}, home=home)
            return wal.stat().st_size <= WAL_SIZE_LIMIT

        eventually_blocking(small_write_then_size, interval=0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert exit_code(proc) == 0
