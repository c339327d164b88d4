"""User code that sends a bus request and ends its call without waiting for the answer: the
answer reaches the worker after the call, and must not cost the worker (the next call on it,
perhaps another session's, failed with WORKER_CRASHED)."""

from __future__ import annotations

from tests.conftest import create_session

# Ends its call (a Done of its own) right after asking for a tool that takes a moment.
HIT_AND_RUN = """
import os, sys
from llmgine_daemon.sandbox import child, frames

def trick():
    g = sys._getframe()
    while not ("run" in g.f_locals and type(g.f_locals["run"]).__name__ == "Run"):
        g = g.f_back
    frames.write_frame(child._WFD, frames.BusRequest(1, "call_tool", b'{"name": "slow", "arguments": {}}'))
    frames.write_frame(child._WFD, frames.Done(g.f_locals["run"].call_id, ok=True, result=b'"done"'))
    os._exit(0)
"""
SLOW = "def slow():\n    import time\n    time.sleep(0.3)\n    return 1\n"
# Which worker answers: each has a PID namespace of its own.
WHO = "def who():\n    import os\n    return os.readlink('/proc/self/ns/pid')\n"


async def test_an_answer_after_the_call_costs_no_worker(make_client):
    client = await make_client(API_WORKERS="2")
    a = (await create_session(client))["session_id"]
    b = (await create_session(client))["session_id"]
    for sid, name, code in [(a, "slow", SLOW), (a, "trick", HIT_AND_RUN), (b, "who", WHO)]:
        resp = await client.post(f"/api/sessions/{sid}/tools", json={"name": name, "function_code": code})
        assert resp.status == 201, await resp.text()

    async def run(sid: str, name: str) -> dict:
        resp = await client.post(f"/api/sessions/{sid}/tools/{name}/execute", json={"arguments": {}})
        assert resp.status == 200, await resp.text()
        return await resp.json()

    seen = set()
    for _ in range(6):
        out = await run(a, "trick")
        assert out["result"] == "done", out
        out = await run(b, "who")
        assert out["error"] is None, out
        seen.add(out["result"])
    assert len(seen) <= 2, f"workers were replaced: {sorted(seen)}"
    status = await (await client.get("/api/status")).json()
    assert status["sandbox"]["crashes"] == 0 and status["sandbox"]["replaced"] == 0, status["sandbox"]
