"""Frames that nest deeper than a decoder's stack (user code can write raw frames on its call's
socket): the call fails, no request answers 500 and the daemon keeps answering."""

from __future__ import annotations

import textwrap

import msgspec
import pytest
from llmgine_daemon.sandbox import frames

from tests.conftest import create_session

# A raw Done whose error nests `n` arrays deep: msgspec's decoder recurses once per level, so
# somewhere around the interpreter's recursion limit the zygote (a shallow stack) still decodes
# it and the daemon (a deep one: middlewares, the bus, the pool) did not.
FORGE = """
import os, struct, sys
import msgspec
from llmgine_daemon.sandbox import child

def f(n):
    g = sys._getframe()
    while not ("run" in g.f_locals and type(g.f_locals["run"]).__name__ == "Run"):
        g = g.f_back
    head = msgspec.msgpack.encode({"type": "Done", "call_id": g.f_locals["run"].call_id, "ok": False})
    body = (bytes([0x84]) + head[1:] + msgspec.msgpack.encode("error") + b"\\x81"
            + msgspec.msgpack.encode("details") + b"\\x91" * n + b"\\xc0")
    os.write(child._WFD, struct.pack(">I", len(body)) + body)
    os._exit(0)
"""


def deep_done(n: int) -> bytes:
    head = msgspec.msgpack.encode({"type": "Done", "call_id": "c", "ok": False})
    return bytes([0x84]) + head[1:] + msgspec.msgpack.encode("error") + b"\x81\xa7details" + b"\x91" * n + b"\xc0"


def test_a_frame_nested_past_the_stack_is_a_bad_frame():
    with pytest.raises(frames.FrameError, match="bad frame"):
        frames.decode(deep_done(100_000))


async def test_a_forged_deep_frame_fails_only_its_call(make_client):
    client = await make_client(API_WORKERS="2")
    sid = (await create_session(client))["session_id"]
    resp = await client.post(
        f"/api/sessions/{sid}/tools", json={"name": "f", "function_code": textwrap.dedent(FORGE), "timeout": 10}
    )
    assert resp.status == 201, await resp.text()
    for n in [*range(850, 1000, 10), 100_000]:
        resp = await client.post(f"/api/sessions/{sid}/tools/f/execute", json={"arguments": {"n": n}})
        assert resp.status == 200, (n, await resp.text())
        body = await resp.json()
        assert body["result"] is None and body["error"]["code"] in ("EXECUTION_FAILED", "WORKER_CRASHED"), body
    resp = await client.post(f"/api/sessions/{sid}/tools/f/execute", json={"arguments": {"n": 1}})
    assert (await resp.json())["error"]["code"] == "EXECUTION_FAILED"
    assert (await client.get("/api/health")).status == 200
