"""Rows a write leaves to the store to insert (``Deferred``), so that SQLite's store can insert
those of a whole batch together, in the thread that then commits, off the event loop.

Why: a command's rows (its own, four events, its session's counts) were a quarter of the event
loop's time per command when inserted there (SQLite's B-tree work, in C; bench/README.md).
In the committing thread they go in as a few long statements (``plan``/``steps``: multi-row
INSERTs, the counts summed per key in one UPDATE ... FROM VALUES), each of which gives up the
GIL for its whole run, so the loop serves requests on the other core meanwhile. Not one
``executemany`` per table: it gives up the GIL for each row's step and takes it back at once
(the step is shorter than the loop takes to wake), so the loop, wanting the GIL, waited for
the whole insert instead (tried first, and reverted for that: bench/README.md).

The contract, for a write submitted with ``rows=True`` (``BaseStore.submit``): it checks what
it must (it runs in its own savepoint, as any write) but inserts nothing itself; it returns a
``Deferred``: the rows per statement, the statement whose rows take the session log's seqs
(events: their rowids, consecutive in one statement on the one writer), and ``finish``, which
is given the first of its seqs and returns the write's value. SQLite's store inserts the
deferred rows of consecutive such writes together - before the next write that is not one of
them runs (on the loop), so seqs keep the order writes were queued in, or else with the COMMIT,
in its thread; either way as ``plan`` makes the statements and ``run`` runs them. If that
insert fails, the transaction is rolled back and every write of the batch fails, as when COMMIT
fails. PostgreSQL's store inserts each at once (``Deferred.insert``).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from typing import Any

Row = tuple[Any, ...]
# (SQL, its rows, whether its rows take seqs): one executemany each
Statement = tuple[str, list[Row], bool]


class Deferred:
    """A write's rows for the store to insert: ``seq_rows`` by ``seq_sql`` (the rows whose
    rowids are the write's seqs), then each of ``rows`` (SQL, its rows); ``finish(first_seq)``
    is the write's value once they are in."""

    __slots__ = ("seq_sql", "seq_rows", "rows", "finish")

    def __init__(
        self, seq_sql: str, seq_rows: list[Row], rows: list[tuple[str, list[Row]]], finish: Callable[[int], Any]
    ) -> None:
        self.seq_sql, self.seq_rows, self.rows, self.finish = seq_sql, seq_rows, rows, finish

    def insert(self, conn: Any) -> Any:
        """Insert the rows now, on ``conn``; the write's value."""
        return insert_all(conn, [self])[0]


def prepare(items: list[Deferred]) -> tuple[list[Statement], list[tuple[int, int]]]:
    """The statements that insert every item's rows, one per distinct SQL with the rows in the
    items' order, and for each item (which seq statement, where its rows begin in it)."""
    seq_of: dict[str, int] = {}
    seq_rows: list[list[Row]] = []
    others: dict[str, list[Row]] = {}
    where: list[tuple[int, int]] = []
    for item in items:
        i = seq_of.setdefault(item.seq_sql, len(seq_rows))
        if i == len(seq_rows):
            seq_rows.append([])
        where.append((i, len(seq_rows[i])))
        seq_rows[i].extend(item.seq_rows)
        for sql, rows in item.rows:
            others.setdefault(sql, []).extend(rows)
    statements = [(sql, rows, True) for sql, rows in zip(seq_of, seq_rows, strict=True)]
    statements.extend((sql, rows, False) for sql, rows in others.items())
    return statements, where


def execute(conn: Any, statements: list[Statement]) -> list[int]:
    """Run ``statements`` with one ``executemany`` each (PostgreSQL's store: SQLite's runs them
    as ``plan`` makes them); the first seq that each seq statement's rows took (0 when it had
    none)."""
    firsts: list[int] = []
    for sql, rows, seq in statements:
        if rows:
            conn.executemany(sql, rows)
        if seq:
            # One statement on the one writer connection: its rows got consecutive seqs.
            last = conn.execute("SELECT last_insert_rowid()").fetchone()[0] if rows else 0
            firsts.append(last - len(rows) + 1 if rows else 0)
    return firsts


# (SQL, its parameters, and for the last step of a seq statement the number of its rows, else -1)
Step = tuple[str, list[Any], int]


def plan(statements: list[Statement]) -> list[Step]:
    """``statements`` as SQLite's store runs them (``run``): a few long steps each (``steps``),
    made on the event loop, so that the committing thread needs the GIL only to bind them."""
    out: list[Step] = []
    for sql, rows, seq in statements:
        if not rows:
            if seq:
                out.append(("", [], 0))  # a seq statement without rows: its first seq is 0
            continue
        parts = steps(sql, rows)
        for i, (step_sql, params) in enumerate(parts):
            out.append((step_sql, params, len(rows) if seq and i == len(parts) - 1 else -1))
    return out


def run(conn: Any, planned: list[Step]) -> list[int]:
    """Run ``plan``'s steps (in the committing thread, or on the loop); what ``execute`` returns."""
    firsts: list[int] = []
    for sql, params, rows in planned:
        if not sql:
            firsts.append(0)
            continue
        last = conn.execute(sql, params).lastrowid  # a multi-row INSERT's: its last row's
        if rows >= 0:  # one writer: a statement's rows, and its chunks', take consecutive seqs
            firsts.append(last - rows + 1)
    return firsts


# Rows a multi-row statement takes at most: SQLite binds at most 32,766 parameters.
MAX_STEP_ROWS = 512
_INSERT = re.compile(r"^(INSERT INTO \w+ \([^)]*\)) VALUES (\([?, ]+\))$")
_ADD = re.compile(r"^UPDATE (\w+) SET ((?:\w+ = \w+ \+ \?, )*\w+ = \w+ \+ \?) WHERE (\w+) = \?$")


def steps(sql: str, rows: list[Row]) -> list[tuple[str, list[Any]]]:
    """``executemany(sql, rows)`` as a few statements of many rows each, in the same order:
    an INSERT's rows as multi-row VALUES, and an UPDATE that adds to columns by key (the
    counts') as UPDATE ... FROM VALUES of the sums per key; both in chunks of powers of two, so
    that SQLite's statement cache keeps a few distinct statements. Why: ``executemany`` gives
    up the GIL for each row's step and takes it back at once, so the event loop, waiting for it,
    is starved while the committing thread inserts; one long step lets go of it for the whole
    insert. Any other statement: one step per row, as ``executemany``."""
    insert = _INSERT.match(sql)
    if insert is not None:
        head, group = insert.groups()
        return [(f"{head} VALUES {', '.join([group] * len(chunk))}", _flat(chunk)) for chunk in _chunks(rows)]
    add = _ADD.match(sql)
    if add is None or len(rows) == 1:
        return [(sql, list(row)) for row in rows]
    table, terms, key = add.groups()
    columns = [term.split(" = ")[0] for term in terms.split(", ")]
    sums: dict[Any, list[Any]] = {}
    for row in rows:
        total = sums.setdefault(row[-1], [0] * len(columns))
        for i, value in enumerate(row[:-1]):
            total[i] += value
    sets = ", ".join(f"{c} = {c} + v.column{i + 1}" for i, c in enumerate(columns))
    group = "(" + ", ".join(["?"] * (len(columns) + 1)) + ")"
    where = f"{table}.{key} = v.column{len(columns) + 1}"
    return [
        (f"UPDATE {table} SET {sets} FROM (VALUES {', '.join([group] * len(chunk))}) AS v WHERE {where}", _flat(chunk))
        for chunk in _chunks([(*total, k) for k, total in sums.items()])
    ]


def _chunks(rows: list[Row]) -> list[list[Row]]:
    """``rows`` in order, in chunks of powers of two up to MAX_STEP_ROWS (37: 32, 4, 1)."""
    out, at = [], 0
    while at < len(rows):
        n = min(MAX_STEP_ROWS, 1 << (len(rows) - at).bit_length() - 1)
        out.append(rows[at : at + n])
        at += n
    return out


def _flat(rows: list[Row]) -> list[Any]:
    return [value for row in rows for value in row]


def finish(items: list[Deferred], where: list[tuple[int, int]], firsts: list[int]) -> list[tuple[bool, Any]]:
    """Each item's outcome: (True, its value), or (False, what its ``finish`` raised)."""
    outcomes: list[tuple[bool, Any]] = []
    for item, (i, offset) in zip(items, where, strict=True):
        try:
            outcomes.append((True, item.finish(firsts[i] + offset)))
        except Exception as exc:  # a bug in the write's own code: its failure only
            outcomes.append((False, exc))
    return outcomes


def insert_in_savepoint(
    conn: Any,
    deferred: list[tuple[int, Deferred]],
    outcomes: list[tuple[bool, Any]],
    classify: Callable[[sqlite3.Error], BaseException],
) -> BaseException | None:
    """Insert, here, the rows that ``deferred`` writes left (outcome index, rows), in a
    savepoint of their own, and put each write's outcome in ``outcomes``: if the insert fails,
    those writes fail and the batch's others stand. Returns the error when SQLite rolled back
    the whole transaction instead (none of the batch may be acknowledged then)."""
    items = [item for _, item in deferred]
    statements, where = prepare(items)
    conn.execute("SAVEPOINT d")
    try:
        firsts = run(conn, plan(statements))
    except sqlite3.Error as exc:
        err = classify(exc)
        if not conn.in_transaction:
            return err
        conn.execute("ROLLBACK TO d")
        conn.execute("RELEASE d")
        results: list[tuple[bool, Any]] = [(False, err)] * len(items)
    else:
        conn.execute("RELEASE d")
        results = finish(items, where, firsts)
    for (index, _), outcome in zip(deferred, results, strict=True):
        outcomes[index] = outcome
    deferred.clear()
    return None


def insert_all(conn: Any, items: list[Deferred]) -> list[Any]:
    """Insert every item's rows on ``conn``, here; their values (raising the first failure)."""
    statements, where = prepare(items)
    values = []
    for ok, value in finish(items, where, execute(conn, statements)):
        if not ok:
            raise value
        values.append(value)
    return values
