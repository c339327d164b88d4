"""store/telemetry.py: logs and spans of a main database from before the split move over."""

from __future__ import annotations

import sqlite3

from llmgine_daemon.store.db import Store
from llmgine_daemon.store.telemetry import adopt_legacy, telemetry_path


async def test_legacy_logs_and_spans_move_with_their_ids_and_counters(home):
    main_path = home / "data" / "llmgine.db"
    telemetry = Store(telemetry_path(main_path), telemetry=True)
    await telemetry.open()
    await telemetry.close()
    # A main database from before the split: the telemetry tables, same schema, with rows (ids
    # 1-3 and 10; the counter at 12, as after pruning).
    schema = sqlite3.connect(telemetry.path)
    ddl = [
        row[0]
        for row in schema.execute("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name IN ('logs', 'spans')")
    ]
    columns = {t: [r[1] for r in schema.execute(f"PRAGMA table_info({t})")] for t in ("logs", "spans")}
    schema.close()
    old = sqlite3.connect(main_path)
    for statement in ddl:
        old.execute(statement)
    for ident in (1, 2, 3, 10):
        values = {c: (ident if c == "id" else f"{c}-{ident}") for c in columns["logs"]}
        old.execute(
            f"INSERT INTO logs ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})", list(values.values())
        )
    old.execute("UPDATE sqlite_sequence SET seq = 12 WHERE name = 'logs'")
    old.commit()
    old.close()

    main, telemetry = Store(main_path), Store(telemetry_path(main_path), telemetry=True)
    await main.open()
    await telemetry.open()
    try:
        assert await adopt_legacy(main, telemetry) == 4
        assert await adopt_legacy(main, telemetry) == 0  # done: the old tables are gone
        assert await telemetry.fetchall("SELECT id FROM logs ORDER BY id") == [(1,), (2,), (3,), (10,)]
        assert await telemetry.fetchall("SELECT seq FROM sqlite_sequence WHERE name = 'logs'") == [(12,)]
        assert await main.fetchall("SELECT name FROM sqlite_schema WHERE name IN ('logs', 'spans')") == []
    finally:
        await main.close()
        await telemetry.close()
