"""Helpers shared by the bus API tests (commands, events, engines)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmgine_daemon.app import create_app
from llmgine_daemon.settings import load_settings

from tests.conftest import authorize, create_session, serve

DUMMY = "DummyEngineCommand"
# Long enough that a test always cancels it first; tests never wait for it to elapse.
BLOCK_MS = 600_000


async def session_with_engine(client: Any, **configuration: Any) -> tuple[str, str]:
    sid = (await create_session(client))["session_id"]
    engine = await create_engine(client, sid, **configuration)
    return sid, engine["engine_id"]


async def token_session_with_engine(client: Any) -> tuple[str, dict[str, str]]:
    """A session with a DummyEngine, and headers that authenticate as its session token."""
    session = await create_session(client)
    await create_engine(client, session["session_id"])
    return session["session_id"], {"Authorization": f"Bearer {session['session_token']}"}


async def create_engine(client: Any, sid: str, **configuration: Any) -> dict[str, Any]:
    resp = await client.post(
        "/api/engines",
        json={"engine_type": "DummyEngine", "session_id": sid, "model_name": "gpt-4", "configuration": configuration},
    )
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def submit(
    client: Any,
    sid: str,
    prompt: str = "hi",
    *,
    wait: float | None = None,
    priority: str | None = None,
    timeout: float | None = None,
    expect: int | None = None,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if priority:
        metadata["priority"] = priority
    if timeout is not None:
        metadata["timeout"] = timeout
    query = {"wait": str(wait)} if wait is not None else {}
    resp = await client.post(
        f"/api/sessions/{sid}/commands",
        params=query,
        headers=headers,
        json={"command_type": DUMMY, "parameters": {"prompt": prompt, **params}, "metadata": metadata},
    )
    if expect is not None:
        assert resp.status == expect, await resp.text()
    else:
        assert resp.status in (200, 202), await resp.text()
    return await resp.json()


async def get_command(client: Any, sid: str, cid: str, wait: float | None = None) -> dict[str, Any]:
    params = {"wait": str(wait)} if wait is not None else {}
    resp = await client.get(f"/api/sessions/{sid}/commands/{cid}", params=params)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def finished(client: Any, sid: str, cid: str) -> dict[str, Any]:
    record = await get_command(client, sid, cid, wait=30)
    assert record["status"] not in ("queued", "executing"), record
    return record


async def cancel(client: Any, sid: str, cid: str, expect: int = 200) -> dict[str, Any]:
    resp = await client.post(f"/api/sessions/{sid}/commands/{cid}/cancel")
    assert resp.status == expect, await resp.text()
    return await resp.json()


async def events(client: Any, sid: str, **params: Any) -> list[dict[str, Any]]:
    resp = await client.get(f"/api/sessions/{sid}/events", params={"limit": 1000, **params})
    assert resp.status == 200, await resp.text()
    return (await resp.json())["events"]


async def status_of(client: Any, sid: str, cid: str) -> str:
    return (await get_command(client, sid, cid))["status"]


async def cluster_node(aiohttp_client: Any, pg_url: str, home: Path, **env: str) -> Any:
    """A client of an app of its own home on the PostgreSQL database ``pg_url``: one node of
    a cluster (make two on one URL for two nodes)."""
    settings = load_settings(
        env={"LLMGINE_HOME": str(home), "DATABASE_URL": pg_url, "LLMGINE_RATE_LIMIT_AUTHENTICATED": "0", **env}
    )
    return authorize(await serve(aiohttp_client, create_app(settings), settings))
