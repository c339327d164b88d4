"""kill -9 the real daemon with a command executing and others queued: after a restart the
executing one is interrupted, the queued ones run, the engine is back."""

from __future__ import annotations

import json
import signal
import urllib.request
from typing import Any

import pytest

from tests.e2e.test_llmgined import free_port, run_daemon, wait_for_http

pytestmark = pytest.mark.e2e


def call(port: int, method: str, path: str, body: Any = None, *, home: Any) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    # Over TCP: the key llmgined wrote for the local CLI (docs/security.md).
    key = (home / "config" / "local.key").read_text().strip()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_kill_9_then_restart(home):
    port = free_port()
    proc = run_daemon(home, "--port", str(port))
    try:
        wait_for_http(port, proc)
        _, session = call(port, "POST", "/api/sessions", {}, home=home)
        sid = session["session_id"]
        _, engine = call(port, "POST", "/api/engines", {"engine_type": "DummyEngine", "session_id": sid}, home=home)
        cmd = {"command_type": "DummyEngineCommand"}
        status, running = call(port, "POST", f"/api/sessions/{sid}/commands",
                               {**cmd, "parameters": {"prompt": "r", "delay_ms": 600_000}}, home=home)
        assert status == 202 and running["status"] == "executing"
        queued = [call(port, "POST", f"/api/sessions/{sid}/commands", {**cmd, "parameters": {"prompt": f"q{i}"}},
                        home=home)[1]
                  for i in range(3)]
        assert [q["status"] for q in queued] == ["queued"] * 3
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    proc = run_daemon(home, "--port", str(port))
    try:
        wait_for_http(port, proc)
        _, record = call(port, "GET", f"/api/sessions/{sid}/commands/{running['command_id']}", home=home)
        assert record["status"] == "interrupted"
        for q in queued:
            _, record = call(port, "GET", f"/api/sessions/{sid}/commands/{q['command_id']}?wait=30", home=home)
            assert record["status"] == "completed", record
        status, engine_now = call(port, "GET", f"/api/engines/{engine['engine_id']}", home=home)
        assert status == 200 and engine_now["status"] == "initialized"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
