"""The cluster's schema is numbered migrations 120-122 (store/cluster_migrations.py; before,
each node installed the tables at start). A database made by that older code - every migration
up to 119 recorded, the cluster's tables there with their rows, no registry log - upgrades
cleanly: a node starts on it, applies 120 and 121, keeps the event log's order and serves.
On SQLite the same numbers are recorded and create nothing.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_llmgined import free_port, run_daemon, wait_for_http
from tests.e2e.test_multinode import Node

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
    pytest.mark.own_database(reason="its nodes share a PostgreSQL database of their own"),
]

CLUSTER_VERSIONS = (120, 121, 122)


def _start(home: Path, env: dict[str, str]) -> Node:
    port = free_port()
    proc = run_daemon(home, "--port", str(port), env=env)
    wait_for_http(port, proc, timeout=60)
    return Node(home, port, proc, env.get("DATABASE_URL", ""))


def _stop(node: Node) -> None:
    node.proc.send_signal(signal.SIGTERM)
    try:
        node.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        node.proc.kill()
        node.proc.wait()


def _publish(node: Node, sid: str, n: int) -> list[int]:
    return [
        node.call("POST", f"/api/sessions/{sid}/events", {"event_type": "Tick", "data": {"i": i}})["seq"]
        for i in range(n)
    ]


def test_a_database_from_before_the_cluster_migrations_upgrades(make_pg_url, tmp_path):
    import psycopg

    url = make_pg_url(empty=True)
    env = {"DATABASE_URL": url}
    (tmp_path / "a").mkdir()
    node = _start(tmp_path / "a", env)
    try:
        sid = node.call("POST", "/api/sessions", {})["session_id"]
        before = _publish(node, sid, 5)
    finally:
        _stop(node)
    # Back to what the older code left: 120+ not recorded, the registry log not there (the
    # cluster's tables, installed at each start, stay with their rows).
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE version BETWEEN 120 AND 129")
        conn.execute("DROP TABLE registry_changes")
        conn.execute("DROP TABLE registry_head")
        assert conn.execute("SELECT seq FROM event_head").fetchone()[0] >= before[-1]
    (tmp_path / "b").mkdir()
    node = _start(tmp_path / "b", env)
    try:
        after = _publish(node, sid, 3)
        assert after[0] > before[-1] and after == sorted(after)  # the log goes on, in order
        engine = node.call("POST", "/api/engines", {"engine_type": "DummyEngine", "session_id": sid})
        assert engine["engine_id"]
        with psycopg.connect(url) as conn:
            versions = {
                r[0] for r in conn.execute("SELECT version FROM schema_migrations WHERE version BETWEEN 120 AND 129")
            }
            assert versions == set(CLUSTER_VERSIONS)
            assert conn.execute("SELECT version FROM registry_head").fetchone()[0] >= 1  # the engine's change
    finally:
        _stop(node)
    # A second start finds nothing to do and starts as usual.
    (tmp_path / "c").mkdir()
    node = _start(tmp_path / "c", env)
    try:
        assert node.call("GET", f"/api/sessions/{sid}")["session_id"] == sid
    finally:
        _stop(node)


def test_on_sqlite_the_cluster_migrations_are_recorded_and_make_no_table(tmp_path):
    node = _start(tmp_path, {})
    try:
        node.call("POST", "/api/sessions", {})
    finally:
        _stop(node)
    db = next(p for p in tmp_path.rglob("*.db") if "telemetry" not in p.name)
    with sqlite3.connect(db) as conn:
        versions = {
            r[0] for r in conn.execute("SELECT version FROM schema_migrations WHERE version BETWEEN 120 AND 129")
        }
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert versions == set(CLUSTER_VERSIONS)
    assert not tables & {"event_head", "session_leases", "cluster_nodes", "registry_changes", "registry_head"}
