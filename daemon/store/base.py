"""What both stores share (SQLite: store/db.py, PostgreSQL: store/postgres.py): the write
queue and its group-commit loop.

Writes are plain functions ``fn(conn) -> T`` (``conn`` a sqlite3.Connection, or on PostgreSQL
an adapter with the same ``execute``/``executemany`` and cursors: store/dialect.py).
``write(fn)`` queues one; the writer task takes everything queued and hands the batch to the
backend's ``_commit_batch``, which runs it inside ONE transaction, each write in its own
savepoint, and resolves each caller's future only after COMMIT returned (``_settle``): what is
acknowledged is committed, on both backends.

A backend implements ``_commit_batch(batch, heavy)``, ``_run_alone(item)``, ``read(fn)`` and
``read_point(fn)`` (plus open/close and its figures).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from llmgine_daemon.store.errors import StorageError, StorageFull, StorageUnavailable

log = logging.getLogger("llmgine.store")

T = TypeVar("T")
WriteFn = Callable[[Any], Any]
# (write function, its caller's future, its caller's context, its deadline): the writer runs
# each function in its caller's contextvars, so code inside a write sees the caller's trace and
# session. The deadline (loop time) is taken when the write is queued: a write waits at most
# busy_timeout for the database IN ALL, however many batches ahead of it wait too.
QueueItem = tuple["WriteFn | _Alone | _Heavy | _Rows", "asyncio.Future[Any]", contextvars.Context, float]
# Store.on_commit(contexts, batch size, wall-clock start, seconds taken, error or None): told
# after every transaction, for metrics and storage-commit spans (observability sets it; the
# store itself imports nothing of it).
CommitHook = Callable[[list[contextvars.Context], int, float, float, BaseException | None], None]

MAX_BATCH = 1024
# Turns of the event loop the writer lets go by, once woken by a write, before it takes the
# batch: the requests that arrived with that write join it. One turn, not two: under a closed
# loop of 32 clients (bench/wrk_http.py) two turns gathered nearly every client into one batch,
# so the loop had nothing to do while that batch committed (80% busy); with one, batches are
# about half as big, the next one's requests are read while this one commits (83-88% busy):
# events per second rose by 5-7% on a quiet machine, commands stayed level (bench/README.md).
GATHER_TURNS = 1


class _Alone:
    """Marks a queued function that runs outside a transaction (``Store.run_alone``)."""

    __slots__ = ("fn",)

    def __init__(self, fn: WriteFn) -> None:
        self.fn = fn


class _Heavy:
    """Marks a queued write that may take long (retention, a purge, a batch of thousands): its
    transaction runs in the connection's thread so the event loop keeps serving meanwhile."""

    __slots__ = ("fn",)

    def __init__(self, fn: WriteFn) -> None:
        self.fn = fn


class _Rows:
    """Marks a queued write that inserts nothing itself but returns its rows (``rows.Deferred``)
    for the store to insert: SQLite's inserts those of a batch together, off the event loop."""

    __slots__ = ("fn",)

    def __init__(self, fn: WriteFn) -> None:
        self.fn = fn


def unwrap(fn: WriteFn | _Heavy | _Rows) -> WriteFn:
    """The write function a queue item's marker holds (``_Heavy``, ``_Rows``), or ``fn``."""
    return fn.fn if isinstance(fn, (_Heavy, _Rows)) else fn


class BaseStore:
    """The write queue and its batching loop; see the module docstring."""

    # "sqlite" or "postgresql" (GET /api/status, `llmgine db stats`).
    backend = ""

    def __init__(self, busy_timeout: float, *, telemetry: bool = False) -> None:
        # The telemetry store (logs and spans) gets its own schema (store/telemetry.py).
        self.telemetry = telemetry
        # How long a write waits for the database before StorageBusy (503), counted from when
        # it was queued.
        self.busy_timeout = max(0.0, busy_timeout)
        self._queue: asyncio.Queue[QueueItem | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # Figures for observability and the benchmarks.
        self.transactions = 0
        self.writes = 0
        # Statements every write transaction runs first (PostgreSQL; SQLite's BEGIN IMMEDIATE
        # already takes its one lock): several nodes lock shared rows in one order, so their
        # group commits never deadlock (store/pg_cluster.py LOCK_FIRST).
        self.first_statements: tuple[str, ...] = ()
        # And last, before COMMIT (store/pg_cluster.py SAVE_HEAD).
        self.last_statements: tuple[str, ...] = ()
        self.on_commit: CommitHook | None = None
        # Why the database could not be reached at the last try (PostgreSQL down or
        # restarting), None once a transaction or read went through again: GET /api/health
        # says "degraded" meanwhile. SQLite's file is never unreachable.
        self.unreachable: str | None = None
        # Why the last write transaction could not store a write (a full disk, the page limit),
        # None once one committed without that: GET /api/health says "degraded" meanwhile.
        self.full: str | None = None
        # Why the database file is damaged (SQLite: malformed, not a database), once a read or
        # write found it so: GET /api/health says "degraded" from then on (it does not heal).
        self.damaged: str | None = None

    def describe(self) -> str:
        """Where the data is, for messages and GET /api/status (never a password)."""
        raise NotImplementedError

    def stopping(self) -> None:
        """The daemon began to stop: give up sooner on a database that does not answer
        (PostgreSQL's store; a file always answers)."""

    def version(self) -> object | None:
        """A value that changes whenever the database may have changed, by this process or any
        other: a read's result may be kept (bus/readcache.py) for as long as it stays equal.
        Taken BEFORE the read, so what is kept is never older than its version. None: not
        known here, keep nothing (PostgreSQL: other nodes write without telling this one)."""
        return None

    async def _commit_batch(self, batch: list[QueueItem], heavy: bool) -> None:
        raise NotImplementedError

    async def _run_alone(self, item: QueueItem) -> None:
        raise NotImplementedError

    async def read(self, fn: Callable[[Any], T]) -> T:
        raise NotImplementedError

    # -- writes ----------------------------------------------------------------------

    async def write(self, fn: Callable[[Any], T], *, heavy: bool = False) -> T:
        """Run ``fn`` in a transaction; returns once that transaction has committed.

        ``heavy``: the write may take long (thousands of rows); its transaction then runs off
        the event loop."""
        return await self.submit(fn, heavy=heavy)

    def submit(
        self,
        fn: Callable[[Any], T],
        *,
        heavy: bool = False,
        future: asyncio.Future[T] | None = None,
        rows: bool = False,
    ) -> asyncio.Future[T]:
        """Queue ``fn`` without waiting: the future resolves after its COMMIT.

        Writes are applied in submission order, so a caller can queue several (an event, then
        the result it belongs to) and await only the last one. ``future``: resolve this one
        (made by a caller that needed it before the write was queued). ``rows``: ``fn`` inserts
        nothing but returns a ``rows.Deferred`` (the store inserts its rows; the future gets
        what its ``finish`` returns).
        """
        if self._task is None:
            raise StorageError("the store is closed")
        loop = asyncio.get_running_loop()
        if future is None:
            future = loop.create_future()
        deadline = loop.time() + self.busy_timeout
        item = _Heavy(fn) if heavy else _Rows(fn) if rows else fn
        self._queue.put_nowait((item, future, contextvars.copy_context(), deadline))
        return future

    async def run_alone(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn`` on the writer connection outside any transaction, between two batches
        (VACUUM, checkpoints: statements that cannot run inside a transaction). ``fn`` must be
        safe to run again: on PostgreSQL it is, once, when the connection turns out lost."""
        if self._task is None:
            raise StorageError("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put_nowait((_Alone(fn), future, contextvars.copy_context(), loop.time() + self.busy_timeout))
        return await future

    async def _write_loop(self) -> None:
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
                # The first write of a wave woke us: let the loop go round once more
                # (GATHER_TURNS), so the requests that arrived with it (and the tasks they
                # start) queue their writes too, and share this transaction.
                for _ in range(GATHER_TURNS):
                    await asyncio.sleep(0)
            if isinstance(item[0], _Alone):
                await self._run_alone(item)
                continue
            # A heavy write's transaction runs in the thread; it takes only heavy writes along,
            # so the others never wait for the GIL there (see the module docstring).
            heavy = isinstance(item[0], _Heavy)
            batch = [item]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                if isinstance(nxt[0], _Alone) or isinstance(nxt[0], _Heavy) != heavy:
                    carry = nxt
                    break
                batch.append(nxt)
            await self._commit_batch(batch, heavy)

    def _settle(
        self,
        batch: list[QueueItem],
        outcomes: list[tuple[bool, Any]],
        started_wall: float,
        started: float,
        failure: BaseException | None,
    ) -> None:
        """Tell the commit hook, then resolve each caller's future."""
        if failure is None:
            self.unreachable = None
        elif isinstance(failure, StorageUnavailable):
            self.unreachable = str(failure)
        full = failure if isinstance(failure, StorageFull) else None
        for ok, value in outcomes if full is None else ():
            if not ok and isinstance(value, StorageFull):
                full = value
                break
        if full is not None:
            self.full = str(full)
        elif failure is None:
            self.full = None
        if self.on_commit is not None:
            try:
                self.on_commit(
                    [item[2] for item in batch], len(batch), started_wall, time.perf_counter() - started, failure
                )
            except Exception:  # observability must never fail a write
                log.exception("commit hook failed")
        for (_, future, _, _), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    # -- reads ---------------------------------------------------------------------------

    async def fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return await self.read(lambda c: c.execute(sql, params).fetchall())

    async def fetchone(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        return await self.read(lambda c: c.execute(sql, params).fetchone())
