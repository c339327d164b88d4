"""Fixtures of the API tests: the fake LLM provider and an app pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from tests.api.llm_helpers import provider_env
from tests.backends import database_url, pytest_generate_tests  # noqa: F401 - both backends
from tests.fakes.provider import FakeProvider


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
