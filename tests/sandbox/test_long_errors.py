"""An exception whose message is long (the repr of a large value, say) is the user's failure,
reported as such with its message cut, not a protocol violation: the child sent it whole, the
frame was over the zygote's limit, and the call failed with WORKER_CRASHED ("the call broke
the sandbox protocol"), the user's error lost. Real workers."""

from __future__ import annotations

from tests.conftest import create_session

RAISES = """
def raises(size: int):
    raise ValueError("bad value: " + "é" * size)
"""
# An exception whose str() itself raises.
BAD_STR = """
class Odd(Exception):
    def __str__(self):
        raise RuntimeError("no")

def bad_str():
    raise Odd()
"""


async def test_a_long_exception_message_is_the_users_error(make_client):
    client = await make_client(API_WORKERS="1")
    sid = (await create_session(client))["session_id"]
    resp = await client.post(f"/api/sessions/{sid}/tools", json={"name": "raises", "function_code": RAISES})
    assert resp.status == 201, await resp.text()
    for size in (10, 3_000_000):
        resp = await client.post(f"/api/sessions/{sid}/tools/raises/execute", json={"arguments": {"size": size}})
        body = await resp.json()
        error = body["error"]
        assert error["code"] == "EXECUTION_FAILED", body
        assert error["message"].startswith("ValueError: bad value: éé"), error["message"][:200]
        assert error["details"]["type"] == "ValueError", error["details"].keys()
        assert len(error["message"]) < 100_000
    resp = await client.post(f"/api/sessions/{sid}/tools", json={"name": "bad_str", "function_code": BAD_STR})
    assert resp.status == 201, await resp.text()
    resp = await client.post(f"/api/sessions/{sid}/tools/bad_str/execute", json={"arguments": {}})
    error = (await resp.json())["error"]
    assert error["code"] == "EXECUTION_FAILED" and error["details"]["type"] == "Odd", error
    status = await (await client.get("/api/status")).json()
    assert status["sandbox"]["crashes"] == 0, status["sandbox"]


# An exception class, and a result's type, named with megabytes: names user code chooses too.
LONG_NAMES = """
def long_names(size: int, what: str):
    named = type("E" * size, (ValueError,), {})
    if what == "raise":
        raise named("short")
    return named()
"""


async def test_a_long_type_name_is_the_users_error(make_client):
    client = await make_client(API_WORKERS="1")
    sid = (await create_session(client))["session_id"]
    resp = await client.post(f"/api/sessions/{sid}/tools", json={"name": "long_names", "function_code": LONG_NAMES})
    assert resp.status == 201, await resp.text()
    for what, code in [("raise", "EXECUTION_FAILED"), ("return", "INVALID_RESULT")]:
        resp = await client.post(
            f"/api/sessions/{sid}/tools/long_names/execute", json={"arguments": {"size": 3_000_000, "what": what}}
        )
        error = (await resp.json())["error"]
        assert error["code"] == code, str(error)[:300]
        assert error["details"]["type"].startswith("EEEE") and "(3000000 characters)" in error["details"]["type"]
        assert len(error["message"]) < 100_000
    status = await (await client.get("/api/status")).json()
    assert status["sandbox"]["crashes"] == 0, status["sandbox"]
