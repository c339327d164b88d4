"""Fixtures of the API tests: the fake LLM provider and an app pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from tests.api.llm_helpers import provider_env
from tests.fakes.provider import FakeProvider


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every API test that makes an app runs twice: on SQLite (in its home) and on a fresh
    PostgreSQL database (tests/postgres.py). A test that is SQLite-only by nature (database
    files, WAL, file locks) is marked ``@pytest.mark.sqlite_only(reason=...)`` and runs once."""
    if "database_url" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("sqlite_only")
        metafunc.parametrize("database_url", ["sqlite"] if only else ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    fake = FakeProvider()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def llm_client(
    make_client: Callable[..., Awaitable[TestClient]], fake: FakeProvider
) -> Callable[..., Awaitable[TestClient]]:
    """``await llm_client(**env)``: an app on the shared home, providers on the fake."""

    async def make(**env: str) -> TestClient:
        return await make_client(**provider_env(fake, **env))

    return make
