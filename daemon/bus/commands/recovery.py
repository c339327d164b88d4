"""Bringing the command queue back from the store: after a restart (``recover_all``: this
daemon is the whole bus) and, on several nodes (bus/cluster.py), for a session taken over from
a node that is gone (``interrupt_executing``, ``queued_rows``, ``resume`` for one session).
A mixin of ``Commands`` (service.py), which holds what these methods use: ``store``, ``bus``,
``runner``, ``retries``.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import TYPE_CHECKING, Any

from llmgine_daemon.bus.commands.jobs import BatchJob, Job, Outcome, command_error
from llmgine_daemon.bus.commands.records import ACTIVE, COMMAND_COLUMNS, PRIORITY_RANK, finish_row, row_to_command
from llmgine_daemon.protocol import ErrorCode, Event, now_iso

if TYPE_CHECKING:
    from llmgine_daemon.bus.commands.retries import Retries
    from llmgine_daemon.bus.commands.runner import Runner
    from llmgine_daemon.bus.core import Bus
    from llmgine_daemon.store.db import Store

log = logging.getLogger("llmgine.commands")

# The queued commands (rows in the order they were queued) and their batches' rows by id.
QueuedRows = tuple[list[tuple[Any, ...]], dict[str, tuple[Any, ...]]]


class Recovery:
    # Commands' (service.py).
    bus: Bus
    store: Store
    runner: Runner
    retries: Retries

    async def recover_all(self) -> None:
        """This daemon is the whole bus: every executing command was its own (interrupted by the
        last shutdown), every queued one is its to run."""

        def write(conn: sqlite3.Connection) -> tuple[list[Event], QueuedRows]:
            return self.interrupt_executing(conn, None), self.queued_rows(conn, None)

        events, queued = await self.store.write(write, heavy=True)
        if events:
            log.info("marked %d command(s) interrupted by the last shutdown", len(events))
        self.bus.events.notify(events)
        self.resume(*queued, await self.retries.load_due() if queued[0] else {})

    def interrupt_executing(
        self, conn: sqlite3.Connection, session_id: str | None, exclude: set[str] | None = None
    ) -> list[Event]:
        """Inside a write: mark the executing commands (of one session, or all) interrupted,
        but those in ``exclude`` (running here)."""
        ts = now_iso()
        where, params = (" AND session_id = ?", (session_id,)) if session_id is not None else ("", ())
        rows = conn.execute(
            f"SELECT {COMMAND_COLUMNS} FROM commands WHERE {ACTIVE} AND status = 'executing'{where}", params
        ).fetchall()
        events = []
        for row in rows:
            if exclude and row[0] in exclude:
                continue
            outcome = Outcome(
                "interrupted",
                error=command_error(
                    ErrorCode.COMMAND_INTERRUPTED, "the daemon running it stopped while the command was executing"
                ),
            )
            event = finish_row(conn, row_to_command(row), outcome, ts, from_status="executing")
            if event is not None:
                events.append(event)
        return events

    def queued_rows(self, conn: sqlite3.Connection, session_id: str | None) -> QueuedRows:
        """Inside a read or write: the queued commands (of one session, or all) in the order they
        were queued, and their batches."""
        where, params = (" AND session_id = ?", (session_id,)) if session_id is not None else ("", ())
        queued = conn.execute(
            f"SELECT {COMMAND_COLUMNS} FROM commands WHERE {ACTIVE} AND status = 'queued'{where} ORDER BY rowid",
            params,
        ).fetchall()
        ids = sorted({r[13] for r in queued if r[13]})
        batches: dict[str, tuple[Any, ...]] = {}
        if ids:
            marks = ", ".join("?" * len(ids))
            for r in conn.execute(
                "SELECT batch_id, session_id, mode, stop_on_error, created_at FROM batches"
                f" WHERE batch_id IN ({marks})",
                ids,
            ).fetchall():
                batches[r[0]] = r
        return queued, batches

    def resume(self, queued: list[tuple[Any, ...]], batches: dict[str, tuple[Any, ...]], due: dict[str, str]) -> None:
        """Queue stored commands this node does not hold in memory yet (after a restart, or a
        session taken over from another node); those in ``due`` wait for their next attempt
        (commands/retries.py) until then."""
        queued = [row for row in queued if row[0] not in self.runner.jobs]
        grouped: dict[str, BatchJob] = {}
        for row in queued:
            rec = row_to_command(row)
            job = Job(rec, PRIORITY_RANK[rec.priority])
            self.runner.track(job)
            if rec.command_id in due:  # waits for its next attempt: the delay is kept
                self.retries.schedule(job, due[rec.command_id])
                continue
            info = batches.get(rec.batch_id) if rec.batch_id else None
            if info is None:
                self.runner.push(rec.session_id, job)
                continue
            batch = grouped.get(info[0])
            if batch is None:
                batch = grouped[info[0]] = BatchJob(info[0], info[1], info[2], bool(info[3]), info[4], [], job.rank)
            batch.rank = min(batch.rank, job.rank)
            job.batch = batch
            batch.jobs.append(job)
        for batch in grouped.values():
            self.runner.push(batch.session_id, batch)
        if queued:
            log.info("resumed %d queued command(s)", len(queued))
