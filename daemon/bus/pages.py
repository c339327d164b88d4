"""Pages of a listing too large to hold whole: read and sent part by part.

An event's data or a command's parameters and result may each be a request body's size (1
MiB), and a page may hold a thousand of them: built whole, one ``GET .../events?limit=1000``
held about 3.4 GB of the daemon's memory (the rows, the decoded items, the encoded answer),
for any session token that had written them. Cutting such a page short would break the
contract's paging (a client that pages with ``offset += limit`` would skip what was cut), so
the page is complete but never whole in memory: its rows are read until they pass
``PAGE_BYTES`` (one row at least), and when more are due the listing answers a ``LongPage``,
which the API sends part by part (api/util.py ``page_response``), each part read when the one
before has been written. The parts are read in separate read transactions, one after another
by key (events by seq, commands by rowid), so a page holds what its parts read at their time;
the count (``total``) is the first part's.

Answers that are lists of commands by id (``POST /api/commands/wait``: up to 1,000 ids; a
batch: up to 10,000 commands) are read the same way, by position in their list of ids
(``read_ids``), and sent the same way; their list need not be the answer's first field.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

# How much of a page's rows (their text) one part holds at most, one row at least.
PAGE_BYTES = 8 * 2**20


# Rows per statement at most: a PostgreSQL cursor holds a statement's whole result on the
# client, so a part is read in statements sized from the rows read so far (the first of a
# page's first part: STEP; a later part's, which follows rows known to be large: FIRST_AFTER).
STEP = 50
FIRST_AFTER = 4
FIRST_IDS = 8  # read_ids' first statement


def read_rows(
    conn: sqlite3.Connection,
    select: str,
    params: Sequence[Any],
    *,
    key: str,
    desc: bool = False,
    after: Any = None,
    offset: int = 0,
    count: int,
) -> tuple[list[Any], bool]:
    """At most ``count`` rows of ``select`` (``SELECT {key}, ... WHERE ...``: the rows' order
    is by ``key``, the first column), from ``offset`` or after the key ``after``, until their
    text passes ``PAGE_BYTES`` (one row at least). Returns (rows, whether it stopped for the
    bytes, so that more may be due).

    Each statement asks for as many rows as should fit in what is left of ``PAGE_BYTES`` at
    the size of those read so far (at most STEP): on PostgreSQL a statement's rows past the
    budget are fetched for nothing (and fetched again by the next part), on SQLite they are
    never read (its cursor reads a row at a time)."""
    op, order = ("<", f" ORDER BY {key} DESC") if desc else (">", f" ORDER BY {key}")
    rows: list[Any] = []
    used = 0
    n = min(STEP if after is None else FIRST_AFTER, count)
    while True:
        if rows:
            after, offset = rows[-1][0], 0
        cond, args = (f" AND {key} {op} ?", [after]) if after is not None else ("", [])
        got = 0
        for row in conn.execute(f"{select}{cond}{order} LIMIT ? OFFSET ?", (*params, *args, n, offset)):
            rows.append(row)
            got += 1
            used += sum(len(value) for value in row if isinstance(value, (str, bytes)))
            if used >= PAGE_BYTES:
                return rows, len(rows) < count
        if got < n or len(rows) >= count:
            return rows, False
        fits = -(-(PAGE_BYTES - used) * len(rows) // max(used, 1))  # rows of the average size
        n = max(1, min(STEP, count - len(rows), fits))


def read_ids(conn: sqlite3.Connection, select: str, ids: Sequence[str], *, first: bool = True) -> tuple[list[Any], int]:
    """The rows of ``ids`` in their order (``select``: ``SELECT id, ... FROM t WHERE id IN
    ({})``, the id first; an id without a row is skipped) until their text passes PAGE_BYTES
    (one row at least). Returns (rows, how many of ``ids`` they cover). A statement's rows
    are all read (to put them in the order of ``ids``) on both backends, so the first asks
    for FIRST_IDS (``first``: the first part's, else FIRST_AFTER, after rows known to be
    large) and the next ones for as many as should fit, as ``read_rows``' do."""
    rows: list[Any] = []
    used = done = 0
    n = FIRST_IDS if first else FIRST_AFTER
    while done < len(ids):
        chunk = list(ids[done : done + n])
        found = {row[0]: row for row in conn.execute(select.format(", ".join("?" * len(chunk))), chunk)}
        for i, cid in enumerate(chunk, 1):
            row = found.pop(cid, None)
            if row is None:
                continue
            rows.append(row)
            used += sum(len(value) for value in row if isinstance(value, (str, bytes)))
            if used >= PAGE_BYTES:
                return rows, done + i
        done += len(chunk)
        fits = -(-(PAGE_BYTES - used) * max(len(rows), 1) // max(used, 1))
        n = max(1, min(STEP, fits))
    return rows, done


@dataclass
class LongPage:
    """A page whose rows pass ``PAGE_BYTES``: its first part, and how to read the rest.

    ``key``: the first part's last row's key. ``more(key, count)``: at most ``count`` items
    after the row of ``key``, themselves within ``PAGE_BYTES`` ([] once there are none), and
    the key of the last. ``envelope(last)``: the listing without its items (``field``, an
    empty list), ``last`` the page's last item (events: its ``next_after``); the fields before
    ``field`` must not depend on ``last`` (they are sent first)."""

    field: str
    items: list[Any]
    key: Any
    count: int  # how many items the page may hold in all (its limit)
    more: Callable[[Any, int], Awaitable[tuple[list[Any], Any]]]
    envelope: Callable[[Any], Any]
