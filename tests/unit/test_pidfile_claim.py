"""The daemon's pidfile is claimed with a lock held for the daemon's life (server.py
``_claim_pidfile``): a second claim while the first holds fails, a stale file (its daemon gone,
so its lock too) is taken over, and the claim ends with the file removed."""

from __future__ import annotations

import os
import subprocess
import sys

from llmgine_daemon.server import _claim_pidfile, _release_pidfile
from llmgine_daemon.settings import load_settings


def home_settings(tmp_path):
    settings = load_settings(env={"LLMGINE_HOME": str(tmp_path)})
    return settings, settings.paths.pidfile, settings.socket_path


def test_one_claim_at_a_time_and_a_stale_file_is_taken_over(tmp_path):
    settings, pidfile, home_socket = home_settings(tmp_path)
    # A stale file: a pid that is gone, no lock (its daemon died with it).
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(f"{gone.pid}00\n")  # longer than ours: the rest must be cut
    first = _claim_pidfile(pidfile, settings, home_socket)
    assert first is not None
    assert pidfile.read_text() == f"{os.getpid()}\n"
    assert os.stat(pidfile).st_mode & 0o077 == 0
    # flock belongs to the open file: a second claim, even from this process, is refused.
    assert _claim_pidfile(pidfile, settings, home_socket) is None
    assert pidfile.read_text() == f"{os.getpid()}\n"
    _release_pidfile(pidfile, first)
    assert not pidfile.exists()
    again = _claim_pidfile(pidfile, settings, home_socket)
    assert again is not None
    _release_pidfile(pidfile, again)


def test_a_claim_held_by_another_process_is_respected(tmp_path):
    settings, pidfile, home_socket = home_settings(tmp_path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from llmgine_daemon.server import _claim_pidfile;"
            "from llmgine_daemon.settings import load_settings;"
            f"s = load_settings(env={{'LLMGINE_HOME': {str(tmp_path)!r}}});"
            "fd = _claim_pidfile(s.paths.pidfile, s, s.socket_path);"
            "print(fd is not None, flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "True"
        assert _claim_pidfile(pidfile, settings, home_socket) is None
        assert pidfile.read_text() == f"{holder.pid}\n"
    finally:
        holder.stdin.close()  # it exits: its lock goes with it
        holder.wait()
    # Left behind (it never released): stale now, so taken over.
    mine = _claim_pidfile(pidfile, settings, home_socket)
    assert mine is not None and pidfile.read_text() == f"{os.getpid()}\n"
    _release_pidfile(pidfile, mine)


def test_a_daemon_on_a_socket_of_its_own_claims_nothing(tmp_path):
    settings = load_settings(env={"LLMGINE_HOME": str(tmp_path), "LLMGINE_SOCKET": str(tmp_path / "own.sock")})
    home_socket = load_settings(env={"LLMGINE_HOME": str(tmp_path)}).socket_path
    assert _claim_pidfile(settings.paths.pidfile, settings, home_socket) is None
    assert not settings.paths.pidfile.exists()
