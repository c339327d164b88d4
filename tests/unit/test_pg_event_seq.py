"""Event seqs on PostgreSQL, counted inside the writing transaction (store/pg_cluster.py
LOCK_FIRST / SAVE_HEAD and migration 122's trigger): in one group commit, writes that insert
events and then fail give their seqs back with their savepoint, so the log stays dense and in
commit order, ``event_head`` ends at the last seq, and an insert outside a node's group commit
(no transaction-local counter) still takes the next seq from the row."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from llmgine_daemon.bus.events import insert_event, insert_events
from llmgine_daemon.store import pg_cluster
from llmgine_daemon.store.postgres import PgStore


class Refused(Exception):
    pass


async def test_failed_writes_give_their_seqs_back_and_the_head_follows(pg_url: str) -> None:
    store = PgStore(pg_url)
    await store.open()
    store.first_statements, store.last_statements = (pg_cluster.LOCK_FIRST,), (pg_cluster.SAVE_HEAD,)
    try:

        def good(i: int) -> Any:
            return lambda conn: insert_event(conn, None, "Good", {"i": i}).seq

        def several(i: int) -> Any:
            return lambda conn: [
                e.seq
                for e in insert_events(conn, "s", [("Many", {"i": i}, {}, "bus")] * 3, timestamp="t", trace_id=None)
            ]

        def bad(i: int) -> Any:
            def write(conn: Any) -> None:
                insert_event(conn, None, "Bad", {"i": i})
                raise Refused(i)

            return write

        for _ in range(3):  # several group commits, each mixing all three
            writes = [f(i) for i in range(20) for f in (good, bad, several)]
            results = await asyncio.gather(*(store.write(w) for w in writes), return_exceptions=True)
            assert sum(isinstance(r, Refused) for r in results) == 20
    finally:
        await store.close()
    with psycopg.connect(pg_url) as conn:
        seqs = [r[0] for r in conn.execute("SELECT seq FROM events ORDER BY seq")]
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) == 3 * 20 * 4  # dense, no Bad
        assert conn.execute("SELECT COUNT(*) FROM events WHERE event_type = 'Bad'").fetchone()[0] == 0
        assert conn.execute("SELECT seq FROM event_head").fetchone()[0] == seqs[-1]
        # Outside a node's group commit (no counter in the transaction): the next seq, from the row.
        conn.execute(
            "INSERT INTO events (event_id, session_id, event_type, data, metadata, source, timestamp)"
            " VALUES ('x', NULL, 'Direct', '{}', '{}', 'bus', 't')"
        )
        conn.commit()
        assert conn.execute("SELECT seq FROM events WHERE event_id = 'x'").fetchone()[0] == seqs[-1] + 1
        assert conn.execute("SELECT seq FROM event_head").fetchone()[0] == seqs[-1] + 1
