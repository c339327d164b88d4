"""The PostgreSQL test fixtures (tests/postgres.py): a fresh database per test, dropped after."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from tests.postgres import PgServer


def test_each_database_is_fresh_and_writable(make_pg_url: Callable[..., str]) -> None:
    first, second = make_pg_url(), make_pg_url()
    assert first != second
    with psycopg.connect(first, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x BIGINT)")
        conn.execute("INSERT INTO t VALUES (1)")
    with psycopg.connect(second) as conn:
        assert conn.execute("SELECT to_regclass('t')").fetchone() == (None,)


def test_databases_are_dropped_after_the_test(pg_server: PgServer) -> None:
    url = pg_server.new_database()
    pg_server.drop_database(url)
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(pg_server.admin_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone() == (0,)


def test_the_url_authenticates_with_a_password(pg_server: PgServer, pg_url: str) -> None:
    if pg_server.proc is None:
        pytest.skip("an existing server (LLMGINE_TEST_DATABASE_URL) has its own authentication")
    wrong = pg_url.replace(":pg-test-secret", ":wrong-secret")
    try:
        psycopg.connect(wrong).close()
    except psycopg.OperationalError as exc:
        assert "password authentication failed" in str(exc)
    else:
        raise AssertionError("a wrong password was accepted")
