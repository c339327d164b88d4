"""Forking a session: a new session that starts where another stood at an event seq.

``POST /api/sessions/{id}/fork`` ``{at_seq?, name?}``. In one transaction (``Sessions.create``
with its ``also`` hook):

- the new session, whose first event is ``SessionForked`` {from_session_id, at_seq, engines
  (original id -> new id), tools, handlers} instead of ``SessionStarted``;
- its engines: each engine of the original that existed at ``at_seq`` (its ``EngineCreated``
  event is at or before it; an engine whose event was pruned counts as existing), with a new
  id, the same type, model and configuration, running;
- their conversation memory as it stood at ``at_seq``: the rows added at or before it and not
  dropped (trimmed, reset) by then (``added_seq``/``dropped_seq``, migration 101; rows from
  before that migration have no ``added_seq`` and are copied while current), counted in the
  new engine's ``memory_chars`` (migration 138: the fork's budget, engines/memory.py);
- the original's tools and handlers as they are now (they have no history).

The original is not touched: nothing is written to it, not even an event. Commands, events and
batches are not copied; the fork's own history starts at its ``SessionForked``.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from llmgine_daemon.bus.codec import loads, new_id
from llmgine_daemon.bus.engine_registry import ENGINE_COLUMNS
from llmgine_daemon.bus.sessions import fetch_session, row_to_session
from llmgine_daemon.bus.tools import TOOL_COLUMNS
from llmgine_daemon.bus.usercode_handlers import HANDLER_COLUMNS
from llmgine_daemon.protocol import Fork, now_iso

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmgine_daemon.bus.core import Bus

MEMORY_COPY = (
    "INSERT INTO engine_messages (engine_id, role, content, tool_calls, tool_call_id, name, partial,"
    " is_error, command_id, created_at, added_seq)"
    # added_seq 0: in the fork's memory from its start (a literal: PostgreSQL would take a
    # parameter in a SELECT list for text).
    " SELECT ?, role, content, tool_calls, tool_call_id, name, partial, is_error, command_id, created_at, 0"
    " FROM engine_messages WHERE engine_id = ? AND COALESCE(added_seq, 0) <= ?"
    " AND (dropped_seq IS NULL OR dropped_seq > ?) ORDER BY message_id"
)

# What the copy holds, in the new engine's count (engines/memory.py, migration 138).
MEMORY_COUNT = (
    "UPDATE engines SET memory_chars = (SELECT COALESCE(SUM(length(content) + COALESCE(length(tool_calls), 0)), 0)"
    " FROM engine_messages WHERE engine_id = ?) WHERE engine_id = ?"
)


def _resolve(conn: sqlite3.Connection, session_id: str, at_seq: int | None) -> tuple[Any, int]:
    """The original's row and the seq to fork at: now when not given, or when given past the
    newest event (the state after it is the state now). A seq before the session began forks
    its beginning: no engine existed yet."""
    row = fetch_session(conn, session_id)
    now = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    return row, now if at_seq is None else min(at_seq, now)


def _default_name(conn: sqlite3.Connection, original: str, seq: int, new_sid: str) -> str:
    """``NAME (fork at SEQ)``, or ``NAME (fork at SEQ, 2)``, 3... when an active session has it
    already (a second fork at the same point made ``-S`` by that name ambiguous). Chosen in
    the fork's write transaction (``new_sid``: its session, not yet named), so that forks sent
    at once see each other's names."""
    stem = f"{original} (fork at {seq}"
    taken = {
        r[0]
        for r in conn.execute(
            "SELECT name FROM sessions WHERE status = 'active' AND substr(name, 1, ?) = ? AND session_id <> ?",
            (len(stem), stem, new_sid),
        )
    }
    n = 1
    while (name := f"{stem})" if n == 1 else f"{stem}, {n})") in taken:
        n += 1
    return name


def _engines_at(conn: sqlite3.Connection, session_id: str, at_seq: int) -> list[tuple[Any, ...]]:
    created: dict[str, int] = {}
    for seq, data in conn.execute(
        "SELECT seq, data FROM events WHERE session_id = ? AND event_type = 'EngineCreated'", (session_id,)
    ):
        engine_id = loads(data).get("engine_id")
        if isinstance(engine_id, str):
            created[engine_id] = seq
    rows = conn.execute(
        f"SELECT {ENGINE_COLUMNS} FROM engines WHERE session_id = ? ORDER BY rowid", (session_id,)
    ).fetchall()
    return [r for r in rows if created.get(r[0], 0) <= at_seq]


class Forks:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def fork(
        self,
        session_id: str,
        at_seq: int | None,
        name: str | None,
        also: Callable[[sqlite3.Connection, str], None] | None = None,
        if_exists: str = "create",
    ) -> Fork:
        """Fork ``session_id`` at ``at_seq``; ``also`` as in ``Sessions.create`` (the token);
        ``if_exists="error"``: CONFLICT when an active session already has ``name``."""
        source, seq = await self.bus.store.read(lambda conn: _resolve(conn, session_id, at_seq))
        original = row_to_session(source)
        copied: dict[str, Any] = {}

        def copy(conn: sqlite3.Connection, new_sid: str) -> None:
            if name is None:  # created unnamed; named here, in the same transaction
                stem = original.name or session_id[-8:]
                origin["name"] = _default_name(conn, stem, seq, new_sid)
                conn.execute("UPDATE sessions SET name = ? WHERE session_id = ?", (origin["name"], new_sid))
            if also is not None:
                also(conn, new_sid)
            ts = now_iso()
            engines, mapping = [], {}
            for row in _engines_at(conn, session_id, seq):
                new_engine = new_id()
                mapping[row[0]] = new_engine
                engine_row = (new_engine, new_sid, row[2], row[3], row[4], "initialized", ts)
                conn.execute(f"INSERT INTO engines ({ENGINE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", engine_row)
                conn.execute(MEMORY_COPY, (new_engine, row[0], seq, seq))
                conn.execute(MEMORY_COUNT, (new_engine, new_engine))
                engines.append(engine_row)
            rest = TOOL_COLUMNS.split(", ", 1)[1]  # every column but session_id
            conn.execute(
                f"INSERT INTO tools ({TOOL_COLUMNS}) SELECT ?, {rest} FROM tools WHERE session_id = ?",
                (new_sid, session_id),
            )
            # Sorted here: PostgreSQL's ORDER BY follows the database's collation (bus/tools.py).
            tools = sorted(r[0] for r in conn.execute("SELECT name FROM tools WHERE session_id = ?", (new_sid,)))
            handlers = []
            for row in conn.execute(
                f"SELECT {HANDLER_COLUMNS} FROM handlers WHERE session_id = ? ORDER BY created_at", (session_id,)
            ).fetchall():
                handler_row = (new_id(), new_sid, *row[2:])
                conn.execute(
                    f"INSERT INTO handlers ({HANDLER_COLUMNS}) VALUES ({', '.join('?' * len(handler_row))})",
                    handler_row,
                )
                handlers.append(handler_row)
            if engines or handlers:  # other nodes load them too (bus/cluster.py)
                self.bus.cluster.registry_changed(conn, new_sid)
            # The first event (written next, by Sessions.create) says all of it.
            origin.update(engines=mapping, tools=tools, handlers=len(handlers))
            copied.update(engines=engines, mapping=mapping, tools=tools, handlers=handlers)

        origin: dict[str, Any] = {"from_session_id": session_id, "at_seq": seq, "name": name}
        created = await self.bus.sessions.create(
            name, original.metadata, also=copy, first_event=("SessionForked", origin), if_exists=if_exists
        )
        self.bus.engines.adopt(copied["engines"])
        self.bus.user_handlers.adopt(copied["handlers"])
        session = await self.bus.sessions.get(created.session_id)
        session.session_token = created.session_token
        return Fork(
            session=session,
            from_session_id=session_id,
            at_seq=seq,
            engines=copied["mapping"],
            tools=copied["tools"],
            handlers=len(copied["handlers"]),
        )
