"""Every worker runs as the same uid (``nobody`` for a root daemon), and the kernel counts the
descriptors in flight over Unix sockets per uid: past the sender's RLIMIT_NOFILE, a sender is
refused (ETOOMANYREFS). User code that keeps a few hundred in flight must not stop other
workers from starting their calls (their forker handed each call's socket to the zygote that
way: it died, and every other session's call failed with WORKER_CRASHED until the call holding
them ended). Real workers, two of them: one holds, the other serves another session."""

from __future__ import annotations

import asyncio

from tests.conftest import create_session
from tests.eventually import eventually

# Sends its own socket again and again without reading it: each copy is "in flight" until the
# socket is closed. Then waits (publishing, so the test knows) until its session is ended.
HOLD = """
import socket, time

async def hold():
    a, b = socket.socketpair()
    sent, refused = 0, ""
    for _ in range(10):
        try:
            socket.send_fds(a, [b"x"], [a.fileno()] * 253)
            sent += 253
        except OSError as exc:
            refused = type(exc).__name__
            break
    await bus.publish("Holding", {"sent": sent})
    for _ in range(600):
        try:
            await bus.publish("Tick", {})
        except Exception:
            break  # the session was ended
        time.sleep(0.1)
    return {"sent": sent, "refused": refused}
"""
ONE = "def one():\n    return 1\n"


async def test_descriptors_in_flight_do_not_stop_other_workers(make_client):
    client = await make_client(API_WORKERS="2")
    a = (await create_session(client))["session_id"]
    b = (await create_session(client))["session_id"]
    for sid, name, code in [(a, "hold", HOLD), (b, "one", ONE)]:
        resp = await client.post(f"/api/sessions/{sid}/tools", json={"name": name, "function_code": code})
        assert resp.status == 201, await resp.text()

    holding = asyncio.ensure_future(
        client.post(f"/api/sessions/{a}/tools/hold/execute", json={"arguments": {}, "timeout": 60})
    )

    async def held() -> bool:
        resp = await client.get(f"/api/sessions/{a}/events", params={"event_type": "Holding"})
        return bool((await resp.json())["events"]) or holding.done()

    try:
        await eventually(held, timeout=30)
        assert not holding.done(), await (await holding).text()
        for _ in range(3):
            resp = await client.post(f"/api/sessions/{b}/tools/one/execute", json={"arguments": {}})
            body = await resp.json()
            assert body["error"] is None and body["result"] == 1, body
        resp = await client.post(f"/api/sessions/{b}/tools?replace=true", json={"name": "one", "function_code": ONE})
        assert resp.status == 201, await resp.text()
    finally:
        await client.delete(f"/api/sessions/{a}")
        held_out = await (await holding).json()
    # The attack did what it meant to: more in flight than any sandbox process may open.
    assert held_out["result"]["sent"] > 256, held_out
    status = await (await client.get("/api/status")).json()
    assert status["sandbox"]["crashes"] == 0, status["sandbox"]
