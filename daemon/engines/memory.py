"""Engine conversation memory: stored in the database, so it survives a restart.

The store is the only copy: a turn reads the history when it starts and appends its messages
when it ends (commands of a session run one at a time, so two turns of one engine never
overlap). Nothing is cached, so ``reset`` needs no coordination with a running engine.

History: trimming and ``reset`` do not delete rows, they mark them dropped (``dropped_seq``),
and every row carries the event seq it was added at (``added_seq``, migration 101), so the
conversation as it stood at any seq can be rebuilt (forking a session: bus/fork.py). Only
current rows (``dropped_seq IS NULL``) are loaded, listed and counted; deleting the engine
deletes them all.

Storage (``security.limits.max_engine_memory_per_session``): every row an engine keeps,
dropped ones too, counts in ``engines.memory_chars`` (migration 138: added by ``append`` and
the fork's copy, taken off by what deletes rows; the engine's rows go with it). Past the
session's budget, a turn's write deletes the oldest dropped rows of the session's engines
(a fork from before them starts with less memory), then, if its engine's current memory is
still too much, trims that harder and deletes what it trims (``_keep_within``). Without it
a session token grew the database by the size of each prompt and answer, for good: trimming
and ``reset`` keep the rows, and the prompt is in no event (``prompt_sha256``).

Bounds: at most ``max_messages`` messages and ``max_chars`` characters (content plus tool-call
arguments). Trimming drops the oldest messages and then keeps dropping until the memory starts
at a user message: an exchange goes whole, so a tool result never outlives the assistant
message that called it (providers reject such a history). The newest exchange is always kept,
even when it alone is over the bounds: the model needs it to make sense of the next prompt.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from llmgine_daemon.bus.codec import dumps, loads
from llmgine_daemon.bus.events import EventLog, insert_event
from llmgine_daemon.protocol import EngineMessage, Event, now_iso
from llmgine_daemon.store.db import Store
from llmgine_daemon.textsafe import NUL, without_nul

# The highest event seq when a row is written or dropped (portable SQL: no sqlite_sequence).
NOW_SEQ = "(SELECT COALESCE(MAX(seq), 0) FROM events)"
CURRENT = "dropped_seq IS NULL"

COLUMNS = "message_id, role, content, tool_calls, tool_call_id, name, partial, is_error, command_id, created_at"

Message = dict[str, Any]


@dataclass(frozen=True)
class Bounds:
    max_messages: int
    max_chars: int


def size_of(role: str, content: str, tool_calls: str | None) -> int:
    return len(content) + (len(tool_calls) if tool_calls else 0)


def plan_trim(rows: list[tuple[int, str, int]], bounds: Bounds) -> list[int]:
    """Which message ids to drop. ``rows`` = (message_id, role, size), oldest first."""
    total = sum(size for _, _, size in rows)
    count = len(rows)
    # The newest exchange (from the last user message on) is never dropped.
    last_user = max((i for i, (_, role, _) in enumerate(rows) if role == "user"), default=0)
    cut = 0
    while cut < last_user and (count > bounds.max_messages or total > bounds.max_chars):
        total -= rows[cut][2]
        count -= 1
        cut += 1
    # Never start with an assistant or tool message: finish dropping the exchange.
    while cut < last_user and rows[cut][1] != "user":
        cut += 1
    return [message_id for message_id, _, _ in rows[:cut]]


def row_to_message(row: tuple[Any, ...]) -> Message:
    msg: Message = {"role": row[1], "content": row[2]}
    if row[3]:
        msg["tool_calls"] = loads(row[3])
    if row[4]:
        msg["tool_call_id"] = row[4]
    if row[5]:
        msg["name"] = row[5]
    if row[7]:
        msg["is_error"] = True
    return msg


def row_to_wire(row: tuple[Any, ...]) -> EngineMessage:
    return EngineMessage(
        message_id=row[0],
        role=row[1],
        content=row[2],
        tool_calls=loads(row[3]) if row[3] else None,
        tool_call_id=row[4],
        name=row[5],
        partial=bool(row[6]),
        is_error=bool(row[7]),
        command_id=row[8],
        created_at=row[9],
    )


_SIZE = "length(content) + COALESCE(length(tool_calls), 0)"
# Their ids first (sorted), the size of only those taken after (``length`` reads the text).
_OLDEST_DROPPED = (
    "SELECT message_id, engine_id FROM engine_messages WHERE engine_id IN"
    " (SELECT engine_id FROM engines WHERE session_id = ?) AND dropped_seq IS NOT NULL"
    " ORDER BY message_id LIMIT 256"
)


def _delete(conn: sqlite3.Connection, rows: list[tuple[int, str, int]]) -> None:
    """Delete these (message_id, engine_id, size) rows and take their size off their engines."""
    conn.executemany("DELETE FROM engine_messages WHERE message_id = ?", [(m,) for m, _, _ in rows])
    freed: dict[str, int] = {}
    for _, engine_id, size in rows:
        freed[engine_id] = freed.get(engine_id, 0) + int(size)
    for engine_id, size in freed.items():
        conn.execute("UPDATE engines SET memory_chars = memory_chars - ? WHERE engine_id = ?", (size, engine_id))


def _keep_within(
    conn: sqlite3.Connection, session_id: str, engine_id: str, current: list[tuple[int, str, int]], maximum: int
) -> None:
    """The session's engines' rows back within ``maximum`` characters: the oldest dropped rows
    deleted first, then this engine's current memory trimmed harder (its newest exchange
    kept, as ``plan_trim`` always does) and the trimmed rows deleted."""
    (total,) = conn.execute(
        "SELECT COALESCE(SUM(memory_chars), 0) FROM engines WHERE session_id = ?", (session_id,)
    ).fetchone()
    excess = int(total) - maximum
    while excess > 0:
        batch = conn.execute(_OLDEST_DROPPED, (session_id,)).fetchall()
        if not batch:
            break
        taken = []
        for message_id, owner in batch:
            (size,) = conn.execute(
                f"SELECT {_SIZE} FROM engine_messages WHERE message_id = ?", (message_id,)
            ).fetchone()
            taken.append((message_id, owner, int(size)))
            excess -= int(size)
            if excess <= 0:
                break
        _delete(conn, taken)
    if excess > 0 and current:
        have = sum(size for _, _, size in current)
        drop = set(plan_trim(current, Bounds(len(current), max(0, have - excess))))
        _delete(conn, [(mid, engine_id, size) for mid, _, size in current if mid in drop])


class Memory:
    def __init__(self, store: Store, events: EventLog, max_chars_per_session: int = 0) -> None:
        self.store = store
        self.events = events  # where reset publishes its EngineMemoryReset
        # security.limits.max_engine_memory_per_session (0: none)
        self.max_chars_per_session = max_chars_per_session

    async def load(self, engine_id: str) -> list[Message]:
        rows = await self.store.fetchall(
            f"SELECT {COLUMNS} FROM engine_messages WHERE engine_id = ? AND {CURRENT} ORDER BY message_id",
            (engine_id,),
        )
        return [row_to_message(r) for r in rows]

    async def append(
        self,
        engine_id: str,
        messages: list[Message],
        bounds: Bounds,
        *,
        command_id: str | None = None,
        partial_last: bool = False,
    ) -> int:
        """Add a turn's messages and trim, in one transaction; returns how many were dropped.
        A NUL character in a message's text (a prompt, the model's answer) is kept written
        ``\\x00``, on both backends, as the logs keep it: PostgreSQL's text holds none, and the
        write failed the command once its model call was made (and paid for)."""
        ts = now_iso()
        messages = [_without_nul(m) for m in messages]

        def write(conn: sqlite3.Connection) -> int:
            owner = conn.execute("SELECT session_id FROM engines WHERE engine_id = ?", (engine_id,)).fetchone()
            if owner is None:
                return 0  # deleted while the turn ran (its session purged): its memory went with it
            for i, msg in enumerate(messages):
                conn.execute(
                    "INSERT INTO engine_messages (engine_id, role, content, tool_calls, tool_call_id, name,"
                    f" partial, is_error, command_id, created_at, added_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                    f" {NOW_SEQ})",
                    (
                        engine_id,
                        msg["role"],
                        msg.get("content") or "",
                        dumps(msg["tool_calls"]) if msg.get("tool_calls") else None,
                        msg.get("tool_call_id"),
                        msg.get("name"),
                        int(partial_last and i == len(messages) - 1),
                        int(bool(msg.get("is_error"))),
                        command_id,
                        ts,
                    ),
                )
            rows = conn.execute(
                f"SELECT message_id, role, {_SIZE} FROM engine_messages WHERE engine_id = ? AND {CURRENT}"
                " ORDER BY message_id",
                (engine_id,),
            ).fetchall()
            # The turn's rows are the newest current ones: their sizes as stored, in the count.
            added = sum(int(r[2]) for r in rows[len(rows) - len(messages) :])
            conn.execute("UPDATE engines SET memory_chars = memory_chars + ? WHERE engine_id = ?", (added, engine_id))
            drop = plan_trim(rows, bounds)
            if drop:
                conn.execute(
                    f"UPDATE engine_messages SET dropped_seq = {NOW_SEQ}"
                    f" WHERE engine_id = ? AND message_id <= ? AND {CURRENT}",
                    (engine_id, drop[-1]),
                )
            if self.max_chars_per_session > 0:
                kept = [(r[0], r[1], int(r[2])) for r in rows[len(drop) :]]
                _keep_within(conn, owner[0], engine_id, kept, self.max_chars_per_session)
            return len(drop)

        return await self.store.write(write)

    async def list(self, engine_id: str, limit: int, offset: int) -> tuple[list[EngineMessage], int]:
        def read(conn: sqlite3.Connection) -> tuple[list[EngineMessage], int]:
            total = conn.execute(
                f"SELECT COUNT(*) FROM engine_messages WHERE engine_id = ? AND {CURRENT}", (engine_id,)
            ).fetchone()[0]
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM engine_messages WHERE engine_id = ? AND {CURRENT}"
                " ORDER BY message_id LIMIT ? OFFSET ?",
                (engine_id, limit, offset),
            ).fetchall()
            return [row_to_wire(r) for r in rows], total

        return await self.store.read(read)

    async def reset(self, engine_id: str, session_id: str) -> int:
        """Forget the conversation; recorded and published as an ``EngineMemoryReset`` event,
        atomically. Returns how many messages were deleted."""

        def write(conn: sqlite3.Connection) -> tuple[int, Event]:
            deleted = conn.execute(
                f"SELECT COUNT(*) FROM engine_messages WHERE engine_id = ? AND {CURRENT}", (engine_id,)
            ).fetchone()[0]
            event = insert_event(
                conn, session_id, "EngineMemoryReset", {"engine_id": engine_id, "deleted": deleted}, source="engine"
            )
            # Dropped as of the reset's own event: a fork at an earlier seq still has them.
            conn.execute(
                f"UPDATE engine_messages SET dropped_seq = ? WHERE engine_id = ? AND {CURRENT}",
                (event.seq, engine_id),
            )
            return deleted, event

        deleted, event = await self.store.write(write)
        self.events.notify([event])
        return deleted


_TEXT = ("content", "tool_call_id", "name")


def _without_nul(msg: Message) -> Message:
    """``msg`` with a NUL in its text columns written ``\\x00`` (its tool calls are JSON, where
    a NUL is an escape)."""
    if not any(isinstance(msg.get(k), str) and NUL in msg[k] for k in _TEXT):
        return msg
    return {**msg, **{k: without_nul(msg[k]) for k in _TEXT if isinstance(msg.get(k), str)}}
