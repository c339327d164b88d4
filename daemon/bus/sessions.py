"""Sessions: create, list, read, end (close) and purge.

A session is a conversation: its commands run one at a time, its events share its id. Ending
one releases what runs in it (engines, handlers, tools), cancels its queued commands and
records ``SessionEnded``; its history stays readable until purged.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from llmgine_daemon.bus.capacity import event_bytes_reached
from llmgine_daemon.bus.codec import dumps, loads, new_id
from llmgine_daemon.bus.errors import BusError, not_found
from llmgine_daemon.bus.events import insert_event
from llmgine_daemon.bus.readcache import ReadCache
from llmgine_daemon.bus.usage import SUMS, usage_from_sums
from llmgine_daemon.protocol import ErrorCode, Session, SessionCounts, SessionList, Usage, now_iso
from llmgine_daemon.store.migrations import SESSION_COUNTS_RECOUNT

if TYPE_CHECKING:
    from llmgine_daemon.bus.core import Bus

SESSION_COLUMNS = "session_id, name, metadata, status, created_at, last_activity_at, ended_at"

# A purge deletes a session's events and commands (a session token can make a million of them
# in a minute, with batches) this many rows per write, so other sessions' writes get the writer
# in between: one write of 800,000 events held it for 14 s.
PURGE_BATCH = 2000
_PURGED_IN_STEPS = (("events", "seq"), ("commands", "command_id"))
# A session's last activity is its newest event's time (one seek in events_session), or the
# stored value when that is later (set at creation and at the end): appending an event does not
# also update the session row, which would be one more statement per write.
SESSION_SELECT = (
    "s.session_id, s.name, s.metadata, s.status, s.created_at, MAX(s.last_activity_at, COALESCE("
    "(SELECT e.timestamp FROM events e WHERE e.session_id = s.session_id ORDER BY e.seq DESC LIMIT 1),"
    " '')), s.ended_at"
)

# Called after a session was ended or purged, so runtime parts (command runner, engines,
# streams) can drop what they hold for it.
SessionHook = Callable[[str, bool], Awaitable[None]]
# Called inside the transaction that ends (False) or purges (True) a session, for the rows that
# end with it (schedules, webhooks, session tokens, MCP servers): stored in the same commit, so
# a kill -9 before the hooks above ran cannot leave them behind (a paused schedule of an ended
# session, a purged session's webhooks).
SessionEnding = Callable[[sqlite3.Connection, str, bool], None]


def row_to_session(row: tuple[Any, ...], counts: SessionCounts | None = None) -> Session:
    return Session(
        session_id=row[0],
        name=row[1],
        metadata=loads(row[2]),
        status=row[3],
        created_at=row[4],
        last_activity_at=row[5],
        ended_at=row[6],
        counts=counts,
    )


def fetch_session(conn: sqlite3.Connection, session_id: str) -> tuple[Any, ...]:
    row = conn.execute(f"SELECT {SESSION_SELECT} FROM sessions s WHERE s.session_id = ?", (session_id,)).fetchone()
    if row is None:
        raise not_found("session", session_id=session_id)
    return row


_STATUS_AND_BYTES = (
    "SELECT s.status, c.event_bytes FROM sessions s LEFT JOIN session_counts c ON c.session_id = s.session_id"
    " WHERE s.session_id = ?"
)


def require_active(conn: sqlite3.Connection, session_id: str, max_event_bytes: int = 0) -> None:
    """SESSION_NOT_FOUND / SESSION_CLOSED unless the session is open; for writes that need it.

    ``max_event_bytes`` (security.limits.max_event_bytes_per_session, for writes that start new
    work in the session: a command, a batch, a retry, a tool call): LIMIT_REACHED once the
    session's events have reached it, in the same statement. What that work then writes (its
    CommandStarted with the parameters, its result, a ToolExecuted) is the bus's own record and
    never refused, so the budget is held at the door; events a client or user code publishes
    are checked one by one (bus/events.py)."""
    if max_event_bytes > 0:
        row = conn.execute(_STATUS_AND_BYTES, (session_id,)).fetchone()
        if row is not None and row[0] == "active" and (row[1] or 0) >= max_event_bytes:
            raise event_bytes_reached(max_event_bytes)
    else:
        row = conn.execute("SELECT status FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
    if row is None:
        raise not_found("session", session_id=session_id)
    if row[0] != "active":
        raise BusError(
            ErrorCode.SESSION_CLOSED,
            f"session {session_id!r} is closed",
            {"session_id": session_id},
        )


# A session's counts are kept in session_counts, in the transaction of each write that changes
# them (by triggers, store/migrations.py migration 5; inserted events and commands by the
# statements that insert them, migrations 130-131): one primary-key lookup, however long the
# session. Counting instead is a scan of the session's index entries per GET.
COUNTS_SQL = "SELECT commands, events, engines, tools, handlers FROM session_counts WHERE session_id = ?"


def count_session(conn: sqlite3.Connection, session_id: str) -> SessionCounts:
    row = conn.execute(COUNTS_SQL, (session_id,)).fetchone()
    if row is None:  # every session has its row (a trigger adds it); should one not, count
        row = conn.execute(f"SELECT {SESSION_COUNTS_RECOUNT.format(sid='?1')}", (session_id,)).fetchone()
    commands, events, engines, tools, handlers = row
    return SessionCounts(commands=commands, events=events, engines=engines, tools=tools, handlers=handlers)


# GET /api/sessions/{id} in one statement: the row, its kept counts (NULLs if the counts row is
# missing: count_session recounts) and its usage sums (bus/usage.py): each statement costs the
# loop a few microseconds of its own (a read transaction begun and ended, a row built).
_GET_SQL = (
    f"SELECT {SESSION_SELECT}, c.commands, c.events, c.engines, c.tools, c.handlers, u.*"
    " FROM sessions s LEFT JOIN session_counts c ON c.session_id = s.session_id"
    f" CROSS JOIN (SELECT {SUMS} FROM commands WHERE session_id = ? AND usage_prompt_tokens IS NOT NULL) u"
    " WHERE s.session_id = ?"
)


class Sessions:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.hooks: list[SessionHook] = []
        self.ending: list[SessionEnding] = []
        # GET answers while nothing was committed (bus/readcache.py): pollers of one session.
        self.read_cache: ReadCache[Session] = ReadCache(bus.store)

    async def create(
        self,
        name: str | None,
        metadata: dict[str, Any],
        *,
        also: Callable[[sqlite3.Connection, str], None] | None = None,
        first_event: tuple[str, dict[str, Any]] | None = None,
        if_exists: str = "create",
    ) -> Session:
        """``also(conn, session_id)`` runs in the same transaction (the session token is
        written there, so a session never exists without it; a fork copies into it there).
        ``first_event`` replaces ``SessionStarted`` (a fork's ``SessionForked``, bus/fork.py).

        ``if_exists`` when an active session already has ``name``: ``create`` another one
        (the spec's behaviour), ``error`` (CONFLICT) or ``reuse``: that session is returned
        (the newest such), nothing is written and ``also`` does not run; decided in the
        write's transaction, so two concurrent creates of one name make one session."""
        session_id = new_id()

        def write(conn: sqlite3.Connection) -> tuple[Session | str, Any]:
            if name is not None and if_exists != "create":
                found = conn.execute(
                    "SELECT session_id FROM sessions WHERE name = ? AND status = 'active'"
                    " ORDER BY created_at DESC, rowid DESC LIMIT 1",
                    (name,),
                ).fetchone()
                if found is not None and if_exists == "reuse":
                    return found[0], None
                if found is not None:
                    raise BusError(
                        ErrorCode.CONFLICT,
                        f"an active session is already named {name!r} ({found[0]})",
                        {"name": name, "session_id": found[0]},
                    )
            self.bus.capacity.check_sessions(conn)
            ts = now_iso()
            conn.execute(
                f"INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, 'active', ?, ?, NULL)",
                (session_id, name, dumps(metadata), ts, ts),
            )
            if also is not None:  # before the first event: a fork fills in that event's data
                also(conn, session_id)
            event_type, data = first_event or ("SessionStarted", {"name": name, "metadata": metadata})
            event = insert_event(conn, session_id, event_type, data, timestamp=ts)
            session = Session(
                session_id=session_id,
                name=name,
                metadata=metadata,
                status="active",
                created_at=ts,
                last_activity_at=ts,
                counts=SessionCounts(events=1),
                usage=Usage(),  # as GET answers it: no command has called a model yet
            )
            return session, event

        session, event = await self.bus.store.write(write)
        if isinstance(session, str):  # reused
            return await self.get(session)
        self.bus.events.notify([event])
        return session

    async def get(self, session_id: str) -> Session:
        def read(conn: sqlite3.Connection) -> Session:
            row = conn.execute(_GET_SQL, (session_id, session_id)).fetchone()
            if row is None:
                raise not_found("session", session_id=session_id)
            kept = row[7:12]  # commands, events, engines, tools, handlers: SessionCounts' order
            counts = count_session(conn, session_id) if kept[0] is None else SessionCounts(*kept)
            session = row_to_session(row, counts)
            session.usage = usage_from_sums(row[12:])
            return session

        # Index lookups (and a sum over the session's commands): on the event loop unless
        # they run long (store.read_point moves them to the reader's thread then).
        return await self.read_cache.get(session_id, lambda: self.bus.store.read_point(read))

    async def list(self, status: str | None, limit: int, offset: int) -> SessionList:
        def read(conn: sqlite3.Connection) -> SessionList:
            where, params = ("WHERE status = ?", (status,)) if status else ("", ())
            total = conn.execute(f"SELECT COUNT(*) FROM sessions {where}", params).fetchone()[0]
            rows = conn.execute(
                f"SELECT {SESSION_SELECT} FROM sessions s {where}"
                " ORDER BY s.created_at DESC, s.rowid DESC LIMIT ? OFFSET ?",
                (*params, limit, offset),
            ).fetchall()
            return SessionList([row_to_session(r) for r in rows], total, limit, offset)

        return await self.bus.store.read(read)

    async def close(self, session_id: str) -> Session:
        """End the session. Ending an ended session returns it unchanged."""

        def write(conn: sqlite3.Connection) -> tuple[Session, Any]:
            row = fetch_session(conn, session_id)
            if row[3] != "active":
                return row_to_session(row, count_session(conn, session_id)), None
            ts = now_iso()
            cancelled = conn.execute(
                "UPDATE commands SET status = 'cancelled', finished_at = ?,"
                " error = ? WHERE session_id = ? AND status = 'queued'",
                (
                    ts,
                    dumps({"code": ErrorCode.COMMAND_CANCELLED, "message": "session ended", "details": {}}),
                    session_id,
                ),
            ).rowcount
            stopped = conn.execute("UPDATE engines SET status = 'stopped' WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM tools WHERE session_id = ?", (session_id,))
            removed = conn.execute("DELETE FROM handlers WHERE session_id = ?", (session_id,))
            if stopped.rowcount or removed.rowcount:  # other nodes drop them too (bus/cluster.py)
                self.bus.cluster.registry_changed(conn, session_id)
            event = insert_event(
                conn,
                session_id,
                "SessionEnded",
                {"reason": "deleted", "cancelled_commands": cancelled},
                timestamp=ts,
            )
            conn.execute(
                "UPDATE sessions SET status = 'closed', ended_at = ?, last_activity_at = ? WHERE session_id = ?",
                (ts, ts, session_id),
            )
            for end in self.ending:
                end(conn, session_id, False)
            return row_to_session(fetch_session(conn, session_id), count_session(conn, session_id)), event

        session, event = await self.bus.store.write(write)
        if event is not None:
            self.bus.events.notify([event])
            await self._run_hooks(session_id, purged=False)
        return session

    async def purge(self, session_id: str) -> None:
        """Delete the session and everything in it: its events and commands ``PURGE_BATCH``
        rows per write, then the rest and the session in one (a purge cut short leaves the
        session, ended, to be purged again)."""
        store = self.bus.store
        await store.read(lambda conn: fetch_session(conn, session_id))
        for table, key in _PURGED_IN_STEPS:
            some = f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE session_id = ? LIMIT ?)"

            def step(conn: sqlite3.Connection, some: str = some) -> int:
                return int(conn.execute(some, (session_id, PURGE_BATCH)).rowcount)

            while await store.write(step) >= PURGE_BATCH:
                pass

        def write(conn: sqlite3.Connection) -> None:
            fetch_session(conn, session_id)
            for end in self.ending:
                end(conn, session_id, True)
            for table in (
                "events",
                "commands",
                "batches",
                "approvals",  # the tool's arguments and the engine's saved conversation
                "idempotency_keys",
                "engines",
                "tools",
                "handlers",
                "sessions",
            ):
                gone = conn.execute(f"DELETE FROM {table} WHERE session_id = ?", (session_id,)).rowcount
                if gone and table in ("engines", "handlers"):
                    self.bus.cluster.registry_changed(conn, session_id)

        await store.write(write)
        await self._run_hooks(session_id, purged=True)

    async def _run_hooks(self, session_id: str, purged: bool) -> None:
        for hook in self.hooks:
            await hook(session_id, purged)
