"""Capacity limits (``security.limits.max_*``), checked by the write that would exceed them.

    active sessions   max_sessions              Sessions.create
    engines/session   max_engines_per_session   Engines.create
    tools/session     max_tools_per_session     Tools.register (re-registering a name: no new one)
    handlers/session  max_handlers_per_session  UserHandlers.register (each handler's code is kept
                                                in memory and every event looks at every handler)
    event bytes/session  max_event_bytes_per_session
                      EventLog.publish, SandboxBridge.publish (events a client or user code
                      publishes): the UPDATE that counts an event's bytes (bus/events.py)
                      checks them in the same statement, no read of its own; and new work
                      that writes events the bus never refuses, once the budget is reached:
                      commands, batches, retries (``sessions.require_active``, in the statement
                      that reads the session's state) and tool calls of a client's own
                      (``check_event_bytes``), so that commands with large parameters or
                      results cannot fill the disk past it either
    unfinished commands/session  max_pending_commands_per_session
    their bytes in memory        max_pending_bytes_per_session: checked in memory, per daemon
                      (Runner.held), as the commands are kept there; not in the write
                      Commands.submit (when it queues), submit_batch, Dependencies.submit,
                      Retries.rerun: each unfinished command is kept in memory with its
                      parameters until it ends; a batch counts one per BATCH_UNIT commands

Each check runs inside the creating write, in the same transaction as the INSERT. The store has
one writer that runs writes one after another, so a check counts every creation committed or
queued ahead of it: concurrent creations cannot both pass it, nor overshoot a maximum. Several
nodes on one PostgreSQL database have one writer each: there ``serialize`` (the cluster's) takes
a transaction-scoped lock per limit first, so the limits hold for the whole cluster. 0 means
no limit. Refusals are 409 LIMIT_REACHED, with ``details = {"limit", "max"}``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmgine_daemon.bus.errors import BusError
from llmgine_daemon.protocol import ErrorCode
from llmgine_daemon.store.migrations import UNFINISHED_TERM as UNFINISHED

# What a session's unfinished commands hold in memory, in units of about one request body: a
# command is one unit (its parameters may be a whole body); a batch one per BATCH_UNIT commands
# (they came in one body, but each is a record in memory too: ~1.5 KB). The partial index of
# unfinished commands by session finds them (UNFINISHED: migration 137).
BATCH_UNIT = 100
_PENDING = (
    f"SELECT COALESCE(SUM((n + {BATCH_UNIT - 1}) / {BATCH_UNIT}), 0) FROM (SELECT COUNT(*) AS n FROM commands"
    f" WHERE session_id = ? AND {UNFINISHED}"
    " GROUP BY COALESCE(batch_id, command_id)) AS pending"
)


def pending_units(commands: int, batch: bool) -> int:
    """The units of ``_PENDING`` that ``commands`` new commands (a batch's, or single ones) take."""
    return -(-commands // BATCH_UNIT) if batch else commands


def limit_reached(limit: str, maximum: int, what: str) -> BusError:
    return BusError(
        ErrorCode.LIMIT_REACHED,
        f"limit reached: at most {maximum} {what} (security.limits.{limit})",
        {"limit": limit, "max": maximum},
    )


def event_bytes_reached(maximum: int) -> BusError:
    """LIMIT_REACHED for security.limits.max_event_bytes_per_session (a publish past it, or
    new work once it is spent)."""
    return limit_reached("max_event_bytes_per_session", maximum, "bytes of events in a session")


def _check(
    capacity: Capacity,
    conn: sqlite3.Connection,
    limit: str,
    maximum: int,
    what: str,
    sql: str,
    params: tuple[Any, ...] = (),
) -> None:
    if maximum <= 0:
        return
    if capacity.serialize is not None:
        capacity.serialize(conn, limit)
    if conn.execute(sql, params).fetchone()[0] >= maximum:
        raise limit_reached(limit, maximum, what)


@dataclass(frozen=True, slots=True)
class Capacity:
    max_sessions: int = 0
    max_engines_per_session: int = 0
    max_tools_per_session: int = 0
    max_handlers_per_session: int = 0
    max_pending_commands_per_session: int = 0
    max_pending_bytes_per_session: int = 0
    max_event_bytes_per_session: int = 0
    # Kept by the turn that writes them (engines/memory.py ``Memory.append``), not refused.
    max_engine_memory_per_session: int = 0
    # Several nodes on one database (bus/cluster.py): makes the checks of one limit run one at
    # a time across nodes (their writers are not one writer), held until the write commits.
    serialize: Callable[[Any, str], None] | None = None

    def check_sessions(self, conn: sqlite3.Connection) -> None:
        """Room for one more active session."""
        _check(
            self,
            conn,
            "max_sessions",
            self.max_sessions,
            "active sessions",
            "SELECT COUNT(*) FROM sessions WHERE status = 'active'",
        )

    def check_engines(self, conn: sqlite3.Connection, session_id: str) -> None:
        """Room for one more engine in ``session_id``."""
        _check(
            self,
            conn,
            "max_engines_per_session",
            self.max_engines_per_session,
            "engines in a session",
            "SELECT COUNT(*) FROM engines WHERE session_id = ? AND status != 'stopped'",
            (session_id,),
        )

    def check_handlers(self, conn: sqlite3.Connection, session_id: str) -> None:
        """Room for one more handler (of either kind) in ``session_id``."""
        _check(
            self,
            conn,
            "max_handlers_per_session",
            self.max_handlers_per_session,
            "handlers in a session",
            "SELECT COUNT(*) FROM handlers WHERE session_id = ?",
            (session_id,),
        )

    def check_pending(self, conn: sqlite3.Connection, session_id: str, adding: int = 1) -> None:
        """Room for ``adding`` more units (``pending_units``) of unfinished commands in
        ``session_id``."""
        maximum = self.max_pending_commands_per_session
        if maximum <= 0:
            return
        if self.serialize is not None:
            # Per session: every queued submission passes here, sessions must not wait for each other.
            self.serialize(conn, f"max_pending_commands_per_session:{session_id}")
        (pending,) = conn.execute(_PENDING, (session_id,)).fetchone()
        if int(pending) + adding > maximum:
            raise limit_reached(
                "max_pending_commands_per_session",
                maximum,
                f"unfinished commands in a session (a batch counts one per {BATCH_UNIT} commands)",
            )

    def check_held(self, held: int, adding: int) -> None:
        """Room in this daemon's memory for ``adding`` more bytes of a session's unfinished
        commands (their parameters and metadata as JSON), beside the ``held`` ones it keeps."""
        maximum = self.max_pending_bytes_per_session
        if maximum > 0 and held + adding > maximum:
            raise limit_reached(
                "max_pending_bytes_per_session",
                maximum,
                "bytes of parameters and metadata of a session's unfinished commands in memory",
            )

    def check_event_bytes(self, conn: sqlite3.Connection, session_id: str) -> None:
        """LIMIT_REACHED once ``session_id``'s events have reached max_event_bytes_per_session:
        for new work that writes events the bus never refuses (a tool call's ToolExecuted).
        Commands check it with the session's state (``sessions.require_active``)."""
        maximum = self.max_event_bytes_per_session
        if maximum <= 0:
            return
        row = conn.execute("SELECT event_bytes FROM session_counts WHERE session_id = ?", (session_id,)).fetchone()
        if row is not None and row[0] >= maximum:
            raise event_bytes_reached(maximum)

    def check_tools(self, conn: sqlite3.Connection, session_id: str, name: str | None) -> None:
        """Room for tool ``name`` in ``session_id``: re-registering a name replaces it."""
        if self.max_tools_per_session <= 0:
            return
        if (
            name is not None
            and conn.execute("SELECT 1 FROM tools WHERE session_id = ? AND name = ?", (session_id, name)).fetchone()
        ):
            return
        _check(
            self,
            conn,
            "max_tools_per_session",
            self.max_tools_per_session,
            "tools in a session",
            "SELECT COUNT(*) FROM tools WHERE session_id = ?",
            (session_id,),
        )
