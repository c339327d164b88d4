"""bus/pages.py ``read_rows``: the parts of a long page, on a real SQLite table."""

from __future__ import annotations

import re
import sqlite3

import pytest
from llmgine_daemon.bus import pages


@pytest.fixture
def table() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, kind TEXT, body TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [(k, "a" if k % 3 else "b", "x" * 1000) for k in range(1, 301)])
    return conn


def _limits(conn: sqlite3.Connection) -> list[int]:
    asked: list[int] = []
    conn.set_trace_callback(lambda sql: asked.extend(int(n) for n in re.findall(r"LIMIT (\d+)", sql)))
    return asked


def test_a_page_is_read_whole_in_parts_within_the_budget(table, monkeypatch):
    """Rows in order by key, filtered, from an offset, in parts of at most PAGE_BYTES (one row
    at least), each part going on after the last key of the one before."""
    monkeypatch.setattr(pages, "PAGE_BYTES", 10_000)
    select, params = "SELECT k, body FROM t WHERE kind = ?", ["a"]
    expected = [k for k in range(1, 301) if k % 3][5:185]  # offset 5, limit 180
    rows, cut = pages.read_rows(table, select, params, key="k", offset=5, count=180)
    got = [r[0] for r in rows]
    while cut:
        assert sum(len(r[1]) for r in rows) <= 10_000 + 1000  # the budget, and the row that passed it
        rows, cut = pages.read_rows(table, select, params, key="k", after=got[-1], count=180 - len(got))
        got += [r[0] for r in rows]
    assert got == expected
    # Newest first, as the commands' listing reads.
    rows, _ = pages.read_rows(table, "SELECT k, body FROM t WHERE 1", [], key="k", desc=True, count=3)
    assert [r[0] for r in rows] == [300, 299, 298]


def test_statements_ask_for_what_fits_not_more(table, monkeypatch):
    """On PostgreSQL a statement's whole result is fetched: rows asked for past the budget were
    fetched for nothing, and again by the next part (98 rows fetched for a 40-row page, seen).
    After the first statement each asks for what should fit at the size of the rows so far."""
    monkeypatch.setattr(pages, "PAGE_BYTES", 10_000)
    asked = _limits(table)
    rows, cut = pages.read_rows(table, "SELECT k, body FROM t WHERE 1", [], key="k", count=300)
    assert cut and len(rows) == 10 and asked == [50]  # SQLite reads a row at a time: 10 read
    asked.clear()
    rows, cut = pages.read_rows(table, "SELECT k, body FROM t WHERE 1", [], key="k", after=10, count=290)
    assert cut and [r[0] for r in rows] == list(range(11, 21))
    assert asked[0] == pages.FIRST_AFTER and sum(asked) <= len(rows) + 1, asked
    # Small rows: statements grow to STEP, and a page that fits is one part.
    table.execute("UPDATE t SET body = 'y'")
    asked.clear()
    rows, cut = pages.read_rows(table, "SELECT k, body FROM t WHERE 1", [], key="k", after=0, count=120)
    assert not cut and len(rows) == 120 and max(asked) == pages.STEP


def test_rows_by_id_in_the_order_given_within_the_budget(table, monkeypatch):
    """``read_ids``: the rows of a list of ids (a wait's commands) in the list's order, an id
    without a row skipped, in parts of at most PAGE_BYTES, each statement asking for what
    should fit (its rows are all read, to be put in order)."""
    monkeypatch.setattr(pages, "PAGE_BYTES", 10_000)
    select = "SELECT k, body FROM t WHERE k IN ({})"
    ids = [300, 7, 999, *range(100, 40, -1)]  # 999: no such row
    sizes: list[int] = []
    table.set_trace_callback(lambda sql: sizes.append(sql.split(" IN (")[1].count(",") + 1) if " IN (" in sql else None)
    got: list[int] = []
    start, first = 0, True
    while start < len(ids):
        rows, n = pages.read_ids(table, select, ids[start:], first=first)
        assert n > 0 and sum(len(r[1]) for r in rows) <= 10_000 + 1000
        got += [r[0] for r in rows]
        start, first = start + n, False
    assert got == [i for i in ids if i != 999]
    assert sizes[0] == pages.FIRST_IDS and max(sizes) <= 10  # 1000-byte rows: ten fit at most
    table.execute("UPDATE t SET body = 'y'")
    rows, n = pages.read_ids(table, select, list(range(1, 301)))
    assert n == 300 and [r[0] for r in rows] == list(range(1, 301))
