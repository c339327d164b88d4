"""Following a command that another node runs (several daemons on one database:
bus/cluster.py): its record is read from the store until it finishes.

A node keeps in memory only the commands it runs itself; a client may wait on, or cancel, any
command from any node. The node it asked then reads the command's row (a primary-key lookup)
when its ``CommandResult`` arrives: committed here, or by another node and read back by the
stream hub (``EventLog.subscribe_read_back``), which follows every commit of the others. A
slow poll (POLL_FIRST_S, backing off to POLL_MAX_S) covers a wake-up that never comes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llmgine_daemon.bus.commands.records import COMMAND_COLUMNS, row_to_command
from llmgine_daemon.protocol import TERMINAL_STATUSES, Command, Event

if TYPE_CHECKING:
    from llmgine_daemon.store.db import Store

POLL_FIRST_S = 0.05
POLL_MAX_S = 1.0


def copy_record(src: Command, dst: Command) -> None:
    for name in Command.__struct_fields__:
        setattr(dst, name, getattr(src, name))


class Follower:
    """What one ``wait_in_store`` has heard: the ids whose results arrived since it last read,
    or ``everything`` (re-read them all: a session ended, its queued commands without events)."""

    def __init__(self) -> None:
        self.ready: set[str] = set()
        self.everything = False
        self.signal: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def arrived(self, command_id: str | None) -> None:
        if command_id is None:
            self.everything = True
        else:
            self.ready.add(command_id)
        if not self.signal.done():
            self.signal.set_result(None)

    def take(self) -> tuple[set[str], bool]:
        ready, everything = self.ready, self.everything
        self.ready, self.everything = set(), False
        if self.signal.done():
            self.signal = asyncio.get_running_loop().create_future()
        return ready, everything


class Changes:
    """Wakes whoever follows commands in the store when one of them may have finished: its
    ``CommandResult`` was committed here or read back from another node's commit."""

    def __init__(self) -> None:
        self._watch: dict[str, set[Follower]] = {}

    def on_event(self, event: Event) -> None:
        if not self._watch or event.source != "bus":  # a client's forgery wakes no one
            return
        if event.event_type == "CommandResult":
            cid = event.data.get("command_id") or ""
            for follower in self._watch.get(cid, ()):
                follower.arrived(cid)
        elif event.event_type == "SessionEnded":  # its queued commands ended without a result
            for follower in {f for followers in self._watch.values() for f in followers}:
                follower.arrived(None)

    def follow(self, command_ids: Sequence[str]) -> Follower:
        """A follower of these commands' results (``forget`` it after)."""
        follower = Follower()
        for cid in command_ids:
            self._watch.setdefault(cid, set()).add(follower)
        return follower

    def forget(self, command_ids: Sequence[str], follower: Follower) -> None:
        for cid in command_ids:
            followers = self._watch.get(cid)
            if followers is not None:
                followers.discard(follower)
                if not followers:
                    del self._watch[cid]


def _read_rows(conn: Any, ids: list[str], columns: str) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        rows += conn.execute(f"SELECT {columns} FROM commands WHERE command_id IN ({marks})", chunk).fetchall()
    return rows


async def read_batch_results(store: Store, records: Sequence[Command]) -> None:
    """Read back the results of the batch members among ``records`` that ended on this node: a
    member's result is kept in the store only (``Runner.apply_end``)."""
    ended: dict[str, list[Command]] = {}
    for rec in records:
        if rec.batch_id is not None and rec.status in TERMINAL_STATUSES and rec.result is None:
            ended.setdefault(rec.command_id, []).append(rec)
    if ended:
        for row in await store.read(lambda conn: _read_rows(conn, list(ended), COMMAND_COLUMNS)):
            for rec in ended[row[0]]:
                copy_record(row_to_command(row), rec)


async def wait_in_store(
    store: Store,
    records: Sequence[Command],
    deadline: float,
    changes: Changes | None = None,
    stop: asyncio.Future[None] | None = None,
    columns: str = COMMAND_COLUMNS,
) -> bool:
    """Follow the unfinished ``records`` in the store until all have finished (their objects
    are updated in place) or the loop's clock passes ``deadline``; True if all finished. With
    ``changes``, a command's result wakes the wait at once and only the commands heard of are
    read again (a batch of thousands costs one read per result, not one of all per result);
    a slow poll (backing off up to POLL_MAX_S) re-reads them all. ``stop`` done (shutdown
    begins) ends the wait with what there is. ``columns``: what is read (records.py
    ``STATE_COLUMNS`` for a wait that answers from the store afterwards: no results held)."""
    loop = asyncio.get_running_loop()
    delay = POLL_FIRST_S
    by_id: dict[str, list[Command]] = {}
    for rec in records:
        by_id.setdefault(rec.command_id, []).append(rec)
    pending = {cid for cid, recs in by_id.items() if recs[0].status not in TERMINAL_STATUSES}
    follower = changes.follow(list(pending)) if changes is not None else None
    try:
        to_read = list(pending)
        while True:
            if to_read:
                for row in await store.read(lambda conn, ids=to_read: _read_rows(conn, ids, columns)):
                    fresh = row_to_command(row)
                    for rec in by_id.get(fresh.command_id, ()):
                        copy_record(fresh, rec)
                    if fresh.status in TERMINAL_STATUSES:
                        pending.discard(fresh.command_id)
            if not pending:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0 or (stop is not None and stop.done()):
                return False
            if follower is None:
                await asyncio.sleep(min(delay, remaining))
                ready, everything = set(), True
            else:
                if not follower.ready and not follower.everything:
                    wake = [f for f in (follower.signal, stop) if f is not None]
                    await asyncio.wait(wake, timeout=min(delay, remaining), return_when=asyncio.FIRST_COMPLETED)
                ready, everything = follower.take()
                everything = everything or not ready  # woken by the clock: a slow poll of all
            if everything:
                to_read = list(pending)
                delay = min(delay * 2, POLL_MAX_S)
            else:
                to_read = [cid for cid in ready if cid in pending]
    finally:
        if changes is not None and follower is not None:
            changes.forget(list(by_id), follower)
