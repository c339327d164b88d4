"""Following a command that another node runs (several daemons on one database:
bus/cluster.py): its record is read from the store until it finishes.

A node keeps in memory only the commands it runs itself; a client may wait on, or cancel, any
command from any node. The node it asked then polls the command's row (a primary-key lookup),
woken by every commit of another node and every command finished here, and a few
milliseconds apart at first, then less often, in case a wake-up is missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llmgine_daemon.bus.commands.records import COMMAND_COLUMNS, row_to_command
from llmgine_daemon.protocol import TERMINAL_STATUSES, Command, Event

if TYPE_CHECKING:
    from llmgine_daemon.store.db import Store

POLL_FIRST_S = 0.01
POLL_MAX_S = 0.25


def copy_record(src: Command, dst: Command) -> None:
    for name in Command.__struct_fields__:
        setattr(dst, name, getattr(src, name))


class Changes:
    """Wakes whoever follows commands in the store when something may have changed: another
    node committed events (bus/cluster.py's ``watch_events``), or a command finished here."""

    def __init__(self) -> None:
        self._next: asyncio.Future[None] | None = None

    def changed(self) -> None:
        fut, self._next = self._next, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    def on_event(self, event: Event) -> None:
        if self._next is not None and event.event_type == "CommandResult":
            self.changed()

    def next(self) -> asyncio.Future[None]:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        return self._next


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
        wake: list[asyncio.Future[Any]] = [f for f in (changes.next() if changes else None, stop) if f is not None]
        if wake:
            await asyncio.wait(wake, timeout=min(delay, remaining), return_when=asyncio.FIRST_COMPLETED)
        else:
            await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, POLL_MAX_S)
