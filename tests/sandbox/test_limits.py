"""Hostile user code, with real worker processes: the call fails, the daemon does not."""

from __future__ import annotations

import asyncio
import json
import pwd
import textwrap
import time

import pytest
from llmgine_daemon.api.keys import BUS

from tests.conftest import create_session

DEADLINE = 1.0


def rss_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
async def sandbox(make_client):
    client = await make_client(API_WORKERS="2", LLMGINE_SANDBOX_MAX_PROCESSES="16")
    sid = (await create_session(client))["session_id"]

    async def run(code: str, name: str = "f", arguments: dict | None = None, timeout: float = DEADLINE) -> dict:
        resp = await client.post(
            f"/api/sessions/{sid}/tools?replace=true",
            json={"name": name, "function_code": textwrap.dedent(code), "timeout": timeout},
        )
        assert resp.status == 201, await resp.text()
        resp = await client.post(f"/api/sessions/{sid}/tools/{name}/execute", json={"arguments": arguments or {}})
        assert resp.status == 200, await resp.text()
        return await resp.json()

    run.client = client  # type: ignore[attr-defined]
    return run


async def still_works(sandbox) -> None:
    out = await sandbox("def f():\n    return 42\n")
    assert out["result"] == 42, out


async def poll_health(client, stop: asyncio.Event) -> list[float]:
    """The times at which /api/health answered, until `stop` is set."""
    answered = []
    while not stop.is_set():
        resp = await client.get("/api/health")
        assert resp.status == 200
        answered.append(time.monotonic())
        await asyncio.sleep(0.05)
    return answered


@pytest.mark.parametrize(
    "code",
    [
        "def f():\n    while True:\n        pass\n",
        "async def f():\n    while True:\n        pass\n",
        "import asyncio\nasync def f():\n    await asyncio.sleep(3600)\n",
    ],
    ids=["sync", "async", "sleep"],
)
async def test_infinite_loop_times_out_and_daemon_answers(sandbox, code):
    client = sandbox.client
    stop = asyncio.Event()
    poller = asyncio.create_task(poll_health(client, stop))
    t0 = time.monotonic()
    out = await sandbox(code)
    elapsed = time.monotonic() - t0
    stop.set()
    answered = await poller
    assert out["error"]["code"] == "TIMEOUT", out
    assert elapsed < DEADLINE + 3.0
    # The loop kept answering while the user code ran: a daemon blocked by it would
    # answer nothing between the call's first and last quarter.
    middle = [t for t in answered if t0 + elapsed / 4 <= t <= t0 + 3 * elapsed / 4]
    assert len(answered) >= 3 and middle, (elapsed, [round(t - t0, 3) for t in answered])
    await still_works(sandbox)
    info = (await (await client.get("/api/status")).json())["sandbox"]
    assert info["timeouts"] >= 1 and info["replaced"] >= 1


async def test_ten_gib_allocation_fails_without_growing_the_daemon(sandbox):
    before = rss_kib()
    out = await sandbox("def f():\n    data = bytearray(10 * 2**30)\n    return len(data)\n")
    assert out["error"]["details"]["type"] == "MemoryError", out
    assert rss_kib() - before < 50 * 1024
    await still_works(sandbox)


async def test_opening_100k_files_is_capped(sandbox):
    out = await sandbox(
        """
        def f():
            handles = []
            try:
                for _ in range(100_000):
                    handles.append(open("/dev/null"))
            except OSError as exc:
                return {"opened": len(handles), "errno": exc.errno}
            return {"opened": len(handles), "errno": None}
    """,
        timeout=10,
    )
    assert out["result"]["errno"] == 24 and out["result"]["opened"] < 300, out


@pytest.mark.parametrize(
    "code,status",
    [
        ("import os\ndef f():\n    os._exit(7)\n", "exit status 7"),
        ("import ctypes\ndef f():\n    ctypes.string_at(0)\n", "SIGSEGV"),
    ],
    ids=["os._exit", "segfault"],
)
async def test_crash_fails_the_call_and_the_pool_recovers(sandbox, code, status):
    out = await sandbox(code)
    assert out["error"]["code"] == "WORKER_CRASHED", out
    assert status in out["error"]["message"]
    for _ in range(3):
        await still_works(sandbox)


async def test_environment_holds_no_secret(make_client, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-in-daemon-env")
    client = await make_client(API_KEY_SECRET="super-secret-key", API_WORKERS="1")
    auth = {"Authorization": "Bearer super-secret-key"}
    sid = (await (await client.post("/api/sessions", json={}, headers=auth)).json())["session_id"]
    code = textwrap.dedent("""
        import os
        def f():
            return {"environ": dict(os.environ), "cwd": os.getcwd()}
    """)
    resp = await client.post(f"/api/sessions/{sid}/tools", headers=auth, json={"name": "f", "function_code": code})
    assert resp.status == 201
    out = await (await client.post(f"/api/sessions/{sid}/tools/f/execute", json={}, headers=auth)).json()
    assert out["result"]["environ"] == {}
    text = json.dumps(out)
    assert "secret" not in text
    assert out["result"]["cwd"] == "/tmp"  # the sandbox's own, private /tmp


async def test_printing_a_gigabyte_is_capped(sandbox):
    out = await sandbox(
        """
        def f():
            line = "x" * (1024 * 1024 - 1)
            for _ in range(1024):
                print(line)
            return "done"
    """,
        timeout=20,
    )
    assert out["result"] == "done", out["error"]
    assert out["output_truncated"] is True
    assert len(out["output"]) == 65536


async def test_oversized_result_is_refused(sandbox):
    out = await sandbox("def f():\n    return 'x' * (2 * 1024 * 1024)\n")
    assert out["error"]["code"] == "RESULT_TOO_LARGE"


async def test_no_network_in_the_namespace(sandbox):
    info = (await (await sandbox.client.get("/api/status")).json())["sandbox"]
    if "net" not in info["namespaces"]:
        pytest.skip("no network namespace on this machine")
    out = await sandbox("""
        import socket
        def f():
            try:
                socket.create_connection(("1.1.1.1", 53), timeout=0.5)
            except OSError as exc:
                return type(exc).__name__
            return "connected"
    """)
    assert out["result"] != "connected"


async def test_status_reports_isolation(sandbox):
    pool = sandbox.client.server.app[BUS].sandbox
    assert pool is not None
    await pool.wait_probed()
    info = (await (await sandbox.client.get("/api/status")).json())["sandbox"]
    # No user code yet: the isolation is checked, no worker is started.
    assert info["isolation"] == "bubblewrap" and info["state"] == "standby", info
    # As root, each worker gets a uid of its own (sandbox.uids), so none is the uid of all.
    assert info["uid"] is None and info["uids"] == [], info
    assert info["process_cap"] == "cgroup" and info["memory_cap"] == "cgroup"
    assert info["workers"] == 2 and info["idle"] == 0 and info["fresh_process_per_call"] is True
    assert info["limits"]["max_output"] == 65536
    # The effective share (the setting's 0 means half the workers), the same in both places.
    assert info["limits"]["session_share"] == info["session_share"] == 1, info
    await still_works(sandbox)
    ran = (await (await sandbox.client.get("/api/status")).json())["sandbox"]
    assert ran["state"] == "running" and ran["idle"] == 2 and ran["uid"] is None, ran
    assert len(set(ran["uids"])) == 2 and 0 not in ran["uids"], ran


async def test_with_sandbox_uids_none_every_worker_runs_as_sandbox_user(make_client):
    client = await make_client(API_WORKERS="2", LLMGINE_SANDBOX_UIDS="none")
    sid = (await create_session(client))["session_id"]
    code = "import os\ndef me():\n    return os.getuid()\n"
    resp = await client.post(f"/api/sessions/{sid}/tools", json={"name": "me", "function_code": code})
    assert resp.status == 201, await resp.text()
    resp = await client.post(f"/api/sessions/{sid}/tools/me/execute", json={"arguments": {}})
    ran = await resp.json()
    info = (await (await client.get("/api/status")).json())["sandbox"]
    nobody = pwd.getpwnam("nobody").pw_uid
    assert ran["result"] == info["uid"] == nobody and info["uids"] == [nobody], (ran, info)


async def test_bus_publish_from_user_code_obeys_the_json_depth_limit(sandbox):
    out = await sandbox(
        """
        async def f(depth):
            data = {}
            for _ in range(depth):
                data = {"a": data}
            try:
                await bus.publish("Deep", data)
            except Exception as exc:
                return f"{type(exc).__name__}: {exc}"
            return "published"
    """,
        arguments={"depth": 100},
    )
    assert out["result"].startswith("BusCallError") and "64 levels" in out["result"], out
    ok = await sandbox(
        """
        async def f(depth):
            data = {}
            for _ in range(depth):
                data = {"a": data}
            await bus.publish("Shallow", data)
            return "published"
    """,
        arguments={"depth": 10},
    )
    assert ok["result"] == "published", ok


FORGE = """
    import os, sys
    from llmgine_daemon.sandbox import child, frames

    def f(kind):
        frame = sys._getframe()
        while "run" not in frame.f_locals:
            frame = frame.f_back
        run = frame.f_locals["run"]
        done = {
            "bad-json": frames.Done(run.call_id, ok=True, result=b"not json"),
            "too-large": frames.Done(run.call_id, ok=True, result=b'"' + b"x" * 1_100_000 + b'"'),
            "deep": frames.Done(run.call_id, ok=True, result=b"[" * 5000 + b"]" * 5000),
            "bad-error": frames.Done(run.call_id, ok=False,
                                     error={"code": 5, "message": ["x"], "details": "y"}),
            "long-output": frames.Done(run.call_id, ok=True, result=b"1", output="o" * 200_000),
            "huge-details": frames.Done(run.call_id, ok=False, error={
                "code": "EXECUTION_FAILED", "message": "m",
                "details": {"type": "E", "blob": "x" * 1_000_000, "list": ["y"] * 50_000}}),
        }[kind]
        frames.write_frame(child._WFD, done)
        os._exit(0)
"""


@pytest.mark.parametrize(
    "kind,code",
    [
        ("bad-json", "INVALID_RESULT"),
        ("too-large", "RESULT_TOO_LARGE"),
        ("deep", "INVALID_RESULT"),
        ("bad-error", "EXECUTION_FAILED"),
    ],
)
async def test_a_forged_result_is_checked_not_trusted(sandbox, kind, code):
    out = await sandbox(FORGE, arguments={"kind": kind})
    assert out["result"] is None and out["error"]["code"] == code, out
    assert isinstance(out["error"]["message"], str) and isinstance(out["error"]["details"], dict)
    await still_works(sandbox)


async def test_forged_output_is_capped(sandbox):
    out = await sandbox(FORGE, arguments={"kind": "long-output"})
    assert out["result"] == 1 and len(out["output"]) == 65536 and out["output_truncated"], out


async def test_a_failing_calls_details_are_capped(sandbox):
    """error.details is held to sandbox.max_output bytes of JSON, cut with a marker: a forged
    frame's and an honest exception's with a long message alike."""
    for out in (
        await sandbox(FORGE, arguments={"kind": "huge-details"}),
        await sandbox("def f():\n    raise ValueError('z' * 300_000)\n"),
    ):
        details = out["error"]["details"]
        assert len(json.dumps(details, ensure_ascii=False).encode()) <= 65536, out["error"]["message"]
        assert details.get("truncated") is True and details["limit"] == 65536 and details["size"] > 65536
        assert out["error"]["code"] == "EXECUTION_FAILED" and details.get("type") in ("E", "ValueError"), details
    assert details["message"].startswith("zzz") and isinstance(details["traceback"], str), details
    await still_works(sandbox)


async def test_a_lone_surrogate_in_a_result_is_an_invalid_result(sandbox):
    out = await sandbox("def f():\n    return 'bad\\ud800x'\n")
    assert out["error"]["code"] == "INVALID_RESULT", out


async def test_a_forged_description_at_registration_is_refused(sandbox):
    code = textwrap.dedent(FORGE).replace("def f(kind):", "def f(kind='x'):") + textwrap.dedent("""
        frame = sys._getframe().f_back  # the worker's frames, above this module's
        while frame is not None and not isinstance(frame.f_locals.get("run"), frames.Run):
            frame = frame.f_back
        if frame is not None:
            forged = frames.Done(frame.f_locals["run"].call_id, ok=True, result=b"{}")
            frames.write_frame(child._WFD, forged)
            os._exit(0)
    """)
    resp = await sandbox.client.post("/api/sessions", json={})
    sid = (await resp.json())["session_id"]
    resp = await sandbox.client.post(f"/api/sessions/{sid}/tools", json={"name": "f", "function_code": code})
    assert resp.status == 422, await resp.text()
    assert "interfered" in (await resp.json())["error"]["message"]


async def test_a_schema_with_keywords_of_the_wrong_type_is_refused(sandbox):
    resp = await sandbox.client.post("/api/sessions", json={})
    sid = (await resp.json())["session_id"]
    resp = await sandbox.client.post(
        f"/api/sessions/{sid}/tools",
        json={
            "name": "f",
            "function_code": "def f(n):\n    return n\n",
            "parameters": {"type": "object", "properties": {"n": {"type": "integer", "minimum": "zzz"}}},
        },
    )
    assert resp.status == 422, await resp.text()
    assert (await resp.json())["error"]["details"]["field"] == "parameters.properties.n.minimum"
