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


class Changes:
    """Wakes whoever follows commands in the store when one of them may have finished: its
    ``CommandResult`` was committed here or read back from another node's commit."""

    def __init__(self) -> None:
        self._watch: dict[str, set[asyncio.Future[None]]] = {}

    def on_event(self, event: Event) -> None:
        if not self._watch:
            return
        if event.event_type == "CommandResult":
            woken = self._watch.pop(event.data.get("command_id") or "", set())
        elif event.event_type == "SessionEnded":  # its queued commands ended without a result
            woken = {fut for futures in self._watch.values() for fut in futures}
        else:
            return
        for fut in woken:
            if not fut.done():
                fut.set_result(None)

    def next(self, command_ids: Sequence[str]) -> asyncio.Future[None]:
        """Done when one of these commands' results arrives (``forget`` it after)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for cid in command_ids:
            self._watch.setdefault(cid, set()).add(fut)
        return fut

    def forget(self, command_ids: Sequence[str], fut: asyncio.Future[None]) -> None:
        for cid in command_ids:
            futures = self._watch.get(cid)
            if futures is not None:
                futures.discard(fut)
                if not futures:
                    del self._watch[cid]


async def wait_in_store(
    store: Store,
    records: Sequence[Command],
    deadline: float,
    changes: Changes | None = None,
    stop: asyncio.Future[None] | None = None,
) -> bool:
    """Poll the unfinished ``records`` in the store until all have finished (their objects are
    updated in place) or the loop's clock passes ``deadline``; True if all finished. With
    ``changes``, a change wakes the poll at once (else it backs off up to POLL_MAX_S); ``stop``
    done (shutdown begins) ends the wait with what there is."""
    loop = asyncio.get_running_loop()
    delay = POLL_FIRST_S
    while True:
        left = [r for r in records if r.status not in TERMINAL_STATUSES]
        if not left:
            return True
        ids = [r.command_id for r in left]
        marks = ", ".join("?" * len(ids))

        def read(conn: Any, ids: list[str] = ids, marks: str = marks) -> list[tuple[Any, ...]]:
            sql = f"SELECT {COMMAND_COLUMNS} FROM commands WHERE command_id IN ({marks})"
            return list(conn.execute(sql, ids).fetchall())

        for row in await store.read(read):
            fresh = row_to_command(row)
            for rec in left:
                if rec.command_id == fresh.command_id:
                    copy_record(fresh, rec)
        if all(r.status in TERMINAL_STATUSES for r in records):
            return True
        remaining = deadline - loop.time()
        if remaining <= 0 or (stop is not None and stop.done()):
            return False
        changed = changes.next(ids) if changes is not None else None
        wake: list[asyncio.Future[Any]] = [f for f in (changed, stop) if f is not None]
        try:
            if wake:
                await asyncio.wait(wake, timeout=min(delay, remaining), return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.sleep(min(delay, remaining))
        finally:
            if changes is not None and changed is not None:
                changes.forget(ids, changed)
        delay = min(delay * 2, POLL_MAX_S)
