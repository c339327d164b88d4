"""What the command runner keeps in memory: a live command (``Job``), a batch, the outcome of
a run and how one is made, a session's queue. (The rows that record them are in
``records.py``.)"""

from __future__ import annotations

import asyncio
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from llmgine_daemon.bus.errors import BusError, UserCodeError
from llmgine_daemon.protocol import Command, ErrorBody, ErrorCode


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
    # An eager command (handler_registry.Registration.eager) starts before its submission commits:
    # this is that submission's write. Until it has succeeded the command does not exist for
    # anyone else; if it fails, the run is dropped and nothing of it is written.
    admitted: asyncio.Future[Any] | None = None
    # False for a member of a set-based batch (batchset.py): its run has no spans of its own,
    # the batch has one.
    traced: bool = True
    # Its parameters and metadata as JSON, in bytes: what it holds in memory counts against
    # security.limits.max_pending_bytes_per_session while it is tracked (Runner.held).
    size: int = 0


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
    heap: list[tuple[int, str, int, Entry]] = field(default_factory=list)
    # True from the moment a command is claimed or a drain task is started until it ends.
    busy: bool = False
    task: asyncio.Task[None] | None = None


def command_error(code: str, message: str, **details: Any) -> ErrorBody:
    return ErrorBody(code=code, message=message, details=details)


def cancelled_outcome(reason: str | None, duration: float) -> Outcome:
    """The outcome of a command ended by ``Job.cancel_reason`` (shutdown: interrupted)."""
    if reason == "shutdown":
        return Outcome(
            "interrupted",
            error=command_error(ErrorCode.COMMAND_INTERRUPTED, "the daemon shut down while it ran"),
            duration_ms=duration,
        )
    message = {
        "cancel": "cancelled by request",
        "session": "session ended",
        "batch": "cancelled: an earlier command of the batch failed (stop_on_error)",
        "parent": "cancelled: the handler that ran it (bus.execute) ended first",
        "engine": "cancelled: its engine was deleted",
    }.get(reason or "", "cancelled")
    return Outcome("cancelled", error=command_error(ErrorCode.COMMAND_CANCELLED, message), duration_ms=duration)


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
