"""The CLI as a real process: what it imports, that it never shows a traceback, signals."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clitools import cli_env, full_env, run_cli
from tests.eventually import eventually_blocking, tcp_connected

PROBE = """\
import json, sys
from llmgine_cli.app import main
code = main(sys.argv[2:])
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"rich", "aiohttp"})
open(sys.argv[1], "w").write(json.dumps({"code": code, "loaded": loaded}))
"""


def imports_of(args: list[str], env: dict, tmp_path: Path) -> dict:
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-c", PROBE, str(report), *args], check=False,
                          env=full_env(env), capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(report.read_text())


@pytest.mark.parametrize("args", [
    ["session", "list", "-o", "json"],
    ["session", "list"],  # piped: plain text
    ["session", "create", "-q"],
    ["session", "get", "missing", "-o", "jsonl"],
    ["health", "-o", "json"],
    ["status", "-o", "json"],
    ["config", "show", "-o", "json"],
    ["config", "show", "--local"],
    ["config", "get", "server.port"],
    ["daemon", "status", "-o", "json"],
])
def test_json_and_plain_output_import_neither_rich_nor_aiohttp(daemon, tmp_path, args):
    report = imports_of(args, daemon.env, tmp_path)
    assert report["loaded"] == [], (args, report)


def test_table_output_imports_rich_but_not_aiohttp(daemon, tmp_path):
    report = imports_of(["session", "list", "-o", "table"], daemon.env, tmp_path)
    assert report == {"code": 0, "loaded": ["rich"]}


def test_importtime_of_session_list_json(daemon):
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "llmgine_cli", "session", "list", "-o", "json"],
        env=full_env(daemon.env), capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0
    modules = {line.rsplit("|", 1)[-1].strip().split(".")[0]
               for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "msgspec" in modules  # the report is real
    assert "rich" not in modules and "aiohttp" not in modules


@pytest.mark.parametrize("args", [
    ["no-such-command"],
    ["session", "list", "--limit", "x"],
    ["session", "get", "missing"],
    ["--url", "ftp://nowhere", "health"],
    ["--url", "http://127.0.0.1:9", "session", "list"],
    ["config", "set", "server.port", "not-a-port"],
    ["config", "get", "no.such.key", "--local"],
    ["daemon", "logs", "--lines", "-1"],
])
def test_errors_are_short_and_never_tracebacks(daemon, args):
    proc = run_cli(args, daemon.env)
    assert proc.returncode not in (0, None)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip()


def test_errors_without_a_daemon(cold_home):
    env = cli_env(cold_home)
    for args, code in ((["session", "list"], 3), (["daemon", "status"], 3),
                       (["daemon", "logs"], 1), (["shutdown"], 3)):
        proc = run_cli(args, env)
        assert proc.returncode == code, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.fixture
def silent_server():
    """Accepts connections and never answers: a hung daemon."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def test_no_answer_in_time_exits_7(silent_server, cold_home):
    proc = run_cli(["--url", silent_server, "--timeout", "0.3", "session", "list"],
                   cli_env(cold_home))
    assert proc.returncode == 7
    assert "no answer" in proc.stderr and "Traceback" not in proc.stderr


def test_ctrl_c_exits_130_without_traceback(silent_server, cold_home):
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmgine_cli", "--url", silent_server, "session", "list"],
        env=full_env(cli_env(cold_home)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    # Past the imports, waiting on the socket (a fixed sleep was too short on a loaded machine).
    eventually_blocking(lambda: tcp_connected(proc.pid, int(silent_server.rsplit(":", 1)[1])), timeout=30)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert "Traceback" not in err


def test_a_terminal_gets_a_rich_table(daemon):
    import pexpect

    env = full_env({**daemon.env, "COLUMNS": "160", "TERM": "xterm"})
    created = subprocess.run([sys.executable, "-m", "llmgine_cli", "session", "create", "-q",
                              "--name", "on-a-tty"], env=env, capture_output=True, text=True,
                             check=True)
    sid = created.stdout.strip()
    child = pexpect.spawn(sys.executable, ["-m", "llmgine_cli", "session", "get", sid],
                          env=env, encoding="utf-8", timeout=30, dimensions=(40, 160))
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    text = child.before
    assert "\x1b[" in text  # styled for a terminal
    assert sid in text and "on-a-tty" in text
    child = pexpect.spawn(sys.executable, ["-m", "llmgine_cli", "session", "list"],
                          env=env, encoding="utf-8", timeout=30, dimensions=(40, 160))
    child.expect(pexpect.EOF)
    child.close()
    assert "─" in child.before and "LAST ACTIVITY" in child.before


def test_default_paths_without_xdg_runtime_dir_are_quiet(tmp_path):
    """No LLMGINE_HOME, no XDG_RUNTIME_DIR (a cron job, a container): stderr stays clean."""
    env = cli_env(tmp_path, LLMGINE_HOME=None, HOME=str(tmp_path), XDG_RUNTIME_DIR=None,
                  XDG_CONFIG_HOME=None, XDG_DATA_HOME=None, XDG_STATE_HOME=None)
    proc = run_cli(["config", "path"], env)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith(str(tmp_path))
    proc = run_cli(["session", "list"], env)
    assert proc.returncode == 3
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
