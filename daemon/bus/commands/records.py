"""The store side of commands: validating a submission, the ``commands`` rows and how each
step of a command's life is written (inserted, started, finished, read back).

Everything here runs inside the store's transactions (write and read functions, in the
store's threads) or is pure: nothing touches the runner's memory.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec
from llmgine_daemon.bus.codec import dumps, loads, new_id
from llmgine_daemon.bus.commands.jobs import Job, NotAdmitted, Outcome
from llmgine_daemon.bus.commands.retry_policy import has_policy, parse_policy
from llmgine_daemon.bus.errors import BusError, invalid, not_found
from llmgine_daemon.bus.events import (
    INSERT_EVENTS,
    EventItem,
    event_rows,
    events_of,
    insert_event,
    insert_events,
    rows_bytes,
)
from llmgine_daemon.bus.sessions import fetch_session
from llmgine_daemon.bus.usage import USAGE_COLUMNS, usage_from_row
from llmgine_daemon.observability.context import current_trace_id
from llmgine_daemon.protocol import (
    PRIORITIES,
    TERMINAL_STATUSES,
    UNFINISHED_STATUSES,
    Command,
    CommandCreate,
    ErrorBody,
    ErrorCode,
    Event,
)
from llmgine_daemon.protocol.bus import MAX_COMMAND_TIMEOUT_S
from llmgine_daemon.protocol.grammar import TYPE_RE, TYPE_RULE
from llmgine_daemon.store.migrations import UNFINISHED_TERM
from llmgine_daemon.store.rows import Deferred

PRIORITY_RANK = {"high": 0, "normal": 1, "low": 2}
RANK_PRIORITY = {rank: name for name, rank in PRIORITY_RANK.items()}
MAX_TIMEOUT_S = MAX_COMMAND_TIMEOUT_S
# The WHERE term of the partial index commands_active (migration 4): a query by status uses
# that index only when it repeats the term word for word.
ACTIVE = "status IN ('queued', 'executing')"
# The same for commands_blocked (migration 80): blocked on dependencies (deps.py).
BLOCKED = "status = 'blocked'"
# The same for commands_session_unfinished (migration 137): a session's unfinished commands,
# by status. Add it to a query by session and status whose statuses are all unfinished.
UNFINISHED = UNFINISHED_TERM

INSERT_COLUMNS = (
    "command_id, session_id, command_type, parameters, metadata, priority, timeout, status,"
    " result, error, created_at, started_at, finished_at, batch_id, duration_ms, trace_id, attempt"
)
# Read back with every row: the usage an engine recorded (bus/usage.py, migration 100).
COMMAND_COLUMNS = INSERT_COLUMNS + ", " + USAGE_COLUMNS
# The same without the large ones (parameters, metadata, result, error: up to a request body or
# a result each, 1 MiB), for ``row_to_command``: a command's state, which is what a wait and a
# batch's status read (answers.py); their answers read the whole records again, part by part.
STATE_COLUMNS = COMMAND_COLUMNS.replace(" parameters, metadata,", " '{}', '{}',").replace(
    " result, error,", " NULL, NULL,"
)
assert STATE_COLUMNS.count("NULL") == 2 and "parameters" not in STATE_COLUMNS


def row_to_command(row: tuple[Any, ...]) -> Command:
    error = loads(row[9])
    return Command(
        command_id=row[0],
        session_id=row[1],
        command_type=row[2],
        parameters=loads(row[3]),
        metadata=loads(row[4]),
        priority=RANK_PRIORITY.get(row[5], "normal"),
        timeout=row[6],
        status=row[7],
        result=loads(row[8]),
        error=msgspec.convert(error, ErrorBody) if error is not None else None,
        created_at=row[10],
        started_at=row[11],
        finished_at=row[12],
        batch_id=row[13],
        duration_ms=row[14],
        trace_id=row[15],
        attempt=row[16],
        usage=usage_from_row(row[17:]),
    )


@dataclass(slots=True)
class CommandSpec:
    """A validated submission."""

    command_type: str
    parameters: dict[str, Any]
    metadata: dict[str, Any]
    priority: str
    timeout: float | None
    # Dependencies (deps.py): run after these commands; ``after_scope`` is the session a
    # session token limits them to (None: any session).
    after: list[str] = field(default_factory=list)
    after_policy: str = "completed"
    after_scope: str | None = None


def validate(body: CommandCreate, prefix: str = "", *, nested: bool = False, **extra: Any) -> CommandSpec:
    """Check what msgspec's types cannot; ``prefix``/``extra`` name a batch member.
    ``metadata._depth`` is the daemon's (``bus.execute``'s nesting depth, ``nested``): a client
    that set it could run handlers below depth 0 and so past ``sandbox.max_depth``."""
    if not nested and DEPTH_KEY in body.metadata:
        raise invalid(f"{prefix}metadata.{DEPTH_KEY}", "is set by the daemon (bus.execute's nesting depth)", **extra)
    if not TYPE_RE.match(body.command_type):
        raise invalid(
            f"{prefix}command_type",
            TYPE_RULE,
            **extra,
        )
    priority = body.metadata.get("priority", "normal")
    if priority is None:
        priority = "normal"
    if priority not in PRIORITIES:
        raise invalid(f"{prefix}metadata.priority", f"must be one of {', '.join(PRIORITIES)}", **extra)
    timeout = body.metadata.get("timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise invalid(f"{prefix}metadata.timeout", "must be a number of seconds", **extra)
        if not 0 < timeout <= MAX_TIMEOUT_S:
            raise invalid(f"{prefix}metadata.timeout", f"must be > 0 and at most {MAX_TIMEOUT_S:g}", **extra)
        timeout = float(timeout)
    if has_policy(body.metadata):
        parse_policy(body.metadata, f"{prefix}metadata.")
    if body.after and prefix:
        raise invalid(f"{prefix}after", "dependencies are for single commands, not batch members", **extra)
    after = list(dict.fromkeys(body.after)) if body.after else []
    return CommandSpec(body.command_type, body.parameters, body.metadata, priority, timeout, after, body.after_policy)


def held_size(spec: CommandSpec) -> int:
    """The bytes of a command's parameters and metadata as JSON: what it counts against
    security.limits.max_pending_bytes_per_session while this daemon keeps it (Job.size)."""
    return len(dumps(spec.parameters)) + len(dumps(spec.metadata))


DEPTH_KEY = "_depth"  # in the metadata of a command user code ran (bus.execute)


def command_depth(metadata: dict[str, Any] | None) -> int:
    """The nesting depth ``bus.execute`` gave a command: the depth its handler's user code,
    or the tools its engine calls, run at (0: a client submitted it). Set by execute_nested
    only (clients may not: ``validate``); a row stored before that rule may hold anything:
    counted as a top-level command."""
    depth = (metadata or {}).get(DEPTH_KEY, 0)
    return depth if isinstance(depth, int) and not isinstance(depth, bool) and depth > 0 else 0


def insert_command(
    conn: sqlite3.Connection, rec: Command, outcome: Outcome | None = None, finished_at: str | None = None
) -> None:
    """Store a new command; with ``outcome``, already finished (an eager command)."""
    conn.execute(_INSERT_COMMAND, _command_values(rec, outcome, finished_at))
    conn.execute(_COUNT, (1, rec.session_id))


def insert_commands(conn: sqlite3.Connection, recs: list[Command]) -> None:
    """Store new commands (a batch's) with one ``executemany``."""
    conn.executemany(_INSERT_COMMAND, [_command_values(rec, None, None) for rec in recs])
    for session_id, n in Counter(rec.session_id for rec in recs).items():
        conn.execute(_COUNT, (n, session_id))


def command_rows(
    rec: Command, outcome: Outcome | None, finished_at: str | None, items: list[EventItem], stamps: list[str]
) -> Deferred:
    """A new command and its first events (``items``, one timestamp each) as rows for the store
    to insert (store/rows.py: off the event loop, with the batch's others); what its write
    then returns is (None, the events). ``outcome``: stored already finished (eager.py)."""
    session_id = rec.session_id
    rows = event_rows(session_id, items, timestamp=stamps, trace_id=rec.trace_id)
    counts = (1, len(rows), rows_bytes(rows), session_id)
    return Deferred(
        INSERT_EVENTS,
        rows,
        [(_INSERT_COMMAND, [_command_values(rec, outcome, finished_at)]), (_COUNT_BOTH, [counts])],
        lambda first: (None, events_of(rows, items, first)),
    )


# The only statements that insert commands add them to their session's count in the same
# transaction (a row trigger did, one UPDATE per command: store/migrations.py m131).
_COUNT = "UPDATE session_counts SET commands = commands + ? WHERE session_id = ?"
_COUNT_BOTH = (
    "UPDATE session_counts SET commands = commands + ?, events = events + ?, event_bytes = event_bytes + ?"
    " WHERE session_id = ?"
)


_INSERT_COMMAND = f"INSERT INTO commands ({INSERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _command_values(rec: Command, outcome: Outcome | None, finished_at: str | None) -> tuple[Any, ...]:
    status, result, error, duration = rec.status, None, None, None
    if outcome is not None:
        status, result, duration = outcome.status, outcome.result_text, outcome.duration_ms
        error = dumps(outcome.error) if outcome.error is not None else None
    return (
        rec.command_id,
        rec.session_id,
        rec.command_type,
        dumps(rec.parameters),
        dumps(rec.metadata),
        PRIORITY_RANK[rec.priority],
        rec.timeout,
        status,
        result,
        error,
        rec.created_at,
        rec.started_at,
        finished_at,
        rec.batch_id,
        duration,
        rec.trace_id,
        rec.attempt,
    )


def list_filter(
    session_id: str, statuses: list[str] | None, command_type: str | None, batch_id: str | None
) -> tuple[list[str], list[Any]]:
    """The WHERE terms (ANDed) and parameters of a listing of a session's commands."""
    where, params = ["session_id = ?"], [session_id]
    if statuses:
        if set(statuses) <= set(UNFINISHED_STATUSES):
            where.append(UNFINISHED)  # so that the partial index of unfinished commands is used
        where.append(f"status IN ({', '.join('?' * len(statuses))})")
        params.extend(statuses)
    if command_type:
        where.append("command_type = ?")
        params.append(command_type)
    if batch_id:
        where.append("batch_id = ?")
        params.append(batch_id)
    return where, params


def new_record(session_id: str, spec: CommandSpec, ts: str, batch_id: str | None = None) -> Command:
    return Command(
        command_id=new_id(),
        status="queued",
        created_at=ts,
        session_id=session_id,
        command_type=spec.command_type,
        parameters=spec.parameters,
        metadata=spec.metadata,
        priority=spec.priority,
        timeout=spec.timeout,
        batch_id=batch_id,
        trace_id=current_trace_id(),
    )


def command_row(conn: sqlite3.Connection, session_id: str, command_id: str) -> tuple[Any, ...]:
    row = conn.execute(
        f"SELECT {COMMAND_COLUMNS} FROM commands WHERE command_id = ? AND session_id = ?",
        (command_id, session_id),
    ).fetchone()
    if row is None:  # purged since the key was recorded
        raise not_found("command", command_id=command_id, session_id=session_id)
    return row


def batch_rows(
    conn: sqlite3.Connection, session_id: str, batch_id: str, columns: str = COMMAND_COLUMNS
) -> tuple[Any, ...]:
    info = batch_info(conn, session_id, batch_id)
    rows = conn.execute(f"SELECT {columns} FROM commands WHERE batch_id = ? ORDER BY rowid", (batch_id,)).fetchall()
    return batch_id, info, rows


def batch_info(conn: sqlite3.Connection, session_id: str, batch_id: str) -> tuple[Any, ...]:
    """The batch's (mode, stop_on_error, created_at); NOT_FOUND when the session has none such."""
    info = conn.execute(
        "SELECT mode, stop_on_error, created_at FROM batches WHERE batch_id = ? AND session_id = ?",
        (batch_id, session_id),
    ).fetchone()
    if info is None:
        fetch_session(conn, session_id)
        raise BusError(
            ErrorCode.NOT_FOUND,
            f"batch {batch_id!r} not found in session {session_id!r}",
            {"session_id": session_id, "batch_id": batch_id},
        )
    return info


def batch_status(commands: list[Command]) -> str:
    if all(c.status in TERMINAL_STATUSES for c in commands):
        return "finished"
    if any(c.status != "queued" for c in commands):
        return "executing"
    return "queued"


def started_data(rec: Command) -> dict[str, Any]:
    return {
        "command_id": rec.command_id,
        "command_type": rec.command_type,
        "priority": rec.priority,
        "batch_id": rec.batch_id,
        "attempt": rec.attempt,
    }


def start_rows(conn: sqlite3.Connection, jobs: list[Job], ts: str) -> list[tuple[Job, Event]]:
    """Mark queued commands executing (inside a write). A command that is no longer queued in
    the store (its session ended meanwhile) is left out."""
    started = []
    for job in jobs:
        rec = job.record
        cur = conn.execute(
            "UPDATE commands SET status = 'executing', started_at = ? WHERE command_id = ? AND status = 'queued'",
            (ts, rec.command_id),
        )
        if cur.rowcount:
            event = insert_event(
                conn,
                rec.session_id,
                "CommandStarted",
                started_data(rec),
                timestamp=ts,
                trace_id=rec.trace_id,
            )
            started.append((job, event))
    return started


def finish_row(
    conn: sqlite3.Connection,
    rec: Command,
    outcome: Outcome,
    ts: str,
    *,
    from_status: str,
    strict: bool = False,
) -> Event | None:
    """Record a command's end. A command no longer in ``from_status`` is left alone (None), or
    with ``strict`` raises NotAdmitted (rolling the caller's write back)."""
    error_text = dumps(outcome.error) if outcome.error is not None else None
    cur = conn.execute(
        "UPDATE commands SET status = ?, result = ?, error = ?, finished_at = ?, duration_ms = ?"
        " WHERE command_id = ? AND status = ?",
        (outcome.status, outcome.result_text, error_text, ts, outcome.duration_ms, rec.command_id, from_status),
    )
    if not cur.rowcount:
        if strict:
            raise NotAdmitted(rec.command_id)
        return None
    return insert_event(
        conn,
        rec.session_id,
        "CommandResult",
        result_data(rec, outcome),
        timestamp=ts,
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
        "attempt": rec.attempt,
    }


class SetChanged(Exception):
    """A set-based write found a command no longer queued (ended meanwhile): the caller writes
    that set again row by row (``finish_set(..., by_row=True)``)."""


_FINISH_QUEUED = (
    "UPDATE commands SET status = ?, started_at = ?, result = ?, error = ?, finished_at = ?, duration_ms = ?"
    " WHERE command_id = ? AND status = 'queued'"
)


def finish_set(
    conn: sqlite3.Connection, members: list[tuple[Job, Outcome, list[Any], str]], *, by_row: bool = False
) -> tuple[list[tuple[Job, Outcome, list[Any], str]], list[Event]]:
    """Record queued commands that ran to their end at once (a set-based batch, batchset.py):
    each (job, outcome, its handler's events, time) is stored started and finished with one
    ``executemany``, its events (CommandStarted, the handler's, CommandResult) with another.
    Returns the members written and their events. A command no longer
    queued in the store is left out: ``by_row`` finds which (one statement each); without it
    such a command raises SetChanged (rolling the write back)."""
    rows = [
        (
            o.status,
            ts,
            o.result_text,
            dumps(o.error) if o.error is not None else None,
            ts,
            o.duration_ms,
            j.record.command_id,
        )
        for j, o, _, ts in members
    ]
    if by_row:
        kept = [m for m, row in zip(members, rows, strict=True) if conn.execute(_FINISH_QUEUED, row).rowcount]
    else:
        if conn.executemany(_FINISH_QUEUED, rows).rowcount != len(rows):
            raise SetChanged
        kept = members
    events: list[Event] = []
    group: list[tuple[str, dict[str, Any], dict[str, Any], str]] = []
    stamps: list[str] = []
    trace: str | None = None
    for job, outcome, pending, ts in kept:
        rec = job.record
        if group and rec.trace_id != trace:  # one statement per run of the same trace
            events += insert_events(conn, rec.session_id, group, timestamp=stamps, trace_id=trace)
            group, stamps = [], []
        trace = rec.trace_id
        group.append(("CommandStarted", started_data(rec), {}, "bus"))
        group.extend(pending)
        group.append(("CommandResult", result_data(rec, outcome), {}, "bus"))
        stamps.extend([ts] * (len(pending) + 2))
    if group:
        events += insert_events(conn, kept[0][0].record.session_id, group, timestamp=stamps, trace_id=trace)
    return kept, events
