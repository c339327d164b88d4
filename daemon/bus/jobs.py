"""What the command runner works with: a live command (``Job``), a batch, the outcome of a
run, a session's queue, and the rows that record a command starting and finishing (written
inside the runner's transactions)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from llmgine_daemon.bus.codec import dumps
from llmgine_daemon.bus.errors import BusError, UserCodeError
from llmgine_daemon.bus.events import insert_event
from llmgine_daemon.protocol import Command, ErrorBody, ErrorCode, Event

PRIORITY_RANK = {"high": 0, "normal": 1, "low": 2}


@dataclass(eq=False, slots=True)
class Job:
    record: Command
    rank: int
    # queued -> starting -> running -> finishing -> done; or queued -> cancelled
    state: str = "queued"
    cancel_reason: str | None = None  # cancel | session | batch | shutdown
    task: asyncio.Task[Any] | None = None
    waiter: asyncio.Future[Command] | None = None
    pending: list[tuple[str, dict[str, Any], dict[str, Any], str]] = field(default_factory=list)
    flush_scheduled: bool = False
    batch: BatchJob | None = None
    # W3C traceparent of the submitting request: the run is traced as its child.
    traceparent: str | None = None
    queued_at: float = field(default_factory=time.monotonic)
    # An eager command (handlers.Registration.eager) starts before its submission commits:
    # this is that submission's write. Until it has succeeded the command does not exist for
    # anyone else; if it fails, the run is dropped and nothing of it is written.
    admitted: asyncio.Future[Any] | None = None


@dataclass(eq=False, slots=True)
class BatchJob:
    batch_id: str
    session_id: str
    mode: str
    stop_on_error: bool
    created_at: str
    jobs: list[Job]
    rank: int
    stopped: bool = False


Entry = Job | BatchJob


@dataclass(slots=True)
class Outcome:
    status: str
    result: Any = None
    result_text: str | None = None
    error: ErrorBody | None = None
    duration_ms: float | None = None


class NotAdmitted(Exception):
    """An eager command's submission did not commit: its result must not be written."""


@dataclass(eq=False, slots=True)
class SessionQueue:
    heap: list[tuple[int, int, Entry]] = field(default_factory=list)
    # True from the moment a command is claimed or a drain task is started until it ends.
    busy: bool = False
    task: asyncio.Task[None] | None = None


def command_error(code: str, message: str, **details: Any) -> ErrorBody:
    return ErrorBody(code=code, message=message, details=details)


def started_data(rec: Command) -> dict[str, Any]:
    return {
        "command_id": rec.command_id,
        "command_type": rec.command_type,
        "priority": rec.priority,
        "batch_id": rec.batch_id,
    }


def start_rows(
    conn: sqlite3.Connection, jobs: list[Job], ts: str
) -> list[tuple[Job, Event]]:
    """Mark queued commands executing (inside a write). A command that is no longer queued in
    the store (its session ended meanwhile) is left out."""
    started = []
    for job in jobs:
        rec = job.record
        cur = conn.execute(
            "UPDATE commands SET status = 'executing', started_at = ?"
            " WHERE command_id = ? AND status = 'queued'",
            (ts, rec.command_id),
        )
        if cur.rowcount:
            event = insert_event(
                conn, rec.session_id, "CommandStarted", started_data(rec), timestamp=ts,
                trace_id=rec.trace_id,
            )
            started.append((job, event))
    return started


def finish_row(
    conn: sqlite3.Connection, rec: Command, outcome: Outcome, ts: str, *, from_status: str,
    strict: bool = False,
) -> Event | None:
    """Record a command's end. A command no longer in ``from_status`` is left alone (None), or
    with ``strict`` raises NotAdmitted (rolling the caller's write back)."""
    error_text = dumps(outcome.error) if outcome.error is not None else None
    cur = conn.execute(
        "UPDATE commands SET status = ?, result = ?, error = ?, finished_at = ?, duration_ms = ?"
        " WHERE command_id = ? AND status = ?",
        (outcome.status, outcome.result_text, error_text, ts, outcome.duration_ms,
         rec.command_id, from_status),
    )
    if not cur.rowcount:
        if strict:
            raise NotAdmitted(rec.command_id)
        return None
    return insert_event(
        conn, rec.session_id, "CommandResult", result_data(rec, outcome), timestamp=ts,
        trace_id=rec.trace_id,
    )


def result_data(rec: Command, outcome: Outcome) -> dict[str, Any]:
    """The data of a command's CommandResult event."""
    return {
        "command_id": rec.command_id,
        "command_type": rec.command_type,
        "status": outcome.status,
        "result": outcome.result,
        "error": outcome.error,
        "duration_ms": outcome.duration_ms,
        "batch_id": rec.batch_id,
    }


def failed_outcome(exc: BaseException, duration: float) -> Outcome:
    if isinstance(exc, UserCodeError) and exc.reason == "TIMEOUT":
        # The sandbox deadline (the handler's timeout, else sandbox.deadline) ended it.
        return Outcome(
            "timed_out",
            error=ErrorBody(code=ErrorCode.COMMAND_TIMEOUT, message=str(exc), details=exc.details()),
            duration_ms=duration,
        )
    if isinstance(exc, UserCodeError):
        # The user's exception, message and traceback: the daemon's frames that carried the
        # failure back from the sandbox would only hide them.
        return Outcome(
            "failed",
            error=ErrorBody(code=ErrorCode.COMMAND_EXECUTION_FAILED, message=str(exc), details=exc.details()),
            duration_ms=duration,
        )
    if isinstance(exc, BusError):
        # A handler that knows what went wrong says so with a code (an LLM engine's
        # PROVIDER_RATE_LIMITED, a VALIDATION_ERROR of its parameters): keep it, not the
        # generic COMMAND_EXECUTION_FAILED, and no traceback (it is not a bug).
        return Outcome(
            "failed",
            error=command_error(exc.code, exc.message, **exc.details),
            duration_ms=duration,
        )
    return Outcome(
        "failed",
        error=command_error(
            ErrorCode.COMMAND_EXECUTION_FAILED,
            str(exc) or type(exc).__name__,
            exception_type=type(exc).__name__,
            traceback="".join(traceback.format_exception(exc)),
        ),
        duration_ms=duration,
    )
