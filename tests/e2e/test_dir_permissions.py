"""The real llmgined with --socket and DATABASE_URL in directories it did not create: an
existing directory is never chmod'ed; one that others can write (without the sticky bit) is
refused at start-up with one line; a sticky one such as /tmp is fine for the socket."""

from __future__ import annotations

import os
import signal
import stat
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.e2e.test_llmgined import exit_code, fails_with, free_port, run_daemon, wait_for_http

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.sqlite_only(reason="the modes of the home, its data folder and the database file"),
]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def shared_dir(home: Path, bits: int) -> Path:
    path = home / f"shared-{bits:o}"
    path.mkdir()
    os.chmod(path, bits)
    return path


def serve_once(home: Path, *args: str, env: dict[str, str] | None = None) -> None:
    """Start llmgined, check it answers, stop it with SIGTERM."""
    port = free_port()
    proc = run_daemon(home, "--port", str(port), *args, env=env)
    try:
        assert wait_for_http(port, proc)["status"] == "healthy"
        proc.send_signal(signal.SIGTERM)
        assert exit_code(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_socket_in_the_system_temp_dir_leaves_it_alone(home):
    tmp = Path(tempfile.gettempdir())
    before = mode(tmp)
    if not before & stat.S_ISVTX:
        pytest.skip(f"{tmp} is not sticky here")
    sock = tmp / f"lg-{uuid.uuid4().hex[:12]}.sock"
    port = free_port()
    proc = run_daemon(home, "--port", str(port), "--socket", str(sock))
    try:
        wait_for_http(port, proc)
        assert stat.S_ISSOCK(sock.lstat().st_mode) and mode(sock) == 0o600
        assert mode(tmp) == before  # /tmp stays 1777, even when the daemon runs as root
        proc.send_signal(signal.SIGTERM)
        assert exit_code(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.unlink(missing_ok=True)
    assert not sock.exists()
    assert mode(tmp) == before


def test_socket_in_a_directory_others_can_write_is_refused(home):
    shared = shared_dir(home, 0o777)
    line = fails_with(home, "--socket", str(shared / "x.sock"))
    assert "server.socket" in line and "writable by others" in line and str(shared) in line
    assert mode(shared) == 0o777 and not list(shared.iterdir())


def test_database_in_a_directory_others_can_write_is_refused(home):
    shared = shared_dir(home, 0o777)
    line = fails_with(home, env={"DATABASE_URL": f"sqlite:///{shared}/llmgine.db"})
    assert "database.url" in line and "writable by others" in line
    assert mode(shared) == 0o777 and not list(shared.iterdir())


def test_existing_directories_are_used_as_they_are_and_new_ones_are_private(home):
    sticky = shared_dir(home, 0o1777)
    readable = shared_dir(home, 0o755)
    serve_once(home, "--socket", str(sticky / "x.sock"), env={"DATABASE_URL": f"sqlite:///{readable}/new/llmgine.db"})
    assert mode(sticky) == 0o1777 and mode(readable) == 0o755
    assert mode(readable / "new") == 0o700  # created by the daemon
    assert mode(readable / "new" / "llmgine.db") == 0o600


def test_socket_path_naming_a_file_is_refused_and_the_file_kept(home):
    victim = home / "notes.txt"
    victim.write_text("keep me")
    line = fails_with(home, "--socket", str(victim))
    assert "not a socket" in line
    assert victim.read_text() == "keep me"
