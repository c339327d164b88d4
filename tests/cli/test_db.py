"""`llmgine db stats | vacuum` against a real daemon."""

from __future__ import annotations

import json


def test_db_stats_and_vacuum(cli):
    cli("session", "create", "-q")
    result = cli("db", "stats")
    assert result.exit_code == 0
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["TABLE", "ROWS", "SIZE", "INDEXES", "DATABASE"]
    assert any(row.split()[0] == "sessions" and int(row.split()[1]) >= 1 for row in rows)
    assert {row.split()[0]: row.split()[-1] for row in rows}["spans"] == "telemetry"
    assert "llmgine.db" in result.stderr and "free page" in result.stderr
    assert "llmgine-telemetry.db" in result.stderr.splitlines()[1]  # its own line

    data = json.loads(cli("db", "stats", "-o", "json").stdout)
    assert data["journal_mode"] == "wal" and {t["name"] for t in data["tables"]} >= {"events", "commands"}
    assert "sessions" in cli("db", "stats", "-q").stdout.split()

    vacuumed = json.loads(cli("db", "vacuum", "-o", "json").stdout)
    assert set(vacuumed) == {"before_bytes", "after_bytes", "reclaimed_bytes", "duration_ms"}
    plain = cli("db", "vacuum")
    assert plain.exit_code == 0 and plain.stdout.split()[0] == "before_bytes"
