"""The live queue view (``GET /api/commands``): every unfinished command, with its place in
its session's queue, how long it waited and how long it has run.

One read of the unfinished commands from the store (the partial indexes ``commands_active``
and ``commands_blocked``: every node's, on a shared database), with this node's live records
over them (the runner's ``jobs``, and the ``sources`` other modules register: blocked ones,
deps.py). A session's queued commands start in priority, then submission order (the runner's
heap order; a batch is one entry there, ranked by its most urgent command); one waiting for a
retry (retries.py) has no place until it is due. Throughput is the ``CommandResult`` events
of the last minute (counted per whole second: 60-61 s): this node's as its event log hands
them out, other nodes' as the stream hub reads them back from the store
(``EventLog.subscribe_read_back``), so on a shared database it is the cluster's; each
counted once (by seq, bus/seqranges.py).
"""

from __future__ import annotations

import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from llmgine_daemon.bus.commands.records import ACTIVE, BLOCKED, COMMAND_COLUMNS, PRIORITY_RANK, row_to_command
from llmgine_daemon.bus.seqranges import SeqRanges
from llmgine_daemon.protocol import UNFINISHED_STATUSES, Command, Event, QueueItem, QueueView, parse_iso

if TYPE_CHECKING:
    from llmgine_daemon.bus.commands.service import Commands

WINDOW_S = 60.0


class QueueWatch:
    def __init__(self, commands: Commands) -> None:
        self.commands = commands
        # Unfinished commands the runner does not hold (deps.py: blocked; retries.py: delayed).
        self.sources: list[Callable[[], Iterable[Command]]] = []
        # The commands finished in the last minute, counted per second: (second, {(session,
        # status): n}), oldest first. Memory grows with the sessions that finished commands in
        # each second of the minute (at most one entry each per second), not with how many.
        self._finished: deque[tuple[int, dict[tuple[str | None, str], int]]] = deque()
        # Each CommandResult is counted once, however it reached us (notified here, and read back
        # from the store by the stream hub - either first, maybe twice): the seqs seen either
        # way, as ranges. Seqs are dense: what this node sees is one range, broken only where
        # other nodes' events it did not read back fall between (those ranges go in 2 minutes).
        self._seen = SeqRanges()
        self._trimmed = 0  # the second of the last trim: at most one a second
        commands.bus.events.subscribe_batch(self._on_events)
        commands.bus.events.subscribe_read_back(self._on_event)

    def _on_event(self, event: Event) -> None:
        self._on_events((event,))

    def _on_events(self, events: Sequence[Event]) -> None:
        now = time.monotonic()
        if int(now) != self._trimmed:
            self._trim(now)
        seen = self._seen
        for event in events:
            seq = event.seq
            if seq in seen:
                continue
            seen.add(seq, now)  # every event, so that consecutive seqs make one range
            if event.event_type == "CommandResult" and event.source == "bus":  # not a client's forgery
                self._count(event, now)

    def _count(self, event: Event, now: float) -> None:
        second = int(now)
        if not self._finished or self._finished[-1][0] != second:
            self._finished.append((second, {}))
        counts = self._finished[-1][1]
        key = (event.session_id, str(event.data.get("status")))
        counts[key] = counts.get(key, 0) + 1

    def _trim(self, now: float) -> None:
        self._trimmed = int(now)
        while self._finished and self._finished[0][0] < now - WINDOW_S:
            self._finished.popleft()
        # A repeat comes within moments (the hub reads back as it goes); two windows is ample.
        self._seen.trim(now - 2 * WINDOW_S)

    @staticmethod
    def _positions(queued: list[Command], due: dict[str, str]) -> dict[str, int]:
        """Each queued command's place in its session's queue (1 = starts next): the runner's
        order, priority then submission. One waiting for a retry has none until it is due."""
        places: dict[str, int] = {}
        counters: dict[str, int] = {}
        for rec in sorted(queued, key=lambda r: (PRIORITY_RANK[r.priority], r.created_at, r.command_id)):
            if rec.command_id in due:
                continue
            counters[rec.session_id] = n = counters.get(rec.session_id, 0) + 1
            places[rec.command_id] = n
        return places

    async def view(
        self, *, statuses: Iterable[str] | None = None, limit: int = 100, session_id: str | None = None
    ) -> QueueView:
        wanted = frozenset(statuses or UNFINISHED_STATUSES)

        def read(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            where, params = f"({ACTIVE} OR {BLOCKED})", []
            if session_id is not None:
                where, params = f"{where} AND session_id = ?", [session_id]
            return conn.execute(f"SELECT {COMMAND_COLUMNS} FROM commands WHERE {where}", params).fetchall()

        # The store has every node's commands; this node's memory is fresher for its own.
        records = {row[0]: row_to_command(row) for row in await self.commands.store.read(read)}
        for job in self.commands.runner.jobs.values():
            if job.record.command_id in records:
                records[job.record.command_id] = job.record
        for source in self.sources:
            for rec in source():
                if rec.command_id in records:
                    records[rec.command_id] = rec
        counts: dict[str, int] = {}
        chosen = []
        for rec in records.values():
            if rec.status not in UNFINISHED_STATUSES:
                continue
            counts[rec.status] = counts.get(rec.status, 0) + 1
            if rec.status in wanted:
                chosen.append(rec)
        chosen.sort(key=lambda r: (r.created_at, r.command_id))
        due = self.commands.retries.due
        places = self._positions([r for r in records.values() if r.status == "queued"], due)
        now = time.time()
        items = [_item(rec, places.get(rec.command_id), now, due.get(rec.command_id)) for rec in chosen[:limit]]
        self._trim(time.monotonic())
        finished: dict[str, int] = {}
        for _, per_second in self._finished:
            for (session, status), n in per_second.items():
                if session_id is None or session == session_id:  # a session's view: only its own
                    finished[status] = finished.get(status, 0) + n
        sandbox = self.commands.bus.sandbox
        info = sandbox.info() if sandbox is not None and session_id is None else None
        return QueueView(
            commands=items,
            total=len(chosen),
            limit=limit,
            counts=counts,
            finished_last_minute=finished,
            sandbox_busy=info.get("busy") if info else None,
            sandbox_workers=info.get("workers") if info else None,
            sandbox_state=info.get("state") if info else None,
        )


def _seconds(since: str, until: str | None, now: float) -> float:
    end = parse_iso(until).timestamp() if until else now
    return round(max(0.0, end - parse_iso(since).timestamp()), 3)


def _item(rec: Command, position: int | None, now: float, retry_at: str | None) -> QueueItem:
    return QueueItem(
        command_id=rec.command_id,
        session_id=rec.session_id,
        command_type=rec.command_type,
        status=rec.status,
        priority=rec.priority,
        created_at=rec.created_at,
        started_at=rec.started_at,
        position=position if rec.status == "queued" else None,
        wait_s=_seconds(rec.created_at, rec.started_at, now),
        run_s=_seconds(rec.started_at, None, now) if rec.status == "executing" and rec.started_at else None,
        batch_id=rec.batch_id,
        attempt=rec.attempt,
        retry_at=retry_at,
    )
