"""PostgreSQL storage (``DATABASE_URL=postgresql://...``): the same interface as store/db.py's
SQLite store, so the bus's write and read functions run unchanged on either.

The driver is psycopg 3, its synchronous connection, imported only when such a URL is given
(the SQLite path never loads it). Why not asyncpg: the bus's writes are plain functions
``fn(conn)`` making several ``conn.execute(sql, params)`` calls and reading cursors, run by the
store's writer inside a group-commit transaction. psycopg's ``Connection.execute`` returns a
cursor with ``fetchone``/``fetchall``/``rowcount`` like sqlite3's, so those functions run as they
are, in one worker thread, one thread hop per batch; with asyncpg every one of them would be a
coroutine (bench/pg_driver.py measured both: docs/architecture.md has the figures).

- Writes: one writer connection and one thread. A batch runs in ONE transaction, each write in
  its own SAVEPOINT (a failing write is rolled back alone), and the callers' futures resolve
  after COMMIT returned: acknowledged = committed, as on SQLite. ``lock_timeout`` is the
  busy timeout: a write that waits longer for a row lock fails with StorageBusy (503).
- Reads: a few connections in autocommit, each used by one thread at a time; ``read_point`` is
  ``read`` (there is no in-process fast path over a network).
- The statements: ``PgConnection`` hands the bus a connection that translates SQLite's dialect
  (``?`` placeholders and the few other points: store/dialect.py), offers ``executemany`` and
  ``cursor.lastrowid``, stores Python booleans as 0/1 and reads NUMERIC (SUM, AVG) as int or
  float, as SQLite gives them.
- Errors: unique violations and other constraint failures, serialization failures and lock
  timeouts, a full disk, a lost connection map to store/errors.py's classes, so the API
  answers the same codes on both backends (store/pg_connect.py, with ``connect``). A lost
  connection is opened again on next use. A statement the server leaves unanswered past
  busy_timeout + STALL_GRACE_S has its connection cut (``_watch``): a frozen server never holds
  the writer or a reader for ever.
- Schema: store/pg_schema.py, applied at ``open`` under an advisory lock.
- Telemetry (logs and spans) lives in the same database, in a store of its own (its own
  writer connection and thread), as on SQLite it has a file of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from llmgine_daemon.aio import cancel_and_wait
from llmgine_daemon.store import db as _db  # noqa: F401 - registers every migration module db.py does
from llmgine_daemon.store import pg_cluster, pg_schema
from llmgine_daemon.store.base import BaseStore, QueueItem, T, _Alone, unwrap
from llmgine_daemon.store.dialect import numbered, translate
from llmgine_daemon.store.errors import StorageError, StorageUnavailable
from llmgine_daemon.store.pg_connect import classify, connect, redact, url_connect_timeout
from llmgine_daemon.store.pg_outage import Outage
from llmgine_daemon.store.rows import Deferred
from psycopg.pq import TransactionStatus

log = logging.getLogger("llmgine.store")

READERS = 4
# A statement of a write transaction the server has not answered after busy_timeout plus this
# (seconds) is given up: its connection is cut (PgStore._commit_batch). Looked at this often.
STALL_GRACE_S = 15.0
WATCH_EVERY_S = 1.0
# Once the daemon is stopping (``PgStore.stopping``): a statement unanswered for this long is
# given up (as above) unless a new connection finds the server answering (then it may be
# waiting for a lock: it gets the usual limit), a new connection waits at most
# STOP_CONNECT_TIMEOUT_S (libpq's least),
# and once one could not be made none is tried again, so what is still queued fails at once.
# A stop with the server unreachable took a connect_timeout (10 s) per queued write, and the
# watchdog's busy_timeout + 15 s for a statement on its way. Nothing fails that committed:
# writes are still acknowledged only after COMMIT returned (or txid_status said committed).
STOP_STALL_S = 2.0
STOP_CONNECT_TIMEOUT_S = 2
SIZE_REFRESH_S = 10.0


class PgCursor:
    """A psycopg cursor with sqlite3's ``lastrowid`` (the identity value the insert took: the
    row its ``RETURNING`` gave, for an insert of an event, else ``lastval()``)."""

    __slots__ = ("_cur", "_returned")

    def __init__(self, cur: psycopg.Cursor[Any], returned: bool = False) -> None:
        self._cur = cur
        self._returned = returned

    @property
    def lastrowid(self) -> int | None:
        if self._returned:
            row = self._cur.fetchone()
            self._returned = False
        else:
            row = self._cur.connection.execute("SELECT lastval()").fetchone()
        return None if row is None else int(row[0])

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    @property
    def description(self) -> Any:
        return self._cur.description

    def fetchone(self) -> Any:
        return self._cur.fetchone() if self._cur.description is not None else None

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall() if self._cur.description is not None else []

    def fetchmany(self, size: int = 1) -> list[Any]:
        return self._cur.fetchmany(size)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cur) if self._cur.description is not None else iter(())


_EVENT_INSERT = "INSERT INTO events ("


class PgConnection:
    """What the bus's functions get on PostgreSQL (see the module docstring)."""

    def __init__(self, raw: psycopg.Connection[Any], column_types: Callable[[str], dict[str, str]]) -> None:
        self.raw = raw
        self._types = column_types
        self._cache: dict[tuple[str, bool], str] = {}
        # When the statement now on its way was sent (monotonic), 0.0 when none is: the
        # writer's watchdog (PgStore._commit_batch) gives up on a server that stopped answering.
        self.waiting_since = 0.0

    def _timed(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, a statement on its way: ``waiting_since`` is set while it runs."""
        self.waiting_since = time.monotonic()
        try:
            return fn(*args)
        finally:
            self.waiting_since = 0.0

    def run(self, sql: str) -> psycopg.Cursor[Any]:
        """``sql`` as it is (several statements, no parameters), timed for the watchdog."""
        return self._timed(self.raw.execute, sql)

    def cut(self) -> None:
        """End the connection from another thread: its socket is shut down, so the statement
        waiting on it fails at once (OperationalError) and the connection is broken."""
        with contextlib.suppress(OSError, psycopg.Error):
            sock = socket.socket(fileno=os.dup(self.raw.fileno()))
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.close()

    def _sql(self, sql: str, params: bool) -> str:
        key = (sql, params)
        text = self._cache.get(key)
        if text is None:
            text = self._cache[key] = translate(sql, params=params, column_types=self._types)
        return text

    def execute(self, sql: str, params: Any = ()) -> PgCursor:
        return self._timed(self._execute, sql, params)

    def _execute(self, sql: str, params: Any) -> PgCursor:
        if params:
            text = self._sql(sql, True)
            if numbered(text) and not isinstance(params, dict):
                params = {f"p{i}": value for i, value in enumerate(params, 1)}
            if text.startswith(_EVENT_INSERT) and "RETURNING" not in text:
                # Its seq comes back with it: no ``SELECT lastval()`` after (one round trip).
                return PgCursor(self.raw.execute(text + " RETURNING seq", params), returned=True)
            return PgCursor(self.raw.execute(text, params))
        return PgCursor(self.raw.execute(self._sql(sql, False)))

    def executemany(self, sql: str, rows: Any) -> PgCursor:
        cur = self.raw.cursor()
        self._timed(cur.executemany, self._sql(sql, True), list(rows))
        return PgCursor(cur)

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != TransactionStatus.IDLE


# -- errors ---------------------------------------------------------------------------------

# -- the store ------------------------------------------------------------------------------


class PgStore(BaseStore):
    backend = "postgresql"

    def __init__(self, url: str, busy_timeout: float = 5.0, *, telemetry: bool = False, readers: int = READERS) -> None:
        super().__init__(busy_timeout, telemetry=telemetry)
        self.url = url
        self.path = redact(url)  # what messages and the status show
        self.readers = max(1, readers)
        self._writer_exec: ThreadPoolExecutor | None = None
        self._reader_exec: ThreadPoolExecutor | None = None
        self._writer: PgConnection | None = None
        self._idle: queue.SimpleQueue[PgConnection] = queue.SimpleQueue()
        self._slots: asyncio.Semaphore | None = None
        self._columns: dict[str, dict[str, str]] = {}
        self._columns_lock = threading.Lock()
        self._size = 0
        self._size_task: asyncio.Task[None] | None = None
        self._stopping = False
        # Why no connection is tried any more (one failed while stopping); None until then.
        self._gone: str | None = None
        self._outage = Outage(log)  # failures to connect, said once per outage

    def describe(self) -> str:
        return self.path

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._writer_exec = ThreadPoolExecutor(1, thread_name_prefix="llmgine-pg-writer")
        self._reader_exec = ThreadPoolExecutor(self.readers, thread_name_prefix="llmgine-pg-reader")
        try:
            await loop.run_in_executor(self._writer_exec, self._open_writer)
        except BaseException:
            await self.close()
            raise
        self._slots = asyncio.Semaphore(self.readers)
        self._task = asyncio.create_task(self._write_loop(), name="llmgine-store-writer")
        if not self.telemetry:
            self._size_task = asyncio.create_task(self._size_loop(), name="llmgine-store-size")

    def _open_writer(self) -> None:
        raw = connect(self.url, autocommit=False)
        try:
            applied = pg_schema.apply(raw, telemetry=self.telemetry)
            raw.commit()
            raw.autocommit = True
            raw.execute("SELECT set_config('lock_timeout', %s, false)", (f"{max(1, int(self.busy_timeout * 1000))}ms",))
        except psycopg.Error as exc:
            raw.close()
            raise StorageError(f"{self.path}: preparing the schema: {classify(exc)}") from None
        except BaseException:
            raw.close()
            raise
        if applied:
            log.info("applied migrations %s to %s", applied, self.path)
            if not self.telemetry and (running := pg_cluster.running_during_migration(raw)) is not None:
                log.warning("%s", running)
        self._size = raw.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
        self._writer = PgConnection(raw, self._column_types)

    def stopping(self) -> None:
        self._stopping = True

    def _connect(self) -> psycopg.Connection[Any]:
        """A new connection (autocommit); while stopping, within STOP_CONNECT_TIMEOUT_S, and
        none at all once one failed then (StorageUnavailable at once)."""
        if self._gone is not None:
            raise StorageUnavailable(self._gone)
        try:
            return connect(self.url, timeout=STOP_CONNECT_TIMEOUT_S if self._stopping else None)
        except StorageUnavailable as exc:
            if self._stopping:
                self._gone = f"{exc} (the daemon is stopping: not tried again)"
            raise

    async def close(self) -> None:
        await cancel_and_wait(self._size_task)
        self._size_task = None
        if self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None
        for ex in (self._writer_exec, self._reader_exec):
            if ex is not None:
                ex.shutdown(wait=True)
        self._writer_exec = self._reader_exec = None
        conns = [self._writer] if self._writer is not None else []
        while not self._idle.empty():
            conns.append(self._idle.get_nowait())
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.raw.close()
        self._writer = None

    def _column_types(self, table: str) -> dict[str, str]:
        """``{column: type}`` of a table, read once (dialect.py casts JSON items with them)."""
        with self._columns_lock:
            if table not in self._columns:
                with self._connect() as conn:
                    rows = conn.execute(
                        "SELECT column_name, data_type FROM information_schema.columns"
                        " WHERE table_schema = current_schema() AND table_name = %s",
                        (table,),
                    ).fetchall()
                self._columns[table] = {name: kind for name, kind in rows}
            return self._columns[table]

    # -- writes ------------------------------------------------------------------------

    def _writer_conn(self) -> PgConnection:
        """The writer connection; made again if it was lost."""
        conn = self._writer
        if conn is None or conn.raw.closed or conn.raw.broken:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.raw.close()
            raw = self._connect()
            raw.execute("SELECT set_config('lock_timeout', %s, false)", (f"{max(1, int(self.busy_timeout * 1000))}ms",))
            conn = self._writer = PgConnection(raw, self._column_types)
        return conn

    async def _commit_batch(self, batch: list[QueueItem], heavy: bool) -> None:
        started_wall, started = time.time(), time.perf_counter()
        failure: BaseException | None = None
        loop = asyncio.get_running_loop()
        try:
            done = loop.run_in_executor(self._writer_exec, self._transaction, batch)
            outcomes = await self._watch(done, lambda: self._writer, "the writer's")
            self.transactions += 1
            self.writes += len(batch)
            self._outage.committed()
        except Exception as exc:  # the whole transaction failed (COMMIT, a lost connection)
            err = classify(exc)
            self._outage.failure(err, len(batch))
            outcomes = [(False, err)] * len(batch)
            failure = err
        self._settle(batch, outcomes, started_wall, started, failure)

    async def _watch(self, done: asyncio.Future[T], current: Callable[[], PgConnection | None], whose: str) -> T:
        """``done``'s result, watching the connection ``current()`` it runs on: a server that
        stopped answering (frozen, its disk hung, a network that drops packets silently) held a
        writer or a reader, and everything queued behind it, for ever. A statement unanswered
        for longer than any lock wait (lock_timeout = busy_timeout) plus STALL_GRACE_S has its
        connection cut: the statement fails as for a lost connection; unless the server, asked
        on a new connection, is still running it (a very large write, a slow disk: cut, it
        failed, and its backend held its locks until it ended), then it is asked again a limit
        later."""
        cut: set[int] = set()
        answered = 0.0  # the ``waiting_since`` of a statement the server was found answering
        running = 0.0  # when the server last said the statement was still running (monotonic)
        while not done.done():
            try:
                await asyncio.wait({done}, timeout=WATCH_EVERY_S)
                conn = current()
                since = conn.waiting_since if conn is not None else 0.0
                limit = self.busy_timeout + STALL_GRACE_S
                if self._stopping and since and since != answered and time.monotonic() - since > STOP_STALL_S:
                    # Stopping: a server that does not answer is given up at once, but one
                    # that does may hold the statement in a lock wait (another node's
                    # transaction) or on a long write: that one goes on, as without the stop.
                    if await asyncio.get_running_loop().run_in_executor(None, self._answers):
                        answered = since
                    else:
                        limit = STOP_STALL_S
                stalled = bool(since) and time.monotonic() - max(since, running) > limit
                if stalled and conn and not self._stopping and id(conn) not in cut and await self._still_running(conn):
                    running = time.monotonic()
                    log.warning("a statement has run for %.0f s; the server is still running it", running - since)
                    continue
            except asyncio.CancelledError:
                done.cancel()  # as awaiting it would: its outcome is nobody's now
                conn = current()
                if self._stopping and conn is not None and conn.waiting_since:
                    # Nobody watches it any more: a statement still on its way at a stop
                    # would hold its thread, and the stop, until the keepalives gave up.
                    conn.cut()
                raise
            # (Not if it ended while the server was asked: the connection may be in use again.)
            if stalled and conn is not None and conn.waiting_since == since:
                if id(conn) not in cut:
                    cut.add(id(conn))
                    waited = time.monotonic() - since
                    log.error("the database has not answered for %.0f s: ending %s connection", waited, whose)
                    conn.cut()
        return done.result()

    async def _still_running(self, conn: PgConnection) -> bool:
        """Is the server still running the statement on ``conn`` (its backend ``active``, asked
        on a new connection within its connect timeout)? False if it cannot say in time."""

        def ask() -> bool:
            with self._connect() as probe:
                pid = conn.raw.info.backend_pid
                row = probe.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
            return row is not None and row[0] == "active"

        try:
            run = asyncio.get_running_loop().run_in_executor(None, ask)
            return await asyncio.wait_for(run, url_connect_timeout(self.url) + 5)
        except (StorageError, psycopg.Error, TimeoutError):
            return False

    def _answers(self) -> bool:
        """Does the server answer a new connection now (within STOP_CONNECT_TIMEOUT_S while
        stopping)? Once it did not, no connection is tried again (``_connect``)."""
        try:
            with self._connect() as probe:
                probe.execute("SELECT 1")
        except (StorageError, psycopg.Error):
            return False
        return True

    def _transaction(self, batch: list[QueueItem]) -> list[tuple[bool, Any]]:
        """The batch in one transaction, a savepoint per write (writer thread). The statements
        between two writes go in one round trip (no parameters: the simple protocol takes
        several): ``BEGIN`` with the transaction's id, the first statements and the first
        savepoint, then per write its release with the next savepoint (or the last statements
        and ``COMMIT``).

        A lost connection (a server restart, a failover, an idle connection ended):
        - found at ``BEGIN``: no write has run, nothing can have committed; the batch is tried
          once more on a new connection (the first write after a restart used to be a 503).
        - during the writes: the server rolls an unfinished transaction back; all fail (503).
        - during ``COMMIT``: it may have committed or not. A new connection asks the server
          (``txid_status`` of the transaction's id) for up to busy_timeout: committed, the
          writes are acknowledged as they would have been; rolled back, they fail (503); no
          answer (the server stays down), they fail with StorageUnavailable saying the outcome
          is unknown (docs/durability.md)."""
        conn = self._writer_conn()
        try:
            xid = self._begin(conn)
        except psycopg.Error:
            if not (conn.raw.broken or conn.raw.closed):
                raise
            log.info("the writer connection was lost before BEGIN; trying the batch on a new one")
            conn = self._writer_conn()
            xid = self._begin(conn)
        raw = conn.raw
        finish = "; ".join(("RELEASE SAVEPOINT w", *self.last_statements, "COMMIT"))
        committing = False
        try:
            outcomes: list[tuple[bool, Any]] = []
            last = len(batch) - 1
            for i, (fn, _, ctx, _) in enumerate(batch):
                after = finish if i == last else "RELEASE SAVEPOINT w; SAVEPOINT w"
                try:
                    value = ctx.run(unwrap(fn), conn)  # type: ignore[arg-type]  # never an _Alone here
                    if isinstance(value, Deferred):  # its rows, inserted here and now
                        value = ctx.run(value.insert, conn)
                except Exception as exc:
                    if raw.broken or raw.closed:
                        raise
                    outcomes.append((False, classify(exc)))
                    after = "ROLLBACK TO SAVEPOINT w; " + after
                else:
                    outcomes.append((True, value))
                committing = i == last
                conn.run(after)
            if not batch:
                committing = True
                conn.run(finish)
        except BaseException as exc:
            if not raw.broken and not raw.closed:
                with contextlib.suppress(psycopg.Error):
                    raw.execute("ROLLBACK")
                raise
            if committing and isinstance(exc, psycopg.Error) and self._committed(xid, exc):
                return outcomes
            raise
        return outcomes

    def _begin(self, conn: PgConnection) -> int:
        """Open the batch's transaction; its id (``txid_current()``, assigned here rather than
        at the first write: the same cost, and known before ``COMMIT`` is sent)."""
        raw = conn.raw
        try:
            cur = conn.run("; ".join(("BEGIN", "SELECT txid_current()", *self.first_statements, "SAVEPOINT w")))
        except BaseException:
            if not raw.broken and not raw.closed:  # e.g. a lock timeout in first_statements
                with contextlib.suppress(psycopg.Error):
                    raw.execute("ROLLBACK")
            raise
        cur.nextset()
        return int(cur.fetchone()[0])  # type: ignore[index]

    def _committed(self, xid: int, lost: psycopg.Error) -> bool:
        """After the connection was lost during ``COMMIT``: did transaction ``xid`` commit?
        True if it did; False if it was rolled back; StorageUnavailable if the server could not
        tell within busy_timeout (it stays down, or the transaction is still finishing)."""
        deadline = time.monotonic() + max(1.0, self.busy_timeout)
        reason = str(classify(lost))
        while True:
            try:
                with self._connect() as probe:
                    status = probe.execute("SELECT txid_status(%s)", (xid,)).fetchone()[0]  # type: ignore[index]
            except (StorageError, psycopg.Error) as exc:
                status, reason = None, str(exc)
            if status in ("committed", "aborted"):
                log.warning("the connection was lost during COMMIT; the transaction was %s", status)
                return bool(status == "committed")
            if time.monotonic() >= deadline or self._gone is not None:
                raise StorageUnavailable(
                    "the connection was lost during COMMIT and the server could not say whether the"
                    f" transaction committed (it may have): {reason}"
                ) from None
            time.sleep(0.1)

    async def _run_alone(self, item: QueueItem) -> None:
        alone, future, ctx, _ = item
        assert isinstance(alone, _Alone)
        loop = asyncio.get_running_loop()
        try:
            value = await loop.run_in_executor(self._writer_exec, lambda: ctx.run(self._alone_once_more, alone.fn))
        except Exception as exc:
            if not future.done():
                future.set_exception(classify(exc))
        else:
            if not future.done():
                future.set_result(value)

    def _alone_once_more(self, fn: Callable[[Any], T]) -> T:
        """``fn`` on the writer connection; once more on a new one if that one was lost (a
        server restart since the last write: `db vacuum` was a 503 there). Run-alone functions
        are maintenance that is safe to repeat (``run_alone``)."""
        conn = self._writer_conn()
        try:
            return fn(conn)
        except psycopg.Error:
            if not (conn.raw.broken or conn.raw.closed):
                raise
            log.info("the writer connection was lost; running the maintenance statement on a new one")
        return fn(self._writer_conn())

    # -- reads -------------------------------------------------------------------------

    async def read(self, fn: Callable[[Any], T]) -> T:
        """Run a read-only ``fn`` on one of the reader connections (in autocommit)."""
        if self._slots is None or self._reader_exec is None:
            raise StorageError("the store is closed")
        async with self._slots:
            loop = asyncio.get_running_loop()
            using: list[PgConnection] = []  # the connection the read is on (the last one)
            try:
                done = loop.run_in_executor(self._reader_exec, self._read, fn, using)
                value = await self._watch(done, lambda: using[-1] if using else None, "a reader's")
            except StorageUnavailable as exc:
                self.unreachable = str(exc)
                raise
            self.unreachable = None
            return value

    def _read(self, fn: Callable[[Any], T], using: list[PgConnection]) -> T:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = PgConnection(self._connect(), self._column_types)
            using.append(conn)
            return self._read_on(conn, fn)
        using.append(conn)
        try:
            return self._read_on(conn, fn)
        except StorageError:
            if not conn.raw.broken:
                raise
        # An idle connection the server ended while it waited (a restart, a failover): the read
        # is tried once more on a new one, rather than failing one request per idle connection.
        conn = PgConnection(self._connect(), self._column_types)
        using.append(conn)
        return self._read_on(conn, fn)

    def _read_on(self, conn: PgConnection, fn: Callable[[Any], T]) -> T:
        try:
            return fn(conn)
        except psycopg.Error as exc:
            raise classify(exc) from exc
        finally:
            if conn.raw.closed or conn.raw.broken:
                with contextlib.suppress(Exception):
                    conn.raw.close()
            else:
                self._idle.put(conn)

    async def read_point(self, fn: Callable[[Any], T]) -> T:
        return await self.read(fn)

    # -- sizes -------------------------------------------------------------------------

    async def _size_loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self._size = await self.read(
                    lambda c: c.execute("SELECT pg_database_size(current_database())").fetchone()[0]
                )
            await asyncio.sleep(SIZE_REFRESH_S)

    def file_sizes(self) -> dict[str, int]:
        return {"db": self._size}

    def size_bytes(self) -> int:
        """The database's size (refreshed every few seconds); the telemetry store shares the
        database and reports 0, so the two add up right."""
        return 0 if self.telemetry else self._size
