"""Schedules: a command submitted on a cron expression, every N seconds, or once at a time.

Each firing submits a normal command (``Commands.submit``) whose metadata carries
``schedule_id`` and ``schedule_due`` (the firing's due time). Exactly once, across restarts and
across schedulers sharing a database: the firing is claimed by ``UPDATE schedules SET next_due
= <following> ... WHERE schedule_id = ? AND next_due = <due> AND status = 'active'`` inside the
transaction that inserts the command (``Commands.submit(claim=...)``); when that matches no
row, someone else fired it and the transaction - command included - is rolled back.

Firing times (bus/schedule_times.py) are read on the cluster's clock (``cluster.now()``: on
PostgreSQL the database server's, so nodes whose own clocks differ agree on what is due). A
firing that comes due while the daemon runs fires once, even if late; firings the loop fell
behind on are coalesced into it. Firings that came due while the daemon was down (due before
this scheduler started) follow the schedule's ``missed`` policy: ``skip`` (the default) moves
on to the next firing after now, ``run_once`` fires one
command now for all of them.

A schedule is refused at creation when nothing handles its command type in the session then
(HANDLER_NOT_FOUND, as submitting the command would be). A firing that cannot submit (its
handler was unregistered since, say) is recorded in ``last_error`` and
the schedule moves on; one whose session ended or is gone ends the schedule (``done``), as a
one-time (``at``) schedule does after its firing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from llmgine_daemon.aio import cancel_and_wait, wait_event
from llmgine_daemon.bus.codec import dumps, loads, new_id, row_reader
from llmgine_daemon.bus.commands import validate
from llmgine_daemon.bus.errors import BusError, StorageError, handler_not_found, invalid
from llmgine_daemon.bus.schedule_times import When, parse, zone
from llmgine_daemon.bus.scoping import check_limits, missing, require_scope, visible
from llmgine_daemon.bus.sessions import require_active
from llmgine_daemon.observability.repeats import RoundFailures
from llmgine_daemon.protocol import (
    CommandCreate,
    ErrorCode,
    Schedule,
    ScheduleCreate,
    ScheduleList,
    now_iso,
    parse_iso,
    to_iso,
)

if TYPE_CHECKING:
    from llmgine_daemon.bus.core import Bus

log = logging.getLogger("llmgine.schedules")

COLUMNS = (
    "schedule_id, session_id, kind, spec, timezone, missed, command, status, next_due, created_at,"
    " fire_count, last_fired_at, last_command_id, last_error"
)
IDLE_S = 30.0  # the longest the loop sleeps without looking (another scheduler's new rows)
ENDS_SCHEDULE = (ErrorCode.SESSION_CLOSED, ErrorCode.SESSION_NOT_FOUND)


class _Taken(Exception):
    """The firing was claimed by another scheduler (or the schedule changed meanwhile)."""


def _when(row: tuple[Any, ...]) -> When:
    return When(row[2], row[3], zone(row[4]))


def _dt(text: str | None) -> dt.datetime | None:
    return parse_iso(text) if text else None


_schedule = row_reader(Schedule, COLUMNS, json=("command",))


def row_to_schedule(row: tuple[Any, ...]) -> Schedule:
    upcoming = _when(row).upcoming(_dt(row[8])) if row[7] == "active" else []
    schedule = _schedule(row, upcoming=[to_iso(t) for t in upcoming])
    if schedule.kind == "at" and not schedule.spec.endswith("Z"):  # stored as ...+00:00 before
        schedule.spec = to_iso(parse_iso(schedule.spec))
    return schedule


def _fetch(conn: sqlite3.Connection, schedule_id: str, scope: str | None) -> tuple[Any, ...]:
    row = conn.execute(f"SELECT {COLUMNS} FROM schedules WHERE schedule_id = ?", (schedule_id,)).fetchone()
    if row is None or not visible(scope, row[1]):
        raise missing("schedule", schedule_id)
    return row


class Schedules:
    def __init__(self, bus: Bus, max_per_session: int = 50, max_total: int = 1000) -> None:
        self.bus = bus
        self.store = bus.store
        self.limits = (("schedules.max_per_session", max_per_session), ("schedules.max_total", max_total))
        self.started_at = self.bus.cluster.now()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- the API --------------------------------------------------------------------------

    async def create(self, body: ScheduleCreate, scope: str | None, if_exists: str = "create") -> tuple[Schedule, bool]:
        """The schedule and whether it was created. ``if_exists`` when the session already has
        the same one (same command, parameters, metadata and timing, not done): ``create``
        another, ``reuse`` it (returned, nothing written) or ``error`` (CONFLICT); decided in
        the write's transaction (`schedule add --reuse`)."""
        require_scope(scope, body.session_id, "schedules")
        when = parse(body.cron, body.every, body.at, body.timezone)
        validate(body.command, prefix="command.")  # 422 now, not at every firing
        if "schedule_id" in body.command.metadata:
            raise invalid("command.metadata.schedule_id", "is set by the schedule")
        now = self.bus.cluster.now()
        first = when.first(now)
        if first is None and when.kind == "cron":
            raise invalid("cron", "never fires: it names no date that exists (e.g. 31 February)")
        if first is None:
            raise invalid("at", "is in the past")
        await self._require_handler(body.session_id, body.command.command_type)
        ts, schedule_id = now_iso(), new_id()
        row = (
            schedule_id,
            body.session_id,
            when.kind,
            when.spec,
            body.timezone,
            body.missed,
            dumps(msgspec.to_builtins(body.command)),
            "active",
            to_iso(first),
            ts,
            0,
            None,
            None,
            None,
        )

        def write(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            require_active(conn, body.session_id)
            if if_exists != "create":
                # An `at` stored before it was said with a Z (...+00:00) is the same schedule.
                spec, kind = row[3], row[2]
                earlier = parse_iso(spec).isoformat() if kind == "at" else spec
                twin = conn.execute(
                    f"SELECT {COLUMNS} FROM schedules WHERE session_id = ? AND kind = ? AND spec IN (?, ?)"
                    " AND timezone = ? AND missed = ? AND command = ? AND status != 'done'"
                    " ORDER BY created_at LIMIT 1",
                    (*row[1:4], earlier, *row[4:7]),
                ).fetchone()
                if twin is not None and if_exists == "reuse":
                    return tuple(twin)
                if twin is not None:
                    raise BusError(
                        ErrorCode.CONFLICT,
                        f"the session already has this schedule ({twin[0]})",
                        {"schedule_id": twin[0], "session_id": body.session_id},
                    )
            check_limits(conn, "schedules", body.session_id, *self.limits)
            conn.execute(f"INSERT INTO schedules ({COLUMNS}) VALUES ({', '.join('?' * len(row))})", row)
            return None

        twin = await self.store.write(write)
        if twin is not None:
            return row_to_schedule(twin), False
        self._wake.set()
        return row_to_schedule(row), True

    async def _require_handler(self, session_id: str, command_type: str) -> None:
        """HANDLER_NOT_FOUND now, as `command run` would answer, rather than a schedule stored to
        fail at every firing (a typo in the type, no engine created yet). What counts is what
        handles the type in the session at this moment: its engines and command handlers, and
        the global ones; a missing or ended session is reported first."""
        if await self.bus.commands.resolve(session_id, command_type) is not None:
            return
        await self.store.read(lambda conn: require_active(conn, session_id))
        raise handler_not_found("command", command_type, session_id, or_global=True, command_type=command_type)

    async def list(self, scope: str | None, session_id: str | None = None) -> ScheduleList:
        wanted = scope if scope is not None else session_id
        where, params = (" WHERE session_id = ?", (wanted,)) if wanted is not None else ("", ())
        rows = await self.store.fetchall(f"SELECT {COLUMNS} FROM schedules{where} ORDER BY created_at", params)
        return ScheduleList([row_to_schedule(r) for r in rows], len(rows))

    async def get(self, schedule_id: str, scope: str | None) -> Schedule:
        return row_to_schedule(await self.store.read(lambda conn: _fetch(conn, schedule_id, scope)))

    async def delete(self, schedule_id: str, scope: str | None) -> None:
        def write(conn: sqlite3.Connection) -> None:
            _fetch(conn, schedule_id, scope)
            conn.execute("DELETE FROM schedules WHERE schedule_id = ?", (schedule_id,))

        await self.store.write(write)

    async def set_paused(self, schedule_id: str, scope: str | None, paused: bool) -> Schedule:
        """Pause (no firing until resumed) or resume (from the next firing after now: what
        came due while paused is not caught up). A finished schedule cannot be resumed."""

        def write(conn: sqlite3.Connection) -> tuple[Any, ...]:
            row = _fetch(conn, schedule_id, scope)
            if row[7] == "done":
                raise BusError(
                    ErrorCode.CONFLICT,
                    f"schedule {schedule_id!r} is done; nothing to {'pause' if paused else 'resume'}",
                    {"schedule_id": schedule_id, "status": "done"},
                )
            if paused:
                conn.execute(
                    "UPDATE schedules SET status = 'paused', next_due = NULL WHERE schedule_id = ?", (schedule_id,)
                )
            elif row[7] == "paused":
                nxt = _when(row).first(self.bus.cluster.now())
                status = "active" if nxt is not None else "done"
                conn.execute(
                    "UPDATE schedules SET status = ?, next_due = ? WHERE schedule_id = ?",
                    (status, to_iso(nxt) if nxt else None, schedule_id),
                )
            return _fetch(conn, schedule_id, scope)

        row = await self.store.write(write)
        self._wake.set()
        return row_to_schedule(row)

    @staticmethod
    def end_with_session(conn: sqlite3.Connection, session_id: str, purged: bool) -> None:
        """An ended session's schedules are done; a purged one's are deleted (in the
        transaction that ends it: Sessions.ending)."""
        if purged:
            conn.execute("DELETE FROM schedules WHERE session_id = ?", (session_id,))
        else:
            conn.execute(
                "UPDATE schedules SET status = 'done', next_due = NULL, last_error = ?"
                " WHERE session_id = ? AND status != 'done'",
                ("the session ended", session_id),
            )

    # -- the scheduler --------------------------------------------------------------------

    def start(self) -> None:
        self.started_at = self.bus.cluster.now()
        self._task = asyncio.create_task(self._loop(), name="scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _loop(self) -> None:
        failures = RoundFailures(log, "schedules", "scheduler round failed", expected=(StorageError,))
        while True:
            try:
                wait = await self.run_due()
                failures.worked()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - busy, full or unreachable: look again shortly
                failures.failed(exc)
                wait = 1.0
            await wait_event(self._wake, min(wait, IDLE_S))
            self._wake.clear()

    async def run_due(self) -> float:
        """Fire what is due; seconds until the next firing."""
        now = self.bus.cluster.now()
        rows = await self.store.fetchall(
            f"SELECT {COLUMNS} FROM schedules WHERE status = 'active' AND next_due <= ? ORDER BY next_due",
            (to_iso(now),),
        )
        for row in rows:
            await self._fire(row, now)
        nxt = await self.store.fetchone("SELECT MIN(next_due) FROM schedules WHERE status = 'active'")
        if nxt is None or nxt[0] is None:
            return IDLE_S
        return (parse_iso(nxt[0]) - self.bus.cluster.now()).total_seconds()

    def _claim(self, row: tuple[Any, ...], following: dt.datetime | None, **sets: Any) -> Callable[..., None]:
        """The conditional UPDATE that takes the firing due at ``row``'s next_due."""
        values = {"next_due": to_iso(following) if following else None, **sets}
        if following is None:
            values["status"] = "done"
        assignments = ", ".join(f"{k} = ?" for k in values)

        def claim(conn: sqlite3.Connection, command_id: str | None = None) -> None:
            extra = {"last_command_id": command_id} if command_id else {}
            sql = assignments + "".join(f", {k} = ?" for k in extra)
            if command_id:
                sql += ", fire_count = fire_count + 1"
            taken = conn.execute(
                f"UPDATE schedules SET {sql} WHERE schedule_id = ? AND next_due = ? AND status = 'active'",
                (*values.values(), *extra.values(), row[0], row[8]),
            ).rowcount
            if taken != 1:
                raise _Taken()

        return claim

    async def _fire(self, row: tuple[Any, ...], now: dt.datetime) -> None:
        due = parse_iso(row[8])
        when = _when(row)
        following = when.following(due, now)
        if due < self.started_at and row[5] == "skip":
            try:  # missed while the daemon was down: move on without a command
                await self.store.write(self._claim(row, following))
            except _Taken:
                pass
            log.info("schedule %s: skipped the firing(s) missed while down (due %s)", row[0], row[8])
            return
        command = loads(row[6])
        # (_depth: refused at creation since it is the daemon's; a schedule stored before that
        # must not fail every round of the scheduler at validate.)
        stored = {k: v for k, v in command.get("metadata", {}).items() if k != "_depth"}
        metadata = {**stored, "schedule_id": row[0], "schedule_due": row[8]}
        spec = validate(CommandCreate(command["command_type"], command.get("parameters", {}), metadata))
        claim = self._claim(row, following, last_fired_at=to_iso(self.bus.cluster.now()), last_error=None)
        try:
            await self.bus.commands.submit(row[1], spec, claim=claim)
        except _Taken:
            return
        except BusError as exc:
            ends = exc.code in ENDS_SCHEDULE
            log.warning("schedule %s: the firing due %s was not submitted: %s", row[0], row[8], exc.message)
            try:
                await self.store.write(self._claim(row, None if ends else following, last_error=exc.message))
            except _Taken:
                pass
