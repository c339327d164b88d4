"""Shared fixtures: the real app, in-process, on a real SQLite file in a temp dir.

``home`` is a short temp folder used as LLMGINE_HOME (AF_UNIX paths max out at 107 bytes, so
pytest's long tmp_path is not used for it). ``make_app`` builds the app for that home; an
``app_client`` is the aiohttp test client over TCP on 127.0.0.1; ``unix_client`` serves the
same app on a real Unix socket.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from llmgine_daemon.app import create_app
from llmgine_daemon.settings import Settings, load_settings


@pytest.fixture
def home() -> Any:
    path = Path(tempfile.mkdtemp(prefix="lg", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_settings(home: Path) -> Callable[..., Settings]:
    def make(**env: str) -> Settings:
        return load_settings(env={"LLMGINE_HOME": str(home), **env})

    return make


@pytest.fixture
def make_client(
    aiohttp_client: Callable[..., Awaitable[TestClient]], make_settings: Callable[..., Settings]
) -> Callable[..., Awaitable[TestClient]]:
    """``await make_client(**env)``: a new app on the same home (call again to 'restart')."""

    async def make(**env: str) -> TestClient:
        return await aiohttp_client(create_app(make_settings(**env)))

    return make


@pytest.fixture
async def app_client(make_client: Callable[..., Awaitable[TestClient]]) -> TestClient:
    return await make_client()


@pytest.fixture
async def unix_client(
    home: Path, make_settings: Callable[..., Settings]
) -> AsyncIterator[aiohttp.ClientSession]:
    """The app on a real Unix socket; requests go to http://llmgine/..."""
    app = create_app(make_settings())
    runner = web.AppRunner(app)
    await runner.setup()
    path = home / "t.sock"
    site = web.UnixSite(runner, str(path))
    await site.start()
    session = aiohttp.ClientSession(
        base_url="http://llmgine", connector=aiohttp.UnixConnector(path=str(path))
    )
    try:
        yield session
    finally:
        await session.close()
        await runner.cleanup()


async def create_session(client: Any, **body: Any) -> dict[str, Any]:
    resp = await client.post("/api/sessions", json=body)
    assert resp.status == 201, await resp.text()
    return await resp.json()


def assert_envelope(payload: dict[str, Any], code: str) -> dict[str, Any]:
    """Check the one error shape and return its ``error`` object."""
    assert set(payload) == {"error", "timestamp", "request_id"}, payload
    error = payload["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code, error
    assert error["message"]
    assert payload["request_id"]
    return error
