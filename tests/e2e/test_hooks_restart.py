"""Webhooks and schedules across a kill -9 of the real llmgined.

- Events published just before the kill are delivered after the restart (the outbox cursor
  commits with the outbox rows; leases left by the dead daemon expire), every one of them.
- A schedule firing every second fires each due time at most once across the restart (no
  ``schedule_due`` twice), and about once per second while the daemon runs.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.dbtools import open_home_db
from tests.e2e.test_bus_crash import call
from tests.e2e.test_llmgined import free_port, run_daemon, wait_for_http
from tests.eventually import eventually_blocking

pytestmark = pytest.mark.e2e

ENV = {
    "LLMGINE_WEBHOOK_RETRY_BASE": "0.2",
    "LLMGINE_WEBHOOK_RETRY_CAP": "0.5",
    # A lease left by the killed daemon lasts 2 x this + 5 s.
    "LLMGINE_WEBHOOK_TIMEOUT": "1",
}


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status = 500
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            status = self.server.status
            if status == 200:
                self.server.bodies.append(json.loads(body))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _start(home: Any, port: int) -> Any:
    proc = run_daemon(home, "--port", str(port), env=ENV)
    wait_for_http(port, proc, timeout=30)
    return proc


def _kill(proc: Any) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)


def _stop(proc: Any) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except Exception:  # noqa: BLE001
            proc.kill()
            proc.communicate()


def test_events_published_before_a_kill_are_delivered_after_the_restart(home):
    receiver = Receiver()
    port = free_port()
    proc = _start(home, port)
    try:
        _, s = call(port, "POST", "/api/sessions", {}, home=home)
        sid = s["session_id"]
        status, hook = call(port, "POST", "/api/webhooks", {"url": receiver.url, "session_id": sid}, home=home)
        assert status == 201, hook
        published = []
        for i in range(30):
            status, event = call(port, "POST", f"/api/sessions/{sid}/events", {"event_type": f"E{i}"}, home=home)
            assert status == 201
            published.append(event["event_id"])
        _kill(proc)  # some of them derived, some attempted (500), some not looked at yet
        receiver.status = 200
        proc = _start(home, port)

        def delivered() -> bool:
            with receiver.lock:
                return set(published) <= {b["data"]["event_id"] for b in receiver.bodies}

        eventually_blocking(delivered, timeout=90)

        def recorded() -> dict[str, Any]:  # the receiver answers before the attempt is recorded
            _, page = call(port, "GET", f"/api/webhooks/{hook['webhook_id']}/deliveries?limit=1000", home=home)
            rows = {d["event_type"]: d for d in page["deliveries"]}
            wanted = [rows.get(f"E{i}") for i in range(30)]
            return rows if all(r is not None and r["status"] == "delivered" for r in wanted) else {}

        rows = eventually_blocking(recorded, timeout=30)
        assert all(rows[f"E{i}"]["history"][-1]["status_code"] == 200 for i in range(30))
    finally:
        _stop(proc)
        receiver.shutdown()


def _scheduled(port: int, sid: str, schedule_id: str, home: Any) -> list[dict[str, Any]]:
    _, page = call(port, "GET", f"/api/sessions/{sid}/commands?limit=1000", home=home)
    return [c for c in page["commands"] if c["metadata"].get("schedule_id") == schedule_id]


def test_a_schedule_every_second_fires_each_tick_once_across_a_kill(home):
    port = free_port()
    proc = _start(home, port)
    try:
        _, s = call(port, "POST", "/api/sessions", {}, home=home)
        sid = s["session_id"]
        status, _ = call(port, "POST", "/api/engines", {"engine_type": "DummyEngine", "session_id": sid}, home=home)
        assert status == 201
        command = {"command_type": "DummyEngineCommand", "parameters": {"prompt": "tick"}}
        t0 = time.monotonic()
        status, sched = call(
            port, "POST", "/api/schedules", {"session_id": sid, "command": command, "every": 1}, home=home
        )
        assert status == 201, sched
        schedule_id = sched["schedule_id"]
        eventually_blocking(lambda: len(_scheduled(port, sid, schedule_id, home)) >= 3, timeout=60)
        _kill(proc)
        before = len(_scheduled_offline(home, schedule_id))
        down = time.monotonic()
        proc = _start(home, port)
        up = time.monotonic()
        eventually_blocking(lambda: len(_scheduled(port, sid, schedule_id, home)) >= before + 3, timeout=60)
        status, paused = call(port, "POST", f"/api/schedules/{schedule_id}/pause", home=home)
        assert status == 200
        elapsed = time.monotonic() - t0
        commands = _scheduled(port, sid, schedule_id, home)
        dues = [c["metadata"]["schedule_due"] for c in commands]
        assert len(dues) == len(set(dues)), "a due time was fired twice"
        assert paused["fire_count"] == len(commands)
        # About one per second while up (loose: a loaded machine delays ticks, and late ticks
        # are coalesced), never more than one per elapsed second; none for the time it was down.
        assert len(commands) <= elapsed + 1
        assert len(commands) >= (elapsed - (up - down)) / 4
    finally:
        _stop(proc)


def _scheduled_offline(home: Any, schedule_id: str) -> list[str]:
    """The scheduled commands in the database while the daemon is down."""
    with open_home_db(home) as conn:
        rows = conn.execute("SELECT metadata FROM commands").fetchall()
    return [m for (m,) in rows if schedule_id in m]
