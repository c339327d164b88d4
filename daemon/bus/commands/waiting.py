"""Waiting for commands of any session: one long request, woken by the bus, never a poll.

A wait registers its interest before it reads the commands' state, so no change falls in
between. Two things wake it:

- a live command's end answers its ``Job.waiter`` (``Runner.apply_end``: every end, the ones
  no event describes included, such as a queued command cancelled by its session's end);
- a change that does not end a command is a committed event (``CommandStarted``,
  ``CommandQueued``, ``CommandRetrying``, ...) that ``EventLog.notify`` hands to
  ``CommandWaits._on_event``; that is how a wait for ``executing`` hears of a start. A command
  another node runs (bus/cluster.py) is heard of the same way, from its events as the stream
  hub reads them back from the store (``EventLog.subscribe_read_back``).

Woken, it reads the states again (live records from the runner, the rest from the store) and
answers once the condition holds: all of the commands (or one, ``any``) reached one of the
statuses asked for, or finished without (a finished command never will). While the daemon
drains for shutdown it answers with what it has.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from llmgine_daemon.bus.commands.records import STATE_COLUMNS, row_to_command
from llmgine_daemon.bus.errors import BusError
from llmgine_daemon.protocol import TERMINAL_STATUSES, Command, CommandWaitResult, ErrorCode, Event

if TYPE_CHECKING:
    from llmgine_daemon.bus.commands.service import Commands

# How often a wait re-reads, from the store, commands that are not live on this node.
RECHECK_S = 1.0
WAKE_EVENTS = frozenset({"CommandStarted", "CommandResult", "CommandQueued", "CommandBlocked", "CommandRetrying"})


class CommandWaits:
    def __init__(self, commands: Commands) -> None:
        self.commands = commands
        self.store = commands.store
        self._watch: dict[str, set[asyncio.Future[None]]] = {}
        commands.bus.events.subscribe(self._on_event)
        # Commands another node runs: their events as the stream hub reads them back.
        commands.bus.events.subscribe_read_back(self._on_event)

    def _on_event(self, event: Event) -> None:
        if not self._watch or event.event_type not in WAKE_EVENTS:
            return
        for future in self._watch.get(event.data.get("command_id") or "", ()):
            if not future.done():
                future.set_result(None)

    # -- reading ------------------------------------------------------------------------

    async def read(self, command_ids: list[str], batch_id: str | None, scope: str | None) -> dict[str, Command]:
        """The commands by id, in the order given (then the batch's, in its order): their
        states only, without parameters and results (live ones: their records).
        ``scope``: a session token's session; commands of other sessions are not found."""
        if not command_ids and batch_id is None:
            return {}  # nothing to wait for: done at once
        ids = list(dict.fromkeys(command_ids))

        def read(conn: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]] | None]:
            rows = fetch_rows(conn, ids)
            batch = None
            if batch_id is not None:
                batch = conn.execute(
                    f"SELECT {STATE_COLUMNS} FROM commands WHERE batch_id = ? ORDER BY rowid", (batch_id,)
                ).fetchall()
            return rows, batch

        rows, batch = await self.store.read(read)
        found = {r[0]: r for r in rows if scope is None or r[1] == scope}
        missing = [i for i in ids if i not in found]
        if missing:
            raise BusError(
                ErrorCode.COMMAND_NOT_FOUND,
                f"command {missing[0]!r} not found" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                {"command_ids": missing[:20]},
            )
        ordered = [found[i] for i in ids]
        if batch_id is not None:
            batch = [r for r in batch or [] if scope is None or r[1] == scope]
            if not batch:
                raise BusError(ErrorCode.NOT_FOUND, f"batch {batch_id!r} not found", {"batch_id": batch_id})
            ordered += [r for r in batch if r[0] not in found]
        return {row[0]: self._current(row) for row in ordered}

    def _current(self, row: tuple[Any, ...]) -> Command:
        live = self.commands.runner.jobs.get(row[0])
        if live is not None:
            return live.record
        return self.commands.deps.live(row) or row_to_command(row)

    async def _refresh(self, records: dict[str, Command]) -> None:
        jobs = self.commands.runner.jobs
        stale = []
        for cid, rec in records.items():
            job = jobs.get(cid)
            if job is not None:
                records[cid] = job.record
            elif rec.status not in TERMINAL_STATUSES:
                stale.append(cid)
        if stale:
            for row in await self.store.read(lambda conn: fetch_rows(conn, stale)):
                records[row[0]] = self._current(row)

    # -- waiting ------------------------------------------------------------------------

    async def wait(
        self,
        records: dict[str, Command],
        *,
        any_: bool = False,
        statuses: Iterable[str] | None = None,
        timeout: float = 0.0,
    ) -> CommandWaitResult:
        if not records:
            return CommandWaitResult([], True, [])  # nothing to wait for (``any`` included)
        targets = frozenset(statuses or ()) or TERMINAL_STATUSES
        runner = self.commands.runner
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        first = True
        while True:
            signal: asyncio.Future[None] = loop.create_future()
            for cid in records:
                self._watch.setdefault(cid, set()).add(signal)
            try:
                if not first:
                    await self._refresh(records)
                first = False
                reached = [c for c, r in records.items() if r.status in targets or r.status in TERMINAL_STATUSES]
                done = bool(reached) if any_ else len(reached) == len(records)
                remaining = deadline - loop.time()
                if done or remaining <= 0 or runner.stopping:
                    return CommandWaitResult(list(records.values()), done, reached)
                watch: list[asyncio.Future[Any]] = [signal, runner.draining()]
                elsewhere = False  # a command not live here: blocked, or another node's
                for cid in records:
                    job = runner.jobs.get(cid)
                    if job is not None and job.state != "done":
                        if job.waiter is None:
                            job.waiter = loop.create_future()
                        watch.append(job.waiter)
                    elif job is None and records[cid].status not in TERMINAL_STATUSES:
                        elsewhere = True
                # An end no event describes (a queued command cancelled by its session's end on
                # another node) is read at the next recheck.
                wait_s = min(remaining, RECHECK_S) if elsewhere else remaining
                await asyncio.wait(watch, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for cid in records:
                    futures = self._watch.get(cid)
                    if futures is not None:
                        futures.discard(signal)
                        if not futures:
                            del self._watch[cid]


def fetch_rows(conn: sqlite3.Connection, ids: list[str]) -> list[tuple[Any, ...]]:
    """The states of these commands (any session: ``STATE_COLUMNS``, without parameters and
    results, which the answer reads again part by part: answers.py), in chunks the driver
    accepts."""
    rows: list[tuple[Any, ...]] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows += conn.execute(
            f"SELECT {STATE_COLUMNS} FROM commands WHERE command_id IN ({', '.join('?' * len(chunk))})", chunk
        ).fetchall()
    return rows
