"""``llmgined --reload`` (uvicorn's ``--reload``, the API contract's development server): the
real daemon is restarted when a watched ``*.py`` file changes, and stops with its supervisor."""

from __future__ import annotations

import json
import os
import signal
import urllib.request

import pytest

from tests.e2e.test_llmgined import exit_code, free_port, run_daemon
from tests.eventually import eventually_blocking

pytestmark = [pytest.mark.e2e, pytest.mark.sqlite_only(reason="a process supervisor: the backend plays no part")]

KEY = "reload-test-key"


def serving_pid(port: int) -> int | None:
    """The pid of the daemon answering on ``port`` (its /api/status), None while none does."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/status", headers={"Authorization": f"Bearer {KEY}"})
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return int(json.load(resp)["pid"])
    except OSError:
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_changed_source_file_restarts_the_daemon(home):
    watched = home / "src"
    watched.mkdir()
    module = watched / "module.py"
    module.write_text("X = 1\n")
    port = free_port()
    proc = run_daemon(home, "--reload", "--reload-dir", str(watched), "--port", str(port), env={"API_KEY_SECRET": KEY})
    try:
        first = eventually_blocking(lambda: serving_pid(port), timeout=30, message="the first daemon")
        assert first != proc.pid  # the daemon is the supervisor's child
        module.write_text("X = 2\n")
        os.utime(module, ns=(module.stat().st_atime_ns, module.stat().st_mtime_ns + 5_000_000_000))
        second = eventually_blocking(
            lambda: (pid := serving_pid(port)) not in (None, first) and pid, timeout=60, message="a new daemon"
        )
        assert not alive(first)
        proc.send_signal(signal.SIGTERM)
        assert exit_code(proc, timeout=45) == 0
        eventually_blocking(lambda: not alive(second), message="the daemon stopped with its supervisor")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _, err = proc.communicate()
    assert f"{module} changed, restarting" in err
    assert not (home / "run" / "llmgined.sock").exists() and not (home / "run" / "llmgined.pid").exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--reload", "--port", "70000"], "server.port"),
        (["--reload", "--reload-dir", "/nonexistent/src"], "--reload-dir '/nonexistent/src': not a directory"),
        (["--reload-dir", "/tmp"], "--reload-dir is an option of --reload"),
    ],
)
def test_bad_options_are_refused_before_any_child_starts(home, args, fragment):
    proc = run_daemon(home, *args)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert fragment in err and "reloading" not in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
