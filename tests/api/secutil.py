"""Helpers for the security tests: a real app with one extra WebSocket route (an echo on a
session path, like the event stream) and the clients the attacks need."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from llmgine_daemon.api.guard import GUARD
from llmgine_daemon.api.keys import BUS, CREDENTIALS
from llmgine_daemon.app import create_app
from llmgine_daemon.settings import read_local_key

from tests.conftest import serve

WS_PATH = "/api/sessions/{session_id}/test-echo"


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == web.WSMsgType.TEXT:
            await ws.send_str(msg.data)
    return ws


async def start(
    aiohttp_client: Callable[..., Any], make_settings: Callable[..., Any], **env: str
) -> tuple[TestClient, str]:
    """A client with no default credential, and the local CLI key."""
    settings = make_settings(**env)
    app = create_app(settings)
    app.router.add_get(WS_PATH, echo)
    client = await serve(aiohttp_client, app, settings)
    return client, read_local_key(settings.paths) or ""


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def freeze(client: TestClient, at: float = 1000.0) -> list[float]:
    """Stop the rate limiter's clock; move it with ``clock[0] += seconds``."""
    clock = [at]
    client.app[GUARD].limiter.clock = lambda: clock[0]
    return clock


async def new_session(client: TestClient, key: str) -> dict[str, Any]:
    resp = await client.post("/api/sessions", json={}, headers=bearer(key))
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def new_key(client: TestClient, key: str, **body: Any) -> dict[str, Any]:
    resp = await client.post("/api/auth/keys", json=body, headers=bearer(key))
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def expire(client: TestClient, key_id: str) -> None:
    """Move a key's expiry into the past (as if its time had come): in the database too, where
    a node sharing it (PostgreSQL) re-reads keys from every second."""
    past = "2000-01-01T00:00:00.000000Z"
    await client.app[BUS].store.write(
        lambda c: c.execute("UPDATE api_keys SET expires_at = ? WHERE key_id = ?", (past, key_id))
    )
    client.app[CREDENTIALS].keys[key_id].expires_at = past
