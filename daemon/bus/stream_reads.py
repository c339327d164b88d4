"""What the stream hub (bus/streams.py) reads from the store: the log's end, where a stream
starts, and a replay page."""

from __future__ import annotations

import datetime as _dt
import sqlite3
from typing import Any

from llmgine_daemon.bus.events import EVENT_COLUMNS, row_to_event
from llmgine_daemon.bus.stream_filter import SESSION_ENDED
from llmgine_daemon.protocol import to_iso


def read_page(
    conn: sqlite3.Connection, cursor: int, where: str, params: list[Any], limit: int, max_bytes: int
) -> tuple[list[Any], bool]:
    """Rows of up to ``limit`` events after ``cursor`` matching ``where``, and of at most about
    ``max_bytes`` of data and metadata (one event at least): their sizes are read first, so a
    page of large events is never read whole. And whether more may follow (a bound cut it)."""
    sizes = f"SELECT seq, LENGTH(data) + LENGTH(metadata) FROM events WHERE seq > ? AND {where} ORDER BY seq LIMIT ?"
    found = conn.execute(sizes, (cursor, *params, limit)).fetchall()
    last, total, taken = None, 0, 0
    for seq, size in found:
        total += size or 0
        if last is not None and total > max_bytes:
            break
        last, taken = seq, taken + 1
    if last is None:
        return [], False
    page = f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > ? AND seq <= ? AND {where} ORDER BY seq"
    return conn.execute(page, (cursor, last, *params)).fetchall(), taken < len(found) or len(found) >= limit


def last_seq(conn: sqlite3.Connection) -> int:
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
