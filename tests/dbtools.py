"""The database of an app under test, whichever backend it is on (tests/api/conftest.py runs
the API suite on SQLite and on PostgreSQL): for tests that look at (or plant) rows directly.

``open_db(client)`` yields a connection in autocommit whose ``execute(sql, params)`` takes the
bus's SQL (``?`` placeholders) on both: sqlite3 on the file, or the PostgreSQL store's own
adapter (store/postgres.py). ``telemetry=True``: logs and spans (a file of their own on
SQLite, the same database on PostgreSQL).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llmgine_daemon.api.keys import SETTINGS
from llmgine_daemon.settings import Settings, load_settings
from llmgine_daemon.store.telemetry import telemetry_path


def settings_of(client: Any) -> Settings:
    app = client.app if hasattr(client, "app") else client.server.app
    return app[SETTINGS]


@contextmanager
def open_db(client: Any, *, telemetry: bool = False) -> Iterator[Any]:
    with open_settings_db(settings_of(client), telemetry=telemetry) as conn:
        yield conn


@contextmanager
def open_home_db(home: Path, *, telemetry: bool = False) -> Iterator[Any]:
    """The database of the daemon a test started in ``home`` (tests/e2e: on this test's backend)."""
    from tests import clitools

    settings = load_settings(env={"LLMGINE_HOME": str(home), **clitools.BACKEND_ENV})
    with open_settings_db(settings, telemetry=telemetry) as conn:
        yield conn


@contextmanager
def open_settings_db(settings: Settings, *, telemetry: bool = False) -> Iterator[Any]:
    url = settings.postgres_url
    if url is not None:
        from llmgine_daemon.store.postgres import PgConnection, connect

        raw = connect(url)
        try:
            yield PgConnection(raw, lambda table: {})
        finally:
            raw.close()
        return
    path = telemetry_path(settings.database_path) if telemetry else settings.database_path
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def dump_all(client: Any) -> str:
    """Every row of every table (main and telemetry), as text."""
    settings = settings_of(client)
    if settings.postgres_url is None:
        out = []
        for telemetry in (False, True):
            with open_db(client, telemetry=telemetry) as conn:
                out.append("\n".join(conn.iterdump()))
        return "\n".join(out)
    with open_db(client) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
        return "\n".join(repr(row) for table in tables for row in conn.execute(f'SELECT * FROM "{table}"'))
