"""A call to user code as the pool's callers see it - its limits (``SandboxLimits``), who makes
it (``CallContext``), what comes back (``CallOutcome``) and the failure codes - and how what
a worker sends back is checked: it comes from the sandbox, where user code can write frames
of its own, so nothing in it is taken on trust (``checked_outcome``, ``clean_error``,
``is_description``); what a call's requests get back (``answer_bus``) and its ``bus.log``
budget (``LogBudget``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from llmgine_daemon.protocol.base import MAX_JSON_DEPTH, json_too_deep
from llmgine_daemon.sandbox import frames
from llmgine_daemon.sandbox.frames import call_error

TIMEOUT = "TIMEOUT"
WORKER_CRASHED = "WORKER_CRASHED"
SANDBOX_UNAVAILABLE = "SANDBOX_UNAVAILABLE"


@dataclass
class SandboxLimits:
    deadline: float = 30.0  # seconds of wall time per call (a call may ask for another)
    memory_bytes: int = 1024 * 2**20  # RLIMIT_AS per process
    open_files: int = 256
    processes: int = 32  # processes a call may run at once (cgroup, or RLIMIT_NPROC budget)
    file_size_bytes: int = 64 * 2**20
    max_output: int = 64 * 1024  # characters of print() kept per call
    max_result: int = 1024 * 1024  # bytes of JSON a result may have
    max_depth: int = 8  # nested bus.execute / call_tool / handler-triggered-events
    max_timeout: float = 300.0  # the longest deadline a tool or handler may ask for
    session_share: int = 0  # concurrent depth-0 calls per session (0: half the pool, >= 1)
    tmp_bytes: int = 64 * 2**20  # size of each worker's private /tmp
    max_log_records: int = 1000  # bus.log records kept per call (the rest counted, dropped)
    max_log_bytes: int = 1024 * 1024  # ... and characters of them
    session_log_records: int = 1000  # bus.log records per session a minute, all its calls (0: any)


@dataclass
class CallContext:
    """Who is calling: passed back with every bus request the call makes."""

    session_id: str | None
    kind: str  # tool | command | event
    name: str  # tool name, command type, event type
    depth: int = 0
    call_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    share: str | None = None  # whose fair share the call takes (default: its session's)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class CallOutcome:
    ok: bool
    result: Any = None
    error: dict[str, Any] | None = None  # {code, message, details}
    output: str = ""
    output_truncated: bool = False
    duration_ms: float = 0.0


BusHandler = Callable[[CallContext, str, dict[str, Any]], Awaitable[Any]]
LogHandler = Callable[[CallContext, str, str], None]


class SandboxUnavailable(Exception):
    """No worker could be started."""


async def wait_started(task: asyncio.Future[None]) -> None:
    """Wait for a step of the pool's start (the isolation check, the workers); however it
    failed, the caller gets SandboxUnavailable (the API's SANDBOX_UNAVAILABLE, never a 500)."""
    try:
        await asyncio.shield(task)
    except SandboxUnavailable:
        raise
    except Exception as exc:  # a bug, the probe breaking: logged by the task's done-callback
        raise SandboxUnavailable(f"the sandbox could not start: {exc!r}") from exc


def log_unexpected(log: logging.Logger, task: asyncio.Future[None]) -> None:
    """A start step's done-callback: retrieves its failure (asyncio stays quiet) and logs it
    with its traceback unless it is SandboxUnavailable, logged where it was raised."""
    exc = None if task.cancelled() else task.exception()
    if exc is not None and not isinstance(exc, SandboxUnavailable):
        log.error("sandbox: cannot start: %r", exc, exc_info=exc)


def checked_outcome(done: frames.Done, run: frames.Run, duration_ms: float) -> CallOutcome:
    """The outcome a call's Done frame reports, checked: it comes from the sandbox, where
    user code can write frames of its own, so nothing in it is taken on trust."""
    output = done.output if isinstance(done.output, str) else ""
    truncated = bool(done.output_truncated) or len(output) > run.max_output
    outcome = CallOutcome(
        ok=False, output=output[: run.max_output], output_truncated=truncated, duration_ms=duration_ms
    )
    if not done.ok:
        outcome.error = clean_error(done.error, run.max_output)
        return outcome
    if len(done.result) > run.max_result:
        outcome.error = call_error(
            "RESULT_TOO_LARGE",
            f"the result is {len(done.result)} bytes of JSON, over the {run.max_result} byte limit",
            size=len(done.result),
            limit=run.max_result,
        )
        return outcome
    try:
        if json_too_deep(done.result):
            raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        value = _utf8(json.loads(done.result))  # no lone surrogates: it must leave as UTF-8
    except (ValueError, RecursionError, UnicodeError) as exc:
        outcome.error = call_error("INVALID_RESULT", f"the result is not valid JSON: {exc}"[:500])
        return outcome
    outcome.ok, outcome.result = True, value
    return outcome


def is_description(value: Any) -> bool:
    """What introspect.describe_function returns (plus the function's name)."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("function"), str)
        and value["function"].isidentifier()
        and isinstance(value.get("description"), (str, type(None)))
        and isinstance(value.get("parameters"), dict)
        and isinstance(value.get("is_async"), bool)
        and isinstance(value.get("positional"), int)
        and not isinstance(value["positional"], bool)
        and isinstance(value.get("var_positional"), bool)
    )


async def answer_bus(handler: BusHandler | None, context: CallContext, request: frames.BusRequest) -> frames.BusReply:
    """The reply to user code's ``bus.publish/execute/call_tool``: the handler's value, or its
    failure as a message (raised in user code as BusCallError)."""
    if handler is None:
        return frames.BusReply(request.req_id, ok=False, error="no bus is attached")
    try:
        if json_too_deep(request.args):
            raise ValueError(f"arguments nest deeper than {MAX_JSON_DEPTH} levels")
        args = json.loads(request.args)
        if not isinstance(args, dict):
            raise ValueError("arguments must be an object")
        value = await handler(context, request.op, args)
        return frames.BusReply(request.req_id, ok=True, value=json.dumps(value).encode())
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the failure goes back to user code as BusCallError
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        return frames.BusReply(request.req_id, ok=False, error=message)


class LogBudget:
    """One call's ``bus.log`` within its budget: past it records are counted, not written (a
    call looping on bus.log would fill the disk and push everyone else's logs out)."""

    def __init__(self, limits: SandboxLimits) -> None:
        self.limits = limits
        self.kept = 0
        self.size = 0
        self.dropped = 0

    def record(self, handler: LogHandler | None, context: CallContext, frame: frames.Log) -> None:
        if handler is None:
            return
        size = len(frame.message)
        if self.kept >= self.limits.max_log_records or self.size + size > self.limits.max_log_bytes:
            self.dropped += 1
            if self.dropped == 1:
                handler(
                    context,
                    "warning",
                    (
                        f"bus.log: this call reached its budget ({self.limits.max_log_records} "
                        f"records, {self.limits.max_log_bytes} characters); its further records "
                        "are dropped"
                    ),
                )
            return
        self.kept += 1
        self.size += size
        handler(context, frame.level, frame.message)


class SessionShares:
    """Fair share: one queue per session, so at most ``share`` of its calls hold workers at once
    and its further calls wait behind each other, not in front of other sessions."""

    def __init__(self, share: int) -> None:
        self.share = share
        self._queues: dict[Hashable, tuple[asyncio.Semaphore, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: Hashable | None) -> AsyncIterator[None]:
        """A place in ``key``'s queue for the block (``None``: no queue)."""
        if key is None:
            yield
            return
        sem, users = self._queues.setdefault(key, (asyncio.Semaphore(self.share), [0]))
        users[0] += 1
        try:
            async with sem:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._queues[key]


_CALL_ERRORS = {
    "SYNTAX_ERROR",
    "CODE_ERROR",
    "FUNCTION_NOT_FOUND",
    "EXECUTION_FAILED",
    "INVALID_RESULT",
    "RESULT_TOO_LARGE",
    TIMEOUT,
    WORKER_CRASHED,
    SANDBOX_UNAVAILABLE,
}


def clean_error(error: Any, max_details: int) -> dict[str, Any]:
    """A failed call's error in the one shape: a known code, a message, JSON details of at most
    ``max_details`` bytes (``sandbox.max_output``; ``capped_details``)."""
    if not isinstance(error, dict):
        return call_error(WORKER_CRASHED, "the call reported a failure the sandbox cannot read")
    code = error.get("code")
    message = error.get("message")
    details = error.get("details")
    try:
        details = json.loads(json.dumps(details)) if isinstance(details, dict) else {}
        _utf8(details)
    except (ValueError, TypeError, RecursionError, UnicodeError):
        details = {}
    return {
        "code": code if code in _CALL_ERRORS else "EXECUTION_FAILED",
        "message": _utf8(message)[:20000] if isinstance(message, str) else "the call failed",
        "details": capped_details(details, max_details),
    }


def capped_details(details: dict[str, Any], limit: int) -> dict[str, Any]:
    """``details`` if its JSON has at most ``limit`` bytes; else what fits of it, marked
    ``"truncated": true`` with the original ``size`` and the ``limit``: each string cut to an
    equal share of bytes of JSON (its start: a traceback's keeps the frames where it was
    raised; a character of several bytes or an escape counts what it takes), other values
    kept only when small; the marker alone when even that does not fit, and nothing when not
    even the marker does (a ``limit`` under 50 bytes)."""
    size = _json_bytes(details)
    if size <= limit:
        return details
    marker = {"truncated": True, "size": size, "limit": limit}
    share = max(limit - _json_bytes(marker), 0) // (2 * max(len(details), 1))
    kept: dict[str, Any] = {}
    for key, value in details.items():
        if isinstance(value, str):
            kept[key] = _cut(value, share)
        elif _json_bytes(value) <= share:
            kept[key] = value
    kept.update(marker)
    if _json_bytes(kept) <= limit:
        return kept
    return marker if _json_bytes(marker) <= limit else {}


def _cut(text: str, budget: int) -> str:
    """A start of ``text`` whose JSON takes at most ``budget`` bytes: every byte that fits, a
    shorter start when escapes take more room."""
    cut = text.encode()[: max(budget - 2, 0)].decode("utf-8", "ignore")
    while cut and _json_bytes(cut) > budget:  # escapes (\n, \", control characters) take more
        cut = cut[: len(cut) * 3 // 4]
    return cut


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode())


def _utf8(value: Any) -> Any:
    """``value`` if every string in it encodes as UTF-8 (no lone surrogates), else raise."""
    json.dumps(value, ensure_ascii=False).encode()
    return value
