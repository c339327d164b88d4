"""A write-ahead log damaged in the middle (bit rot, a torn copy) is refused at start, not
silently cut: SQLite stops reading the log at the first frame whose checksum is wrong and
drops every transaction after it, acknowledged ones included. A log cut short by a crash (its
unfinished last transaction) still starts. Real daemons, killed with SIGKILL, and their files.
"""

from __future__ import annotations

import signal
import sqlite3
import struct
from pathlib import Path

import pytest

from tests.dbtools import open_home_db
from tests.e2e.test_bus_crash import call, refused
from tests.e2e.test_llmgined import free_port, run_daemon, wait_for_http
from tests.eventually import eventually_blocking

pytestmark = [pytest.mark.e2e, pytest.mark.sqlite_only(reason="SQLite's write-ahead log")]


def frames(wal: bytes) -> list[tuple[int, int, bool]]:
    """(offset, index from 1, is a commit frame) of every frame with the header's salts."""
    (page,) = struct.unpack(">I", wal[8:12])
    size = 24 + page
    found = []
    for n in range((len(wal) - 32) // size):
        off = 32 + n * size
        if wal[off + 8 : off + 16] == wal[16:24]:
            found.append((off, n + 1, wal[off + 4 : off + 8] != b"\0\0\0\0"))
    return found


def damage_middle(whole: bytes) -> bytes:
    """The log with one byte flipped in the page of its middle commit frame (several committed
    transactions before the end)."""
    commits = [f for f in frames(whole) if f[2]]
    damaged = bytearray(whole)
    damaged[commits[len(commits) // 2][0] + 24 + 100] ^= 0x01
    return bytes(damaged)


def started_and_stopped(home: Path, port: int, env: dict[str, str] | None = None) -> str:
    """A daemon on ``home`` that starts, answers, and exits 0 on SIGTERM: its stderr."""
    proc = run_daemon(home, "--port", str(port), env=env)
    try:
        wait_for_http(port, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


def acknowledged_then_killed(home: Path, port: int) -> tuple[set[str], bytes]:
    """Twenty sessions, each its own transaction, all still in the log (a reader holds the
    checkpoints back), then kill -9: (their ids, the log's bytes)."""
    proc = run_daemon(home, "--port", str(port))
    reader = None
    try:
        wait_for_http(port, proc)
        call(port, "POST", "/api/sessions", {}, home=home)
        # Read-only: closing the last connection of a read-write one would checkpoint the log.
        db = (home / "data" / "llmgine.db").resolve().as_uri()
        reader = sqlite3.connect(f"{db}?mode=ro", uri=True, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM sessions").fetchone()
        made = {call(port, "POST", "/api/sessions", {}, home=home)[1]["session_id"] for _ in range(20)}
    finally:
        proc.kill()
        proc.wait()
        if reader is not None:
            reader.close()
    return made, (home / "data" / "llmgine.db-wal").read_bytes()


def sessions(home: Path, port: int) -> set[str]:
    proc = run_daemon(home, "--port", str(port))
    try:
        wait_for_http(port, proc)
        with open_home_db(home) as db:
            return {r[0] for r in db.execute("SELECT session_id FROM sessions")}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize("where", ["", "a #b?c%41"])
def test_a_log_damaged_in_the_middle_is_refused_and_left_alone(home, where):
    # where: a home whose path holds a URI's '#', '?' and '%'. The check opened the database by
    # a URI of the path unescaped: SQLite's recovery ran on another file ('.../a ', made empty
    # on the way) and the damage was let through.
    home = home / where
    home.mkdir(exist_ok=True)
    port = free_port()
    made, whole = acknowledged_then_killed(home, port)
    found = frames(whole)
    commits = [f for f in found if f[2]]
    assert len(commits) >= 10, found
    before = commits[len(commits) // 2 - 1][1]  # the last commit frame SQLite still reads
    wal = home / "data" / "llmgine.db-wal"
    damaged = damage_middle(whole)
    wal.write_bytes(damaged)
    db_before = (home / "data" / "llmgine.db").read_bytes()
    err = refused(run_daemon(home, "--port", str(port)))
    assert "llmgine.db-wal: damaged in the middle" in err and "Traceback" not in err, err
    assert f"up to frame {before} " in err, err
    assert "committed transactions" in err and "restore from a backup" in err, err
    assert len(err.strip().splitlines()) == 1, err
    # Left as it was, for a person to look at (no checkpoint, no new frame over the damage).
    assert wal.read_bytes() == damaged
    assert (home / "data" / "llmgine.db").read_bytes() == db_before
    assert not (home.parent / "a ").exists()  # nothing made where the URI's '#' cut the path
    wal.write_bytes(whole)  # repaired: every acknowledged session is there
    assert made <= sessions(home, port)


def test_a_log_cut_short_by_a_crash_still_starts(home):
    # kill -9 between the two writes of a transaction's last frame, or a power loss before its
    # fsync: the last transaction is cut short. It was never acknowledged; SQLite leaves it out
    # and the daemon starts as always.
    port = free_port()
    made, whole = acknowledged_then_killed(home, port)
    last_off, _, last_is_commit = frames(whole)[-1]
    assert last_is_commit
    cut = bytearray(whole)
    cut[last_off + 24 :] = bytes(len(cut) - last_off - 24)  # its page never written
    (home / "data" / "llmgine.db-wal").write_bytes(bytes(cut))
    assert len(made - sessions(home, port)) <= 1


def test_with_synchronous_normal_it_starts_keeping_a_copy(home):
    # With database.synchronous = normal a power loss may leave unsynced transactions out of
    # order, which looks the same; that setting accepts losing them: a warning, a copy of the
    # log as it was, and the daemon starts.
    port = free_port()
    _, whole = acknowledged_then_killed(home, port)
    damaged = damage_middle(whole)
    (home / "data" / "llmgine.db-wal").write_bytes(damaged)
    err = started_and_stopped(home, port, env={"LLMGINE_DB_SYNCHRONOUS": "normal"})
    assert "damaged in the middle" in err and "synchronous = normal" in err, err
    kept = list((home / "data").glob("llmgine.db-wal.damaged-*"))
    assert [k.read_bytes() for k in kept] == [damaged]


def test_the_telemetry_log_damaged_is_reported_but_the_daemon_starts(home):
    # Logs and spans are best effort (docs/durability.md): a damaged log of their database is
    # reported and kept aside; the daemon does not refuse to start over it.
    port = free_port()
    # Every trace's spans stored: each request below has telemetry to flush (at the default
    # 1% a flush with something in it came about once in a hundred requests).
    proc = run_daemon(home, "--port", str(port), env={"LLMGINE_TRACE_SAMPLE_RATE": "1"})
    telemetry = home / "data" / "llmgine-telemetry.db"
    wal = home / "data" / "llmgine-telemetry.db-wal"
    reader = None
    try:
        wait_for_http(port, proc)
        call(port, "GET", "/api/sessions", home=home)
        eventually_blocking(lambda: wal.exists() and bool(frames(wal.read_bytes())), timeout=30)
        reader = sqlite3.connect(f"file:{telemetry}?mode=ro", uri=True, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM sqlite_master").fetchone()

        def flushed_often() -> bool:
            call(port, "POST", "/api/sessions", {}, home=home)  # spans and logs to flush
            return len([f for f in frames(wal.read_bytes()) if f[2]]) >= 6

        eventually_blocking(flushed_often, timeout=60)
    finally:
        proc.kill()
        proc.wait()
        if reader is not None:
            reader.close()
    damaged = damage_middle(wal.read_bytes())
    wal.write_bytes(damaged)
    err = started_and_stopped(home, port)
    assert "llmgine-telemetry.db-wal: damaged in the middle" in err and "best effort" in err, err
    assert [k.read_bytes() for k in (home / "data").glob("llmgine-telemetry.db-wal.damaged-*")] == [damaged]


def test_after_a_crash_the_daemon_keeps_its_lock_on_the_wal_index(home):
    # The start-up check read `-shm` with a Python file while its read-only connection was
    # open, and closing that file ended every POSIX lock of the process on `-shm` - the
    # connection's shared lock on the index's "dead man switch" byte included - and the store's
    # connections, opened beside it, shared that unlocked index for the daemon's life. The next
    # other process to open the database took itself for the only one: it truncated and
    # rebuilt the index under the running daemon, which died of SIGBUS in a later write (or
    # read its log through a wrong index). Another process must not be able to take that lock.
    import fcntl

    port = free_port()
    acknowledged_then_killed(home, port)
    assert (home / "data" / "llmgine.db-wal").stat().st_size > 32  # a log to check at start
    proc = run_daemon(home, "--port", str(port))
    try:
        wait_for_http(port, proc)
        call(port, "POST", "/api/sessions", {}, home=home)
        with open(home / "data" / "llmgine.db-shm", "rb+") as shm:
            try:
                fcntl.lockf(shm, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 128)  # SQLite's UNIX_SHM_DMS
            except OSError:
                taken = False
            else:
                taken = True
                fcntl.lockf(shm, fcntl.LOCK_UN, 1, 128)
        assert not taken, "another process could take the wal-index's exclusive lock from the daemon"
        # And a person's sqlite3 opening the database now leaves the daemon writing, intact.
        db = sqlite3.connect(home / "data" / "llmgine.db")
        db.execute("SELECT count(*) FROM sessions").fetchone()
        db.close()
        made = {
            call(port, "POST", "/api/sessions", {"metadata": {"pad": "x" * 4000}}, home=home)[1]["session_id"]
            for _ in range(300)
        }
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    db = sqlite3.connect(home / "data" / "llmgine.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert made <= {r[0] for r in db.execute("SELECT session_id FROM sessions")}
    finally:
        db.close()
