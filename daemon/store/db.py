"""SQLite storage: one writer with group commit, one reader, both through aiosqlite.

Writes are plain functions ``fn(conn: sqlite3.Connection) -> T``. ``Store.write(fn)`` queues
one; the writer task takes everything queued and runs the whole batch inside ONE transaction
(one fsync per batch, not per write), and resolves each caller's future only after COMMIT
returned. A failing write is rolled back to its own savepoint, so it fails alone and the rest
of the batch still commits.

Where the statements run: on the event loop itself; only what can block - taking the write
lock when another process holds it, and COMMIT with its fsync - goes to the connection's
thread. A batch with a ``heavy`` write (retention, a purge, thousands of rows) runs whole in
the thread instead, so the loop keeps serving meanwhile. Why not always the thread: every
sqlite3 call releases the GIL, and a thread that wants it back waits until the event loop lets
go - under load the writer thread spent most of a batch waiting for the GIL rather than in
SQLite (bench/README.md). On the loop, a statement costs its few microseconds.

Reads run on a second connection (WAL lets them proceed while the writer commits), in its
thread. Point reads (a session, a command, a page of events) run on a third, read-only
connection right on the event loop (``Store.read_point``): they take microseconds, less than the
thread hop and the GIL hand-over they would otherwise wait for. Two bounds keep them from
stalling the loop: that connection never waits for a lock (busy_timeout 0), and a progress
handler interrupts a read past LOOP_READ_STEPS virtual-machine instructions (a few hundred
microseconds). Either way the read starts over in the reader's thread, so a long scan (a
session of 100,000 events counted for a listing) costs the loop at most that budget once.
SQLite counts a cached statement's steps across all its runs, so the budget is counted per read
(the handler is called every PROGRESS_EVERY steps and counts down), and after an interrupted or
busy read the connection is replaced: Python 3.11's sqlite3 leaves a statement whose reset
reported the error marked in use, and prepares that SQL afresh on every later run (~15 us).

Why ``Connection._execute``: aiosqlite's public API costs a thread hop per statement; a batch
of hundreds of statements would pay hundreds of hops. ``_execute(fn)`` runs one function in
the connection's thread; it is the primitive aiosqlite's own public methods are built on.
pyproject pins aiosqlite below the next minor release for that reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite
from llmgine_daemon.aio import cancel_and_wait
from llmgine_daemon.paths import hold_pid_lock
from llmgine_daemon.store import (
    agent_migrations,  # noqa: F401 - registers migrations 100-109
    cluster_migrations,  # noqa: F401 - registers migrations 120-129
    hook_migrations,  # noqa: F401 - registers migrations 90-99
    lifecycle_migrations,  # noqa: F401 - registers migrations 80-89
    obs_migrations,  # noqa: F401 - registers migrations 40-49
    rows,
    walcheck,
)
from llmgine_daemon.store.base import BaseStore as BaseStore
from llmgine_daemon.store.base import QueueItem, T, _Alone, _Rows, unwrap
from llmgine_daemon.store.errors import (
    DAMAGED_HINT,
    TELEMETRY_DAMAGED_HINT,
    StorageDamaged,
    classify,
    is_busy,
    is_damaged,
)
from llmgine_daemon.store.errors import StorageBusy as StorageBusy
from llmgine_daemon.store.errors import StorageError as StorageError
from llmgine_daemon.store.errors import StorageFull as StorageFull
from llmgine_daemon.store.errors import StorageRefused as StorageRefused
from llmgine_daemon.store.migrations import apply_migrations

log = logging.getLogger("llmgine.store")

# The WAL is copied back into the database by a checkpointer of its own (a third connection),
# at most this often, never inside a COMMIT: SQLite's automatic checkpoint would make every
# thousandth-page COMMIT copy and fsync megabytes while the whole write queue waits on it.
CHECKPOINT_INTERVAL_S = 0.25
# The write-ahead log is cut back to this size when it starts over (journal_size_limit).
WAL_SIZE_LIMIT = 64 * 1024 * 1024
# How long the event loop may keep the GIL while the store's thread waits for it (Python's
# default is 5 ms). The thread needs it back after each blocking call - a COMMIT, a heavy
# write's few statements - and each wait is latency on every write of the batch. Nobody
# waiting, nobody is interrupted: the loop pays nothing otherwise.
GIL_SWITCH_INTERVAL_S = 0.0005
BUSY_TIMEOUT_S = 5.0
# How many SQLite VM instructions one statement of a point read may take on the event loop
# before it is interrupted and the read goes to the reader's thread: counting 20,000 index
# entries takes about 60,000; a page of 50 events about 1,000.
LOOP_READ_STEPS = 20_000
# The progress handler runs every this many VM instructions (of a statement, counted over all its
# runs): a point read of ~100 instructions calls it about once in ten reads.
PROGRESS_EVERY = 1_000
# How often version() looks for commits of other processes (see there).
EXTERNAL_CHECK_S = 0.1


class _Aborted(Exception):
    """The transaction is gone; ``error`` is why (every write of the batch fails with it)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _touch_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does; its -wal/-shm files copy the mode."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def _lock_database(path: Path) -> int:
    """Hold an exclusive ``flock`` on ``<database>.lock`` for the store's life (the descriptor
    returned; closing it lets go, and so does the process's death, ``kill -9`` included).

    One SQLite database serves one daemon: a second one would recover the first one's commands
    at its start (``executing`` ones marked interrupted while they run, queued ones run twice).
    The pidfile does not prevent it (it names the daemon at the home's default socket only, and
    another home may point ``database.url`` at the same file); this lock does, whatever the
    home or socket. Several daemons on one database need PostgreSQL. The file holds the owner's
    pid, for the message."""
    lock_path = path.with_name(path.name + ".lock")
    fd = hold_pid_lock(lock_path)
    if fd is None:
        try:
            owner = lock_path.read_text(errors="replace").split()[:1]
        except OSError:
            owner = []
        who = f"pid {owner[0]}" if owner else "another process"
        raise StorageError(
            f"{path}: in use by another llmgined ({who}); a SQLite database serves one daemon at a time"
            " (several daemons on one database need PostgreSQL)"
        )
    return fd


class Store(BaseStore):
    backend = "sqlite"

    def __init__(
        self,
        path: Path,
        synchronous: str = "full",
        busy_timeout: float = BUSY_TIMEOUT_S,
        *,
        telemetry: bool = False,
    ) -> None:
        super().__init__(busy_timeout, telemetry=telemetry)
        self.path = path
        self.synchronous = synchronous.upper()
        # SQLite takes a C int of milliseconds (about 24.8 days at most): a longer setting waits that long.
        self.busy_timeout_ms = max(0, min(int(busy_timeout * 1000), 2**31 - 1))
        self._writer_conn: aiosqlite.Connection | None = None
        self._reader_conn: aiosqlite.Connection | None = None
        self._loop_conn: sqlite3.Connection | None = None  # point reads, on the event loop
        self._loop_conns = 0  # loop connections opened so far: part of version()
        self.ended = 0  # write transactions ended (committed or not): part of version()
        self._external: int | None = None  # data_version at the last look, and the next look
        self._external_due = 0.0
        self.loop_read_steps = LOOP_READ_STEPS
        self._progress_left = 0  # calls of the progress handler the current point read may take
        # Figures for tests and the benchmarks: point reads served on the loop, and those that
        # went to the reader's thread (too long, or the database was busy).
        self.loop_reads = 0
        self.loop_reads_moved = 0
        self._ckpt_conn: aiosqlite.Connection | None = None
        self._ckpt_task: asyncio.Task[None] | None = None
        self._ckpt_done = 0  # self.transactions at the last checkpoint
        self._lock_fd: int | None = None  # _lock_database's, held while open

    def describe(self) -> str:
        return str(self.path)

    def version(self) -> object | None:
        """This store's own writes: the count of its write transactions that ended, counted
        before anyone who wrote hears of it (so a client that was answered reads its write
        back). Another process's commits (nothing of llmgine writes behind the daemon, but a
        person with ``sqlite3`` may): SQLite's ``data_version`` on the loop's read connection,
        looked at when EXTERNAL_CHECK_S passed since the last look - each look is a read
        transaction, two file-lock system calls, which every GET paid before. The number is
        per connection, so the count of loop connections opened goes with it."""
        conn = self._loop_conn
        if conn is None:
            return None
        now = time.monotonic()
        if now >= self._external_due:
            try:
                self._external = conn.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error:  # busy or closing: unknown, so nothing is kept
                return None
            self._external_due = now + EXTERNAL_CHECK_S
        return (self._loop_conns, self.ended, self._external)

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        if sys.getswitchinterval() > GIL_SWITCH_INTERVAL_S:
            sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        try:
            _touch_private(self.path)
            self._lock_fd = _lock_database(self.path)
            # Before anything is written: SQLite would drop a damaged log's writes in silence.
            checked = walcheck.open_checked(self.path, self.synchronous, best_effort=self.telemetry)
            # Closed before any other connection opens (walcheck.open_checked): its share of the
            # wal-index is no longer locked, and a connection opened beside it would share that
            # unlocked index for the store's life.
            if checked is not None:
                checked.close()
            self._writer_conn = await aiosqlite.connect(self.path, isolation_level=None, check_same_thread=False)
            await self._writer_conn._execute(self._setup_writer)
            self._reader_conn = await aiosqlite.connect(self.path, isolation_level=None, check_same_thread=False)
            await self._reader_conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
            await self._reader_conn.execute("PRAGMA query_only = ON")
            self._loop_conn = self._open_loop_reader()
            self._ckpt_conn = await aiosqlite.connect(self.path, isolation_level=None, check_same_thread=False)
            await self._ckpt_conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
        except (OSError, sqlite3.Error) as exc:
            await self.close()
            hint = ""
            if isinstance(exc, sqlite3.Error) and is_damaged(exc):
                hint = f": {TELEMETRY_DAMAGED_HINT if self.telemetry else DAMAGED_HINT}"
            raise StorageError(f"{self.path}: cannot open database: {exc}{hint}") from None
        except BaseException:
            # Anything else (a schema too new, a cancelled start: Ctrl-C) closes what was
            # opened too: a connection's thread left running keeps the process from exiting.
            await self.close()
            raise
        self._task = asyncio.create_task(self._write_loop(), name="llmgine-store-writer")
        self._ckpt_task = asyncio.create_task(self._checkpointer(), name="llmgine-store-checkpoint")

    def _classified(self, exc: sqlite3.Error) -> Exception:
        """``classify``, remembering a damaged file (GET /api/health: degraded; it never heals)."""
        err = classify(exc)
        if isinstance(err, StorageDamaged):
            err = StorageDamaged(f"{self.path}: {err}")
            self.damaged = str(err)
        return err

    def _setup_writer(self) -> None:
        conn = self._raw(self._writer_conn)
        conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StorageError(f"{self.path}: could not switch to WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        # Savepoint journals (one per write in a batch) stay in memory, not in temp files.
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer does it (see above)
        # The log is cut back to this size when it starts over: without it, the file stayed as
        # large as its largest burst (a reader holding a snapshot, a full disk) until a restart.
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        applied = apply_migrations(conn, telemetry=self.telemetry)
        if applied:
            log.info("applied migrations %s to %s", applied, self.path)

    def _open_loop_reader(self) -> sqlite3.Connection:
        """The read-only connection point reads use on the event loop (after the writer made the
        file WAL, so opening it takes microseconds)."""
        uri = f"{Path(self.path).resolve().as_uri()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        self._loop_conns += 1
        try:
            conn.execute("PRAGMA busy_timeout = 0")  # never wait on the loop: go to the thread
            conn.execute("PRAGMA query_only = ON")
            conn.set_progress_handler(self._stop_long_read, min(PROGRESS_EVERY, max(1, self.loop_read_steps)))
        except BaseException:
            conn.close()
            raise
        return conn

    def _stop_long_read(self) -> int:
        # Called every PROGRESS_EVERY instructions; past the read's budget: interrupt it.
        self._progress_left -= 1
        return 1 if self._progress_left <= 0 else 0

    async def close(self) -> None:
        """Flush every queued write, then close the connections (the last one to close copies
        the WAL into the database)."""
        await cancel_and_wait(self._ckpt_task)
        self._ckpt_task = None
        if self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None
        if self._loop_conn is not None:
            self._loop_conn.close()
            self._loop_conn = None
        for conn in (self._ckpt_conn, self._reader_conn, self._writer_conn):
            if conn is not None:
                try:
                    await conn.close()
                except Exception:  # pragma: no cover - closing a broken connection
                    log.exception("closing database connection")
        self._writer_conn = self._reader_conn = self._ckpt_conn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # the database is closed: another daemon may open it
            self._lock_fd = None

    async def _checkpointer(self) -> None:
        """Copy committed WAL frames into the database now and then (PASSIVE: it never waits
        for, nor blocks, the writer or a reader), in its own connection's thread."""
        conn = self._ckpt_conn
        assert conn is not None
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL_S)
            if self.transactions == self._ckpt_done:
                continue
            done = self.transactions
            try:
                await conn._execute(self._raw(conn).execute, "PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:  # busy, or a full disk: the WAL keeps it; try again later
                log.debug("checkpoint skipped: %s", exc)
                continue
            self._ckpt_done = done

    @staticmethod
    def _raw(conn: aiosqlite.Connection | None) -> sqlite3.Connection:
        assert conn is not None, "store is not open"
        return conn._conn

    # -- writes: write/submit/run_alone and the batching loop are BaseStore's ------------

    async def _run_alone(self, item: QueueItem) -> None:
        alone, future, ctx, _ = item
        assert isinstance(alone, _Alone)
        conn = self._writer_conn
        assert conn is not None
        try:
            value = await conn._execute(ctx.run, alone.fn, self._raw(conn))
        except Exception as exc:
            error: BaseException | None = self._classified(exc) if isinstance(exc, sqlite3.Error) else exc
        else:
            error = None
        self.ended += 1  # before the writer hears of it (version())
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    async def _commit_batch(self, batch: list[QueueItem], heavy: bool) -> None:
        started_wall, started = time.time(), time.perf_counter()
        failure: BaseException | None = None
        try:
            await self._lock(batch, started_wall, started)
            if not batch:
                return  # every write of it reached its deadline waiting for the lock
            if heavy:
                outcomes = await self._writer_conn._execute(self._run_batch, batch)  # type: ignore[union-attr]
            else:
                outcomes = await self._run_batch_inline(batch)
            self.transactions += 1
            self.writes += len(batch)
        except Exception as exc:  # the whole transaction failed (e.g. COMMIT on a full disk)
            err = self._classified(exc) if isinstance(exc, sqlite3.Error) else exc
            log.error("write transaction of %d failed: %s", len(batch), err)
            outcomes = [(False, err)] * len(batch)
            failure = err
        self.ended += 1  # before the writers hear of it (version())
        self._settle(batch, outcomes, started_wall, started, failure)

    async def _lock(self, batch: list[QueueItem], started_wall: float, started: float) -> None:
        """Open the batch's transaction (BEGIN IMMEDIATE); writes that reached their deadline
        meanwhile are failed and taken out of ``batch`` (in place).

        Without another process holding the lock this is one statement on the loop. Otherwise
        the wait goes to the connection's thread, bounded by the EARLIEST deadline of the batch;
        when it runs out, the writes whose deadline passed fail with StorageBusy and the rest
        wait on, up to the next deadline. So no write waits longer than busy_timeout from when
        it was queued, however long the batches before it waited (a write queued behind a
        failing batch used to wait out that batch's timeout, then its own).
        """
        aconn = self._writer_conn
        assert aconn is not None
        conn = self._raw(aconn)
        loop = asyncio.get_running_loop()
        while True:
            if self._begin_now(conn):
                return
            now = loop.time()
            due = [item for item in batch if item[3] <= now]
            if due:
                batch[:] = [item for item in batch if item[3] > now]
                error = StorageBusy(
                    f"the database is locked by another process; gave up after "
                    f"{self.busy_timeout:g}s (database.busy_timeout)",
                    busy_timeout=self.busy_timeout,
                )
                log.warning("%d write(s) gave up waiting for the database lock (%gs)", len(due), self.busy_timeout)
                outcomes: list[tuple[bool, Any]] = []
                for item in due:
                    waited = round(now - (item[3] - self.busy_timeout), 3)
                    outcomes.append((False, StorageBusy(str(error), busy_timeout=self.busy_timeout, waited=waited)))
                self._settle(due, outcomes, started_wall, started, error)
            if not batch:
                return
            earliest = min(item[3] for item in batch)
            try:
                await aconn._execute(self._begin_within, conn, earliest - now)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                # Normally the earliest deadline has passed now: settle those, wait on for the
                # rest. Should SQLite give up early, do not spin on it.
                if loop.time() < earliest:
                    await asyncio.sleep(min(0.05, earliest - loop.time()))
                continue
            return

    def _begin_within(self, conn: sqlite3.Connection, seconds: float) -> None:
        """BEGIN IMMEDIATE, waiting at most ``seconds`` for another process's lock (thread)."""
        conn.execute(f"PRAGMA busy_timeout = {max(1, int(seconds * 1000))}")
        try:
            conn.execute("BEGIN IMMEDIATE")
        finally:
            conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")

    async def _run_batch_inline(self, batch: list[QueueItem]) -> list[tuple[bool, Any]]:
        """The batch's writes run right here on the event loop, in the transaction _lock
        opened; the rows its last writes left to the store (rows.py), then COMMIT with its
        fsync, go to the connection's thread.

        Why not all of it there: every sqlite3 call releases the GIL, and a thread that wants it
        back waits for the event loop to let go (up to the switch interval). A batch of a few
        hundred statements run by Python code in the writer thread spent most of its time
        waiting for the GIL (bench/README.md); an ``executemany`` there took it back after each
        row's step and starved the loop instead. The left rows go in as a few long statements
        planned here (``rows.plan``): the thread binds each and lets go of the GIL for its whole
        step, so those rows go in on the other core while the loop serves requests.
        """
        aconn = self._writer_conn
        assert aconn is not None
        conn = self._raw(aconn)
        outcomes, deferred = self._apply_or_roll_back(conn, batch, leave=True)
        items = [item for _, item in deferred]
        statements, where = rows.prepare(items)
        planned = rows.plan(statements)
        try:
            # The rows writes left to the store (rows.py) go in with the COMMIT, in its thread.
            firsts = await aconn._execute(_insert_and_commit, conn, planned)
        except BaseException:
            if conn.in_transaction:
                await aconn._execute(conn.execute, "ROLLBACK")
            raise
        for (index, _), outcome in zip(deferred, rows.finish(items, where, firsts), strict=True):
            outcomes[index] = outcome
        return outcomes

    def _begin_now(self, conn: sqlite3.Connection) -> bool:
        """BEGIN IMMEDIATE without waiting; False if another process holds the write lock."""
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                return False
            raise
        finally:
            conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
        return True

    def _apply_or_roll_back(
        self, conn: sqlite3.Connection, batch: list[QueueItem], *, leave: bool = False
    ) -> tuple[list[tuple[bool, Any]], list[tuple[int, rows.Deferred]]]:
        """``_apply``; if the transaction itself is lost, roll it back and raise why."""
        try:
            return self._apply(conn, batch, leave)
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, _Aborted):
                raise exc.error from None
            raise

    def _apply(
        self, conn: sqlite3.Connection, batch: list[QueueItem], leave: bool
    ) -> tuple[list[tuple[bool, Any]], list[tuple[int, rows.Deferred]]]:
        """Run each write in its own savepoint inside the open transaction. The rows that writes
        leave to the store (rows.py) go in before the next write that is not one of those, so
        seqs follow the queue's order, or at the end; with ``leave``, those of the last such
        writes are returned instead, (outcome index, rows) each, for the COMMIT to insert."""
        outcomes: list[tuple[bool, Any]] = []
        deferred: list[tuple[int, rows.Deferred]] = []
        for fn, _, ctx, _ in batch:
            if deferred and not isinstance(fn, _Rows):
                self._insert_deferred(conn, deferred, outcomes)
            conn.execute("SAVEPOINT w")
            try:
                value = ctx.run(unwrap(fn), conn)  # type: ignore[arg-type]  # never an _Alone here
            except Exception as exc:
                err = self._classified(exc) if isinstance(exc, sqlite3.Error) else exc
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
                if isinstance(value, rows.Deferred):
                    deferred.append((len(outcomes), value))
                outcomes.append((True, value))
        if deferred and not leave:
            self._insert_deferred(conn, deferred, outcomes)
        return outcomes, deferred

    def _insert_deferred(
        self, conn: sqlite3.Connection, deferred: list[tuple[int, rows.Deferred]], outcomes: list[tuple[bool, Any]]
    ) -> None:
        lost = rows.insert_in_savepoint(conn, deferred, outcomes, self._classified)
        if lost is not None:
            raise _Aborted(lost)

    def _run_batch(self, batch: list[QueueItem]) -> list[tuple[bool, Any]]:
        """The whole transaction, which _lock opened, in the connection's thread (a batch with
        a heavy write)."""
        conn = self._raw(self._writer_conn)
        outcomes, _ = self._apply_or_roll_back(conn, batch)
        try:
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return outcomes

    # -- reads -----------------------------------------------------------------------

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read-only ``fn`` on the reader connection (one thread hop)."""
        conn = self._reader_conn
        if conn is None:
            raise StorageError("the store is closed")
        try:
            result: T = await conn._execute(fn, self._raw(conn))
        except sqlite3.Error as exc:
            raise self._classified(exc) from exc
        return result

    async def read_point(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a short read-only ``fn`` on the event loop, on the read-only connection; if a
        statement runs past ``loop_read_steps`` instructions, or the database is busy, run it
        again in the reader's thread (``read``). For reads of a few rows by key: each statement
        should be an index lookup or a bounded range."""
        conn = self._loop_conn
        if conn is None:
            raise StorageError("the store is closed")
        steps = max(1, self.loop_read_steps)
        self._progress_left = steps // min(PROGRESS_EVERY, steps)
        try:
            result = fn(conn)
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if "interrupted" not in text and not is_busy(exc):
                raise self._classified(exc) from exc
        except sqlite3.Error as exc:
            raise self._classified(exc) from exc
        else:
            self.loop_reads += 1
            return result
        self.loop_reads_moved += 1
        # The failed statement stays marked in use in sqlite3's cache (see the module docstring):
        # a fresh connection (microseconds: the file is WAL already) keeps its SQL cached.
        try:
            self._loop_conn = self._open_loop_reader()
        except sqlite3.Error:  # keep the old one: slower, still right
            log.warning("could not reopen the loop's read connection", exc_info=True)
        else:
            conn.close()
        return await self.read(fn)

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


def _insert_and_commit(conn: sqlite3.Connection, planned: list[rows.Step]) -> list[int]:
    """The rows writes left to the store (none, often), then COMMIT: in the writer's thread."""
    firsts = rows.run(conn, planned)
    conn.execute("COMMIT")
    return firsts
