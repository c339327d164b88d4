"""A pidfile names a daemon only while that pid is still an llmgined."""

from __future__ import annotations

import subprocess
import sys

from llmgine_daemon.paths import pidfile_owner

from tests.eventually import eventually_blocking


def _started(proc: subprocess.Popen[bytes]) -> None:
    """Until exec, a child's command line is its parent's: wait for its own."""
    eventually_blocking(lambda: b"sleep" in open(f"/proc/{proc.pid}/cmdline", "rb").read())


def test_a_pid_given_to_another_program_is_not_the_daemon(tmp_path):
    pidfile = tmp_path / "llmgined.pid"
    # A CLI process (its command line says llmgine, not llmgined) holding the pid.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "llmgine", "event", "tail"])
    try:
        _started(proc)
        pidfile.write_text(f"{proc.pid}\n")
        assert pidfile_owner(pidfile) is None
    finally:
        proc.kill()
        proc.wait()


def test_a_running_daemon_process_is_named(tmp_path):
    pidfile = tmp_path / "llmgined.pid"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "-m", "llmgine_daemon"])
    try:
        _started(proc)
        pidfile.write_text(f"{proc.pid}\n")
        assert pidfile_owner(pidfile) == proc.pid
    finally:
        proc.kill()
        proc.wait()
    assert pidfile_owner(pidfile) is None  # gone
    assert pidfile_owner(tmp_path / "none.pid") is None
