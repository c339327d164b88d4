"""The CLI as a real process: what it imports, that it never shows a traceback, signals."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.clitools import cli_env, default_signals, full_env, run_cli
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
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(report), *args],
        check=False,
        env=full_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(report.read_text())


def _importers(importtime_report: str, names: set[str]) -> list[list[str]]:
    """For each module of ``names`` (top level), the chain of modules that imported it: in an
    importtime report a module's line follows those of what it imported, one level deeper."""
    lines = [line.split("|", 2)[-1] for line in importtime_report.splitlines() if line.startswith("import time:")]
    chains = []
    for i, text in enumerate(lines):
        name = text.strip()
        if name.split(".")[0] not in names:
            continue
        depth, chain = len(text) - len(text.lstrip()), [name]
        for later in lines[i + 1 :]:
            level = len(later) - len(later.lstrip())
            if level < depth:
                chain.append(later.strip())
                depth = level
        chains.append(chain)
    return chains


def _imported(importtime_report: str) -> set[str]:
    return {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in importtime_report.splitlines()
        if line.startswith("import time:")
    }


@pytest.mark.parametrize(
    "args",
    [
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
    ],
)
def test_json_and_plain_output_import_neither_rich_nor_aiohttp(daemon, tmp_path, args):
    report = imports_of(args, daemon.env, tmp_path)
    assert report["loaded"] == [], (args, report)


def test_table_output_imports_rich_but_not_aiohttp(daemon, tmp_path):
    # A session to list: an empty listing is a line on stderr, not a table (render.View.empty).
    assert run_cli(["session", "create", "-q"], daemon.env).returncode == 0
    report = imports_of(["session", "list", "-o", "table"], daemon.env, tmp_path)
    assert report == {"code": 0, "loaded": ["rich"]}


# What a hot command must not load: the Typer app (typer, click), the protocol models
# (msgspec), http.client (and email with it), rich, aiohttp. The fast path is hot.py.
HEAVY = {"typer", "click", "msgspec", "rich", "aiohttp", "http", "email", "ssl", "dataclasses", "typing"}


@pytest.mark.parametrize(
    "args",
    [
        ["session", "list", "-o", "json"],
        ["command", "run", "DummyEngineCommand", "-p", "prompt=x", "-o", "json"],
        ["event", "publish", "Hot", "-q", "--data", '{"n": 1}'],
        ["--timeout", "5", "session", "list", "--limit=3", "-q"],
        ["session", "list", "--format", "table {{.session_id}}\\t{{json .metadata}}"],
    ],
)
def test_hot_commands_import_only_what_they_use(daemon, args):
    sid = run_cli(["session", "create", "-q"], daemon.env).stdout.strip()
    assert run_cli(["engine", "create", "DummyEngine", "-S", sid, "-q"], daemon.env).returncode == 0
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "llmgine_cli", *args],
        env=full_env({**daemon.env, "LLMGINE_SESSION": sid}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # What the interpreter itself loads at start-up (site, .pth files of this installation) is
    # not the command's doing: only what comes on top of `python -c pass` counts.
    startup = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "pass"],
        env=full_env(daemon.env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    modules = _imported(proc.stderr) - _imported(startup.stderr)
    assert "llmgine_cli" in modules and "socket" in modules  # the report is real
    assert not modules & HEAVY, (sorted(modules & HEAVY), _importers(proc.stderr, modules & HEAVY), proc.stderr[-2000:])
    assert "llmgine_cli.root" not in proc.stderr and "llmgine_daemon.settings" not in proc.stderr


def test_a_cold_command_builds_only_its_own_group(daemon, tmp_path):
    probe = (
        "import json, sys\nfrom llmgine_cli.app import main\ncode = main(sys.argv[2:])\n"
        "mods = sorted(m for m in sys.modules if m.startswith('llmgine_cli.commands.'))\n"
        "open(sys.argv[1], 'w').write(json.dumps({'code': code, 'modules': mods}))\n"
    )
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(report), "engine", "types", "-q"],
        env=full_env(daemon.env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(report.read_text())["modules"]
    # engines.py imports commands.py (shared options) and args.py: nothing else is built.
    assert "llmgine_cli.commands.engines" in loaded
    assert not {
        "llmgine_cli.commands.tools",
        "llmgine_cli.commands.daemon",
        "llmgine_cli.commands.chat",
        "llmgine_cli.commands.observability",
        "llmgine_cli.commands.config",
    } & set(loaded), loaded


@pytest.mark.parametrize(
    "args",
    [
        ["no-such-command"],
        ["session", "list", "--limit", "x"],
        ["session", "get", "missing"],
        ["--url", "ftp://nowhere", "health"],
        ["--url", "http://127.0.0.1:9", "session", "list"],
        ["config", "set", "server.port", "not-a-port"],
        ["config", "get", "no.such.key", "--local"],
        ["daemon", "logs", "--lines", "-1"],
    ],
)
def test_errors_are_short_and_never_tracebacks(daemon, args):
    proc = run_cli(args, daemon.env)
    assert proc.returncode not in (0, None)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip()


def test_errors_without_a_daemon(cold_home):
    env = cli_env(cold_home)
    for args, code in ((["session", "list"], 3), (["daemon", "status"], 3), (["daemon", "logs"], 1), (["shutdown"], 3)):
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
    proc = run_cli(["--url", silent_server, "--timeout", "0.3", "session", "list"], cli_env(cold_home))
    assert proc.returncode == 7
    assert "no answer" in proc.stderr and "Traceback" not in proc.stderr


def test_ctrl_c_exits_130_without_traceback(silent_server, cold_home):
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmgine_cli", "--url", silent_server, "session", "list"],
        env=full_env(cli_env(cold_home)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
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
    created = subprocess.run(
        [sys.executable, "-m", "llmgine_cli", "session", "create", "-q", "--name", "on-a-tty"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    sid = created.stdout.strip()
    child = pexpect.spawn(
        sys.executable,
        ["-m", "llmgine_cli", "session", "get", sid],
        env=env,
        encoding="utf-8",
        timeout=30,
        dimensions=(40, 160),
        preexec_fn=default_signals,
    )
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    text = child.before
    assert "\x1b[" in text  # styled for a terminal
    assert sid in text and "on-a-tty" in text
    child = pexpect.spawn(
        sys.executable,
        ["-m", "llmgine_cli", "session", "list"],
        env=env,
        encoding="utf-8",
        timeout=30,
        dimensions=(40, 160),
        preexec_fn=default_signals,
    )
    child.expect(pexpect.EOF)
    child.close()
    assert "─" in child.before and "LAST ACTIVITY" in child.before


def test_default_paths_without_xdg_runtime_dir_are_quiet(tmp_path):
    """No LLMGINE_HOME, no XDG_RUNTIME_DIR (a cron job, a container): stderr stays clean.
    (The fallback runtime folder is under the temp dir, per user: TMPDIR keeps it this test's,
    not the one a daemon of this user's may be listening in.)"""
    env = cli_env(
        tmp_path,
        LLMGINE_HOME=None,
        HOME=str(tmp_path),
        TMPDIR=str(tmp_path),
        XDG_RUNTIME_DIR=None,
        XDG_CONFIG_HOME=None,
        XDG_DATA_HOME=None,
        XDG_STATE_HOME=None,
    )
    proc = run_cli(["config", "path"], env)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith(str(tmp_path))
    proc = run_cli(["session", "list"], env)
    assert proc.returncode == 3
    assert len(proc.stderr.splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("cancel", [False, True])
def test_ctrl_c_while_a_command_runs(daemon, cancel):
    """On a terminal, Ctrl-C during `command run` says the command goes on in the daemon (and
    how to cancel it), or with --cancel-on-interrupt cancels it; exit 130 either way."""
    import pexpect

    env = full_env(daemon.env)
    sid = run_cli(["session", "create", "-q"], daemon.env).stdout.strip()
    assert run_cli(["engine", "create", "DummyEngine", "-S", sid, "-q"], daemon.env).returncode == 0
    args = [
        "-m",
        "llmgine_cli",
        "command",
        "run",
        "DummyEngineCommand",
        "-S",
        sid,
        "-p",
        "prompt=slow",
        "-p",
        "delay_ms:=600000",
        *(["--cancel-on-interrupt"] if cancel else []),
    ]
    child = pexpect.spawn(
        sys.executable, args, env=env, encoding="utf-8", timeout=30, dimensions=(40, 160), preexec_fn=default_signals
    )
    try:
        # Wait until the daemon has it (and so the CLI is waiting on it), then Ctrl-C.
        deadline = time.monotonic() + 20
        while "executing" not in run_cli(["command", "list", "-S", sid, "-o", "jsonl"], daemon.env).stdout:
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.1)
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 130, child.before
    assert "Traceback" not in child.before
    record = json.loads(run_cli(["command", "list", "-S", sid, "-o", "jsonl"], daemon.env).stdout.splitlines()[0])
    if cancel:
        assert f"command {record['command_id']} cancelled" in child.before
        assert record["status"] == "cancelled"
    else:
        assert f"command {record['command_id']} continues in the daemon" in child.before
        assert f"llmgine command cancel {record['command_id']}" in child.before
        assert record["status"] == "executing"
        run_cli(["command", "cancel", record["command_id"], "-S", sid, "-q"], daemon.env)


def test_a_spinner_on_a_terminal_and_none_when_piped(daemon):
    import pexpect

    sid = run_cli(["session", "create", "-q"], daemon.env).stdout.strip()
    assert run_cli(["engine", "create", "DummyEngine", "-S", sid, "-q"], daemon.env).returncode == 0
    args = [
        "command",
        "run",
        "DummyEngineCommand",
        "-S",
        sid,
        "-p",
        "prompt=slow",
        "-p",
        "delay_ms:=3000",
        "-o",
        "json",
    ]
    child = pexpect.spawn(
        sys.executable,
        ["-m", "llmgine_cli", *args],
        env=full_env(daemon.env),
        encoding="utf-8",
        timeout=30,
        dimensions=(40, 160),
        preexec_fn=default_signals,
    )
    try:
        child.expect(r"DummyEngineCommand[^\r\n]*\d+\.\ds")  # the label and the elapsed time
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert '"status": "completed"' in child.before
    piped = run_cli(args, daemon.env)
    assert piped.returncode == 0 and piped.stderr == ""  # nothing drawn when it is not a terminal
    assert json.loads(piped.stdout)["status"] == "completed"


def _on_a_terminal(args: list[str], env: dict, columns: int = 80) -> str:
    import pexpect

    child = pexpect.spawn(
        sys.executable,
        ["-m", "llmgine_cli", *args],
        env=env,
        encoding="utf-8",
        timeout=30,
        dimensions=(50, columns),
        preexec_fn=default_signals,
    )
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    return child.before


def test_tables_fit_80_columns_one_line_a_row(daemon):
    import re

    env = full_env({**daemon.env, "COLUMNS": None, "TERM": "xterm-256color", "NO_COLOR": None})
    sid = run_cli(["session", "create", "-q"], daemon.env).stdout.strip()
    long_words = " ".join(["supercalifragilistic"] * 12)
    for i in range(3):
        data = json.dumps({"text": long_words, "nested": {"deep": [1, 2, {"x": i}]}})
        assert run_cli(["event", "publish", "Wordy", "-S", sid, "-d", data, "-q"], daemon.env).returncode == 0
    text = _on_a_terminal(["event", "list", "-S", sid, "--type", "Wordy"], env)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = [line for line in plain.splitlines() if line.strip()]
    assert all(len(line) <= 80 for line in lines), lines
    header = next(line for line in lines if "SEQ" in line)
    assert header.split() == ["SEQ", "TYPE", "SOURCE", "TIME", "DATA"]  # no header squeezed
    rows = [line for line in lines if "Wordy" in line]
    assert len(rows) == 3  # each event one line: nothing wrapped onto a second
    assert all(row.rstrip().endswith("…") for row in rows)  # the long data cut, with "…"
    assert "a=" not in plain and '{"text":' in plain  # nested values as compact JSON


def test_status_is_coloured_unless_no_color(daemon):
    sid = run_cli(["session", "create", "-q"], daemon.env).stdout.strip()
    assert run_cli(["engine", "create", "DummyEngine", "-S", sid, "-q"], daemon.env).returncode == 0
    assert (
        run_cli(["command", "run", "DummyEngineCommand", "-S", sid, "-p", "prompt=x", "-q"], daemon.env).returncode == 0
    )
    env = full_env({**daemon.env, "COLUMNS": None, "TERM": "xterm-256color", "NO_COLOR": None})
    coloured = _on_a_terminal(["command", "list", "-S", sid], env)
    assert "\x1b[32mcompleted" in coloured  # green
    plain = _on_a_terminal(["command", "list", "-S", sid], {**env, "NO_COLOR": "1"})
    assert "completed" in plain and "\x1b[32m" not in plain


def test_a_big_batch_shows_a_progress_bar_on_a_terminal(daemon, tmp_path):
    import pexpect

    sid = run_cli(["session", "create", "-q"], daemon.env).stdout.strip()
    assert run_cli(["engine", "create", "DummyEngine", "-S", sid, "-q"], daemon.env).returncode == 0
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        "".join(
            json.dumps({"command_type": "DummyEngineCommand", "parameters": {"prompt": f"p{i}", "delay_ms": 5}}) + "\n"
            for i in range(250)
        )
    )
    args = ["command", "batch", "-S", sid, "-f", str(batch), "--sequential", "-q"]
    child = pexpect.spawn(
        sys.executable,
        ["-m", "llmgine_cli", *args],
        env=full_env(daemon.env),
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 160),
        preexec_fn=default_signals,
    )
    try:
        child.expect(r"batch \[[#.]+\] \d+/250")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    piped = run_cli(args, daemon.env)
    assert piped.returncode == 0 and "batch [" not in piped.stderr and len(piped.stdout.split()) == 250


def test_config_show_keeps_the_values_at_80_columns(daemon):
    # The keys are long (45 characters) and so are the environment names: at 80 columns the
    # table must still show each key's value and source, leaving the ENV column out.
    import re

    env = full_env({**daemon.env, "COLUMNS": None, "TERM": "xterm-256color", "NO_COLOR": None})
    plain = re.sub(r"\x1b\[[0-9;]*m", "", _on_a_terminal(["config", "show", "--local"], env))
    lines = [line for line in plain.splitlines() if line.strip()]
    assert all(len(line) <= 80 for line in lines), lines
    header = next(line for line in lines if "KEY" in line)
    assert header.split() == ["KEY", "VALUE", "SOURCE"], header
    row = next(line for line in lines if line.split()[:1] == ["server.max_body_size"])
    assert row.split()[1:] == ["1048576", "default"], row
    assert "ENV" in plain  # named in the note on stderr (the pty merges it)


def test_the_note_of_left_out_columns_fits_80_columns(daemon):
    # `auth key list` at 80 columns leaves out two columns; the note that says so fits too.
    import re

    name = "a-key-name-long-enough-to-push-columns-out"
    assert run_cli(["auth", "key", "create", "--name", name, "--expires", "30d", "-q"], daemon.env).returncode == 0
    env = full_env({**daemon.env, "COLUMNS": None, "TERM": "xterm-256color", "NO_COLOR": None})
    plain = re.sub(r"\x1b\[[0-9;]*m", "", _on_a_terminal(["auth", "key", "list"], env))
    lines = [line for line in plain.splitlines() if line.strip()]
    note = next(line for line in lines if "not shown at this width" in line)
    assert all(len(line) <= 80 for line in lines), note


def test_the_first_column_is_never_cut_at_80_columns(daemon, tmp_path):
    # A listing's first column is what the next command takes (`tool exec NAME`): a tool
    # named with 44 characters was shown as "get_weather_for_a_ver…" at 80 columns, a name
    # no one could copy. The other columns shrink or are left out instead.
    import re

    name = "get_weather_for_a_very_long_named_location_x"
    source = tmp_path / "tool.py"
    source.write_text(
        f"def {name}(location: str, unit: str = 'celsius', days: int = 3) -> dict:\n"
        '    """Get the weather forecast for a location, in the unit asked for, over several days."""\n'
        "    return {}\n"
    )
    sid = run_cli(["session", "create", "-q"], daemon.env).stdout.strip()
    assert run_cli(["tool", "register", str(source), "-S", sid, "-q"], daemon.env).returncode == 0
    env = full_env({**daemon.env, "COLUMNS": None, "TERM": "xterm-256color", "NO_COLOR": None})
    plain = re.sub(r"\x1b\[[0-9;]*m", "", _on_a_terminal(["tool", "list", "-S", sid], env))
    lines = [line for line in plain.splitlines() if line.strip()]
    assert all(len(line) <= 80 for line in lines), lines
    row = next(line for line in lines if line.strip().startswith("get_weather"))
    assert row.split()[0] == name, row
