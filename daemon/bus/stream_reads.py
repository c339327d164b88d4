"""A replay page of the stream hub (bus/streams.py), bounded in events and in bytes (where a
stream starts is read by bus/stream_start.py)."""

from __future__ import annotations

import sqlite3
from typing import Any

from llmgine_daemon.bus.events import EVENT_COLUMNS


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
