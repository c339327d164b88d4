"""Shared fixtures: the real app, in-process, on a real SQLite file in a temp dir.

``home`` is a short temp folder used as LLMGINE_HOME (AF_UNIX paths max out at 107 bytes, so
pytest's long tmp_path is not used for it), in memory where the machine allows
(tests/scratch.py). ``make_app`` builds the app for that home; an ``app_client`` is the aiohttp
test client over TCP on 127.0.0.1; ``unix_client`` serves the same app on a real Unix socket.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from llmgine_daemon.api.limits import runner_kwargs
from llmgine_daemon.app import create_app
from llmgine_daemon.settings import Settings, load_settings, read_local_key

from tests.scratch import scratch_dir

# Started with SIGINT ignored (a background job of a non-interactive shell, some CI runners),
# pytest would hand that on to every process it starts, xdist workers included: the daemons
# and CLIs under test would then ignore the Ctrl-C the tests send them. A handler that does
# nothing keeps this process as deaf to SIGINT as it was started, while exec() gives children
# the default disposition again (a caught signal is reset on exec; an ignored one is not).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, lambda signum, frame: None)


@pytest.fixture
def home() -> Any:
    path = scratch_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def database_url() -> str | None:
    """DATABASE_URL for the apps a test makes: None (SQLite in ``home``). tests/api/conftest.py
    parametrizes it, so the API suite runs on SQLite and on PostgreSQL."""
    return None


@pytest.fixture
def make_settings(home: Path, database_url: str | None) -> Callable[..., Settings]:
    def make(**env: str) -> Settings:
        # Every trace stored (the default keeps 1%): the tests read back the spans of the
        # requests they make. The sampling tests set their own rate.
        env.setdefault("LLMGINE_TRACE_SAMPLE_RATE", "1")
        # One sandbox worker, not one per CPU (the default, so a test cannot count on more):
        # an app starts its workers once it has user code (sandbox/pool.py), and a test that
        # runs some needs one; tests of the pool set their own.
        env.setdefault("API_WORKERS", "1")
        if database_url is not None:
            env.setdefault("DATABASE_URL", database_url)
        return load_settings(env={"LLMGINE_HOME": str(home), **env})

    return make


async def serve(
    aiohttp_client: Callable[..., Awaitable[TestClient]], app: web.Application, settings: Settings
) -> TestClient:
    """A test client for ``app`` on a server with the real daemon's options.

    (aiohttp's TestServer drops its constructor's keyword arguments, so the server is started
    here with them; pytest-aiohttp's ``server_kwargs`` would be silently ignored.)
    """
    server = TestServer(app)
    await server.start_server(**runner_kwargs(settings))
    return await aiohttp_client(server)


def authorize(client: TestClient) -> TestClient:
    """Send the local CLI key (minted at start-up) on every request of ``client``, as the CLI
    does over TCP; for tests that build their own app with ``aiohttp_client(app)``."""
    from llmgine_daemon.api.keys import SETTINGS

    key = read_local_key(client.app[SETTINGS].paths)
    client.session.headers["Authorization"] = f"Bearer {key}"
    return client


@pytest.fixture
def make_client(
    make_settings: Callable[..., Settings], aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> Callable[..., Awaitable[TestClient]]:
    """``await make_client(**env)``: a new app on the same home (call again to 'restart').

    The test server gets the real daemon's server options (header limits, read timeout).
    Like the real CLI, the client sends the key llmgined minted for the local CLI, so tests
    of other features need no credentials; ``authenticated=False`` sends none. The per-key and
    WebSocket rate limits are off unless a test sets them (the security tests do).
    (make_settings first: its database, if any, is dropped only after the apps are closed.)
    """

    async def make(*, authenticated: bool = True, **env: str) -> TestClient:
        env.setdefault("LLMGINE_RATE_LIMIT_AUTHENTICATED", "0")
        env.setdefault("LLMGINE_RATE_LIMIT_WEBSOCKET", "0")
        settings = make_settings(**env)
        client = await serve(aiohttp_client, create_app(settings), settings)
        return authorize(client) if authenticated else client

    return make


@pytest.fixture
async def app_client(make_client: Callable[..., Awaitable[TestClient]]) -> TestClient:
    return await make_client()


@pytest.fixture
async def unix_client(home: Path, make_settings: Callable[..., Settings]) -> AsyncIterator[aiohttp.ClientSession]:
    """The app on a real Unix socket; requests go to http://llmgine/..."""
    app = create_app(make_settings())
    runner = web.AppRunner(app)
    await runner.setup()
    path = home / "t.sock"
    site = web.UnixSite(runner, str(path))
    await site.start()
    session = aiohttp.ClientSession(base_url="http://llmgine", connector=aiohttp.UnixConnector(path=str(path)))
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


async def assert_documented(
    client: Any, method: str, path: str, status: int, code: str, headers: dict[str, str] | None = None
) -> None:
    """``/openapi.json`` lists ``code`` among the ``status`` answers of the operation at
    ``path`` (its template, ``/api/sessions/{session_id}/tools``): what the daemon answers."""
    doc = await (await client.get("/openapi.json", headers=headers)).json()
    responses = doc["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, (method, path, status)
    assert code in responses[str(status)]["description"].split(" | "), (method, path, status, code)


# -- fixtures and hooks from their own modules (pytest finds them by name in a conftest) -------
# tests/postgres.py: a throwaway PostgreSQL server per test process, a fresh database per test.
# tests/secret_logs.py: the test that logs a secret fails.
# tests/bytecode.py: modules compiled once per run, even under PYTHONDONTWRITEBYTECODE.
# tests/scheduling.py: the tests of a module with shared fixtures on one xdist worker.

from tests.bytecode import pytest_configure, pytest_unconfigure  # noqa: E402, F401
from tests.postgres import make_pg_url, pg_server, pg_url  # noqa: E402, F401
from tests.scheduling import pytest_collection_modifyitems  # noqa: E402, F401
from tests.secret_logs import (  # noqa: E402, F401
    pytest_runtest_makereport,
    pytest_sessionfinish,
    pytest_sessionstart,
)
