"""One session's nested calls cannot take a whole nesting level of the pool: another
session's ``bus.call_tool`` still runs at once (real workers)."""

from __future__ import annotations

import asyncio

from tests.conftest import create_session

SPIN = "def spin():\n    while True:\n        pass\n"


async def register(client, sid: str, name: str, code: str) -> None:
    resp = await client.post(f"/api/sessions/{sid}/tools", json={"name": name, "function_code": code, "timeout": 30})
    assert resp.status == 201, await resp.text()


async def test_a_sessions_nested_calls_leave_room_for_another_sessions(make_client):
    client = await make_client(API_WORKERS="2", LLMGINE_SHUTDOWN_TIMEOUT="1")
    a = (await create_session(client))["session_id"]
    b = (await create_session(client))["session_id"]
    # A's tool publishes an event whose handler spins (depth 1, its session's event queue)
    # and calls a spinning tool itself (depth 1 too): two chains of one session, the pool's
    # size of depth-1 workers.
    resp = await client.post(
        f"/api/sessions/{a}/handlers/events",
        json={"event_type": "Hog", "handler_function": "async def hog(event):\n    while True:\n        pass\n"},
    )
    assert resp.status == 201, await resp.text()
    await register(client, a, "spin", SPIN)
    await register(
        client, a, "boss", "async def boss():\n    await bus.publish('Hog', {})\n    await bus.call_tool('spin')\n"
    )
    await register(client, b, "leaf", "def leaf():\n    return 'leaf'\n")
    await register(client, b, "outer", "async def outer():\n    return await bus.call_tool('leaf')\n")
    boss = asyncio.ensure_future(client.post(f"/api/sessions/{a}/tools/boss/execute", json={"arguments": {}}))
    try:
        for _ in range(600):  # A's call, its event handler and its nested tool hold workers
            status = await (await client.get("/api/status")).json()
            if status["sandbox"]["busy"] >= 3:
                break
            await asyncio.sleep(0.05)
        assert status["sandbox"]["busy"] >= 3, status["sandbox"]
        resp = await client.post(f"/api/sessions/{b}/tools/outer/execute", json={"arguments": {}})
        body = await resp.json()
        assert body["result"] == "leaf", body
        assert not boss.done(), "session B's nested call waited for session A's spinning calls"
    finally:
        boss.cancel()
