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
``adopt_legacy`` copies their rows over, then drops them. Ids and their AUTOINCREMENT counters
come along, so ids are never reused (log cursors stay valid). It is idempotent: after a crash
half-way it copies again, skipping the rows already there.
"""

from __future__ import annotations

import logging
import sqlite3
from functools import partial
from pathlib import Path
from typing import Any

from llmgine_daemon.store.db import StorageError, Store
from llmgine_daemon.store.migrations import TELEMETRY_VERSIONS

log = logging.getLogger("llmgine.store")

TABLES = ("logs", "spans")
COPY_BATCH = 5000


def telemetry_path(main: Path) -> Path:
    return main.with_name(f"{main.stem}-telemetry{main.suffix or '.db'}")


def refuse_emptied(main: Path) -> None:
    """StorageError for a main database of 0 bytes (and no log) beside a telemetry file that
    holds data: the file was emptied, or a copy over it failed on a full disk (``cp`` leaves 0
    bytes). SQLite takes an empty file for a new database: the daemon started without a word,
    with none of the data, and new writes went into it. (A daemon's first start makes the
    telemetry file only after the main one has its header.)"""
    wal = main.with_name(main.name + "-wal")
    try:
        if main.stat().st_size != 0 or telemetry_path(main).stat().st_size == 0:
            return
    except FileNotFoundError:
        return
    if wal.exists() and wal.stat().st_size > 0:
        return
    raise StorageError(
        f"{main}: the database is empty (0 bytes) but {telemetry_path(main).name} beside it is not: it was "
        "emptied, or a copy over it failed (a full disk?); restore it from a backup, or remove it to start anew"
    )


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


async def adopt_legacy(main: Store, telemetry: Store) -> int:
    """Move the logs and spans a main database from before the split still holds; returns how
    many rows were copied."""
    if main.backend != "sqlite":  # on PostgreSQL they were never in the main store
        return 0
    try:
        return await _adopt(main, telemetry)
    except sqlite3.Error as exc:
        raise StorageError(f"{main.path}: moving logs and spans to {telemetry.path}: {exc}") from None


async def _adopt(main: Store, telemetry: Store) -> int:
    legacy = await main.read(
        lambda conn: [
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table' AND name IN (?, ?)", TABLES)
        ]
    )
    if not legacy:
        return 0
    total = await main.read(lambda conn: sum(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in legacy))
    log.info("moving %d log and span row(s) from %s to %s", total, main.path, telemetry.path)
    moved = 0
    for table in legacy:
        theirs = await main.read(partial(_columns, table=table))
        ours = await telemetry.read(partial(_columns, table=table))
        names = [c for c in theirs if c in ours]  # "id" first: both tables start with it
        select = f"SELECT {', '.join(names)} FROM {table} WHERE id > ? ORDER BY id LIMIT {COPY_BATCH}"
        # Only a row already copied (a move cut short by a crash) is skipped; any other
        # constraint failure stops the move, before anything is dropped.
        insert = (
            f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
            " ON CONFLICT (id) DO NOTHING"
        )
        after = -1
        while True:
            rows = await main.read(partial(_rows_after, sql=select, after=after))
            if not rows:
                break
            moved += await telemetry.write(partial(_changes, sql=insert, rows=rows), heavy=True)
            after = rows[-1][0]
        # Ids are never reused, not even those of rows pruned long ago (a client's ?after=
        # cursor stays valid): the new table's AUTOINCREMENT counter starts where the old
        # one was.
        counter = await main.read(partial(_counter, table=table))
        if counter is not None:
            await telemetry.write(partial(_raise_counter, table=table, value=counter[0]))
    # The copies on disk before the originals go: with synchronous=normal a COMMIT is not.
    await telemetry.run_alone(lambda conn: conn.execute("PRAGMA wal_checkpoint(FULL)").fetchall())
    await main.write(lambda conn: _drop(conn, legacy), heavy=True)
    log.info("moved %d log and span row(s) to %s", moved, telemetry.path)
    return moved


def _rows_after(conn: sqlite3.Connection, sql: str, after: int) -> list[Any]:
    return conn.execute(sql, (after,)).fetchall()


def _counter(conn: sqlite3.Connection, table: str) -> tuple[int] | None:
    row: tuple[int] | None = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
    return row


def _changes(conn: sqlite3.Connection, sql: str, rows: list[Any]) -> int:
    before = conn.total_changes
    conn.executemany(sql, rows)
    return conn.total_changes - before


def _raise_counter(conn: sqlite3.Connection, table: str, value: int) -> None:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
    if row is None:
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, value))
    elif row[0] < value:
        conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (value, table))


def _drop(conn: sqlite3.Connection, tables: list[str]) -> None:
    for table in tables:
        conn.execute(f"DROP TABLE {table}")
    # Forget the telemetry migrations here too: a daemon from before the split, opened on this
    # file again, then creates the tables anew instead of failing on every flush.
    conn.execute(
        "DELETE FROM schema_migrations WHERE version >= ? AND version < ?",
        (TELEMETRY_VERSIONS.start, TELEMETRY_VERSIONS.stop),
    )
