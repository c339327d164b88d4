"""User code against the sandbox's limits, on the daemons test_sandbox_escape.py uses
(tests/e2e/sandbox_harness.py): memory and process caps, a fair share per session, one
session's handler kept in it, what tools may still do, and leftovers of a killed daemon
removed at the next start."""

from __future__ import annotations

import os
import shutil
import textwrap
import threading
import time
from pathlib import Path

import pytest
from llmgine_daemon.settings import get_paths

from tests.clitools import short_home, start_daemon, stop_process
from tests.e2e import sandbox_harness
from tests.e2e.sandbox_harness import (
    Api,
    healthy,
)

# The real daemons, as root and as a normal user (a module-scoped fixture, by its name here).
daemon = sandbox_harness.daemon

# One xdist worker runs them all: the daemon-as-a-normal-user variant creates a system user
# (and removes it at the end), which two workers must not do at once.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("unprivileged-user")]


def test_three_children_over_the_memory_limit_are_stopped(daemon):
    out = daemon.tool(
        daemon.session(),
        """
        import os, time

        def f():
            for _ in range(3):
                if os.fork() == 0:
                    block = bytearray(600 * 2**20)
                    for i in range(0, len(block), 4096):
                        block[i] = 1
                    time.sleep(30)
                    os._exit(0)
            time.sleep(30)
            return "all three held 1.8 GB"
    """,
        timeout=60,
    )
    assert out["result"] is None, out
    assert out["error"]["details"].get("type") == "MemoryError", out["error"]
    healthy(daemon)


def test_a_handler_acts_only_in_its_own_session(daemon):
    own = daemon.session()
    other = daemon.session()
    status, body = daemon.call(
        "POST",
        f"/api/sessions/{own}/handlers/commands",
        {
            "command_type": "Probe",
            "handler_function": textwrap.dedent("""
            async def probe(command):
                other = command.parameters["other"]
                tried = {}
                try:
                    await bus.execute("Noop", {}, session_id=other)
                    tried["kwarg"] = "ran"
                except TypeError:
                    tried["kwarg"] = "refused"
                event = await bus.publish("Probed", {}, metadata={"session_id": other})
                tried["published_in"] = event["session_id"]
                return tried
        """),
        },
    )
    assert status == 201, body
    status, body = daemon.call(
        "POST", f"/api/sessions/{own}/commands?wait=20", {"command_type": "Probe", "parameters": {"other": other}}
    )
    assert status in (200, 201), body
    assert body["status"] == "completed", body
    assert body["result"] == {"kwarg": "refused", "published_in": own}
    status, events = daemon.call("GET", f"/api/sessions/{other}/events?limit=100")
    assert "Probed" not in [e["event_type"] for e in events["events"]]


@pytest.mark.parametrize("how", ["calls", "registrations"])
def test_one_sessions_spinning_calls_leave_room_for_another(tmp_path, how):
    """Session A fills its share of a two-worker pool with spinning calls and queues more;
    session B's call still runs at once (it finishes while A's are still spinning)."""
    home = short_home()
    proc = None
    try:
        d = start_daemon(home, env={"API_WORKERS": "2", "LLMGINE_SHUTDOWN_TIMEOUT": "1"})
        proc = d.proc
        api = Api(str(get_paths({"LLMGINE_HOME": str(home)}).socket))
        a, b = api.session(), api.session()
        spin = "def spin():\n    while True:\n        pass\n"
        status, _ = api.call("POST", f"/api/sessions/{a}/tools", {"name": "spin", "function_code": spin, "timeout": 30})
        assert status == 201
        finished: list[float] = []
        # A registration runs the module's top level too (to find the function): a session
        # could spin there instead, and it takes the same share.
        slow_module = (
            "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 8:\n    pass\ndef g():\n    pass\n"
        )

        def spin_call() -> None:
            try:
                if how == "calls":
                    api.call("POST", f"/api/sessions/{a}/tools/spin/execute", {"arguments": {}})
                else:
                    api.call(
                        "POST", f"/api/sessions/{a}/tools?replace=true", {"name": "g", "function_code": slow_module}
                    )
            except OSError:  # the daemon stopped at the end of the test
                return
            finished.append(time.monotonic())

        threads = [threading.Thread(target=spin_call, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # A's first call holds a worker
            _, status_body = api.call("GET", "/api/status")
            if status_body["sandbox"]["busy"] >= 1:
                break
            time.sleep(0.05)
        out = api.tool(b, "def hello():\n    return 'hi'\n", name="hello")
        assert out["result"] == "hi", out
        assert finished == [], "session B waited for session A's spinning calls"
        _, status_body = api.call("GET", "/api/status")
        assert status_body["sandbox"]["busy"] == 1  # A's share: one worker of two
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(home, ignore_errors=True)


def test_a_fork_loop_is_capped(daemon):
    out = daemon.tool(
        daemon.session(),
        """
        import os, time

        def f():
            forked = 0
            for _ in range(2000):
                try:
                    pid = os.fork()
                except OSError as exc:
                    return {"forked": forked, "error": type(exc).__name__}
                if pid == 0:
                    time.sleep(60)
                    os._exit(0)
                forked += 1
            return {"forked": forked, "error": None}
    """,
    )
    assert out["error"] is None, out
    assert out["result"]["error"] == "BlockingIOError" and out["result"]["forked"] <= 16, out
    healthy(daemon)
    again = daemon.tool(daemon.session(), "def f():\n    return 1\n")
    assert again["result"] == 1  # the next call is not short of processes


def test_what_tools_may_do_still_works(daemon):
    """The spec's get_weather, bus.publish, the standard library, its own /tmp within a call."""
    sid = daemon.session()
    weather = daemon.tool(
        sid,
        """
        async def get_weather(location: str):
            return {"location": location, "temperature_c": 21}
    """,
        {"location": "Melbourne"},
        name="get_weather",
    )
    assert weather["result"] == {"location": "Melbourne", "temperature_c": 21}, weather
    out = daemon.tool(
        sid,
        """
        import datetime, json, math, re

        async def f():
            with open("/tmp/scratch.json", "w") as fh:
                json.dump({"pi": round(math.pi, 3)}, fh)
            with open("/tmp/scratch.json") as fh:
                saved = json.load(fh)
            event = await bus.publish("Computed", saved)
            return {"saved": saved, "match": bool(re.fullmatch(r"\\d+", "123")),
                    "year": datetime.date(2026, 1, 1).year, "event": event["event_type"]}
    """,
    )
    assert out["result"] == {"saved": {"pi": 3.142}, "match": True, "year": 2026, "event": "Computed"}, out
    status, events = daemon.call("GET", f"/api/sessions/{sid}/events?limit=100")
    assert "Computed" in [e["event_type"] for e in events["events"]]


def test_leftovers_of_a_killed_daemon_go_at_the_next_start():
    if os.geteuid() != 0:
        pytest.skip("cgroups are the daemon's only as root")
    home = short_home()
    second = None
    try:
        first = start_daemon(home, env={"API_WORKERS": "1"})
        api = Api(str(get_paths({"LLMGINE_HOME": str(home)}).socket))
        assert api.tool(api.session(), "def f():\n    return 1\n")["result"] == 1
        pid = first.proc.pid
        cgroups = [p for p in Path("/sys/fs/cgroup").rglob(f"llmgine-sandbox-{pid}") if p.is_dir()]
        assert cgroups, "a daemon as root keeps its workers in cgroups"
        first.proc.kill()
        first.proc.wait()
        assert all(p.exists() for p in cgroups)  # nothing of it ran to remove them
        second = start_daemon(home, env={"API_WORKERS": "1"})
        assert api.tool(api.session(), "def f():\n    return 2\n")["result"] == 2
        assert not any(p.exists() for p in cgroups)
        for entry in Path("/proc").iterdir():  # and none of its workers outlived it
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            assert f'"daemon": {pid},'.encode() not in cmdline, entry
    finally:
        if second is not None:
            stop_process(second.proc)
        shutil.rmtree(home, ignore_errors=True)
