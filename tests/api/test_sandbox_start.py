"""The sandbox pool starts its workers when the daemon has user code, not with the daemon:
an app that never registers a tool or handler starts none, and /api/status says so (state
``standby``); registering code starts them, and so does a start that finds tools or handlers
stored, before any call (sandbox/pool.py)."""

from __future__ import annotations

from typing import Any

from llmgine_daemon.api.keys import BUS

from tests.conftest import create_session
from tests.eventually import eventually

TOOL = {"name": "f", "function_code": "def f():\n    return 6 * 7\n"}


async def sandbox_info(client: Any) -> dict[str, Any]:
    # The isolation probe runs in the background as the app starts: status reads it once done.
    await client.server.app[BUS].sandbox.wait_probed()
    return (await (await client.get("/api/status")).json())["sandbox"]


async def running(client: Any) -> dict[str, Any]:
    async def up() -> dict[str, Any] | None:
        info = await sandbox_info(client)
        return info if info["state"] == "running" and info["idle"] == info["workers"] else None

    return await eventually(up, message="the sandbox's workers up")


async def test_no_worker_until_code_is_registered_and_its_first_call_finds_them(make_client):
    client = await make_client()
    sid = (await create_session(client))["session_id"]
    info = await sandbox_info(client)
    assert info["state"] == "standby" and info["isolation"] == "bubblewrap", info
    assert (info["idle"], info["busy"], info["workers"]) == (0, 0, 1)
    queue = await (await client.get("/api/commands")).json()  # what `llmgine ps` sums up
    assert queue["sandbox_state"] == "standby", queue
    resp = await client.post(f"/api/sessions/{sid}/tools", json=TOOL)
    assert resp.status == 201, await resp.text()  # validating the code started them
    info = await running(client)
    queue = await (await client.get("/api/commands")).json()
    assert (queue["sandbox_state"], queue["sandbox_busy"], queue["sandbox_workers"]) == ("running", 0, 1), queue
    assert info["calls"] == 0 and info["python"], info
    out = await (await client.post(f"/api/sessions/{sid}/tools/f/execute", json={})).json()
    assert out["result"] == 42, out


async def test_stored_tools_start_the_workers_at_start_and_ended_sessions_do_not(make_client):
    client = await make_client()
    sid = (await create_session(client))["session_id"]
    assert (await client.post(f"/api/sessions/{sid}/tools", json=TOOL)).status == 201
    await client.close()
    client = await make_client()
    # The start found the tool: no call was made, the workers start (or are up) already.
    assert client.server.app[BUS].sandbox.info()["state"] in ("starting", "running")
    assert (await running(client))["calls"] == 0
    assert (await client.delete(f"/api/sessions/{sid}")).status in (200, 204)  # its tools go
    await client.close()
    client = await make_client()
    assert (await sandbox_info(client))["state"] == "standby"


async def test_a_stored_handler_starts_the_workers_at_start(make_client):
    client = await make_client()
    resp = await client.post(
        "/api/handlers/events", json={"event_type": "Later", "handler_function": "def h(event):\n    pass\n"}
    )
    assert resp.status == 201, await resp.text()
    await client.close()
    client = await make_client()
    assert client.server.app[BUS].sandbox.info()["state"] in ("starting", "running")
    await running(client)
