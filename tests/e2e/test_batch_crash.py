"""kill -9 the real daemon while a set-based batch runs (bus/commands/batchset.py), then restart.

Each chunk is stored whole or not at all: after the restart every command of the batch ends
completed exactly once, with its four events in order (none twice, none missing), nothing is
left executing, and the events' seqs are strictly increasing.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.dbtools import open_home_db
from tests.e2e.test_bus_crash import call, session_with_dummy
from tests.e2e.test_llmgined import free_port, run_daemon, wait_for_http

pytestmark = pytest.mark.e2e

N = 4000


def test_kill_9_during_a_set_based_batch(home):
    port = free_port()
    proc = run_daemon(home, "--port", str(port))
    try:
        wait_for_http(port, proc)
        sid, _ = session_with_dummy(port, home)
        commands = [{"command_type": "DummyEngineCommand", "parameters": {"prompt": f"p{i}"}} for i in range(N)]
        status, batch = call(port, "POST", f"/api/sessions/{sid}/commands/batch", {"commands": commands}, home=home)
        assert status == 202, batch
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill it once some, not all, have run
            _, page = call(port, "GET", f"/api/sessions/{sid}/commands?status=completed&limit=1", home=home)
            if page["total"] > 0:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # What the kill left: chunks stored whole (finished, never left executing) or still queued.
    with open_home_db(home) as db:
        counts = dict(db.execute("SELECT status, COUNT(*) FROM commands GROUP BY status").fetchall())
    assert set(counts) <= {"completed", "queued"}, counts

    proc = run_daemon(home, "--port", str(port))
    try:
        wait_for_http(port, proc)
        status, after = call(port, "GET", f"/api/sessions/{sid}/batches/{batch['batch_id']}?wait=120", home=home)
        assert status == 200 and after["status"] == "finished", after["status"]
        assert [c["status"] for c in after["commands"]] == ["completed"] * N
        events, seq = [], 0
        while True:
            _, page = call(port, "GET", f"/api/sessions/{sid}/events?limit=1000&after={seq}", home=home)
            if not page["events"]:
                break
            events += page["events"]
            seq = page["events"][-1]["seq"]
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(set(seqs))
        by: dict[str, list[str]] = {}
        for e in events:
            cid = e["data"].get("command_id")
            if cid is not None:
                by.setdefault(cid, []).append(e["event_type"])
        four = ["CommandStarted", "DummyEngineStatusUpdate", "DummyEngineStatusUpdate", "CommandResult"]
        assert all(by.get(c["command_id"]) == four for c in after["commands"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
