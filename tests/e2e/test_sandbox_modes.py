"""Where bubblewrap is missing the daemon still starts and says how to fix it, never falling
back silently; ``sandbox.isolation = "none"`` is an explicit, logged choice; a killed daemon's
leftovers go at the next start. Real llmgined processes."""

from __future__ import annotations

import shutil
import textwrap
import time
from pathlib import Path

import pytest
from llmgine_daemon.settings import get_paths

from tests.clitools import short_home, start_daemon, stop_process
from tests.e2e.sandbox_harness import Api

pytestmark = [pytest.mark.e2e, pytest.mark.sqlite_only(reason="whether bubblewrap is there; storage plays no part")]

TOOL = {"name": "f", "function_code": "def f():\n    return 42\n"}


def _dead_pid() -> int:
    pid = 4_000_000
    while Path(f"/proc/{pid}").exists():
        pid += 1
    return pid


def _settled_status(api: Api) -> dict:
    deadline = time.monotonic() + 20
    while True:
        _, status = api.call("GET", "/api/status")
        if status["sandbox"]["state"] != "starting" or time.monotonic() > deadline:
            return status["sandbox"]
        time.sleep(0.05)


@pytest.fixture
def home():
    path = short_home()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_without_bubblewrap_user_code_is_refused_with_the_fix(home):
    d = start_daemon(home, env={"PATH": str(home / "no-such-dir")})
    try:
        api = Api(str(get_paths({"LLMGINE_HOME": str(home)}).socket))
        sid = api.session()  # everything else works
        sandbox = _settled_status(api)
        assert sandbox["isolation"] == "unavailable" and sandbox["state"] == "failed", sandbox
        assert "apt-get install bubblewrap" in sandbox["reason"]
        status, body = api.call("POST", f"/api/sessions/{sid}/tools", TOOL)
        assert status == 503, body
        assert body["error"]["code"] == "SANDBOX_UNAVAILABLE"
        assert "install bubblewrap" in body["error"]["message"]
        assert "\n" not in body["error"]["message"]
        status, body = api.call(
            "POST",
            f"/api/sessions/{sid}/handlers/commands",
            {"command_type": "X", "handler_function": "def h(command):\n    return 1\n"},
        )
        assert status == 503 and body["error"]["code"] == "SANDBOX_UNAVAILABLE", body
        log = (home / "daemon-under-test.log").read_text()
        assert "user code is disabled" in log
    finally:
        stop_process(d.proc)


def test_isolation_none_is_explicit_and_warned_at_start(home):
    tmp = home / "tmp"
    tmp.mkdir()
    # What a daemon killed with SIGKILL left: its worker directory, with user code's files.
    stale = tmp / f"llmgine-sandbox-{_dead_pid()}-w1-abcd"
    (stale / "call" / "locked").mkdir(parents=True)
    (stale / "call" / "locked" / "secret.txt").write_text("left by user code")
    (stale / "call" / "locked").chmod(0)
    d = start_daemon(
        home, env={"LLMGINE_SANDBOX_ISOLATION": "none", "TMPDIR": str(tmp), "PATH": str(home / "no-such-dir")}
    )
    try:
        api = Api(str(get_paths({"LLMGINE_HOME": str(home)}).socket))
        sandbox = _settled_status(api)
        # Checked at start; the workers start with the first user code.
        assert sandbox["isolation"] == "none" and sandbox["state"] == "standby", sandbox
        assert not stale.exists()  # removed at start, before any user code
        out = api.tool(
            api.session(),
            textwrap.dedent("""
            def f():
                return 42
        """),
        )
        assert out["result"] == 42, out
        assert _settled_status(api)["state"] == "running"
        log = (home / "daemon-under-test.log").read_text()
        assert "WITHOUT isolation" in log
    finally:
        stop_process(d.proc)
        if stale.exists():
            (stale / "call" / "locked").chmod(0o700)
