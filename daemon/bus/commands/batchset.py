"""A set-based batch: a batch whose handlers are all eager (``Registration.eager``: they call
nothing outside the daemon, e.g. DummyEngine) runs its commands in a tight loop in the
session's runner task and stores them in chunks, each with one ``executemany`` for the
command rows and one for their events, in one transaction (``records.finish_set``), under one
span for the whole batch. Streams are notified, and waiters answered, after each commit.

What holds as in the command-by-command path (batches.py):
- nothing else of the session runs meanwhile (the runner task holds the session's slot), and
  the members run and are stored in the batch's order; ``stop_on_error`` stops at the first
  failure and cancels the rest (``cancel_queued``);
- a member is run only while it is queued (a cancel makes it ``cancelled`` first), and one
  that its session's end cancelled in the store meanwhile is left out of the write;
- acknowledged = committed: a member's record, its waiters and the streams learn its end only
  after the chunk's transaction committed; a failed write leaves the chunk queued in the store
  and here (only while stopping: ``durable_write``);
- after a crash, a chunk is stored whole or not at all: its members are finished, or still
  queued and run again at the next start. (An eager handler's run may happen before its start
  is stored, as for a single eager command: eager.py.)

A member whose handler suspends (an eager handler that waits, e.g. DummyEngine's
``delay_ms``) is stored started together with the chunk before it; until that write commits
it is an eager command not yet admitted (``Job.admitted``: its events wait, and nothing of its
run is written if the start does not commit). It finishes like any command. A sequential batch
then goes on with the set loop; a parallel one hands its other members to the
command-by-command path, which runs them alongside.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from llmgine_daemon.bus.cluster import LeaseLost
from llmgine_daemon.bus.commands.eager import Resume
from llmgine_daemon.bus.commands.jobs import BatchJob, Job, Outcome
from llmgine_daemon.bus.commands.records import SetChanged, finish_set, start_rows
from llmgine_daemon.observability import tracing
from llmgine_daemon.protocol import now_iso
from llmgine_daemon.store.db import StorageError

if TYPE_CHECKING:
    from llmgine_daemon.bus.commands.runner import Runner

log = logging.getLogger("llmgine.commands")

# Members stored per transaction: the write runs on the event loop (a few ms per chunk of this
# size), so other sessions' requests are not held up for long.
CHUNK = 256
FAILED = ("failed", "timed_out")
Member = tuple[Job, Outcome, list[Any], str]
# What a chunk's write did: ("ok", members written, their events, started) | ("lost",) | ("failed",)
Written = tuple[Any, ...]


def all_eager(runner: Runner, batch: BatchJob) -> bool:
    """Every member's handler is known here and eager."""
    known: dict[str, bool] = {}
    for job in batch.jobs:
        kind = job.record.command_type
        ok = known.get(kind)
        if ok is None:
            reg = runner.handlers.resolve(batch.session_id, kind)
            ok = known[kind] = reg is not None and reg.eager
        if not ok:
            return False
    return True


async def run_set(runner: Runner, batch: BatchJob, rest: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run an eager batch set by set; ``rest`` runs what is left of a parallel batch command by
    command once a member suspends (see the module docstring)."""
    queued = [j for j in batch.jobs if j.state == "queued"]
    if not queued:
        return
    clean = contextvars.copy_context()  # before any member's run sets its execution context
    parent = tracing.parse_traceparent(queued[0].traceparent)
    with tracing.span("command.batch", parent=parent, batch_id=batch.batch_id, mode=batch.mode, commands=len(queued)):
        i = 0
        # The write of the chunk before: the next chunk runs while it commits, and its own
        # write waits for it (``_commit``, a task of its own: nothing the runner task awaits
        # stands between a member's run and its end).
        before: asyncio.Future[Written] | None = None
        while i < len(queued) and not (runner.stopping or batch.stopped):
            if before is not None and before.done() and _written(before)[0] != "ok":
                return  # not stored (the memory is in line: ``_committed``); nothing after it
            members, i, held = _run_chunk(runner, batch, queued, i)
            if held is None:
                before = await _begin_commit(runner, batch.session_id, members, before)
                continue
            job, coro, step = held
            commit = asyncio.ensure_future(_commit(runner, batch.session_id, members, [job], before=before))
            before = None
            admitted = asyncio.get_running_loop().create_future()
            job.admitted = admitted
            commit.add_done_callback(functools.partial(_admitted, runner, members, job, admitted))
            others = None
            if batch.mode != "sequential":
                others = asyncio.create_task(rest(), context=clean)
            await _finish_held(runner, batch, job, Resume(coro, step), commit)
            if others is not None:
                await others
                return
            if commit.result()[0] != "ok":
                return
        if before is not None:
            await asyncio.wait((before,))
            if _written(before)[0] != "ok":
                return
    if batch.stopped:
        await runner.cancel_queued([j for j in queued if j.state == "queued"], "batch")


def _run_chunk(
    runner: Runner, batch: BatchJob, queued: list[Job], i: int
) -> tuple[list[Member], int, tuple[Job, Coroutine[Any, Any, Outcome], Any] | None]:
    """Run members from ``queued[i]`` on, up to CHUNK of them or the first that suspends (then
    returned held: its coroutine and what it waits for). No await: nothing else runs meanwhile."""
    members: list[Member] = []
    while i < len(queued) and len(members) < CHUNK:
        job = queued[i]
        i += 1
        if job.state != "queued":
            continue
        # No spans of its own; and no flush scheduled by its events: they go with its end.
        job.state, job.traced, job.flush_scheduled = "starting", False, True
        coro = runner.invoke(job)
        try:
            step = coro.send(None)
        except StopIteration as stop:
            outcome: Outcome = stop.value
            pending, job.pending = job.pending, []
            members.append((job, outcome, pending, now_iso()))
            if batch.stop_on_error and outcome.status in FAILED:
                batch.stopped = True
                break
            continue
        return members, i, (job, coro, step)
    return members, i, None


async def _begin_commit(
    runner: Runner, session_id: str, members: list[Member], before: asyncio.Future[Written] | None
) -> asyncio.Future[Written]:
    """Start storing a chunk (after ``before``, the chunk before it); return once its rows are
    written and its transaction commits (the fsync, in the connection's thread), so the next
    chunk runs meanwhile. The memory is brought in line when the write ends, whoever waits."""
    loop = asyncio.get_running_loop()
    applied = loop.create_future()

    def on_applied() -> None:
        if not applied.done():
            applied.set_result(None)

    commit = asyncio.ensure_future(
        _commit(runner, session_id, members, [], before=before, applied=lambda: loop.call_soon_threadsafe(on_applied))
    )
    commit.add_done_callback(functools.partial(_ended, runner, members))
    await asyncio.wait((applied, commit), return_when=asyncio.FIRST_COMPLETED)
    return commit


def _written(commit: asyncio.Future[Written]) -> Written:
    """What a chunk's ended write did (a cancelled one stored nothing)."""
    return ("failed",) if commit.cancelled() or commit.exception() else commit.result()


def _ended(runner: Runner, members: list[Member], commit: asyncio.Future[Written]) -> None:
    """A chunk's write ended (a done-callback: it runs before anyone awaiting it resumes)."""
    _committed(runner, members, _written(commit))


async def _commit(
    runner: Runner,
    session_id: str,
    members: list[Member],
    start: list[Job],
    *,
    before: asyncio.Future[Written] | None = None,
    applied: Callable[[], Any] | None = None,
) -> Written:
    """Store the chunk (and the start of ``start``) in one transaction, once ``before`` (the
    chunk before it) was stored; if it was not, this one is not either (the batch's order
    holds): its members are as if they had not run (eager handlers call nothing outside the
    daemon). ``applied()`` is called when its statements ran (from the thread that ran them)."""
    if before is not None:
        await asyncio.wait((before,))  # (a cancel of this task stops here, not the one before)
        outcome = _written(before)[0]
        if outcome == "lost":  # the session is another node's now
            runner.lose_jobs([m[0] for m in members])
            return ("lost",)
        if outcome != "ok":
            return ("failed",)
    cluster, ts = runner.bus.cluster, now_iso()

    def writer(by_row: bool) -> Callable[[Any], Written]:
        def write(conn: Any) -> Written:
            cluster.fence(conn, session_id)
            done, events = finish_set(conn, members, by_row=by_row) if members else ([], [])
            written = "ok", done, events, start_rows(conn, start, ts), ts
            if applied is not None:
                applied()
            return written

        return write

    try:
        try:
            return await runner.durable_write(writer(False))
        except SetChanged:  # one of them ended meanwhile (its session): find which, row by row
            return await runner.durable_write(writer(True))
    except LeaseLost:
        runner.lose_jobs([m[0] for m in members])
        return ("lost",)
    except StorageError as exc:  # only while stopping: they stay queued for the next start
        log.warning("could not store %d command(s) of a batch: %s", len(members) + len(start), exc)
    except Exception:
        log.exception("could not store %d command(s) of a batch", len(members) + len(start))
    return ("failed",)


def _committed(runner: Runner, members: list[Member], written: Written) -> None:
    """The chunk's write ended: bring the memory in line, answer waiters, tell the streams."""
    if written[0] == "failed":
        for job, *_ in members:
            job.state, job.pending = "queued", []
        return
    if written[0] != "ok":
        return
    _, done, events, started, ts = written
    kept = {id(m[0]) for m in done}
    for job, outcome, _, end in done:
        job.record.started_at = end
        runner.queue_waited(job)
        runner.apply_end(job, outcome, end)
    for job, *_ in members:
        if id(job) not in kept:  # cancelled in the store meanwhile: its session ended
            runner.end_unstarted(job, "session", ts)
    for job, _ in started:
        job.record.status, job.record.started_at = "executing", ts
        runner.queue_waited(job)
    runner.bus.events.notify(events + [e for _, e in started] if started else events)


def _admitted(
    runner: Runner,
    members: list[Member],
    job: Job,
    admitted: asyncio.Future[Any],
    commit: asyncio.Future[Written],
) -> None:
    """The write that stores the held member's start ended (a done-callback, so it runs before
    anyone else hears of the commit)."""
    written = _written(commit)
    _committed(runner, members, written)
    job.flush_scheduled = False  # its events are flushed as any command's from now on
    if written[0] == "ok" and any(j is job for j, _ in written[3]):
        admitted.set_result((None, []))
        if job.pending and job.state == "running":
            runner.flush(job)  # what it emitted meanwhile
        return
    admitted.set_result(("refused", []))  # nothing of its run is written (eager.is_refused)
    runner.cancel_running(job, "session" if written[0] == "ok" else "shutdown")


async def _finish_held(runner: Runner, batch: BatchJob, job: Job, run: Resume, commit: asyncio.Future[Written]) -> None:
    """Go on with the member that suspended, then record its end as any command's."""
    outcome: Outcome = await run
    written = await asyncio.shield(commit)
    if written[0] == "ok" and any(j is job for j, _ in written[3]):
        await runner.finish(job, outcome)
        if batch.stop_on_error and outcome.status in FAILED and not batch.stopped:
            batch.stopped = True
            for other in batch.jobs:
                if other is not job and other.state in ("starting", "running"):
                    runner.cancel_running(other, "batch")
        return
    job.pending = []
    if written[0] == "ok":  # its session ended before it was stored started
        runner.end_unstarted(job, "session", written[4])
    elif written[0] == "lost":
        runner.lose_jobs([job])
    else:  # not stored (stopping): still queued, here as in the store
        job.state, job.cancel_reason, job.admitted = "queued", None, None
