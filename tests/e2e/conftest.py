"""The e2e suites on both storage backends.

Every test here runs twice, ``[sqlite]`` and ``[postgresql]``: an autouse fixture points the
daemons it starts (tests/clitools.py's ``start_daemon``, ``cli_env`` and test_llmgined's
``run_daemon``) at SQLite in their home, or at a fresh PostgreSQL database of its own
(tests/postgres.py). A daemon a module shares between its tests takes its own from ``module_backend_env()``
instead.

A test is run once when it is marked ``@pytest.mark.sqlite_only(reason=...)`` (on the default,
SQLite in the home: it is about database files or the README as written, or storage plays no
part in it, as for the browser pages) or ``@pytest.mark.own_database(reason=...)`` (it sets its
own ``DATABASE_URL``: the multi-node tests). Its id then carries no backend. Rows are looked at
with tests/dbtools.py's ``open_home_db``, on either backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import clitools

BACKENDS = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``e2e_backend`` (by module, so module daemons are made once per backend)."""
    once = any(metafunc.definition.get_closest_marker(m) for m in ("sqlite_only", "own_database"))
    if "e2e_backend" in metafunc.fixturenames and not once:
        metafunc.parametrize("e2e_backend", BACKENDS, indirect=True, scope="module")


@pytest.fixture(scope="module")
def e2e_backend(request: pytest.FixtureRequest) -> str:
    backend: str = getattr(request, "param", "sqlite")
    return backend


@pytest.fixture(autouse=True)
def backend_env(e2e_backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This test's daemons' storage: nothing (SQLite) or a fresh PostgreSQL database."""
    env = {} if e2e_backend == "sqlite" else {"DATABASE_URL": request.getfixturevalue("pg_url")}
    monkeypatch.setattr(clitools, "BACKEND_ENV", env)
    return env


@pytest.fixture(scope="module")
def module_backend_env(e2e_backend: str, request: pytest.FixtureRequest) -> Iterator[Callable[[], dict[str, str]]]:
    """``module_backend_env()``: the storage of a daemon a module's tests share, a database of
    its own for each call (two such daemons on one database would be two nodes of one bus)."""
    made: list[str] = []

    def make() -> dict[str, str]:
        if e2e_backend == "sqlite":
            return {}
        made.append(request.getfixturevalue("pg_server").new_database())
        return {"DATABASE_URL": made[-1]}

    yield make
    for url in made:
        request.getfixturevalue("pg_server").drop_database(url)


@pytest.fixture
def cli_home() -> Iterator[Path]:
    """A home with a path short enough for its sockets (``clitools.short_home``); anything a
    test started in it (or a failing one left running) is stopped and the home removed."""
    path = clitools.short_home()
    try:
        yield path
    finally:
        clitools.cleanup_home(path)
