"""Where a stream that starts at a time begins (bus/stream_start.py ``start_info``), on a real,
migrated SQLite database: a session's stream looks only at its session's events."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

from llmgine_daemon.bus.stream_start import start_info
from llmgine_daemon.store.migrations import apply_migrations

NOISE = 5_000


def db(tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    apply_migrations(conn)
    conn.execute(
        "INSERT INTO sessions (session_id, status, created_at, last_activity_at)"
        " VALUES ('mine', 'active', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')"
    )
    rows = [(f"e{i}", "other", "Noise", "{}", "{}", "api", "2026-06-01T00:00:00.000000Z") for i in range(NOISE)]
    rows.append(("m1", "mine", "Mine", "{}", "{}", "api", "2026-06-02T00:00:00.000000Z"))
    conn.execute("BEGIN")  # one commit, not one per row
    conn.executemany(
        "INSERT INTO events (event_id, session_id, event_type, data, metadata, source, timestamp)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.execute("COMMIT")
    return conn


def steps(conn: sqlite3.Connection, session_id: str | None, since: dt.datetime) -> tuple[int, dict]:
    """What start_info answers, and how many SQLite VM steps it took (in thousands)."""
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    conn.set_progress_handler(tick, 1000)
    try:
        info = start_info(conn, session_id, since, NOISE + 1)
    finally:
        conn.set_progress_handler(None, 0)
    return count[0], info


def test_a_session_stream_from_long_ago_reads_only_its_own_events(tmp_path: Path) -> None:
    """since=1970-01-01 (before every event) made each open of a session's stream read the
    whole log, every session's events: a session token could keep the store's readers busy."""
    conn = db(tmp_path)
    long_ago = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    own, info = steps(conn, "mine", long_ago)
    assert info["time_seq"] == 0
    everyone, _ = steps(conn, None, long_ago)  # a global stream (full access) still scans
    assert own < 10 < everyone, (own, everyone)
    # The cursor still lands after the session's last event before the time.
    _, info = steps(conn, "mine", dt.datetime(2026, 6, 3, tzinfo=dt.UTC))
    assert info["time_seq"] == NOISE + 1
