"""`llmgine daemon start | stop | restart | status | logs` on a fresh home each."""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
import sys
import time

from llmgine_daemon import __version__

from llmgine_cli.daemonctl import pid_alive
from tests.clitools import cli_env, default_signals, free_port, full_env, one_line


def test_start_status_logs_stop(cold_cli, cold_home):
    port = free_port()
    started = cold_cli("daemon", "start", "--port", str(port), "-o", "json")
    assert started.exit_code == 0, started.stderr
    info = json.loads(started.stdout)
    pid = info["pid"]
    assert info["version"] == __version__ and not info["already_running"]
    assert f"http://127.0.0.1:{port}" in info["listeners"]
    assert info["listeners"][0] == f"unix://{cold_home}/run/llmgined.sock"
    assert (cold_home / "run" / "llmgined.pid").read_text().strip() == str(pid)
    log = cold_home / "state" / "llmgined.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600

    again = cold_cli("daemon", "start")
    assert again.exit_code == 0
    assert f"is already running (pid {pid})" in again.stdout

    status = cold_cli("daemon", "status", "-o", "json")
    assert status.exit_code == 0
    body = json.loads(status.stdout)
    assert body["pid"] == pid and f"http://127.0.0.1:{port}" in body["listeners"]
    assert cold_cli("daemon", "status", "-q").stdout.strip() == str(pid)
    plain = dict(line.split(None, 1) for line in cold_cli("daemon", "status").stdout.splitlines())
    assert set(plain) == {"pid", "version", "uptime", "started_at", "listeners"}

    logs = cold_cli("daemon", "logs", "-n", "5")
    assert logs.exit_code == 0 and "listening on" in logs.stdout
    assert len(logs.stdout.splitlines()) <= 5
    assert "listening on" in cold_cli("daemon", "logs").stdout

    stopped = cold_cli("daemon", "stop")
    assert stopped.exit_code == 0
    assert stopped.stdout == f"llmgined stopped (pid {pid})\n"
    assert not pid_alive(pid)
    assert not (cold_home / "run" / "llmgined.sock").exists()
    assert not (cold_home / "run" / "llmgined.pid").exists()

    not_running = cold_cli("daemon", "status")
    assert not_running.exit_code == 3
    assert "not running" in one_line(not_running.stderr)
    again = cold_cli("daemon", "stop")
    assert again.exit_code == 0 and "not running" in again.stderr


def test_restart_reuses_the_flags(cold_cli, cold_home):
    port = free_port()
    first = json.loads(cold_cli("daemon", "start", "--port", str(port), "-o", "json").stdout)
    restarted = cold_cli("daemon", "restart", "-o", "json")
    assert restarted.exit_code == 0, restarted.stderr
    second = json.loads(restarted.stdout)
    assert second["pid"] != first["pid"] and not pid_alive(first["pid"])
    assert f"http://127.0.0.1:{port}" in second["listeners"]
    # Flags given to restart override the stored ones, the others are kept.
    third = json.loads(cold_cli("daemon", "restart", "--log-level", "debug", "-o", "json").stdout)
    assert f"http://127.0.0.1:{port}" in third["listeners"]
    assert "DEBUG" in cold_cli("daemon", "logs").stdout
    assert cold_cli("daemon", "stop", "-q").stdout.strip() == str(third["pid"])


def test_restart_when_stopped_just_starts(cold_cli):
    result = cold_cli("daemon", "restart", "-q")
    assert result.exit_code == 0
    pid = int(result.stdout)
    assert pid_alive(pid)
    assert cold_cli("daemon", "stop").exit_code == 0


def test_start_failure_shows_the_daemons_line(cold_cli, cold_home):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = cold_cli("daemon", "start", "--port", str(port))
    assert result.exit_code == 1
    line = one_line(result.stderr)
    assert "llmgined exited" in line and "address already in use" in line
    assert not (cold_home / "run" / "llmgined.pid").exists()
    assert not (cold_home / "run" / "llmgined.sock").exists()


def test_bad_config_is_reported_before_spawning(cold_cli, cold_home):
    result = cold_cli("daemon", "start", "--config", str(cold_home / "missing.toml"))
    assert result.exit_code == 1
    assert "config file not found" in one_line(result.stderr)


def test_start_timeout_stops_the_half_started_daemon(cold_cli, cold_home):
    result = cold_cli("daemon", "start", "--timeout", "0.1")
    assert result.exit_code == 7
    assert "did not answer" in one_line(result.stderr)
    pidfile = cold_home / "run" / "llmgined.pid"
    assert not pidfile.exists() or not pid_alive(int(pidfile.read_text()))


def test_logs_follow_until_ctrl_c(cold_cli, cold_home):
    assert cold_cli("daemon", "start").exit_code == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmgine_cli", "daemon", "logs", "-f", "-n", "1"],
        env=full_env(cli_env(cold_home)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )
    try:
        # -n 1: exactly the last line so far (start-up messages race, so not which one).
        first = proc.stdout.readline()
        assert first.strip() and "shutting down" not in first
        time.sleep(0.3)
        assert cold_cli("session", "list").exit_code == 0  # keeps the daemon busy meanwhile
        assert cold_cli("daemon", "stop").exit_code == 0  # writes "shutting down"
        deadline = time.monotonic() + 60
        seen = ""
        while "stopped" not in seen and time.monotonic() < deadline:
            seen += proc.stdout.readline()
        assert "shutting down" in seen
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130  # Ctrl-C ends a follow as it ends every wait
    assert "Traceback" not in err


def test_tcp_only_daemon_with_its_own_log_file(cold_cli, cold_home):
    port = free_port()
    log = cold_home / "custom.log"
    started = cold_cli("daemon", "start", "--no-socket", "--port", str(port), "--log-file", str(log), "-o", "json")
    assert started.exit_code == 0, started.stderr
    pid = json.loads(started.stdout)["pid"]
    assert json.loads(started.stdout)["listeners"] == [f"http://127.0.0.1:{port}"]
    # daemon status/logs/stop find it through the flags `daemon start` stored.
    assert cold_cli("daemon", "status", "-q").stdout.strip() == str(pid)
    logs = cold_cli("daemon", "logs")
    assert logs.exit_code == 0 and "listening on" in logs.stdout and str(log) not in logs.stderr
    # Auto-start must not start a second daemon in the same home; it points to the first.
    result = cold_cli("session", "list", LLMGINE_NO_AUTOSTART=None)
    assert result.exit_code == 1
    assert f"already running (pid {pid}) at http://127.0.0.1:{port}" in result.stderr
    assert cold_cli("daemon", "stop").exit_code == 0
    assert not pid_alive(pid)


def test_stop_falls_back_to_sigterm(cold_cli, cold_home):
    pid = int(cold_cli("daemon", "start", "-q").stdout)
    sock = cold_home / "run" / "llmgined.sock"
    sock.unlink()
    # The API is unreachable now: a file where its socket was (a removed socket alone is made
    # again within a second; the daemon leaves a path something else holds alone).
    sock.write_text("")
    result = cold_cli("daemon", "stop", "-o", "json")
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["pid"] == pid and body["was_running"] and body["signalled"]
    assert not pid_alive(pid)
    assert not (cold_home / "run" / "llmgined.pid").exists()
