"""SQLite storage: one writer with group commit, one reader, both through aiosqlite.

Writes are plain functions ``fn(conn: sqlite3.Connection) -> T``. ``Store.write(fn)`` queues
one; the writer task takes everything queued, runs the whole batch inside ONE transaction in
aiosqlite's connection thread (one thread hop and one fsync per batch, not per write), and
resolves each caller's future only after COMMIT returned. A failing write is rolled back to its
own savepoint, so it fails alone and the rest of the batch still commits.

Reads run on a second connection (WAL lets them proceed while the writer commits).

Why ``Connection._execute``: aiosqlite's public API costs a thread hop per statement; a batch
of hundreds of statements would pay hundreds of hops. ``_execute(fn)`` runs one function in
the connection's thread; it is the primitive aiosqlite's own public methods are built on.
pyproject pins aiosqlite below the next minor release for that reason.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
from llmgine_daemon.store import obs_migrations  # noqa: F401 - registers migrations 40-49
from llmgine_daemon.store.migrations import apply_migrations

log = logging.getLogger("llmgine.store")

T = TypeVar("T")
WriteFn = Callable[[sqlite3.Connection], Any]
# (write function, its caller's future, its caller's context): the writer runs each function in
# its caller's contextvars, so code inside a write sees the caller's trace and session.
QueueItem = tuple["WriteFn | _Alone", "asyncio.Future[Any]", contextvars.Context]
# Store.on_commit(contexts, batch size, wall-clock start, seconds taken, error or None): told
# after every transaction, for metrics and storage-commit spans (observability sets it; the
# store itself imports nothing of it).
CommitHook = Callable[[list[contextvars.Context], int, float, float, BaseException | None], None]

MAX_BATCH = 1024
BUSY_TIMEOUT_S = 5.0


class StorageError(Exception):
    """The database could not do what was asked (not a bug in the caller)."""


class StorageBusy(StorageError):
    """Another process holds the database lock longer than the busy timeout."""


class StorageFull(StorageError):
    """The disk (or the database's page limit) is full."""


class _Alone:
    """Marks a queued function that runs outside a transaction (``Store.run_alone``)."""

    __slots__ = ("fn",)

    def __init__(self, fn: WriteFn) -> None:
        self.fn = fn


class _Aborted(Exception):
    """The transaction is gone; ``error`` is why (every write of the batch fails with it)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _classify(exc: sqlite3.Error) -> Exception:
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return StorageBusy(str(exc))
    if "full" in text:
        return StorageFull(str(exc))
    return exc


def _touch_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does; its -wal/-shm files copy the mode."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


class Store:
    def __init__(self, path: Path, synchronous: str = "full", busy_timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = path
        self.synchronous = synchronous.upper()
        # How long a statement waits for another process's lock before StorageBusy (503).
        self.busy_timeout_ms = max(0, int(busy_timeout * 1000))
        self._writer_conn: aiosqlite.Connection | None = None
        self._reader_conn: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[QueueItem | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # Figures for observability and the benchmarks.
        self.transactions = 0
        self.writes = 0
        self.on_commit: CommitHook | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        try:
            _touch_private(self.path)
            self._writer_conn = await aiosqlite.connect(
                self.path, isolation_level=None, check_same_thread=False
            )
            await self._writer_conn._execute(self._setup_writer)
            self._reader_conn = await aiosqlite.connect(
                self.path, isolation_level=None, check_same_thread=False
            )
            await self._reader_conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
            await self._reader_conn.execute("PRAGMA query_only = ON")
        except (OSError, sqlite3.Error) as exc:
            await self.close()
            raise StorageError(f"{self.path}: cannot open database: {exc}") from None
        self._task = asyncio.create_task(self._writer(), name="llmgine-store-writer")

    def _setup_writer(self) -> None:
        conn = self._raw(self._writer_conn)
        conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StorageError(f"{self.path}: could not switch to WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        applied = apply_migrations(conn)
        if applied:
            log.info("applied migrations %s to %s", applied, self.path)

    async def close(self) -> None:
        """Flush every queued write, then close both connections."""
        if self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None
        for conn in (self._writer_conn, self._reader_conn):
            if conn is not None:
                try:
                    await conn.close()
                except Exception:  # pragma: no cover - closing a broken connection
                    log.exception("closing database connection")
        self._writer_conn = self._reader_conn = None

    @staticmethod
    def _raw(conn: aiosqlite.Connection | None) -> sqlite3.Connection:
        assert conn is not None, "store is not open"
        return conn._conn

    # -- writes ----------------------------------------------------------------------

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a transaction; returns once that transaction has committed."""
        return await self.submit(fn)

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue ``fn`` without waiting: the future resolves after its COMMIT.

        Writes are applied in submission order, so a caller can queue several (an event, then
        the result it belongs to) and await only the last one.
        """
        if self._task is None:
            raise StorageError("the store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((fn, future, contextvars.copy_context()))
        return future

    async def run_alone(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the writer connection outside any transaction, between two batches
        (VACUUM, checkpoints: statements that cannot run inside a transaction)."""
        if self._task is None:
            raise StorageError("the store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((_Alone(fn), future, contextvars.copy_context()))
        return await future

    async def _writer(self) -> None:
        stopping = False
        carry: QueueItem | None = None
        while not stopping or carry is not None:
            if carry is not None:
                item, carry = carry, None
            else:
                got = await self._queue.get()
                if got is None:
                    break
                item = got
            if isinstance(item[0], _Alone):
                await self._run_alone(item)
                continue
            batch = [item]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                if isinstance(nxt[0], _Alone):
                    carry = nxt
                    break
                batch.append(nxt)
            await self._commit_batch(batch)

    async def _run_alone(self, item: QueueItem) -> None:
        alone, future, ctx = item
        assert isinstance(alone, _Alone)
        conn = self._writer_conn
        assert conn is not None
        try:
            value = await conn._execute(ctx.run, alone.fn, self._raw(conn))
        except Exception as exc:
            if not future.done():
                future.set_exception(_classify(exc) if isinstance(exc, sqlite3.Error) else exc)
        else:
            if not future.done():
                future.set_result(value)

    async def _commit_batch(self, batch: list[QueueItem]) -> None:
        started_wall, started = time.time(), time.perf_counter()
        failure: BaseException | None = None
        try:
            outcomes = await self._writer_conn._execute(self._run_batch, batch)  # type: ignore[union-attr]
        except Exception as exc:  # the whole transaction failed (e.g. COMMIT on a full disk)
            err = _classify(exc) if isinstance(exc, sqlite3.Error) else exc
            log.error("write transaction of %d failed: %s", len(batch), err)
            outcomes = [(False, err)] * len(batch)
            failure = err
        if self.on_commit is not None:
            try:
                self.on_commit([ctx for _, _, ctx in batch], len(batch), started_wall,
                               time.perf_counter() - started, failure)
            except Exception:  # observability must never fail a write
                log.exception("commit hook failed")
        for (_, future, _), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _run_batch(self, batch: list[QueueItem]) -> list[tuple[bool, Any]]:
        conn = self._raw(self._writer_conn)
        outcomes: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for fn, _, ctx in batch:
                conn.execute("SAVEPOINT w")
                try:
                    value = ctx.run(fn, conn)  # type: ignore[arg-type]  # never an _Alone here
                except Exception as exc:
                    err = _classify(exc) if isinstance(exc, sqlite3.Error) else exc
                    if not conn.in_transaction:
                        # SQLite rolled the whole transaction back by itself (it does for some
                        # SQLITE_FULL and I/O errors): the writes before this one are gone too,
                        # so none of the batch may be acknowledged.
                        raise _Aborted(err) from exc
                    conn.execute("ROLLBACK TO w")
                    conn.execute("RELEASE w")
                    outcomes.append((False, err))
                else:
                    conn.execute("RELEASE w")
                    outcomes.append((True, value))
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, _Aborted):
                raise exc.error from None
            raise
        self.transactions += 1
        self.writes += len(batch)
        return outcomes

    # -- reads -----------------------------------------------------------------------

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read-only ``fn`` on the reader connection (one thread hop)."""
        conn = self._reader_conn
        if conn is None:
            raise StorageError("the store is closed")
        try:
            return await conn._execute(fn, self._raw(conn))
        except sqlite3.Error as exc:
            raise _classify(exc) from exc

    async def fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return await self.read(lambda c: c.execute(sql, params).fetchall())

    async def fetchone(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        return await self.read(lambda c: c.execute(sql, params).fetchone())

    def file_sizes(self) -> dict[str, int]:
        sizes = {}
        for name, suffix in (("db", ""), ("wal", "-wal"), ("shm", "-shm")):
            try:
                sizes[name] = os.stat(f"{self.path}{suffix}").st_size
            except FileNotFoundError:
                sizes[name] = 0
        return sizes

    def size_bytes(self) -> int:
        return sum(self.file_sizes().values())
