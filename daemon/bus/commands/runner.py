"""The command runner: one priority queue per session, one command at a time per session,
sessions in parallel.

In memory it holds only what is not finished yet (a ``Job`` per live command); the store holds
the truth, and a record is changed in memory only after the write describing the change has
committed, so a reader never sees state that a crash could take back.

Round trips are what cost, so the runner saves them where it can:
- an idle session's command is started in the same transaction that queues it (``claim``);
- a finished command's result, the events its handler published meanwhile and the start of
  the session's next command share one transaction;
- events a handler publishes are buffered and written at its next suspension point (or with
  its result), never one transaction each;
- an eager handler's command is run before its submission commits, and stored finished in
  that one write when the handler never suspends (``eager.py``).

Batches run in ``batches.py``; the rows each step writes are in ``records.py``.

Cancellation is explicit: a running job is cancelled only after ``cancel_reason`` was set
(cancel, session ended, batch stopped, timeout, shutdown), so the runner never swallows a
cancellation it did not ask for.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from llmgine_daemon.bus.cluster import LeaseLost
from llmgine_daemon.bus.codec import dumps
from llmgine_daemon.bus.commands.batches import run_batch
from llmgine_daemon.bus.commands.durable import durable_write
from llmgine_daemon.bus.commands.eager import Resume, begin_eager, clean_context, is_admitted, is_refused
from llmgine_daemon.bus.commands.execution import CURRENT, Execution
from llmgine_daemon.bus.commands.jobs import (
    BatchJob,
    Entry,
    Job,
    NotAdmitted,
    Outcome,
    SessionQueue,
    cancelled_outcome,
    command_error,
    failed_outcome,
)
from llmgine_daemon.bus.commands.records import finish_row, start_rows
from llmgine_daemon.bus.commands.runner_waits import Waiting
from llmgine_daemon.bus.errors import handler_not_found
from llmgine_daemon.bus.events import insert_events
from llmgine_daemon.observability import metrics, tracing
from llmgine_daemon.observability.context import reset_fields, set_fields
from llmgine_daemon.protocol import Command, ErrorCode, Event, now_iso
from llmgine_daemon.store.db import StorageError

if TYPE_CHECKING:
    from llmgine_daemon.bus.commands.retries import Retries
    from llmgine_daemon.bus.core import Bus

log = logging.getLogger("llmgine.commands")
T = TypeVar("T")

# How long shutdown waits for cancelled handlers to record their end.
STOP_GRACE_S = 10.0
RETRYABLE = frozenset({"failed", "timed_out"})


class Runner(Waiting):
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.store = bus.store
        self.handlers = bus.handlers
        self.queues: dict[str, SessionQueue] = {}
        self.jobs: dict[str, Job] = {}  # live commands by id
        self.held: dict[str, int] = {}  # their Job.size by session (capacity.check_held)
        self._order = itertools.count()
        self.stopping = False
        self._drain_signal: asyncio.Future[None] | None = None
        self.retry: Retries | None = None  # (retries.py sets it: does a failed command run again)
        metrics.gauge_callback("command_queue_depth", self._queue_depth)

    def _queue_depth(self) -> list[tuple[dict[str, str], float]]:
        depth: dict[str, int] = {}
        for job in self.jobs.values():
            if job.state == "queued":
                depth[job.record.session_id] = depth.get(job.record.session_id, 0) + 1
        return [({"session_id": sid}, float(n)) for sid, n in depth.items()]

    @staticmethod
    def queue_waited(job: Job) -> None:
        metrics.observe("command_queue_wait_seconds", time.monotonic() - job.queued_at, type=job.record.command_type)

    # -- queueing ---------------------------------------------------------------------

    def queue(self, session_id: str) -> SessionQueue:
        q = self.queues.get(session_id)
        if q is None:
            q = self.queues[session_id] = SessionQueue()
        return q

    def try_claim(self, session_id: str) -> bool:
        """Reserve an idle session's slot for a command about to be written as executing."""
        if not self.bus.cluster.may_claim(session_id):
            return False
        q = self.queue(session_id)
        if q.busy or q.heap or self.stopping:
            return False
        q.busy = True
        return True

    def release_claim(self, session_id: str) -> None:
        q = self.queue(session_id)
        q.busy = False
        if not q.heap and q.task is None:
            del self.queues[session_id]
            return
        self._kick(session_id, q)

    def track(self, job: Job) -> None:  # the live job of its command, replacing an earlier one
        old = self.jobs.get(job.record.command_id)
        if old is not job:
            if old is not None:
                self.untrack(old)
            self.jobs[job.record.command_id] = job
            self.held[job.record.session_id] = self.held.get(job.record.session_id, 0) + job.size

    def untrack(self, job: Job) -> None:
        if self.jobs.get(job.record.command_id) is job:
            del self.jobs[job.record.command_id]
            left = self.held.pop(job.record.session_id, 0) - job.size
            if left > 0:
                self.held[job.record.session_id] = left

    def run_claimed(self, job: Job) -> None:
        """Start the drain task for a job whose claim committed (it is executing in the store)."""
        q = self.queue(job.record.session_id)
        job.state = "starting"
        q.task = asyncio.create_task(self._drain(job.record.session_id, q, job))

    def run_eager(self, job: Job, queue_write: Callable[[], Any], final: list[Any]) -> None:
        """Run a claimed eager job (``Commands._submit_eager``) here, in the caller's task, up to
        its first suspension (eager.py); the session's drain task goes on with it if it suspends,
        or runs it whole when it has a timeout (its timer cancels the task it is in)."""
        session_id = job.record.session_id
        q = self.queue(session_id)
        job.state = "starting"
        if job.record.timeout is not None:
            q.task = asyncio.create_task(self._drain(session_id, q, job, (queue_write, final)))
            return
        try:
            begun = begin_eager(self, job, queue_write, final, contextvars.copy_context())
        except Exception:  # as a drain task's failure: logged, the slot freed
            log.exception("command runner of session %s failed", session_id)
            begun = None
        if begun is None:
            self._release(session_id, q)
            return
        resume, ctx = begun
        job.task = None  # (the caller's task so far): the drain task takes it over when it begins
        q.task = asyncio.create_task(self._drain(session_id, q, job, resume=resume), context=ctx)

    def push(self, session_id: str, entry: Entry) -> None:
        q = self.queue(session_id)
        # Within a priority, in the order they were queued (created_at: also across nodes and
        # restarts, when commands come from the store), then the order they reached this queue.
        created = entry.record.created_at if isinstance(entry, Job) else entry.created_at
        heapq.heappush(q.heap, (entry.rank, created, next(self._order), entry))
        self._kick(session_id, q)

    def _kick(self, session_id: str, q: SessionQueue) -> None:
        if q.busy or not q.heap or self.stopping:
            return
        q.busy = True
        q.task = asyncio.create_task(self._drain(session_id, q, None))

    @staticmethod
    def _live(entry: Entry) -> bool:
        if isinstance(entry, Job):
            return entry.state == "queued"
        return not entry.stopped and any(j.state == "queued" for j in entry.jobs)

    def _pop(self, q: SessionQueue, *, single_only: bool = False) -> Entry | None:
        while q.heap:
            entry = q.heap[0][-1]
            if not self._live(entry):
                heapq.heappop(q.heap)
                continue
            if single_only and not isinstance(entry, Job):
                return None
            heapq.heappop(q.heap)
            return entry
        return None

    async def _drain(
        self,
        session_id: str,
        q: SessionQueue,
        first: Job | None,
        eager: tuple[Callable[[], Any], list[Any]] | None = None,
        *,
        resume: Resume | None = None,
    ) -> None:
        # This task copied the context of whichever request started it; each command is traced
        # and logged as its own submitter's, so start from a clean slate. (``resume``: the first
        # job's run began in run_eager, in the context this task runs in, which is clean but
        # for what that run has set.)
        if resume is None:
            clean_context()
        try:
            job: Job | None = first
            while True:
                # A job already started is always finished (as interrupted when stopping), so
                # nothing is left "executing" in the store by a clean shutdown.
                if job is None:
                    if self.stopping:
                        break
                    entry = self._pop(q)
                    if entry is None:
                        break
                    if isinstance(entry, BatchJob):
                        await run_batch(self, entry)
                        continue
                    if not await self.start_jobs([entry]):
                        continue
                    job = entry
                nxt = None
                if resume is not None:  # the first job, begun in run_eager
                    job.task = asyncio.current_task()
                    if job.cancel_reason is not None and job.task is not None:  # asked meanwhile
                        job.task.cancel()
                    outcome, resume = await resume, None
                elif eager is not None:  # the first job, run before its submission commits
                    begun, eager = begin_eager(self, job, *eager, None), None
                    if begun is None:  # finished at once: stored with its submission
                        job = None
                        continue
                    outcome = await begun[0]
                else:
                    outcome = await self.invoke(job)
                if not self.stopping:
                    popped = self._pop(q, single_only=True)
                    nxt = popped if isinstance(popped, Job) else None
                started = await self.finish(job, outcome, start=[nxt] if nxt else [])
                job = nxt if nxt is not None and nxt in started else None
        except Exception:
            log.exception("command runner of session %s failed", session_id)
        finally:
            self._release(session_id, q)

    def _release(self, session_id: str, q: SessionQueue) -> None:
        """The session's slot is free: its queue goes, or its next entry starts."""
        q.busy = False
        q.task = None
        if not q.heap and self.queues.get(session_id) is q:
            del self.queues[session_id]
        else:
            self._kick(session_id, q)

    # -- execution --------------------------------------------------------------------

    async def start_jobs(self, jobs: list[Job]) -> list[Job]:
        jobs = [j for j in jobs if j.state == "queued"]
        if not jobs:
            return []
        for job in jobs:
            job.state = "starting"
        ts = now_iso()
        sid, cluster = jobs[0].record.session_id, self.bus.cluster

        def write(conn: sqlite3.Connection) -> list[tuple[Job, Event]]:
            cluster.fence(conn, sid)
            return start_rows(conn, jobs, ts)

        try:
            started = await self.durable_write(write)
        except LeaseLost:
            self.lose_jobs(jobs)
            return []
        except StorageError as exc:  # only while stopping: they stay queued for the next start
            log.warning("could not start %d command(s): %s", len(jobs), exc)
            for job in jobs:
                job.state = "queued"
            return []
        except Exception:
            log.exception("could not start %d command(s)", len(jobs))
            started = []
        ok = {id(j) for j, _ in started}
        for job in jobs:
            if id(job) in ok:
                job.record.status = "executing"
                job.record.started_at = ts
                self.queue_waited(job)
            else:  # cancelled in the store meanwhile: its session ended
                self.end_unstarted(job, "session", ts)
        self.bus.events.notify([e for _, e in started])
        return [j for j, _ in started]

    async def invoke(self, job: Job) -> Outcome:
        """Run the job's handler; its outcome. Not ``job.traced``: no spans of its own (a
        set-based batch's member: the batch has one, batchset.py)."""
        rec, traced = job.record, job.traced
        if job.cancel_reason is not None:
            return cancelled_outcome(job.cancel_reason, 0.0)
        reg = self.handlers.resolve(rec.session_id, rec.command_type)
        if reg is None and await self.bus.restore_handlers(rec.session_id):  # from another node
            reg = self.handlers.resolve(rec.session_id, rec.command_type)
        if reg is None:
            missing = handler_not_found(
                "command", rec.command_type, rec.session_id, or_global=True, command_type=rec.command_type
            )
            return Outcome(
                "failed",
                error=command_error(missing.code, missing.message, **missing.details),
                duration_ms=0.0,
            )
        job.task = asyncio.current_task()  # (run_eager's task, if it suspends, from then on)
        token = CURRENT.set(Execution(self, job))
        fields = set_fields(session_id=rec.session_id, command_id=rec.command_id)
        t0 = time.monotonic()
        cm: asyncio.Timeout | None = None
        job.state = "running"
        try:
            try:
                parent = tracing.parse_traceparent(job.traceparent) if traced else None
                if parent is not None:
                    # The wait is only known now: record it as a finished sibling of the run.
                    waited = max(0.0, t0 - job.queued_at)
                    tracing.current().record(
                        "command.queue_wait",
                        parent,
                        time.time() - waited,
                        waited * 1000,
                        command_type=rec.command_type,
                        priority=rec.priority,
                        session_id=rec.session_id,
                        command_id=rec.command_id,
                    )
                with (
                    tracing.span("command.run", parent=parent, command_type=rec.command_type, priority=rec.priority)
                    if traced
                    else contextlib.nullcontext()
                ):
                    if rec.timeout is None:  # most commands: no Timeout object, no timer
                        result = await reg.handler(rec)
                    else:
                        async with asyncio.timeout(rec.timeout) as cm:
                            result = await reg.handler(rec)
            finally:
                job.state = "finishing"
                reset_fields(fields)
        except asyncio.CancelledError:
            if job.cancel_reason is None:
                raise  # not ours: let it propagate
            running = asyncio.current_task()  # (not ``task``: an eager run may have begun in another)
            assert running is not None
            running.uncancel()
            return cancelled_outcome(job.cancel_reason, _ms(t0))
        except TimeoutError as exc:
            if cm is not None and cm.expired():
                return Outcome(
                    "timed_out",
                    error=command_error(
                        ErrorCode.COMMAND_TIMEOUT,
                        f"command did not finish within its timeout of {rec.timeout} s",
                        timeout=rec.timeout,
                    ),
                    duration_ms=_ms(t0),
                )
            return failed_outcome(exc, _ms(t0))
        except Exception as exc:
            return failed_outcome(exc, _ms(t0))
        finally:
            CURRENT.reset(token)
        duration = _ms(t0)
        try:
            text = dumps(result)
        except Exception as exc:
            return Outcome(
                "failed",
                error=command_error(
                    ErrorCode.COMMAND_EXECUTION_FAILED,
                    f"the handler returned a value that is not JSON: {exc}",
                    exception_type=type(exc).__name__,
                ),
                duration_ms=duration,
            )
        return Outcome("completed", result=result, result_text=text, duration_ms=duration)

    async def run_inline(self, job: Job) -> Command:
        """Run a command that another command's handler started (``bus.execute`` in user code)
        right here, outside the session's queue: the parent holds the session's slot, so
        queueing behind it would deadlock. It is recorded like any command (row, CommandStarted,
        CommandResult) and traced under the parent's span."""
        outcome = await self.invoke(job)
        await self.finish(job, outcome)
        return job.record

    async def finish(self, job: Job, outcome: Outcome, *, start: list[Job] | None = None) -> list[Job]:
        """Record the outcome (with the handler's buffered events) and start ``start`` in the
        same transaction; returns the jobs that did start."""
        rec = job.record
        if is_refused(job):
            return self._drop_refused(job, start or [])
        # A failed attempt of a single command from the queue (not a batch member, not inline)
        # may be retried: retries.py records it and schedules the next attempt.
        if self.retry is not None and start is not None and job.batch is None and outcome.status in RETRYABLE:
            delay = self.retry.plan(job, outcome)
            if delay is not None:
                return await self.retry.reschedule(job, outcome, delay, start)
        strict = job.admitted is not None  # its submission may still fail: write nothing then
        pending, job.pending = job.pending, []
        start = [j for j in start or () if j.state == "queued"]
        for nxt in start:
            nxt.state = "starting"
        ts = now_iso()
        cluster = self.bus.cluster

        def write(conn: sqlite3.Connection) -> tuple[list[Event], Event | None, list[tuple[Job, Event]]]:
            cluster.fence(conn, rec.session_id)
            emitted = insert_events(conn, rec.session_id, pending, timestamp=ts, trace_id=rec.trace_id)
            result_event = finish_row(conn, rec, outcome, ts, from_status="executing", strict=strict)
            # Shutdown began while this write waited for the writer: start nothing more (the
            # next command stays queued for the next start, as drain promises).
            started = start_rows(conn, start, ts) if not self.stopping else []
            return emitted, result_event, started

        try:
            emitted, result_event, started = await self.durable_write(write)
        except NotAdmitted:
            for nxt in start:
                nxt.state = "queued"
            return self._drop_refused(job, start)
        except LeaseLost:
            # Another node took the session over (we stalled past the lease timeout): it has
            # recorded this command interrupted and runs the queue now.
            self.lose_jobs([job, *start])
            return []
        except StorageError as exc:
            # Only while stopping: nothing is told a result that did not commit. The store still
            # says executing, so the next start records it as interrupted.
            log.error("could not record the result of command %s: %s", rec.command_id, exc)
            job.pending[:0] = pending
            for nxt in start:
                nxt.state = "queued"
            return []
        except Exception:
            log.exception("could not record the result of command %s", rec.command_id)
            emitted, result_event, started = [], None, []
        self.apply_end(job, outcome, ts)
        ok = {id(j) for j, _ in started}
        for nxt in start:
            if id(nxt) in ok:
                nxt.record.status = "executing"
                nxt.record.started_at = ts
                self.queue_waited(nxt)
            elif self.stopping:
                nxt.state = "queued"  # still queued in the store
            else:
                self.end_unstarted(nxt, "session", ts)
        self.bus.events.notify(emitted + ([result_event] if result_event else []) + [e for _, e in started])
        return [j for j, _ in started]

    async def durable_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``store.write`` that outlasts a full disk or a locked database (durable.py)."""
        return await durable_write(self.store, fn, lambda: self.stopping)

    def apply_end(self, job: Job, outcome: Outcome, ts: str) -> None:
        rec = job.record
        rec.status = outcome.status
        # A batch member's result stays in the store only: the batch holds its members until
        # it ends, and 10,000 results of 1 MiB each would be 10 GiB of the daemon's memory. Its
        # answers read the result from the store (answers.py, Commands.wait).
        rec.result = outcome.result if job.batch is None else None
        rec.error = outcome.error
        rec.finished_at = ts
        rec.duration_ms = outcome.duration_ms
        job.state = "done"
        self.untrack(job)
        metrics.inc("commands_total", type=rec.command_type, status=outcome.status)
        if outcome.duration_ms is not None and rec.started_at is not None:
            metrics.observe("command_run_seconds", outcome.duration_ms / 1000.0, type=rec.command_type)
        if job.waiter is not None and not job.waiter.done():
            job.waiter.set_result(rec)

    def _drop_refused(self, job: Job, start: list[Job]) -> list[Job]:
        """An eager command whose submission did not commit: it never existed, so nothing of
        its run is written or told (its submitter got the error). Commands that were to start
        with its result go back to the queue."""
        job.state = "done"
        job.pending = []
        self.untrack(job)
        for nxt in start:
            if nxt.state == "queued":
                self.push(nxt.record.session_id, nxt)
        return []

    def end_unstarted(self, job: Job, reason: str, ts: str) -> None:
        """A command that never started and was ended in the store by someone else (session
        end): bring the memory in line and answer its waiters."""
        job.cancel_reason = job.cancel_reason or reason
        outcome = cancelled_outcome(job.cancel_reason, 0.0)
        outcome.duration_ms = None
        self.apply_end(job, outcome, ts)

    def flush(self, job: Job) -> asyncio.Future[list[Event]]:
        """Write a running handler's buffered events (called soon after ``emit``)."""
        job.flush_scheduled = False
        loop = asyncio.get_running_loop()
        # An eager command not yet admitted keeps its events until it is (Commands._admitted).
        if not job.pending or job.state != "running" or not is_admitted(job):
            done: asyncio.Future[list[Event]] = loop.create_future()
            done.set_result([])
            return done
        pending, job.pending = job.pending, []
        sid, trace_id = job.record.session_id, job.record.trace_id
        ts = now_iso()

        def write(conn: sqlite3.Connection) -> list[Event]:
            return insert_events(conn, sid, pending, timestamp=ts, trace_id=trace_id)

        future = self.store.submit(write)

        def committed(fut: asyncio.Future[list[Event]]) -> None:
            if fut.cancelled():
                return
            if fut.exception() is not None:
                if job.state in ("running", "finishing") and isinstance(fut.exception(), StorageError):
                    # Not lost: they go with the command's result, whose write is retried.
                    job.pending[:0] = pending
                    return
                log.error("could not record events of command %s: %s", job.record.command_id, fut.exception())
                return
            self.bus.events.notify(fut.result())

        future.add_done_callback(committed)
        return future

    # -- cancellation -----------------------------------------------------------------

    def cancel_running(self, job: Job, reason: str) -> None:
        if job.cancel_reason is None:
            job.cancel_reason = reason
        if job.state == "running" and job.task is not None:
            job.task.cancel()

    async def cancel_queued(self, jobs: list[Job], reason: str, *, retry: bool = True) -> None:
        """Cancel commands that have not started: written with a CommandResult each.
        ``retry=False`` (a client's request): a storage error is raised at once instead."""
        jobs = [j for j in jobs if j.state == "queued"]
        if not jobs:
            return
        for job in jobs:
            job.state = "cancelled"
            job.cancel_reason = reason
        ts = now_iso()
        outcomes = [cancelled_outcome(j.cancel_reason, 0.0) for j in jobs]
        for o in outcomes:
            o.duration_ms = None

        def write(conn: sqlite3.Connection) -> list[Event | None]:
            pairs = zip(jobs, outcomes, strict=True)
            return [finish_row(conn, j.record, o, ts, from_status="queued") for j, o in pairs]

        try:
            events = await (self.durable_write(write) if retry else self.store.write(write))
        except BaseException:
            for job in jobs:  # still queued in the store: so they are here
                job.state = "queued"
                job.cancel_reason = None
            raise
        for job, outcome in zip(jobs, outcomes, strict=True):
            self.apply_end(job, outcome, ts)
        self.bus.events.notify([e for e in events if e is not None])

    # -- lifecycle --------------------------------------------------------------------

    async def stop(self) -> None:
        """Interrupt what runs (recorded as interrupted); queued commands stay queued."""
        self.stopping = True
        for job in list(self.jobs.values()):
            if job.state in ("starting", "running"):
                self.cancel_running(job, "shutdown")
        tasks = [q.task for q in self.queues.values() if q.task is not None]
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
            for task in pending:
                log.warning("a command handler ignored cancellation; abandoning it")
                task.cancel()


def _ms(t0: float) -> float:
    return round((time.monotonic() - t0) * 1000.0, 3)
