"""What the stream hub (bus/streams.py) reads from the store where a stream starts: the end of
the event log, a session's state and its ``SessionEnded``, and the seq a start time maps to."""

from __future__ import annotations

import datetime as _dt
import sqlite3
from typing import Any

from llmgine_daemon.bus.events import EVENT_COLUMNS, row_to_event
from llmgine_daemon.bus.stream_filter import SESSION_ENDED
from llmgine_daemon.protocol import to_iso


def log_end(conn: sqlite3.Connection) -> int:
    """The seq of the last event ever written, whatever was deleted since."""
    # sqlite_sequence survives deletes (purge, retention): the log's true end.
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    if row is None:
        row = conn.execute("SELECT MAX(seq) FROM events").fetchone()
    return int(row[0] or 0)


def start_info(
    conn: sqlite3.Connection, session_id: str | None, since: int | _dt.datetime | None, last_seq: int
) -> dict[str, Any]:
    info: dict[str, Any] = {"status": None, "ended": None, "time_seq": 0}
    info["last_seq"] = last_seq
    if session_id is not None:
        row = conn.execute("SELECT status FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
        info["status"] = row[0] if row else None
        if row is not None and row[0] != "active":
            ended = conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE session_id = ? AND event_type = ? ORDER BY seq DESC LIMIT 1",
                (session_id, SESSION_ENDED),
            ).fetchone()
            info["ended"] = row_to_event(ended) if ended else None
    if since is not None and not isinstance(since, int):
        # Timestamps grow with seq, so scanning back from the end stops at the first older
        # event: cheap for "the last 10 minutes", which is what people ask for. A session's
        # stream scans only its session's events (index (session_id, seq)): a time before them
        # all (since=1970-01-01T00:00:00Z) read the whole log, every session's, at each open.
        if session_id is not None:
            row = conn.execute(
                "SELECT seq FROM events WHERE session_id = ? AND timestamp < ? ORDER BY seq DESC LIMIT 1",
                (session_id, to_iso(since)),
            ).fetchone()
        else:
            row = conn.execute(
                "SELECT seq FROM events WHERE timestamp < ? ORDER BY seq DESC LIMIT 1",
                (to_iso(since),),
            ).fetchone()
        info["time_seq"] = int(row[0]) if row else 0
    return info
