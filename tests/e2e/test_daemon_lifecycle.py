"""The whole life of a background daemon, driven only through the real `llmgine` process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmgine_cli.daemonctl import pid_alive
from tests.clitools import cli_env, free_port, run_cli

pytestmark = pytest.mark.e2e


@pytest.fixture
def home(cli_home: Path) -> Path:
    return cli_home


def llmgine(home: Path, *args: str, **env: str | None) -> tuple[int, str, str]:
    proc = run_cli(args, cli_env(home, **env))
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout, proc.stderr


def test_start_create_restart_stop(home):
    port = free_port()
    tcp = f"http://127.0.0.1:{port}"
    code, out, err = llmgine(home, "daemon", "start", "--port", str(port))
    assert code == 0, err
    assert "started" in out and f"unix://{home}/run/llmgined.sock" in out and tcp in out

    code, sid, err = llmgine(home, "session", "create", "-q", "--name", "e2e")
    assert code == 0, err
    sid = sid.strip()
    code, out, _ = llmgine(home, "session", "get", sid, "-o", "json")
    assert code == 0 and json.loads(out)["name"] == "e2e"

    code, out, _ = llmgine(home, "daemon", "status", "-o", "json")
    old_pid = json.loads(out)["pid"]
    code, out, err = llmgine(home, "daemon", "restart", "-o", "json")
    assert code == 0, err
    new = json.loads(out)
    assert new["pid"] != old_pid and not pid_alive(old_pid)
    assert tcp in new["listeners"]  # restarted with the same flags

    code, out, _ = llmgine(home, "session", "get", sid, "-o", "json")
    assert code == 0 and json.loads(out)["session_id"] == sid  # survived the restart
    code, out, _ = llmgine(home, "--url", tcp, "session", "get", sid, "-q")
    assert code == 0 and out.strip() == sid
    code, out, _ = llmgine(home, "session", "list", "-q", LLMGINE_URL=tcp)
    assert sid in out.split()

    code, out, _ = llmgine(home, "daemon", "stop")
    assert code == 0 and f"pid {new['pid']}" in out
    assert not pid_alive(new["pid"])
    assert not (home / "run" / "llmgined.sock").exists()
    assert not (home / "run" / "llmgined.pid").exists()
    code, _, err = llmgine(home, "daemon", "status")
    assert code == 3


def test_autostart(home):
    code, out, err = llmgine(home, "session", "list", "-o", "json", LLMGINE_NO_AUTOSTART=None)
    assert code == 0, err
    assert json.loads(out)["total"] == 0
    assert "starting llmgined" in err and "started (pid" in err
    pid = int((home / "run" / "llmgined.pid").read_text())
    assert pid_alive(pid)

    # Now it runs: no second start, no notice.
    code, out, err = llmgine(home, "session", "create", "-q", LLMGINE_NO_AUTOSTART=None)
    assert code == 0 and err == ""

    code, _, _ = llmgine(home, "daemon", "stop")
    assert code == 0 and not pid_alive(pid)


def test_no_autostart_for_probes_or_when_disabled(home):
    assert llmgine(home, "health", LLMGINE_NO_AUTOSTART=None)[0] == 3
    assert llmgine(home, "status", LLMGINE_NO_AUTOSTART=None)[0] == 3
    assert llmgine(home, "session", "list")[0] == 3  # LLMGINE_NO_AUTOSTART=1 (cli_env default)
    assert not (home / "run" / "llmgined.pid").exists()


def test_autostart_failure_is_reported(home):
    config = home / "config" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[server]\nport = 'nope'\n")
    code, _, err = llmgine(home, "session", "list", LLMGINE_NO_AUTOSTART=None)
    assert code == 1
    assert "bad configuration" in err and "server.port" in err


def test_stop_stops_the_daemon_at_the_socket_not_another_of_the_same_home(home):
    # A second llmgined of the same user, on a socket of its own (and a database of its own),
    # shares the runtime directory: it must not take over the first one's pidfile, and
    # `llmgine daemon stop` must stop (and wait for) the daemon at the default socket only.
    from llmgine_cli.target import parse_url
    from tests.clitools import probe, start_daemon, stop_process
    from tests.eventually import eventually_blocking

    code, out, err = llmgine(home, "daemon", "start")
    assert code == 0, err
    first = int(llmgine(home, "status", "-q")[1])
    other_socket = home / "other.sock"
    other = start_daemon(home, "--socket", str(other_socket), env={"DATABASE_URL": f"sqlite:///{home}/other.db"})
    try:
        eventually_blocking(lambda: probe(parse_url(f"unix://{other_socket}"), timeout=0.5))
        code, out, err = llmgine(home, "daemon", "stop")
        assert code == 0 and f"pid {first}" in out, (out, err)
        assert not pid_alive(first) and other.proc.poll() is None
        code, out, err = llmgine(home, "daemon", "stop")  # nothing at the default socket now
        assert code == 0 and "not running" in out + err, (out, err)
        assert other.proc.poll() is None  # the other daemon was not signalled
    finally:
        stop_process(other.proc)


def test_stop_of_a_socket_nobody_answers_signals_no_one(home):
    """`daemon stop` at an address where no daemon answers never falls back to the pidfile's
    daemon unless the pidfile says it listens there: the default daemon survives a stop aimed
    at another socket."""
    code, out, err = llmgine(home, "daemon", "start")
    assert code == 0, err
    first = int(llmgine(home, "status", "-q")[1])
    code, out, err = llmgine(home, "--url", f"unix://{home / 'other.sock'}", "daemon", "stop")
    assert code == 0 and "not running" in out + err, (out, err)
    assert pid_alive(first)
    code, out, err = llmgine(home, "daemon", "stop")
    assert code == 0 and f"pid {first}" in out, (out, err)


def test_the_default_daemon_starts_beside_one_on_another_socket(home):
    """A daemon on a socket of its own (started first) writes no pidfile: the home's default
    daemon still starts, and `daemon stop` stops that one only."""
    import subprocess
    import sys

    from llmgine_cli.target import parse_url
    from tests.clitools import DAEMON_DEFAULTS, full_env, probe, stop_process
    from tests.eventually import eventually_blocking

    other_socket = home / "other.sock"
    env = full_env({**cli_env(home, DATABASE_URL=f"sqlite:///{home}/other.db"), **DAEMON_DEFAULTS})
    with open(home / "other.log", "ab") as log:
        other = subprocess.Popen(
            [sys.executable, "-m", "llmgine_daemon", "--socket", str(other_socket)],
            env=env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
    try:
        eventually_blocking(lambda: probe(parse_url(f"unix://{other_socket}"), timeout=0.5))
        assert not (home / "run" / "llmgined.pid").exists()
        code, out, err = llmgine(home, "daemon", "start")
        assert code == 0, (out, err)
        first = int(llmgine(home, "status", "-q")[1])
        code, out, err = llmgine(home, "daemon", "stop")
        assert code == 0 and f"pid {first}" in out, (out, err)
        assert other.poll() is None
    finally:
        stop_process(other)
