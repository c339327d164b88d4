"""Logs and spans live in a database file of their own, beside the main one.

Why: telemetry is written in bulk - every request's spans and the log records, flushed twice a
second - and in the main database a flush of a thousand spans held its one writer while the
requests' own writes (the ones a client waits to see acknowledged) queued behind it. In a file
of its own, telemetry has its own writer connection and lock: its transactions run whole in its
own thread (SQLite releases the GIL while it works), beside the main writer's, never in front
of them (bench/README.md has the measurements).

The file is named after the main one (llmgine.db -> llmgine-telemetry.db), with the same mode,
synchronous setting and busy timeout. Its schema is the migrations numbered 40-49
(obs_migrations.py). A main database from before the split still holds the two tables:
``adopt_legacy`` copies their rows over, ids kept (log cursors stay valid), then drops them. It
is idempotent: after a crash half-way it copies again, skipping the rows already there.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from llmgine_daemon.store.db import Store

log = logging.getLogger("llmgine.store")

TABLES = ("logs", "spans")
COPY_BATCH = 5000


def telemetry_path(main: Path) -> Path:
    return main.with_name(f"{main.stem}-telemetry{main.suffix or '.db'}")


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


async def adopt_legacy(main: Store, telemetry: Store) -> int:
    """Move the logs and spans a main database from before the split still holds; returns how
    many rows were copied."""
    legacy = await main.read(lambda conn: [
        row[0] for row in conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name IN (?, ?)", TABLES)
    ])
    moved = 0
    for table in legacy:
        theirs = await main.read(lambda conn, t=table: _columns(conn, t))
        ours = await telemetry.read(lambda conn, t=table: _columns(conn, t))
        names = [c for c in theirs if c in ours]  # "id" first: both tables start with it
        select = f"SELECT {', '.join(names)} FROM {table} WHERE id > ? ORDER BY id LIMIT {COPY_BATCH}"
        insert = f"INSERT OR IGNORE INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        after = -1
        while True:
            rows = await main.read(lambda conn, a=after, q=select: conn.execute(q, (a,)).fetchall())
            if not rows:
                break
            await telemetry.write(lambda conn, r=rows, q=insert: conn.executemany(q, r), heavy=True)
            moved += len(rows)
            after = rows[-1][0]
        await main.write(lambda conn, t=table: conn.execute(f"DROP TABLE {t}"), heavy=True)
    if legacy:
        log.info("moved %d log and span row(s) to %s", moved, telemetry.path)
    return moved
