"""Database upkeep: statistics, VACUUM and retention (background pruning of events, logs and
spans).

Retention never holds the writer for long: every pass deletes at most ``PRUNE_BATCH`` rows per
write, each write goes through the group-commit writer like any request's (so it shares a
transaction with them instead of locking them out), and the pruner yields between writes.
Finding what is old is cheap without extra indexes: rows are appended in id/seq order with the
writer's clock, so the old rows are a prefix of the table; a pass reads the first rows in id
order and stops at the first one that is young enough.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sqlite3
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import msgspec
from llmgine_daemon.aio import cancel_and_wait
from llmgine_daemon.protocol import DbStats, DbTable, VacuumResult
from llmgine_daemon.store.db import StorageError, Store

log = logging.getLogger("llmgine.store")

PRUNE_BATCH = 500
VACUUM_CHECKPOINT_S = 2.0  # how long vacuum keeps trying to truncate the WAL
# Pause between two pruning writes: requests' writes get the writer in between.
PRUNE_PAUSE_S = 0.01


# -- stats and vacuum -----------------------------------------------------------------------


def _stats(conn: sqlite3.Connection) -> tuple[list[DbTable], int, int, int, str]:
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    sizes: dict[str, int] = {}
    owner: dict[str, str] = {}
    for name, tbl in conn.execute("SELECT name, tbl_name FROM sqlite_schema WHERE type IN ('table', 'index')"):
        owner[name] = tbl
    try:
        for name, size in conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
            sizes[name] = size
    except sqlite3.OperationalError:  # SQLite built without dbstat: sizes unknown (0)
        pass
    out = []
    for table in tables:
        rows = conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
        index_bytes = sum(size for name, size in sizes.items() if owner.get(name) == table and name != table)
        out.append(DbTable(name=table, rows=rows, size_bytes=sizes.get(table, 0), index_bytes=index_bytes))
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    page_count = conn.execute("PRAGMA page_count").fetchone()[0]
    freelist = conn.execute("PRAGMA freelist_count").fetchone()[0]
    journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    return out, page_size, page_count, freelist, journal


def _pg_stats(conn: Any, *, telemetry: bool) -> tuple[list[DbTable], int]:
    """PostgreSQL: the tables of one store (logs and spans are the telemetry store's) with
    pg_table_size / pg_indexes_size, and the database's size."""
    from llmgine_daemon.store.obs_migrations import TELEMETRY_TABLES

    out = []
    for name, size, index_bytes in conn.execute(
        "SELECT c.relname, pg_table_size(c.oid), pg_indexes_size(c.oid) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind = 'r' ORDER BY c.relname"
    ).fetchall():
        if (name in TELEMETRY_TABLES) != telemetry:
            continue
        rows = conn.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0]
        db = "telemetry" if telemetry else "main"
        out.append(DbTable(name=name, rows=rows, size_bytes=size, index_bytes=index_bytes, database=db))
    total = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return out, total


async def _stats_pg(store: Store, telemetry: Store, retention: dict[str, Any] | None) -> DbStats:
    tables, total = await store.read(partial(_pg_stats, telemetry=False))
    tables += (await telemetry.read(partial(_pg_stats, telemetry=True)))[0]
    return DbStats(
        backend=store.backend,
        path=store.describe(),
        size_bytes=total,
        file_bytes={"db": total},
        page_size=8192,
        page_count=total // 8192,
        freelist_pages=0,
        journal_mode="wal",
        synchronous="on",
        tables=tables,
        retention=retention or {},
        telemetry_path=telemetry.describe(),
    )


async def stats(store: Store, telemetry: Store, retention: dict[str, Any] | None = None) -> DbStats:
    """Sizes and row counts per table of both databases (main and telemetry), read on their
    reader connections (never blocks writes). Pages and modes are the main database's. On
    PostgreSQL: one database holds both; sizes from pg_table_size and pg_database_size."""
    if store.backend == "postgresql":
        return await _stats_pg(store, telemetry, retention)
    tables, page_size, page_count, freelist, journal = await store.read(_stats)
    tables += [msgspec.structs.replace(t, database="telemetry") for t in (await telemetry.read(_stats))[0]]
    files = store.file_sizes() | {f"telemetry_{k}": n for k, n in telemetry.file_sizes().items()}
    return DbStats(
        backend="sqlite",
        path=str(store.path),
        size_bytes=sum(files.values()),
        file_bytes=files,
        page_size=page_size,
        page_count=page_count,
        freelist_pages=freelist,
        journal_mode=journal,
        synchronous=store.synchronous.lower(),
        tables=tables,
        retention=retention or {},
        telemetry_path=str(telemetry.path),
    )


def _vacuum(conn: sqlite3.Connection) -> None:
    conn.execute("VACUUM")
    # VACUUM writes the new copy through the WAL; give the space back to the file system.
    # The store's background checkpointer may be in a checkpoint of its own just then, or a
    # reader on an old snapshot (ours is answered "busy"): try again for a moment - without the
    # busy timeout, which would make each try wait seconds while every write waits for us.
    (timeout_ms,) = conn.execute("PRAGMA busy_timeout").fetchone()
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        deadline = time.monotonic() + VACUUM_CHECKPOINT_S
        while conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]:
            if time.monotonic() > deadline:
                log.warning("vacuum: the write-ahead log could not be truncated (a reader held it)")
                return
            time.sleep(0.01)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout_ms)}")


def _vacuum_pg(conn: Any) -> None:
    conn.execute("VACUUM (ANALYZE)")


async def vacuum(*stores: Store) -> VacuumResult:
    """Rebuild the database files, one after the other (each between two of its write batches:
    its writes wait meanwhile)."""
    before = sum(store.size_bytes() for store in stores)
    t0 = time.perf_counter()
    for store in stores:
        # PostgreSQL: a plain VACUUM (space for reuse, not handed back; autovacuum does it too).
        await store.run_alone(_vacuum if store.backend == "sqlite" else _vacuum_pg)
    duration = round((time.perf_counter() - t0) * 1000.0, 3)
    after = sum(store.size_bytes() for store in stores)
    return VacuumResult(
        before_bytes=before, after_bytes=after, reclaimed_bytes=max(0, before - after), duration_ms=duration
    )


# -- retention ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """Keep rows of ``table`` younger than ``days`` and at most ``rows`` of them (0 = no bound).

    ``key`` is the table's increasing id column; ``age`` its time column and ``cutoff`` turns
    a wall-clock time (seconds since the epoch) into a value comparable with it.
    """

    table: str
    key: str
    age: str
    days: float
    rows: int
    cutoff_iso: bool = True
    database: str = "main"  # or "telemetry" (logs and spans: store/telemetry.py)


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(seconds))


def _prune_old(conn: sqlite3.Connection, rule: Rule, cutoff: Any) -> int:
    rows = conn.execute(
        f"SELECT {rule.key}, {rule.age} FROM {rule.table} ORDER BY {rule.key} LIMIT ?", (PRUNE_BATCH,)
    ).fetchall()
    last = None
    for key, age in rows:
        if age >= cutoff:
            break
        last = key
    if last is None:
        return 0
    return conn.execute(f"DELETE FROM {rule.table} WHERE {rule.key} <= ?", (last,)).rowcount


def _prune_below(conn: sqlite3.Connection, rule: Rule, keep_from: int) -> int:
    """Delete up to PRUNE_BATCH of the rows whose key is below ``keep_from``."""
    row = conn.execute(
        f"SELECT MAX({rule.key}) FROM (SELECT {rule.key} FROM {rule.table} WHERE {rule.key} < ?"
        f" ORDER BY {rule.key} LIMIT ?) AS batch",
        (keep_from, PRUNE_BATCH),
    ).fetchone()
    if row is None or row[0] is None:
        return 0
    return conn.execute(f"DELETE FROM {rule.table} WHERE {rule.key} <= ?", (row[0],)).rowcount


def _keep_from(conn: sqlite3.Connection, rule: Rule) -> int | None:
    """The smallest key that the row limit keeps (None: under the limit)."""
    row = conn.execute(
        f"SELECT {rule.key} FROM {rule.table} ORDER BY {rule.key} DESC LIMIT 1 OFFSET ?", (rule.rows - 1,)
    ).fetchone()
    return None if row is None else row[0]


class Retention:
    """The background pruner: one pass every ``interval`` seconds (and one at start-up)."""

    def __init__(self, stores: dict[str, Store], rules: list[Rule], interval: float) -> None:
        self.stores = stores  # by Rule.database
        self.rules = [r for r in rules if r.days > 0 or r.rows > 0]
        self.interval = interval
        self.pruned: dict[str, int] = {r.table: 0 for r in rules}
        self.last_run: float | None = None
        self._task: asyncio.Task[None] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval,
            "rules": {r.table: {"days": r.days, "rows": r.rows} for r in self.rules},
            "pruned_since_start": dict(self.pruned),
        }

    def start(self) -> None:
        if self.rules and self._task is None:
            # A fresh context: retention's writes are the daemon's own and must not join the
            # trace (or carry the request id) of whatever started the daemon.
            self._task = asyncio.create_task(self._loop(), name="llmgine-retention", context=contextvars.Context())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except StorageError as exc:  # busy or full: try again next time
                log.warning("retention pass failed: %s", exc)
            except Exception:
                log.exception("retention pass failed")
            await asyncio.sleep(self.interval)

    async def run_once(self) -> dict[str, int]:
        """Prune every table down to its bounds, in small writes; returns rows deleted."""
        now = time.time()
        deleted: dict[str, int] = {}
        for rule in self.rules:
            store = self.stores[rule.database]
            n = 0
            if rule.days > 0:
                cutoff: Any = now - rule.days * 86400
                if rule.cutoff_iso:
                    cutoff = _iso(cutoff)
                n += await self._repeat(store, lambda conn, rule=rule, cutoff=cutoff: _prune_old(conn, rule, cutoff))
            if rule.rows > 0:
                keep_from = await store.read(partial(_keep_from, rule=rule))
                if keep_from is not None:
                    n += await self._repeat(
                        store, lambda conn, rule=rule, keep=keep_from: _prune_below(conn, rule, keep)
                    )
            deleted[rule.table] = n
            self.pruned[rule.table] = self.pruned.get(rule.table, 0) + n
            if n:
                log.info("retention: pruned %d row(s) of %s", n, rule.table)
        self.last_run = now
        return deleted

    @staticmethod
    async def _repeat(store: Store, fn: Any) -> int:
        total = 0
        while True:
            n: int = await store.write(fn, heavy=True)
            total += n
            if n < PRUNE_BATCH:
                return total
            await asyncio.sleep(PRUNE_PAUSE_S)


def rules_from(settings: Any) -> list[Rule]:
    return [
        Rule(
            "events",
            "seq",
            "timestamp",
            settings["database.event_retention_days"],
            settings["database.event_retention_rows"],
        ),
        Rule(
            "logs",
            "id",
            "timestamp",
            settings["observability.log_retention_days"],
            settings["observability.log_retention_rows"],
            database="telemetry",
        ),
        Rule(
            "spans",
            "id",
            "start_unix",
            settings["observability.trace_retention_days"],
            settings["observability.trace_retention_spans"],
            cutoff_iso=False,
            database="telemetry",
        ),
    ]
