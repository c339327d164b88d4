"""Answers that hold many whole command records: a batch (up to 10,000 commands) and a wait
for commands (``POST /api/commands/wait``: up to 1,000 ids, or a batch's).

A command's parameters and result may each be up to 1 MiB, so such an answer built whole
could hold gigabytes of the daemon's memory (the rows, the records, the encoded answer) for
any session token. They are read like the long pages of a listing (bus/pages.py): the records
whole up to PAGE_BYTES, and past that a ``LongPage`` the API sends part by part, each part
read when the one before is written. What decides the answer is read first, from the
commands' states only (records.py ``STATE_COLUMNS``, without the large columns): a batch's
``status`` and ``usage``, a wait's ``done`` and ``reached``. Each record is read when it is
sent, so it may be newer than that state (a command that finished meanwhile), never older;
one gone by then (its session purged) is answered with that state.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llmgine_daemon.bus.commands.records import COMMAND_COLUMNS, STATE_COLUMNS, batch_info, batch_rows
from llmgine_daemon.bus.pages import LongPage, read_ids, read_rows
from llmgine_daemon.protocol import Batch, Command, CommandWaitResult

if TYPE_CHECKING:
    from llmgine_daemon.bus.commands.service import Commands

BY_IDS = f"SELECT {COMMAND_COLUMNS} FROM commands WHERE command_id IN ({{}})"
IN_BATCH = f"SELECT rowid, {COMMAND_COLUMNS} FROM commands WHERE batch_id = ?"
# More than a batch ever holds: a batch's first part is read until PAGE_BYTES or its end.
ALL = 1 << 30


async def batch_states(commands: Commands, session_id: str, batch_id: str) -> list[Command]:
    """The batch's commands, states only (NOT_FOUND: no such batch in the session)."""
    _, _, rows = await commands.store.read(lambda conn: batch_rows(conn, session_id, batch_id, STATE_COLUMNS))
    return [commands._current(row) for row in rows]


async def batch_page(commands: Commands, session_id: str, batch_id: str) -> Batch | LongPage:
    """The batch: whole while its records are within PAGE_BYTES, else a ``LongPage`` of its
    ``commands`` (its status and usage from its commands' states, read with the first part)."""

    def read(conn: sqlite3.Connection) -> tuple[Any, list[Any], list[Any] | None]:
        info = batch_info(conn, session_id, batch_id)
        rows, cut = read_rows(conn, IN_BATCH, [batch_id], key="rowid", count=ALL)
        states = batch_rows(conn, session_id, batch_id, f"rowid, {STATE_COLUMNS}")[2] if cut else None
        return info, rows, states

    info, rows, states = await commands.store.read(read)
    if states is None:
        return commands._assemble(session_id, batch_id, info, [r[1:] for r in rows])
    summary = commands._assemble(session_id, batch_id, info, [r[1:] for r in states])
    summary.commands = []

    async def more(rowid: int, count: int) -> tuple[list[Command], int]:
        part, _ = await commands.store.read(
            lambda conn: read_rows(conn, IN_BATCH, [batch_id], key="rowid", after=rowid, count=count)
        )
        # A command gone meanwhile (its session purged) is answered with the state held, as a
        # wait does: the answer lists every command its status and usage were made of.
        found = {r[0]: r for r in part}
        end = part[-1][0] if part else None
        items: list[Command] = []
        for row in states:
            if row[0] <= rowid:
                continue
            if (end is not None and row[0] > end) or len(items) >= count:
                break
            items.append(commands._current(found[row[0]][1:] if row[0] in found else row[1:]))
            rowid = row[0]
        return items, rowid

    first = [commands._current(r[1:]) for r in rows]
    return LongPage("commands", first, rows[-1][0], len(states), more, lambda _last: summary)


async def wait_page(commands: Commands, result: CommandWaitResult) -> CommandWaitResult | LongPage:
    """A wait's answer with its commands' whole records (the wait held their states only)."""
    if not result.commands:
        return result
    held = {c.command_id: c for c in result.commands}
    ids = list(held)

    async def part(start: int, count: int, first: bool = False) -> tuple[list[Command], int]:
        todo: Sequence[str] = ids[start : start + count]
        rows, n = await commands.store.read(lambda conn: read_ids(conn, BY_IDS, todo, first=first))
        found = {row[0]: row for row in rows}
        # A row gone meanwhile (its session purged) is answered with the state held.
        return [commands._current(found[c]) if c in found else held[c] for c in todo[:n]], start + n

    items, key = await part(0, len(ids), first=True)
    if key >= len(ids):
        return CommandWaitResult(items, result.done, result.reached)
    envelope = CommandWaitResult([], result.done, result.reached)
    return LongPage("commands", items, key, len(ids), part, lambda _last: envelope)
