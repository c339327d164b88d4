"""A call that leaves a deep directory tree in its /tmp: the zygote empties /tmp after every
call, and walking the tree recursively raised RecursionError past about 1,000 levels. The
zygote died: the call, which had answered, failed with WORKER_CRASHED. Now its answer stands
(the worker is retired if /tmp cannot be emptied, as for any leftover). Real workers."""

from __future__ import annotations

from tests.conftest import create_session

DEEP = """
import os

def deep(levels: int):
    fd = os.open("/tmp", os.O_RDONLY)
    for _ in range(levels):
        os.mkdir("d", dir_fd=fd)
        inner = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.chmod(fd, 0)  # the innermost directory closed to its owner too
    return levels
"""
LOOK = "def look():\n    import os\n    return os.listdir('/tmp')\n"


async def test_a_deep_tree_left_in_tmp_costs_no_answer(make_client):
    client = await make_client(API_WORKERS="1")
    sid = (await create_session(client))["session_id"]
    for name, code in [("deep", DEEP), ("look", LOOK)]:
        resp = await client.post(f"/api/sessions/{sid}/tools", json={"name": name, "function_code": code})
        assert resp.status == 201, await resp.text()
    for levels in (10, 1500):
        resp = await client.post(f"/api/sessions/{sid}/tools/deep/execute", json={"arguments": {"levels": levels}})
        body = await resp.json()
        assert body["error"] is None and body["result"] == levels, body
        resp = await client.post(f"/api/sessions/{sid}/tools/look/execute", json={"arguments": {}})
        body = await resp.json()
        assert body["error"] is None and body["result"] == [], body  # nothing left for the next call
    status = await (await client.get("/api/status")).json()
    assert status["sandbox"]["crashes"] == 0, status["sandbox"]
