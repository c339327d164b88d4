"""What ends with a session is stored in the transaction that ends it.

Ending a session (``DELETE``) and purging it (``?purge=true``) commit, then run the session
hooks (bus/sessions.py) that drop what runs in memory. The rows that end with the session -
its schedules (done, or deleted), its session tokens (revoked, or deleted), its webhooks
(deleted by a purge) and its MCP servers - were written by those hooks, each in a transaction
of its own, so a ``kill -9`` after the session's commit left them behind: a paused schedule of
an ended session stayed paused for ever (an active one until its next firing), a purged
session's webhooks and schedules were still listed. A kill at that moment is what running
none of the hooks does; the next start must find nothing half-done.
(tests/e2e/test_crash_every_write.py does the same with kill -9 of the real daemon at random.)
"""

from __future__ import annotations

from typing import Any

from llmgine_daemon.api.keys import BUS

from tests.dbtools import open_db

DUMMY = {"command_type": "DummyEngineCommand", "parameters": {"prompt": "s"}}


async def made(client: Any, method: str, path: str, body: Any = None) -> Any:
    resp = await client.request(method, path, json=body)
    assert resp.status in (200, 201), await resp.text()
    return await resp.json()


async def session_with_everything(client: Any) -> dict[str, Any]:
    sid = (await made(client, "POST", "/api/sessions", {}))["session_id"]
    await made(client, "POST", "/api/engines", {"engine_type": "DummyEngine", "session_id": sid})
    every = {"session_id": sid, "command": DUMMY, "every": 3600}
    active = await made(client, "POST", "/api/schedules", every)
    paused = await made(client, "POST", "/api/schedules", {**every, "every": 7200})
    await made(client, "POST", f"/api/schedules/{paused['schedule_id']}/pause")
    hook = await made(client, "POST", "/api/webhooks", {"url": "http://127.0.0.1:9/hook", "session_id": sid})
    token = (await made(client, "POST", f"/api/sessions/{sid}/token"))["session_token"]
    mcp = {"name": "down", "url": "http://127.0.0.1:9/mcp"}
    await made(client, "POST", f"/api/sessions/{sid}/mcp-servers", mcp)
    return {
        "sid": sid,
        "schedules": [active["schedule_id"], paused["schedule_id"]],
        "webhook": hook["webhook_id"],
        "token": token,
    }


async def test_a_kill_right_after_a_session_ends_leaves_nothing_of_it_behind(make_client):
    first = await make_client()
    ended, purged = await session_with_everything(first), await session_with_everything(first)
    first.server.app[BUS].sessions.hooks.clear()  # killed right after each session's commit
    await made(first, "DELETE", f"/api/sessions/{ended['sid']}")
    assert (await first.delete(f"/api/sessions/{purged['sid']}?purge=true")).status == 204
    await first.close()

    second = await make_client()
    for schedule_id in ended["schedules"]:
        schedule = await made(second, "GET", f"/api/schedules/{schedule_id}")
        assert (schedule["status"], schedule["next_due"]) == ("done", None), schedule
    for schedule_id in purged["schedules"]:
        assert (await second.get(f"/api/schedules/{schedule_id}")).status == 404
    assert (await second.get(f"/api/webhooks/{ended['webhook']}")).status == 200  # its last events go out
    assert (await second.get(f"/api/webhooks/{purged['webhook']}")).status == 404
    for gone in (ended, purged):
        resp = await second.get(f"/api/sessions/{gone['sid']}", headers={"Authorization": f"Bearer {gone['token']}"})
        assert resp.status == 401
    with open_db(second) as db:
        left = {
            table: db.execute(f"SELECT COUNT(*) FROM {table} WHERE {column} = ?", (purged["sid"],)).fetchone()[0]
            for table, column in (
                ("schedules", "session_id"),
                ("webhooks", "session_id"),
                ("session_tokens", "session_id"),
            )
        }
        assert left == {"schedules": 0, "webhooks": 0, "session_tokens": 0}
        live = db.execute(
            "SELECT COUNT(*) FROM session_tokens WHERE session_id = ? AND revoked_at IS NULL", (ended["sid"],)
        ).fetchone()[0]
        assert live == 0
        servers = db.execute(
            "SELECT COUNT(*) FROM mcp_servers WHERE scope IN (?, ?)", (ended["sid"], purged["sid"])
        ).fetchone()[0]
        assert servers == 0
