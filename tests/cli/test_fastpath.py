"""The fast path (hot.py) against the Typer app: same output, same exit codes, same errors.

``run_cli`` runs the real `llmgine` process (main: the fast path first); ``cli`` runs the
Typer app in-process (never the fast path). What the fast path does not recognise goes to
Typer, so usage errors and help are Typer's whichever way a command line arrives.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llmgine_cli import hot
from tests.clitools import cli_env, default_signals, full_env, one_line, run_cli


@pytest.fixture
def sid(cli) -> str:
    sid = cli("session", "create", "-q").stdout.strip()
    assert cli("engine", "create", "DummyEngine", "-S", sid, "-q").exit_code == 0
    return sid


def test_session_list_is_the_same_both_ways(cli, daemon, sid):
    for args in (
        ["session", "list", "-o", "json"],
        ["session", "list", "-q", "--limit", "3"],
        ["session", "list", "--status", "active", "-o", "jsonl"],
        ["session", "list"],
        ["session", "list", "--format", "{{.session_id}}\\t{{json .metadata}}"],
        ["session", "list", "-o", "table {{.name}}\\t{{.status}}", "--limit", "5"],
    ):
        fast = run_cli(args, daemon.env)
        slow = cli(*args)
        assert (fast.returncode, fast.stdout) == (slow.exit_code, slow.stdout), args


def test_command_run_is_the_same_both_ways(cli, daemon, sid):
    args = ["command", "run", "DummyEngineCommand", "-S", sid, "-p", "prompt=123", "-p", "n:=3", "-o", "json"]
    fast = run_cli(args, daemon.env)
    slow = cli(*args)
    assert fast.returncode == slow.exit_code == 0, fast.stderr
    a, b = json.loads(fast.stdout), json.loads(slow.stdout)
    assert a.keys() == b.keys()
    # -p key=value is a string, -p key:=json a JSON value (as httpie).
    assert a["parameters"] == b["parameters"] == {"prompt": "123", "n": 3}
    assert a["result"]["response"] == "Dummy response to: 123"


def test_a_failed_command_is_exit_1_both_ways(cli, daemon, sid):
    args = ["command", "run", "DummyEngineCommand", "-S", sid, "-p", "prompt=x", "-p", "fail:=true"]
    fast = run_cli(args, daemon.env)
    slow = cli(*args)
    assert fast.returncode == slow.exit_code == 1
    assert one_line(fast.stderr).split(":")[0] == one_line(slow.stderr).split(":")[0] == "error"
    assert "COMMAND_EXECUTION_FAILED" in fast.stderr


def test_event_publish_data_from_a_file_and_stdin(daemon, sid, tmp_path):
    data = tmp_path / "data.json"
    data.write_text('{"from": "file"}')
    quiet = run_cli(["event", "publish", "Filed", "-S", sid, "--data", f"@{data}", "-q"], daemon.env)
    assert quiet.returncode == 0 and len(quiet.stdout.split()) == 1
    piped = subprocess.run(
        [sys.executable, "-m", "llmgine_cli", "event", "publish", "Piped", "-S", sid, "--data", "-", "-o", "json"],
        input='{"from": "stdin"}',
        env=full_env(daemon.env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=default_signals,
    )
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["data"] == {"from": "stdin"}
    listed = json.loads(run_cli(["event", "list", "-S", sid, "--type", "Filed", "-o", "json"], daemon.env).stdout)
    assert listed["events"][0]["data"] == {"from": "file"}


def test_parameters_from_a_file(daemon, sid, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("from a file\n")
    run = run_cli(
        ["command", "run", "DummyEngineCommand", "-S", sid, "-p", f"prompt=@{prompt}", "-o", "json"], daemon.env
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["result"]["response"] == "Dummy response to: from a file"


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["session", "list", "--limit", "0"], 2, "--limit"),
        (["session", "list", "--limit", "5000"], 2, "--limit"),
        (["session", "list", "-o", "yaml"], 2, "yaml"),
        (["session", "list", "--bogus"], 2, "--bogus"),
        (["session", "list", "--status", "open"], 2, "--status"),
        (["command", "list", "-S", "s", "--status", "done"], 2, "--status"),
        (["engine", "list", "--status", "busy"], 2, "--status"),
        (["traces", "--status", "fine"], 2, "--status"),
        (["trace", "nope"], 4, "NOT_FOUND"),
        (["command", "run", "X", "-S", "s", "--priority", "urgent"], 2, "--priority"),
        (["command", "run", "X", "-S", "s", "-p", "novalue"], 2, "--param"),
        (["command", "run", "X", "-S", "s", "-p", "n:=nope"], 2, "--param"),
        (["event", "publish", "T", "-S", "s", "--data", "[1]"], 2, "--data"),
        # Python's json reads these (as inf, nan); the request carried them as null.
        (["command", "run", "X", "-S", "s", "-p", "n:=1e400"], 2, "out of range"),
        (["event", "publish", "T", "-S", "s", "--data", '{"a": NaN}'], 2, "NaN is not JSON"),
        # Nested thousands deep: Python's json raised RecursionError, an internal error (exit 1).
        (["command", "run", "X", "-S", "s", "-p", "a:=" + "[" * 5000 + "]" * 5000], 2, "nested too deeply"),
        (["event", "publish", "T", "-S", "s", "--data", '{"a":' * 5000 + "1" + "}" * 5000], 2, "nested too deeply"),
        (["event", "publish", "T", "-S", "s", "--data", "@/no/such/file"], 2, "cannot read"),
        (["event", "publish", "T"], 2, "--session"),
        (["session", "get", "no-such-session"], 4, "SESSION_NOT_FOUND"),
        (["event", "publish", "T", "-S", "no-such-session", "-q"], 4, "SESSION_NOT_FOUND"),
        # Where the session is a filter, a name that names none listed nothing (exit 0).
        (["ps", "--session", "no-such-session"], 4, "SESSION_NOT_FOUND"),
        (["traces", "--session", "no-such-session"], 4, "SESSION_NOT_FOUND"),
        (["logs", "--session", "no-such-session"], 4, "SESSION_NOT_FOUND"),
        (["engine", "list", "-S", "no-such-session"], 4, "SESSION_NOT_FOUND"),
        (["schedule", "list", "-S", "no-such-session"], 4, "SESSION_NOT_FOUND"),
        (["--url", "http://127.0.0.1:9", "session", "list", "-o", "json"], 3, "127.0.0.1:9"),
        (["--url", "ftp://x", "session", "list", "-o", "json"], 2, "invalid URL"),
        (["--url", "http://[::1", "health"], 2, "invalid URL"),
        # A path, query or user was dropped: requests went to the root of host:port instead.
        (["--url", "http://127.0.0.1:9/llmgine", "health"], 2, "no path, query or user"),
        (["--url", "http://127.0.0.1:9/?x=1", "health"], 2, "no path, query or user"),
        (["--url", "http://me:pw@127.0.0.1:9", "health"], 2, "no path, query or user"),
        # llmgine's own options after a command: "No such option", and not where it goes.
        (["session", "list", "--utc"], 2, "--utc is an option of llmgine itself: give it before the command"),
        (["command", "list", "-S", "s", "--timeout", "5"], 2, "`llmgine --timeout SECONDS command list ...`"),
        # Sent as typed, the daemon's 422 made these exit 1 where `event list --since` exits 2.
        (["logs", "--since", "yesterday"], 2, "--since"),
        (["logs", "--until", "noon"], 2, "--until"),
        (["traces", "--since", "yesterday"], 2, "--since"),
        (["usage", "--since", "yesterday"], 2, "--since"),
        # click reads nan, inf and 1e400 as floats, and a range lets them through: an internal
        # error (OverflowError), or a command's timeout sent as null.
        (["--timeout", "nan", "session", "list"], 2, "'nan' is not a finite number"),
        (["--timeout", "1e400", "session", "list", "-o", "json"], 2, "--timeout"),
        (["command", "run", "X", "-S", "s", "--timeout", "inf"], 2, "--timeout"),
        (["command", "wait", "x", "--timeout", "nan"], 2, "--timeout"),
        (["tool", "exec", "t", "-S", "s", "--timeout", "inf"], 2, "--timeout"),
    ],
)
def test_errors_are_one_line_with_the_documented_code(daemon, args, code, words):
    proc = run_cli(args, {**daemon.env, "LLMGINE_SESSION": None})
    assert proc.returncode == code, proc.stderr
    line = one_line(proc.stderr)
    assert line.startswith("error: ") and words in line, line
    assert proc.stdout == ""


@pytest.mark.parametrize("value", ["abc", "-5", "nan", "inf"])
def test_a_bad_llmgine_timeout_is_a_usage_error(daemon, value):
    # It was ignored (abc: the default 30 s), or an internal error (-5: ValueError).
    for args in (["session", "list", "-q"], ["status", "-q"]):  # the fast path, Typer
        proc = run_cli(args, {**daemon.env, "LLMGINE_TIMEOUT": value})
        assert proc.returncode == 2, proc.stderr
        assert (
            one_line(proc.stderr)
            == f"error: LLMGINE_TIMEOUT={value!r}: give the seconds to wait for an answer (at least 0.01)"
        )


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--timeout", "1e300", "session", "create", "-q"], {}),
        (["session", "create", "-q"], {"LLMGINE_TIMEOUT": "1e10"}),
        (["--timeout", "1e10", "status", "-q"], {}),
    ],
)
def test_a_huge_timeout_waits(daemon, args, env):
    # A socket refuses a timeout past ~9.2e9 s (OverflowError: an internal error); it is capped.
    proc = run_cli(args, {**daemon.env, **env})
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("when", ["1w", "2H", "99999999999d"])
def test_every_since_takes_what_the_daemon_takes(daemon, when):
    # `event list --since 1w` was refused (the CLI knew s, m, h, d) while `logs --since 1w`
    # worked; 99999999999d was an internal error (OverflowError), the daemon's "since ever".
    sid = run_cli(["session", "create", "-q"], daemon.env).stdout.strip()
    for args in (["event", "list", "-S", sid], ["logs", "-n", "1"], ["traces"], ["usage"]):
        proc = run_cli([*args, "--since", when, "-o", "json"], daemon.env)
        assert proc.returncode == 0, (args, proc.stderr)
    listed = json.loads(run_cli(["event", "list", "-S", sid, "--since", when, "-o", "json"], daemon.env).stdout)
    assert [e["event_type"] for e in listed["events"]] == ["SessionStarted"]


def test_help_and_version_go_to_typer(daemon):
    shown = run_cli(["session", "list", "--help"], daemon.env)
    assert shown.returncode == 0 and "--limit" in shown.stdout and "Usage" in shown.stdout
    assert run_cli(["--version"], daemon.env).stdout.startswith("llmgine ")


@pytest.mark.parametrize(
    "argv",
    [
        ["session", "list", "--help"],
        ["session", "list", "-qo", "json"],
        ["session", "list", "-s"],
        ["session", "list", "extra"],
        ["--version"],
        ["session", "get", "x"],
        ["command", "run", "-S", "s"],
        ["command", "run", "T", "-S", "s", "--follow"],
        ["event", "publish", "T", "-S", "s", "--", "-x"],
        ["--timeout", "0", "session", "list"],
        ["session", "list", "--limit", "x"],
    ],
)
def test_what_the_fast_path_leaves_to_typer(argv):
    with pytest.raises(hot._Fallback):
        hot.parse(argv, {})


def test_what_the_fast_path_takes():
    group, command, values = hot.parse(
        [
            "--url",
            "unix:///s",
            "--timeout=5",
            "command",
            "run",
            "T",
            "-p",
            "a=1",
            "--param=b:=2",
            "--priority",
            "HIGH",
            "--timeout",
            "0.5",
            "-q",
        ],
        {"LLMGINE_SESSION": "env-session"},
    )
    assert (group, command) == ("command", "run")
    assert values == {
        "url": "unix:///s",
        "global_timeout": 5.0,
        "positional": ["T"],
        "param": ["a=1", "b:=2"],
        "priority": "high",
        "timeout": 0.5,
        "quiet": True,
        "session": "env-session",
        "session_from_env": "env-session",  # an error about it says where it came from
    }
    assert hot.parse(["session", "list", "-l", "7", "-o", "JSON"], {})[2] == {
        "limit": 7,
        "output": "json",
        "positional": [],
    }


def test_payload_too_large_names_the_limit_and_the_setting(daemon, sid, tmp_path):
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"blob": "x" * (1024 * 1024 + 10)}))
    proc = run_cli(["event", "publish", "Big", "-S", sid, "--data", f"@{big}"], daemon.env)
    assert proc.returncode == 1
    line = one_line(proc.stderr)
    assert "PAYLOAD_TOO_LARGE" in line and "1048576 bytes" in line and "server.max_body_size" in line


def test_the_fast_path_auto_starts_the_daemon(cold_home):
    proc = run_cli(["session", "list", "-o", "json"], cli_env(cold_home, LLMGINE_NO_AUTOSTART=None))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["sessions"] == []
    assert "starting llmgined" in proc.stderr
    off = run_cli(["event", "publish", "T", "-S", "s"], cli_env(cold_home))  # running now: no start
    assert off.returncode == 4 and "starting" not in off.stderr


def test_an_ambiguous_id_wherever_it_is_resolved_is_a_usage_error():
    """`command wait` and `command run --after` resolve short ids themselves (commands/waiting.py):
    a prefix that fit several unfinished commands was an internal error (exit 1)."""
    from llmgine_cli.failure import error_line
    from llmgine_cli.ids import Ambiguous

    line, code = error_line(Ambiguous("command", "01", [("01a" + "0" * 33, None), ("01b" + "0" * 33, None)]), None)
    assert code == 2 and line.startswith("error: command '01' is ambiguous"), line
