"""The live queue view (``GET /api/commands``): every unfinished command of this daemon, with
its place in its session's queue, how long it waited and how long it has run.

It reads the runner's memory, never the store: what is queued or executing is exactly the
runner's ``jobs`` (every live command is tracked there), and the order a session's commands
will start in is its queue's heap order (priority, then submission; a batch is one entry).
Commands held elsewhere (blocked on dependencies, waiting for a retry) come from the
``sources`` other modules register. Throughput is the ``CommandResult`` events of the last
minute, counted as the event log hands them out.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from llmgine_daemon.bus.commands.jobs import BatchJob, Job
from llmgine_daemon.protocol import UNFINISHED_STATUSES, Command, Event, QueueItem, QueueView, parse_iso

if TYPE_CHECKING:
    from llmgine_daemon.bus.commands.service import Commands

WINDOW_S = 60.0


class QueueWatch:
    def __init__(self, commands: Commands) -> None:
        self.commands = commands
        # Unfinished commands the runner does not hold (deps.py: blocked; retries.py: delayed).
        self.sources: list[Callable[[], Iterable[Command]]] = []
        self._finished: deque[tuple[float, str]] = deque()
        commands.bus.events.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        if event.event_type == "CommandResult":
            now = time.monotonic()
            self._finished.append((now, str(event.data.get("status"))))
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._finished and self._finished[0][0] < now - WINDOW_S:
            self._finished.popleft()

    def _positions(self) -> dict[str, int]:
        """Each queued command's place in its session's queue (1 = starts next)."""
        places: dict[str, int] = {}
        for q in self.commands.runner.queues.values():
            n = 0
            # Heap items are (rank, created, order, entry): sorted as the runner pops them.
            for *_, entry in sorted(q.heap, key=lambda item: item[:-1]):
                for job in entry.jobs if isinstance(entry, BatchJob) else [entry]:
                    if isinstance(job, Job) and job.state == "queued":
                        n += 1
                        places[job.record.command_id] = n
        return places

    def view(
        self, *, statuses: Iterable[str] | None = None, limit: int = 100, session_id: str | None = None
    ) -> QueueView:
        wanted = frozenset(statuses or UNFINISHED_STATUSES)
        records: dict[str, Command] = {j.record.command_id: j.record for j in self.commands.runner.jobs.values()}
        for source in self.sources:
            for rec in source():
                records.setdefault(rec.command_id, rec)
        counts: dict[str, int] = {}
        chosen = []
        for rec in records.values():
            if rec.status not in UNFINISHED_STATUSES or (session_id is not None and rec.session_id != session_id):
                continue
            counts[rec.status] = counts.get(rec.status, 0) + 1
            if rec.status in wanted:
                chosen.append(rec)
        chosen.sort(key=lambda r: (r.created_at, r.command_id))
        places = self._positions()
        now = time.time()
        due = self.commands.retries.due
        items = [_item(rec, places.get(rec.command_id), now, due.get(rec.command_id)) for rec in chosen[:limit]]
        self._trim(time.monotonic())
        finished: dict[str, int] = {}
        for _, status in self._finished:
            finished[status] = finished.get(status, 0) + 1
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
