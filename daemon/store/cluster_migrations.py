"""Schema of several nodes on one database (issue #16; migration numbers 120-129).

These tables exist on PostgreSQL only: there several daemons share one bus (store/pg_cluster.py
holds the DDL and the statements). On SQLite one process is the whole bus, so each migration is
recorded and does nothing: the numbers stay the same on both backends and SQLite pays nothing.

Until 120, a node installed the cluster's tables at start under an advisory lock; the DDL is
idempotent (``IF NOT EXISTS``, ``CREATE OR REPLACE``), so a database made that way upgrades by
running it once more, keeping its rows.
"""

from __future__ import annotations

import sqlite3

from llmgine_daemon.store.migrations import migration


@migration(120, "cluster: event head, nodes, session leases, cancel requests")
def m120_cluster(conn: sqlite3.Connection) -> None:
    """PostgreSQL: store/pg_cluster.py ``m120_cluster``; SQLite: nothing."""


@migration(121, "cluster: registry changes")
def m121_registry_changes(conn: sqlite3.Connection) -> None:
    """PostgreSQL: store/pg_cluster.py ``m121_registry_changes``; SQLite: nothing."""


@migration(122, "cluster: event seq counted in the transaction")
def m122_event_seq_in_transaction(conn: sqlite3.Connection) -> None:
    """PostgreSQL: store/pg_cluster.py ``m122_event_seq_in_transaction``; SQLite: nothing."""
