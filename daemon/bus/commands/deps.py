"""Dependencies between commands: ``after: [command_id...]`` on a submission.

A command with ``after`` is stored ``blocked`` (with a ``CommandBlocked`` event and its edges
in ``command_after``) and kept here, not in the runner: the runner's hot path never sees it.
When every command it waits for has ended it is released: written ``queued`` (a
``CommandQueued`` event) and pushed onto its session's queue like any command. If one of them
ends other than ``completed`` (and ``after_policy`` is not ``always``) it is cancelled, error
``COMMAND_CANCELLED`` with ``details.reason: dependency_failed``; that ``CommandResult`` in
turn releases or cancels what waits for it, so a failure travels down the chain.

How it hears of an end: the ``CommandResult`` events the event log hands out (any session),
only those the daemon wrote (``source`` "bus": a client or user code may publish an event
of any type, a forged ``CommandResult`` or ``CommandQueued`` must neither cancel, release nor
drop a blocked command of any session),
plus a look at the store after each registration (an end may commit between the write that
stored the command and its registration here) and when a session ends (its queued commands
are cancelled without events). Blocked commands survive a restart: ``start`` loads them and
decides at once for those whose dependencies ended meanwhile.

Several nodes on one database (bus/cluster.py): every node follows every blocked command - its
own, those it finds at start, and those other nodes block, as the stream hub reads their
``CommandBlocked`` back from the store - and hears of ends on any node the same way. Whichever
decides first writes the release or the cancel, guarded by ``status = 'blocked'``, so it happens
once in the cluster; a released command goes to the node holding its session's lease (as a
submission does: ``Commands._enqueue``), and the others forget it when its ``CommandQueued``
or ``CommandResult`` comes back.

Cycles: ids are made by the daemon at submission and ``after`` must name stored commands, so
a new command cannot be named by an older one; the walk in ``_check_cycle`` refuses one
anyway (DEPENDENCY_CYCLE), should a path ever arise (it bounds the walk to blocked commands).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmgine_daemon.bus.commands.jobs import Job, Outcome, command_error
from llmgine_daemon.bus.commands.records import (
    BLOCKED,
    COMMAND_COLUMNS,
    PRIORITY_RANK,
    CommandSpec,
    command_row,
    finish_row,
    insert_command,
    new_record,
    row_to_command,
)
from llmgine_daemon.bus.errors import BusError
from llmgine_daemon.bus.events import insert_event
from llmgine_daemon.bus.idempotency import IdempotencyKey, lookup, record
from llmgine_daemon.bus.sessions import require_active
from llmgine_daemon.protocol import TERMINAL_STATUSES, Command, ErrorCode, Event, now_iso

if TYPE_CHECKING:
    from llmgine_daemon.bus.commands.service import Commands

log = logging.getLogger("llmgine.commands")

# A dependency that is no longer stored (its session was purged) counts as ended this way.
GONE = "gone"


@dataclass(eq=False, slots=True)
class Blocked:
    record: Command
    policy: str
    remaining: set[str] = field(default_factory=set)
    settling: bool = False  # a release or cancel is being written


def _states(conn: sqlite3.Connection, ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """{command_id: (session_id, status)} of the stored ones among ``ids``."""
    ids = list(ids)
    out: dict[str, tuple[str, str]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for row in conn.execute(
            f"SELECT command_id, session_id, status FROM commands WHERE command_id IN ({', '.join('?' * len(chunk))})",
            chunk,
        ):
            out[row[0]] = (row[1], row[2])
    return out


def _check_cycle(conn: sqlite3.Connection, command_id: str, after: list[str]) -> None:
    """DEPENDENCY_CYCLE if ``command_id`` is reachable from ``after`` through blocked commands.

    A path back to ``command_id`` needs a command waiting for it: a new command (its id made at
    this submission) has none, so the walk is taken only when one does (one indexed look-up
    otherwise), and then visits each blocked command once. (It re-expanded a command once per
    path to it: layers of a hundred blocked commands, each waiting for all of the layer before,
    made one submission cost the store's one writer half a second.)"""
    if command_id in after:
        raise _cycle(command_id, after)
    if conn.execute("SELECT 1 FROM command_after WHERE after_id = ? LIMIT 1", (command_id,)).fetchone() is None:
        return
    seen = set(after)
    frontier = list(seen)
    while frontier:
        chunk, frontier = frontier[:500], frontier[500:]
        for (after_id,) in conn.execute(
            "SELECT a.after_id FROM command_after a JOIN commands c ON c.command_id = a.command_id"
            f" WHERE c.status = 'blocked' AND a.command_id IN ({', '.join('?' * len(chunk))})",
            chunk,
        ):
            if after_id == command_id:
                raise _cycle(command_id, after)
            if after_id not in seen:
                seen.add(after_id)
                frontier.append(after_id)


def _cycle(command_id: str, after: list[str]) -> BusError:
    return BusError(
        ErrorCode.DEPENDENCY_CYCLE,
        f"command {command_id!r} would wait for itself through its dependencies",
        {"command_id": command_id, "after": after[:20]},
    )


class Dependencies:
    def __init__(self, commands: Commands) -> None:
        self.commands = commands
        self.store = commands.store
        self.blocked: dict[str, Blocked] = {}
        self.waiting_on: dict[str, set[str]] = {}  # a dependency's id -> blocked ids
        self._tasks: set[asyncio.Task[Any]] = set()
        commands.bus.events.subscribe(self._on_event)
        commands.bus.events.subscribe_read_back(self._on_read_back)
        commands.queue.sources.append(lambda: [b.record for b in self.blocked.values()])

    # -- submit -------------------------------------------------------------------------

    async def submit(
        self,
        session_id: str,
        spec: CommandSpec,
        idem: IdempotencyKey | None,
        claim: Callable[[sqlite3.Connection, str], None] | None = None,
    ) -> tuple[Command, bool]:
        """Store a command that waits for ``spec.after`` (handler already resolved; ``claim``
        as in ``Commands.submit``)."""
        ts = now_iso()
        rec = new_record(session_id, spec, ts)
        rec.status = "blocked"
        data = {
            "command_id": rec.command_id,
            "command_type": rec.command_type,
            "after": spec.after,
            "after_policy": spec.after_policy,
        }

        def write(conn: sqlite3.Connection) -> tuple[tuple[Any, ...] | None, Event | None, dict[str, str]]:
            prior = lookup(conn, idem)
            if prior is not None:
                return command_row(conn, session_id, prior[1]), None, {}
            require_active(conn, session_id, self.commands.bus.capacity.max_event_bytes_per_session)
            if claim is not None:
                claim(conn, rec.command_id)
            states = _states(conn, spec.after)
            missing = [a for a in spec.after if a not in states or spec.after_scope not in (None, states[a][0])]
            if missing:
                raise BusError(
                    ErrorCode.COMMAND_NOT_FOUND,
                    f"after: command {missing[0]!r} not found",
                    {"field": "after", "command_ids": missing[:20]},
                )
            _check_cycle(conn, rec.command_id, spec.after)
            self.commands.bus.capacity.check_pending(conn, session_id)
            insert_command(conn, rec)
            conn.executemany(
                "INSERT INTO command_after (command_id, after_id, policy) VALUES (?, ?, ?)",
                [(rec.command_id, a, spec.after_policy) for a in spec.after],
            )
            record(conn, idem, "command", rec.command_id, session_id)
            event = insert_event(conn, session_id, "CommandBlocked", data, timestamp=ts, trace_id=rec.trace_id)
            return None, event, {a: states[a][1] for a in spec.after}

        replay, event, statuses = await self.store.write(write)
        if replay is not None:
            live = self.blocked.get(replay[0])
            job = self.commands.runner.jobs.get(replay[0])
            return (live.record if live else job.record if job else row_to_command(replay)), True
        assert event is not None
        self.commands.bus.events.notify([event])
        self._register(Blocked(rec, spec.after_policy, set(spec.after)))
        await self._decide(rec.command_id, statuses)
        await self.recheck([rec.command_id])  # ended between the write and the registration
        return rec, False

    def _register(self, b: Blocked) -> None:
        self.blocked[b.record.command_id] = b
        for after_id in b.remaining:
            self.waiting_on.setdefault(after_id, set()).add(b.record.command_id)

    # -- deciding -----------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if not self.waiting_on or event.event_type != "CommandResult" or event.source != "bus":
            return  # nothing blocked (nearly always): one test per event; or not the daemon's
        after_id = event.data.get("command_id")
        if after_id not in self.waiting_on:
            return
        self._spawn(self._decide_for(after_id, str(event.data.get("status"))))

    def _on_read_back(self, event: Event) -> None:
        """Another node's commit (or one of ours, again): see the module docstring."""
        kind = event.event_type
        if kind not in ("CommandResult", "CommandQueued", "CommandBlocked") or event.source != "bus":
            return
        cid = str(event.data.get("command_id") or "")
        b = self.blocked.get(cid)
        if kind == "CommandBlocked":
            if b is None:
                self._spawn(self._adopt(cid))
            return
        if b is not None and not b.settling:  # released or cancelled by another node
            self._forget(b)
        self._on_event(event)

    async def _adopt(self, command_id: str) -> None:
        """Follow a command another node stored blocked."""

        def read(conn: sqlite3.Connection) -> tuple[tuple[Any, ...] | None, list[tuple[Any, ...]]]:
            row = conn.execute(
                f"SELECT {COMMAND_COLUMNS} FROM commands WHERE command_id = ? AND {BLOCKED}", (command_id,)
            ).fetchone()
            edges = conn.execute(
                "SELECT after_id, policy FROM command_after WHERE command_id = ?", (command_id,)
            ).fetchall()
            return row, edges

        row, edges = await self.store.read(read)
        if row is None or command_id in self.blocked:
            return
        policy = edges[0][1] if edges else "completed"
        self._register(Blocked(row_to_command(row), policy, {e[0] for e in edges}))
        await self.recheck([command_id])

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _decide_for(self, after_id: str, status: str) -> None:
        for cid in sorted(self.waiting_on.get(after_id, ())):
            await self._decide(cid, {after_id: status})

    async def _decide(self, command_id: str, statuses: dict[str, str]) -> None:
        """Apply what is known of some dependencies' statuses to one blocked command."""
        b = self.blocked.get(command_id)
        if b is None or b.settling:
            return
        for after_id, status in statuses.items():
            if after_id not in b.remaining or status not in TERMINAL_STATUSES | {GONE}:
                continue
            if status != "completed" and b.policy != "always":
                await self._cancel(b, "dependency_failed", after_id, status)
                return
            b.remaining.discard(after_id)
            self._unwatch(command_id, after_id)
        if not b.remaining:
            await self._release(b)

    def _unwatch(self, command_id: str, after_id: str) -> None:
        waiting = self.waiting_on.get(after_id)
        if waiting is not None:
            waiting.discard(command_id)
            if not waiting:
                del self.waiting_on[after_id]

    async def recheck(self, command_ids: Iterable[str] | None = None) -> None:
        """Look the dependencies up in the store (after a registration, a session's end)."""
        targets = [self.blocked[c] for c in (command_ids or list(self.blocked)) if c in self.blocked]
        ids = {a for b in targets for a in b.remaining}
        found = await self.store.read(lambda conn: _states(conn, ids)) if ids else {}
        for b in targets:
            await self._decide(b.record.command_id, {a: found[a][1] if a in found else GONE for a in b.remaining})

    def _forget(self, b: Blocked) -> None:
        self.blocked.pop(b.record.command_id, None)
        for after_id in list(b.remaining):
            self._unwatch(b.record.command_id, after_id)

    async def _release(self, b: Blocked) -> None:
        rec = b.record
        b.settling = True
        ts = now_iso()
        data = {"command_id": rec.command_id, "command_type": rec.command_type}

        def write(conn: sqlite3.Connection) -> Event | None:
            cur = conn.execute(
                "UPDATE commands SET status = 'queued' WHERE command_id = ? AND status = 'blocked'", (rec.command_id,)
            )
            if not cur.rowcount:
                return None
            self.commands.bus.cluster.announce(conn, rec.session_id)  # wake its lease's holder
            return insert_event(conn, rec.session_id, "CommandQueued", data, timestamp=ts, trace_id=rec.trace_id)

        event = await self.commands.runner.durable_write(write)
        self._forget(b)
        if event is None:  # ended meanwhile (its session closed), or released by another node
            return
        rec.status = "queued"
        self.commands._enqueue(rec.session_id, Job(rec, PRIORITY_RANK[rec.priority]))
        self.commands.bus.events.notify([event])

    async def _cancel(self, b: Blocked, reason: str, after_id: str | None = None, status: str | None = None) -> None:
        rec = b.record
        b.settling = True
        details: dict[str, Any] = {"reason": reason}
        if after_id is not None:
            details.update(dependency=after_id, dependency_status=status)
            message = f"cancelled: dependency {after_id} ended {status}"
        else:
            message = {"cancel": "cancelled by request", "session": "session ended"}.get(reason, "cancelled")
        outcome = Outcome("cancelled", error=command_error(ErrorCode.COMMAND_CANCELLED, message, **details))
        ts = now_iso()
        event = await self.commands.runner.durable_write(
            lambda conn: finish_row(conn, rec, outcome, ts, from_status="blocked")
        )
        self._forget(b)
        rec.status, rec.error, rec.finished_at = "cancelled", outcome.error, ts
        if event is not None:
            self.commands.bus.events.notify([event])

    # -- the rest of the command API ----------------------------------------------------

    def live(self, row: tuple[Any, ...]) -> Command | None:
        """The record kept here of a stored command row (``COMMAND_COLUMNS`` or
        ``STATE_COLUMNS``) while the store says it is blocked too. Once the store says
        otherwise the row is the truth: on several nodes another node may have released or
        cancelled it a moment ago, and this node forgets it when that commit's event is read
        back (a record kept here answered ``blocked`` for a command that had completed)."""
        b = self.blocked.get(row[0]) if self.blocked else None
        return b.record if b is not None and row[7] == "blocked" else None

    async def cancel(self, command_id: str) -> Command | None:
        """Cancel a blocked command (None: it is not blocked here)."""
        b = self.blocked.get(command_id)
        if b is None or b.settling:
            return None
        await self._cancel(b, "cancel")
        return b.record

    async def on_session_end(self, session_id: str) -> None:
        for b in [b for b in self.blocked.values() if b.record.session_id == session_id]:
            if not b.settling:
                await self._cancel(b, "session")
        # Its queued commands were cancelled without events: what waits for them looks again.
        await self.recheck()

    async def start(self) -> None:
        """After a restart: load the blocked commands and decide for those whose
        dependencies ended while the daemon was down."""

        def read(conn: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
            rows = conn.execute(f"SELECT {COMMAND_COLUMNS} FROM commands WHERE {BLOCKED} ORDER BY rowid").fetchall()
            edges = conn.execute(
                "SELECT a.command_id, a.after_id, a.policy FROM command_after a"
                f" JOIN commands c ON c.command_id = a.command_id WHERE c.{BLOCKED}"
            ).fetchall()
            return rows, edges

        rows, edges = await self.store.read(read)
        policy: dict[str, str] = {}
        after: dict[str, set[str]] = {}
        for cid, after_id, pol in edges:
            policy[cid] = pol
            after.setdefault(cid, set()).add(after_id)
        for row in rows:
            rec = row_to_command(row)
            self._register(Blocked(rec, policy.get(rec.command_id, "completed"), after.get(rec.command_id, set())))
        if rows:
            log.info("%d command(s) blocked on dependencies", len(rows))
        await self.recheck()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
