"""Commands: submit (one or a batch), read, list, cancel, wait; queue recovery on restart.

The rules (docs/architecture.md, "Invariants"): a command is handled by exactly one handler, the session's
or else a global one; with none, the submission is refused (HANDLER_NOT_FOUND) and nothing is
stored. A 202 means the command row has committed. Execution itself lives in ``runner.py``;
the rows in ``records.py``.

A batch is one entry in its session's queue (ranked by its most urgent command): ``parallel``
runs its commands concurrently with each other, ``sequential`` one after another in the given
order; ``stop_on_error`` cancels what has not finished once one fails or times out. Either way
nothing else of the session runs in between, so "one at a time per session" still holds for
everything outside the batch.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from llmgine_daemon.bus.capacity import pending_units
from llmgine_daemon.bus.cluster import ClaimRefused
from llmgine_daemon.bus.codec import new_id
from llmgine_daemon.bus.commands.answers import batch_page, batch_states
from llmgine_daemon.bus.commands.deps import Dependencies
from llmgine_daemon.bus.commands.execution import Execution
from llmgine_daemon.bus.commands.jobs import BatchJob, Job, Outcome, cancelled_outcome, command_error
from llmgine_daemon.bus.commands.queueview import QueueWatch
from llmgine_daemon.bus.commands.records import (
    COMMAND_COLUMNS,
    MAX_TIMEOUT_S,
    PRIORITY_RANK,
    STATE_COLUMNS,
    CommandSpec,
    batch_rows,
    batch_status,
    command_row,
    command_rows,
    finish_row,
    held_size,
    insert_command,
    insert_commands,
    list_filter,
    new_record,
    result_data,
    row_to_command,
    started_data,
    validate,
)
from llmgine_daemon.bus.commands.recovery import Recovery
from llmgine_daemon.bus.commands.remote import Changes, read_batch_results, wait_in_store
from llmgine_daemon.bus.commands.remote import copy_record as _copy_record
from llmgine_daemon.bus.commands.retries import DEAD, Retries
from llmgine_daemon.bus.commands.runner import Runner
from llmgine_daemon.bus.commands.waiting import CommandWaits
from llmgine_daemon.bus.errors import BusError, invalid
from llmgine_daemon.bus.events import insert_event
from llmgine_daemon.bus.idempotency import IdempotencyKey, lookup, record
from llmgine_daemon.bus.pages import LongPage, read_rows
from llmgine_daemon.bus.sessions import fetch_session, require_active
from llmgine_daemon.bus.usage import add_usage
from llmgine_daemon.observability import tracing
from llmgine_daemon.protocol import (
    TERMINAL_STATUSES,
    Batch,
    Command,
    CommandCreate,
    CommandList,
    ErrorCode,
    Event,
    now_iso,
)
from llmgine_daemon.store.rows import Deferred

if TYPE_CHECKING:
    from llmgine_daemon.bus.core import Bus
    from llmgine_daemon.bus.handler_registry import Registration

log = logging.getLogger("llmgine.commands")

# How long a cancel of a command running on another node waits for that node to record it.
CANCEL_WAIT_S = 30.0
MAX_BATCH = 10_000
# A batch larger than this is stored off the event loop (Store.write heavy): thousands of rows.
HEAVY_BATCH = 1000


class Commands(Recovery):
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.store = bus.store
        self.runner = Runner(bus)
        self.waits = CommandWaits(self)
        self.queue = QueueWatch(self)
        # Wakes who follows a command another node runs (wait, cancel): commands/remote.py.
        self.changes = Changes()
        bus.events.subscribe(self.changes.on_event)
        bus.events.subscribe_read_back(self.changes.on_event)
        self.deps = Dependencies(self)
        self.retries = Retries(self)

    # -- submit -----------------------------------------------------------------------

    async def _refuse_unhandled(self, session_id: str, command_type: str, **extra: Any) -> None:
        """No handler: refuse, but report a missing or closed session first."""
        await self.store.read(lambda conn: require_active(conn, session_id))
        self.bus.handlers.require(session_id, command_type, **extra)

    async def submit(
        self,
        session_id: str,
        spec: CommandSpec,
        idem: IdempotencyKey | None = None,
        *,
        claim: Callable[[sqlite3.Connection, str], None] | None = None,
    ) -> tuple[Command, bool]:
        """Queue one command; returns (record, replayed). The record may already be executing:
        an idle session's command starts in the transaction that stores it, and an eager
        handler's command (``Registration.eager``) may even have finished in it. (On several
        nodes that start can be refused in the write, ``ClaimRefused``: then it is queued.)

        ``claim(conn, command_id)`` runs first in the transaction that stores the command; if it
        raises, nothing is stored (a schedule's firing claims its due time this way: bus/schedules.py)."""
        try:
            return await self._submit(session_id, spec, idem, claim, True)
        except ClaimRefused:
            return await self._submit(session_id, spec, idem, claim, False)

    async def _submit(
        self,
        session_id: str,
        spec: CommandSpec,
        idem: IdempotencyKey | None,
        claim: Callable[[sqlite3.Connection, str], None] | None,
        start_now: bool,
    ) -> tuple[Command, bool]:
        reg = self.bus.handlers.resolve(session_id, spec.command_type) or await self.resolve(
            session_id, spec.command_type
        )
        if reg is None:
            await self._refuse_unhandled(session_id, spec.command_type)
        if spec.after:  # waits for other commands first: deps.py, off the runner's path
            return await self.deps.submit(session_id, spec, idem, claim)
        runner, cluster, capacity = self.runner, self.bus.cluster, self.bus.capacity
        size = held_size(spec)  # kept in this daemon's memory until it ends (unless eager)
        capacity.check_held(runner.held.get(session_id, 0), size)
        ts = now_iso()
        rec = new_record(session_id, spec, ts)
        claimed = start_now and runner.try_claim(session_id)
        if claimed:
            rec.status, rec.started_at = "executing", ts
        job = Job(rec, PRIORITY_RANK[spec.priority], traceparent=tracing.current_traceparent(), size=size)
        # A replayed key must not run anything again, so a keyed submission is never eager.
        if (
            claimed
            and idem is None
            and claim is None
            and reg is not None
            and reg.eager
            and not self.retries.applies(spec)
        ):
            return await self._submit_eager(job, ts)

        def write(conn: sqlite3.Connection) -> tuple[tuple[Any, ...] | None, list[Event]]:
            prior = lookup(conn, idem)
            if prior is not None:
                return command_row(conn, session_id, prior[1]), []
            require_active(conn, session_id, capacity.max_event_bytes_per_session)
            if claim is not None:
                claim(conn, rec.command_id)
            if claimed:
                cluster.fence(conn, session_id, claim=True)
            else:  # it waits in memory behind the session's running command
                capacity.check_pending(conn, session_id)
            insert_command(conn, rec)
            record(conn, idem, "command", rec.command_id, session_id)
            if claimed:
                return None, [insert_event(conn, session_id, "CommandStarted", started_data(rec), timestamp=ts)]
            cluster.announce(conn, session_id)
            return None, []

        future = self.store.submit(write)
        # What follows the commit is done in a callback, not after the await: it runs even if
        # this request is cancelled meanwhile, and before anyone else hears of the commit.
        future.add_done_callback(lambda f: self._admitted(f, job, claimed))
        replay, _ = await asyncio.shield(future)
        if replay is not None:
            return self._current(replay), True
        return rec, False

    async def _submit_eager(self, job: Job, ts: str) -> tuple[Command, bool]:
        """Run an eager handler's command at once, before its submission has committed.

        The session's runner task queues the submission and runs the handler at once, up to its
        first suspension (``Runner.run_eager``). If the handler finishes without suspending,
        the submission is amended before the writer has taken it: the command is stored already
        finished, with all its events, in one write - one commit per command instead of two.
        If it suspends, it goes on, and its events and result are written only once the
        submission has committed (``job.admitted``); if the submission fails, the run is
        cancelled and nothing of it is written.
        """
        rec = job.record
        session_id = rec.session_id
        final: list[tuple[Outcome, list[Any], str]] = []

        def write(conn: sqlite3.Connection) -> Deferred:
            require_active(conn, session_id, self.bus.capacity.max_event_bytes_per_session)
            self.bus.cluster.fence(conn, session_id, claim=True)
            # Its rows go in off the event loop, with the batch's others (store/rows.py).
            if not final:
                return command_rows(rec, None, None, [("CommandStarted", started_data(rec), {}, "bus")], [ts])
            outcome, pending, end = final[0]
            items = [
                ("CommandStarted", started_data(rec), {}, "bus"),
                *pending,
                ("CommandResult", result_data(rec, outcome), {}, "bus"),
            ]
            return command_rows(rec, outcome, end, items, [ts] + [end] * (len(items) - 1))

        admitted: asyncio.Future[tuple[None, list[Event]]] = asyncio.get_running_loop().create_future()
        job.admitted = admitted
        admitted.add_done_callback(lambda f: self._admitted(f, job, True, final))
        self.runner.run_eager(job, lambda: self.store.submit(write, future=admitted, rows=True), final)
        await asyncio.shield(admitted)
        return rec, False

    def _admitted(
        self,
        future: asyncio.Future[Any],
        job: Job,
        claimed: bool,
        final: list[tuple[Outcome, list[Any], str]] | None = None,
    ) -> None:
        """A submission's write finished: queue or start the command, or undo the claim."""
        runner, session_id = self.runner, job.record.session_id
        failed = future.cancelled() or future.exception() is not None
        if failed or future.result()[0] is not None:  # refused, or an idempotent replay
            if job.admitted is None:
                if claimed:
                    runner.release_claim(session_id)
            elif not final:  # eager and still running (its runner task releases the claim)
                runner.cancel_running(job, "refused")  # its result will not be written
            return
        events = future.result()[1]
        if final:  # stored finished: only the memory and the listeners are left
            runner.queue_waited(job)
            runner.apply_end(job, final[0][0], final[0][2])
            self.bus.events.notify(events)
            return
        if not claimed:
            self._enqueue(session_id, job)
            return
        runner.track(job)
        runner.queue_waited(job)
        self.bus.events.notify(events)
        if job.admitted is None:
            runner.run_claimed(job)
        elif job.pending and job.state == "running":
            runner.flush(job)  # what it emitted while not yet admitted

    def _enqueue(self, session_id: str, entry: Job | BatchJob) -> None:
        """A committed, queued command or batch: into this node's queue if it runs the session,
        else to the node that does (bus/cluster.py)."""
        if not self.bus.cluster.owns(session_id):
            self.bus.cluster.forward(session_id)
            return
        for job in entry.jobs if isinstance(entry, BatchJob) else [entry]:
            self.runner.track(job)
        self.runner.push(session_id, entry)

    async def resolve(self, session_id: str, command_type: str) -> Registration | None:
        """The command's handler; on a miss, engines and handlers registered on another node
        sharing the database are looked for first (each node keeps them in its memory)."""
        reg = self.bus.handlers.resolve(session_id, command_type)
        if reg is None and await self.bus.restore_handlers(session_id):
            reg = self.bus.handlers.resolve(session_id, command_type)
        return reg

    def _current(self, row: tuple[Any, ...]) -> Command:
        """The record of a stored row, or the live one (same state, or newer) if it runs.
        Called on the event loop: write and read functions run in the store's threads and
        must not touch the runner."""
        live = self.runner.jobs.get(row[0])
        if live is not None:
            return live.record
        return self.deps.live(row) or row_to_command(row)

    async def submit_batch(
        self,
        session_id: str,
        specs: list[CommandSpec],
        mode: str,
        stop_on_error: bool,
        idem: IdempotencyKey | None = None,
    ) -> tuple[Batch, bool]:
        """Queue a batch, all or nothing: every command is checked before anything is written.
        An idempotent replay answers the batch stored, its commands' states only (without
        parameters and results: the API reads it again to answer, answers.py)."""
        if not specs:
            raise invalid("commands", "must contain at least one command")
        if len(specs) > MAX_BATCH:
            raise invalid("commands", f"at most {MAX_BATCH} commands per batch", count=len(specs))
        handlers = self.bus.handlers
        for index, spec in enumerate(specs):
            if (
                handlers.resolve(session_id, spec.command_type) is None
                and await self.resolve(session_id, spec.command_type) is None
            ):
                await self._refuse_unhandled(session_id, spec.command_type, index=index)
        sizes = [held_size(spec) for spec in specs]
        self.bus.capacity.check_held(self.runner.held.get(session_id, 0), sum(sizes))
        ts = now_iso()
        batch_id = new_id()
        records = [new_record(session_id, spec, ts, batch_id) for spec in specs]

        def write(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            prior = lookup(conn, idem)
            if prior is not None:
                return batch_rows(conn, session_id, prior[1], STATE_COLUMNS)
            require_active(conn, session_id, self.bus.capacity.max_event_bytes_per_session)
            self.bus.capacity.check_pending(conn, session_id, pending_units(len(records), batch=True))
            conn.execute(
                "INSERT INTO batches (batch_id, session_id, mode, stop_on_error, created_at) VALUES (?, ?, ?, ?, ?)",
                (batch_id, session_id, mode, int(stop_on_error), ts),
            )
            insert_commands(conn, records)
            record(conn, idem, "batch", batch_id, session_id)
            self.bus.cluster.announce(conn, session_id)
            return None

        replay = await self.store.write(write, heavy=len(records) > HEAVY_BATCH)
        if replay is not None:
            return self._assemble(session_id, replay[0], replay[1], replay[2]), True
        parent = tracing.current_traceparent()
        jobs = [
            Job(rec, PRIORITY_RANK[rec.priority], traceparent=parent, size=size)
            for rec, size in zip(records, sizes, strict=True)
        ]
        batch = BatchJob(batch_id, session_id, mode, stop_on_error, ts, jobs, min(j.rank for j in jobs))
        for job in jobs:
            job.batch = batch
        self._enqueue(session_id, batch)
        return Batch(batch_id, session_id, mode, stop_on_error, "queued", ts, records), False

    # -- nested: bus.execute from user code ---------------------------------------------

    async def execute_nested(
        self,
        session_id: str,
        command_type: str,
        parameters: dict[str, Any],
        metadata: dict[str, Any],
        *,
        parent: Execution | None = None,
    ) -> Command:
        """Run a command for user code and return its finished record.

        Called by a running command's handler (``parent``, same session), it runs at once,
        outside the queue (see ``Runner.run_inline``). Otherwise (an event handler, a tool run
        over the API) it is submitted like any command and waited for. Either way the caller's
        own deadline bounds the wait: cancelling it cancels an inline command too.
        """
        spec = validate(CommandCreate(command_type=command_type, parameters=parameters, metadata=metadata), nested=True)
        if parent is None:
            rec, _ = await self.submit(session_id, spec)
            await self.wait([rec], MAX_TIMEOUT_S)
            return rec
        self.bus.handlers.require(session_id, spec.command_type)
        ts = now_iso()
        rec = new_record(session_id, spec, ts)
        rec.status, rec.started_at = "executing", ts

        def write(conn: sqlite3.Connection) -> Event:
            require_active(conn, session_id, self.bus.capacity.max_event_bytes_per_session)
            insert_command(conn, rec)
            return insert_event(
                conn, session_id, "CommandStarted", started_data(rec), timestamp=ts, trace_id=rec.trace_id
            )

        event = await self.store.write(write)
        job = Job(rec, PRIORITY_RANK[spec.priority], traceparent=tracing.current_traceparent())
        job.state = "starting"
        self.runner.track(job)
        self.runner.queue_waited(job)
        self.bus.events.notify([event])
        task = asyncio.create_task(self.runner.run_inline(job))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # The parent ended (cancelled, timed out, its sandbox deadline): so does this one,
            # recorded as cancelled before the cancellation goes on up.
            self.runner.cancel_running(job, parent.cancel_reason or "parent")
            await asyncio.wait([task], timeout=30.0)
            raise

    # -- read -------------------------------------------------------------------------

    async def get(self, session_id: str, command_id: str) -> Command:
        live = self.runner.jobs.get(command_id)
        if live is not None and live.record.session_id == session_id:
            return live.record

        def read(conn: sqlite3.Connection) -> tuple[Any, ...]:
            fetch_session(conn, session_id)
            return command_row(conn, session_id, command_id)

        return self._current(await self.store.read_point(read))  # two lookups: on the loop

    async def list(
        self,
        session_id: str,
        *,
        statuses: list[str] | None = None,
        command_type: str | None = None,
        batch_id: str | None = None,
        dead: bool = False,
        limit: int = 50,
        offset: int = 0,
    ) -> CommandList | LongPage:
        """A page of the session's commands, the newest first; a ``LongPage`` when their
        parameters and results pass PAGE_BYTES (bus/pages.py: the rest is read as it is sent)."""
        where, params = list_filter(session_id, statuses, command_type, batch_id)
        if dead:  # dead letters: failed after being retried (retries.py)
            where.append(DEAD)
        clause = " AND ".join(where)
        select = f"SELECT rowid, {COMMAND_COLUMNS} FROM commands WHERE {clause}"

        def read(conn: sqlite3.Connection) -> tuple[int, list[Any], bool]:
            fetch_session(conn, session_id)
            total = conn.execute(f"SELECT COUNT(*) FROM commands WHERE {clause}", params).fetchone()[0]
            return (total, *read_rows(conn, select, params, key="rowid", desc=True, offset=offset, count=limit))

        total, rows, cut = await self.store.read(read)
        commands = [row_to_command(r[1:]) for r in rows]
        if not cut:
            return CommandList(commands, total, limit, offset)

        async def more(rowid: int, count: int) -> tuple[list[Command], int]:
            part, _ = await self.store.read(
                lambda conn: read_rows(conn, select, params, key="rowid", desc=True, after=rowid, count=count)
            )
            return [row_to_command(r[1:]) for r in part], part[-1][0] if part else rowid

        return LongPage(
            "commands", commands, rows[-1][0], limit, more, lambda _last: CommandList([], total, limit, offset)
        )

    def _assemble(self, session_id: str, batch_id: str, info: tuple[Any, ...], rows: Sequence[Any]) -> Batch:
        commands = [self._current(r) for r in rows]
        return Batch(
            batch_id,
            session_id,
            info[0],
            bool(info[1]),
            batch_status(commands),
            info[2],
            commands,
            usage=add_usage(c.usage for c in commands),
        )

    async def get_batch(self, session_id: str, batch_id: str) -> Batch | LongPage:
        """The batch; a ``LongPage`` of its commands past PAGE_BYTES (answers.py)."""
        return await batch_page(self, session_id, batch_id)

    async def batch_states(self, session_id: str, batch_id: str) -> list[Command]:
        """The batch's commands without their parameters and results: to wait for them."""
        return await batch_states(self, session_id, batch_id)

    # -- wait and cancel ----------------------------------------------------------------

    async def wait(self, records: Sequence[Command], timeout: float, *, states: bool = False) -> bool:
        """Wait up to ``timeout`` s for the commands to finish; True if they all did. A command
        another node runs (bus/cluster.py) is followed in the store, and its record updated
        (``states``: its state only, for an answer read from the store afterwards)."""
        if all(r.status in TERMINAL_STATUSES for r in records):
            return True  # an eager command finished in its submission's write: nothing to wait for
        if self.deps.blocked and any(r.command_id in self.deps.blocked for r in records):
            return (await self.waits.wait({r.command_id: r for r in records}, timeout=timeout)).done
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not await self._wait_here(records, timeout, states):
            return False
        columns = STATE_COLUMNS if states else COMMAND_COLUMNS
        if await wait_in_store(self.store, records, deadline, self.changes, self.runner.draining(), columns):
            return True
        # Shutdown began: what moved to this node meanwhile (a session it took) ends as the
        # runner lets it (running commands finish, queued ones stay queued).
        await self._wait_here(records, max(0.0, deadline - loop.time()), states)
        return all(r.status in TERMINAL_STATUSES for r in records)

    async def _wait_here(self, records: Sequence[Command], timeout: float, states: bool) -> bool:
        """The runner's wait for those of ``records`` this node runs; their records updated
        (with the results of batch members read back, unless ``states``: Runner.apply_end)."""
        jobs = [j for j in (self.runner.jobs.get(r.command_id) for r in records) if j is not None]
        done = not jobs or await self.runner.wait(jobs, timeout)
        by_id = {r.command_id: r for r in records}
        for job in jobs:
            live = by_id.get(job.record.command_id)
            if live is not None and live is not job.record:
                _copy_record(job.record, live)
        if not states:
            await read_batch_results(self.store, records)
        return done

    async def cancel(self, session_id: str, command_id: str) -> Command:
        """Cancel a queued, blocked or executing command; CONFLICT if it already finished."""
        blocked = self.deps.blocked.get(command_id)
        if blocked is not None and blocked.record.session_id == session_id:
            rec = await self.deps.cancel(command_id)
            if rec is not None:
                return rec
        job = self.runner.jobs.get(command_id)
        if job is None or job.record.session_id != session_id:
            rec = await self.get(session_id, command_id)
            if rec.status in TERMINAL_STATUSES:
                raise BusError(
                    ErrorCode.CONFLICT,
                    f"command {command_id!r} already finished ({rec.status}); nothing to cancel",
                    {"command_id": command_id, "status": rec.status},
                )
            rec = await self._cancel_elsewhere(rec)  # another node runs it (bus/cluster.py)
            if rec.status in TERMINAL_STATUSES:
                return rec
            raise BusError(
                ErrorCode.CONFLICT,
                f"command {command_id!r} runs on another node, which did not cancel it in time",
                {"command_id": command_id, "status": rec.status},
            )
        if job.state == "queued":
            await self.runner.cancel_queued([job], "cancel", retry=False)
        else:
            self.runner.cancel_running(job, "cancel")
            await self.runner.wait([job], 30.0)
        return job.record

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """After a restart: what was executing is interrupted; what was queued runs again
        (on several nodes, only what ran on a node that is gone: bus/cluster.py)."""
        await self.bus.cluster.recover(self)
        await self.deps.start()  # blocked commands: after the queue, whose ends they wait for

    async def _cancel_elsewhere(self, rec: Command) -> Command:
        """Cancel a command this node does not run: a queued one in the store (its runner, if
        any, finds it gone when it would start it), a blocked one another node stored that this
        one does not follow yet (the nodes that do forget it when its CommandResult comes
        back), an executing one by asking its node."""
        if rec.status in ("queued", "blocked"):
            outcome = cancelled_outcome("cancel", 0.0)
            outcome.duration_ms = None
            if rec.status == "blocked":  # as the node following it says it (deps.py)
                outcome.error = command_error(ErrorCode.COMMAND_CANCELLED, "cancelled by request", reason="cancel")
            ts = now_iso()
            event = await self.store.write(lambda c: finish_row(c, rec, outcome, ts, from_status=rec.status))
            if event is not None:
                self.bus.events.notify([event])
        elif await self.bus.cluster.request_cancel(rec.session_id, rec.command_id):
            await wait_in_store(self.store, [rec], asyncio.get_running_loop().time() + CANCEL_WAIT_S, self.changes)
            return rec
        return await self.get(rec.session_id, rec.command_id)

    async def stop(self) -> None:
        self.retries.stop()
        await self.deps.stop()
        await self.runner.stop()

    async def on_session_end(self, session_id: str, purged: bool) -> None:
        """The session ended: its queued commands were cancelled in the store (by
        Sessions.close); cancel the one that runs and answer everyone waiting."""
        q = self.runner.queues.get(session_id)
        if q is not None:
            q.heap.clear()
        ts = now_iso()
        for job in [j for j in self.runner.jobs.values() if j.record.session_id == session_id]:
            if job.state == "queued":
                job.state = "cancelled"
                self.runner.end_unstarted(job, "session", ts)
            elif job.state in ("starting", "running"):
                self.runner.cancel_running(job, "session")
        if not purged and not self.bus.cluster.owns(session_id):
            # Another node may be running one of its commands: it stops it too.
            await self.bus.cluster.request_cancel(session_id, None, "session")
        await self.deps.on_session_end(session_id)
