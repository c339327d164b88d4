"""Retries and dead letters.

A command whose attempt failed or timed out is tried again when its policy says so
(``retry_policy.py``: ``metadata.retries``/``backoff``/``retry_on``, else the
``commands.retry_defaults`` setting for its type). The runner asks (``Runner.retry``, one
check in ``Runner.finish`` for a failed single command); here the attempt is recorded and the
next one scheduled:

- one write: the command goes back to ``queued`` with ``attempt + 1`` and ``retry_at`` (the
  due time, stored: a restart keeps the delay, ``Commands.start`` schedules it again instead of
  queueing it), and a ``CommandRetrying`` event (the failed attempt's
  number, status, error and duration, the delay and the next attempt's number). Every
  ``CommandStarted``/``CommandResult`` carries ``attempt``.
- a timer (never a sleeping task) pushes the job onto its session's queue when it is due.

A command that failed after it was retried is a dead letter (``GET ...?dead=true``,
``llmgine command list --dead``). ``retry`` (``POST .../commands/retry``) runs finished
commands again: same id, ``attempt + 1``.

Not retried: batch members, commands run inline by another handler (``bus.execute``) and
cancelled or interrupted ones. A command that may be retried is never run eagerly
(``Commands.submit``): its failure must go through the runner.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from llmgine_daemon.bus.cluster import LeaseLost
from llmgine_daemon.bus.commands.jobs import Job, Outcome
from llmgine_daemon.bus.commands.records import (
    COMMAND_COLUMNS,
    PRIORITY_RANK,
    CommandSpec,
    row_to_command,
)
from llmgine_daemon.bus.commands.retry_policy import RetryPolicy, has_policy, parse_policy
from llmgine_daemon.bus.errors import BusError, not_found
from llmgine_daemon.bus.events import insert_event, insert_events
from llmgine_daemon.bus.sessions import require_active
from llmgine_daemon.protocol import Command, CommandList, ErrorCode, Event, now_iso, parse_iso, to_iso
from llmgine_daemon.store.db import StorageError

if TYPE_CHECKING:
    from llmgine_daemon.bus.commands.service import Commands

RERUNNABLE = ("failed", "timed_out", "cancelled", "interrupted")
DEAD = "status IN ('failed', 'timed_out') AND attempt > 1"
MAX_RERUN = 1000


class Retries:
    def __init__(self, commands: Commands) -> None:
        self.commands = commands
        self.runner = commands.runner
        self.store = commands.store
        self.defaults: dict[str, RetryPolicy] = {}
        self.due: dict[str, str] = {}  # command_id -> retry_at of a job waiting for its next attempt
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.runner.retry = self

    def set_defaults(self, raw: dict[str, Any]) -> None:
        """``commands.retry_defaults``: {command_type: {retries, backoff, retry_on}}."""
        defaults = {}
        for command_type, value in raw.items():
            if not isinstance(value, dict):
                raise ValueError(f"commands.retry_defaults.{command_type}: expected an object")
            try:
                defaults[command_type] = parse_policy(value, f"commands.retry_defaults.{command_type}.")
            except BusError as exc:
                raise ValueError(f"{exc.details.get('field')}: {exc.details.get('issue') or exc.message}") from None
        self.defaults = defaults

    def applies(self, spec: CommandSpec) -> bool:
        """Whether a failure of this submission may be retried (then it never runs eagerly)."""
        return has_policy(spec.metadata) or spec.command_type in self.defaults

    def _policy(self, rec: Command) -> RetryPolicy | None:
        if has_policy(rec.metadata):
            return parse_policy(rec.metadata)  # checked at submission
        return self.defaults.get(rec.command_type)

    # -- the runner's question ------------------------------------------------------------

    def plan(self, job: Job, outcome: Outcome) -> float | None:
        """Seconds until the next attempt, or None: this outcome is final."""
        if job.cancel_reason is not None or job.admitted is not None or self.runner.stopping:
            return None
        policy = self._policy(job.record)
        if policy is None or job.record.attempt > policy.retries:
            return None
        if not policy.retries_on(outcome.error.code if outcome.error is not None else None):
            return None
        return policy.delay(job.record.attempt)

    async def reschedule(self, job: Job, outcome: Outcome, delay: float, start: list[Job]) -> list[Job]:
        """Record the failed attempt, schedule the next; then start ``start`` as ``finish`` would."""
        rec = job.record
        pending, job.pending = job.pending, []
        ts = now_iso()
        retry_at = to_iso(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay))
        data = {
            "command_id": rec.command_id,
            "command_type": rec.command_type,
            "attempt": rec.attempt,
            "status": outcome.status,
            "error": outcome.error,
            "duration_ms": outcome.duration_ms,
            "delay_s": round(delay, 3),
            "retry_at": retry_at,
            "next_attempt": rec.attempt + 1,
        }

        cluster = self.commands.bus.cluster

        def write(conn: sqlite3.Connection) -> tuple[list[Event], bool]:
            cluster.fence(conn, rec.session_id)  # as every write that ends an attempt
            events = insert_events(conn, rec.session_id, pending, timestamp=ts, trace_id=rec.trace_id)
            cur = conn.execute(
                "UPDATE commands SET status = 'queued', attempt = ?, retry_at = ?, error = NULL, started_at = NULL,"
                " duration_ms = NULL WHERE command_id = ? AND status = 'executing'",
                (rec.attempt + 1, retry_at, rec.command_id),
            )
            if not cur.rowcount:
                return events, False
            events.append(
                insert_event(conn, rec.session_id, "CommandRetrying", data, timestamp=ts, trace_id=rec.trace_id)
            )
            return events, True

        try:
            events, ok = await self.runner.durable_write(write)
        except LeaseLost:  # another node took the session over: it recorded this attempt interrupted
            self.runner.lose_jobs([job, *start])
            return []
        except StorageError:  # only while stopping: still executing in the store (interrupted at start)
            job.pending[:0] = pending
            return []
        if ok:
            rec.status, rec.attempt, rec.started_at = "queued", rec.attempt + 1, None
            rec.error = rec.duration_ms = None  # a queued command has none: CommandRetrying holds them
            job.state, job.task, job.queued_at = "queued", None, time.monotonic()
            self.schedule(job, retry_at)
        else:  # ended meanwhile in the store (its session closed)
            self.runner.apply_end(job, outcome, ts)
        self.commands.bus.events.notify(events)
        return await self.runner.start_jobs(start) if start else []

    def schedule(self, job: Job, retry_at: str) -> None:
        """Push ``job`` onto its session's queue at ``retry_at`` (a timer, not a task)."""
        cid = job.record.command_id
        self.due[cid] = retry_at
        delay = max(0.0, parse_iso(retry_at).timestamp() - time.time())
        self._timers[cid] = asyncio.get_running_loop().call_later(delay, self._fire, job)

    def _fire(self, job: Job) -> None:
        cid = job.record.command_id
        self.due.pop(cid, None)
        self._timers.pop(cid, None)
        if job.state == "queued":
            self.runner.push(job.record.session_id, job)

    async def load_due(self) -> dict[str, str]:
        """After a restart: the queued commands that wait for a retry, and when."""
        rows = await self.store.read(
            lambda conn: conn.execute(
                "SELECT command_id, retry_at FROM commands WHERE status = 'queued' AND retry_at IS NOT NULL"
            ).fetchall()
        )
        return {r[0]: r[1] for r in rows}

    def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    # -- running finished commands again --------------------------------------------------

    async def rerun(self, session_id: str, command_ids: list[str], *, failed: bool, dead: bool) -> CommandList:
        """Queue finished commands again (same id, attempt + 1): those named, or every failed
        (``failed``) or dead-letter (``dead``) one of the session."""
        ts = now_iso()

        def write(conn: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], list[Event]]:
            require_active(conn, session_id, self.commands.bus.capacity.max_event_bytes_per_session)
            if command_ids:
                marks = ", ".join("?" * len(command_ids))
                rows = conn.execute(
                    f"SELECT {COMMAND_COLUMNS} FROM commands WHERE session_id = ? AND command_id IN ({marks})",
                    (session_id, *command_ids),
                ).fetchall()
                found = {r[0] for r in rows}
                missing = [c for c in command_ids if c not in found]
                if missing:
                    raise not_found("command", command_id=missing[0], session_id=session_id)
                busy = [r for r in rows if r[7] not in RERUNNABLE]
                if busy:
                    raise BusError(
                        ErrorCode.CONFLICT,
                        f"command {busy[0][0]!r} is {busy[0][7]}: only a finished command that did not "
                        "complete can run again",
                        {"command_id": busy[0][0], "status": busy[0][7]},
                    )
            else:
                where = DEAD if dead else "status IN ('failed', 'timed_out')"
                rows = conn.execute(
                    f"SELECT {COMMAND_COLUMNS} FROM commands WHERE session_id = ? AND {where} ORDER BY rowid LIMIT ?",
                    (session_id, MAX_RERUN),
                ).fetchall()
            if rows:
                self.commands.bus.capacity.check_pending(conn, session_id, len(rows))
            events = []
            for row in rows:
                self.commands.bus.cluster.rerun(conn, row[0])
                conn.execute(
                    "UPDATE commands SET status = 'queued', attempt = attempt + 1, result = NULL, error = NULL,"
                    " started_at = NULL, finished_at = NULL, duration_ms = NULL, retry_at = NULL"
                    " WHERE command_id = ?",
                    (row[0],),
                )
                data = {
                    "command_id": row[0],
                    "command_type": row[2],
                    "attempt": row[16],
                    "status": row[7],
                    "next_attempt": row[16] + 1,
                    "manual": True,
                }
                events.append(insert_event(conn, session_id, "CommandRetrying", data, timestamp=ts, trace_id=row[15]))
            return rows, events

        rows, events = await self.store.write(write)
        records = []
        for row in rows:
            rec = row_to_command(row)
            rec.status, rec.attempt = "queued", rec.attempt + 1
            rec.result = rec.error = rec.started_at = rec.finished_at = rec.duration_ms = None
            job = Job(rec, PRIORITY_RANK[rec.priority])
            self.runner.track(job)
            self.runner.push(session_id, job)
            records.append(rec)
        self.commands.bus.events.notify(events)
        return CommandList(records, len(records), MAX_RERUN, 0)
