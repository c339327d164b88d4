"""The exit codes of README's "Output, scripting and exit codes" (and docs/cli.md), command by
command: the daemon's 422 is an API error (1) whichever command met it, on the Typer path and
on the fast path of a real process (hot.py); a value the CLI itself can tell is bad is a usage
error (2) and sends nothing; 404 is 4, 409 is 6."""

from __future__ import annotations

import json

import pytest

from tests.clitools import run_cli

LONG = "x" * 300  # past every name's limit (256 for a session, 100 for a key)

# Each one reaches the daemon and is refused there with 422 VALIDATION_ERROR.
DAEMON_422 = {
    "session create": ["session", "create", "--name", LONG],
    "session fork": ["session", "fork", "{sid}", "--name", LONG],
    "event publish": ["event", "publish", "bad type!", "-S", "{sid}"],
    "command run": ["command", "run", "bad type!", "-S", "{sid}"],
    "handler add": ["handler", "add", "event", "a b", "{file}", "-S", "{sid}"],
    "webhook add": ["webhook", "add", "ftp://example.com"],
    "auth key create": ["auth", "key", "create", "--name", LONG],
    "schedule add": ["schedule", "add", "--cron", "nope", "DummyEngineCommand", "-S", "{sid}"],
    "engine create": ["engine", "create", "Nope", "-S", "{sid}"],
}
# The hot commands (hot.py) answer without Typer only in a real process.
HOT = {"event publish", "command run"}


@pytest.fixture
def setting(cli, tmp_path):
    sid = cli("session", "create", "-q").stdout.strip()
    handler = tmp_path / "h.py"
    handler.write_text("def handle(event, bus):\n    pass\n")
    return {"sid": sid, "file": str(handler)}


@pytest.mark.parametrize("case", list(DAEMON_422))
def test_the_daemons_422_is_exit_1_in_every_command(cli, daemon, setting, case):
    args = [part.format(**setting) for part in DAEMON_422[case]]
    result = cli(*args)
    assert result.exit_code == 1, (case, result.exit_code, result.stderr)
    assert result.stderr.startswith("error: VALIDATION_ERROR: "), result.stderr
    if case in HOT:
        process = run_cli(args, daemon.env)
        assert (process.returncode, process.stderr) == (1, result.stderr), process.stderr


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["session", "create", "--name", ""], "--name"),
        (["session", "create", "--name", "   "], "--name"),
        (["session", "create", "--name", "\t", "--reuse"], "--name"),
        (["session", "create", "--name", "", "--allow-duplicate"], "--name"),
        (["session", "fork", "{sid}", "--name", " "], "--name"),
    ],
)
def test_an_empty_or_blank_session_name_is_a_usage_error(cli, daemon, setting, args, option):
    # `--name ""` (a variable left unset) made a session named "" (exit 0), while the same
    # name with --reuse was a usage error and the daemon now refuses it (422): one answer here,
    # exit 2, and no session made.
    before = json.loads(cli("session", "list", "--all", "-o", "json", "-n", "1").stdout)["total"]
    args = [part.format(**setting) for part in args]
    result = cli(*args)
    assert result.exit_code == 2, (args, result.exit_code, result.stdout, result.stderr)
    assert f"Invalid value for {option}: the name is empty or only whitespace" in result.stderr, result.stderr
    assert result.stdout == ""
    assert json.loads(cli("session", "list", "--all", "-o", "json", "-n", "1").stdout)["total"] == before
    process = run_cli(args, daemon.env)  # (and as a real process)
    assert process.returncode == 2 and "the name is empty or only whitespace" in process.stderr, process.stderr


def test_usage_errors_not_found_and_conflict_keep_their_codes(cli, setting):
    sid = setting["sid"]
    assert cli("session", "list", "--status", "nope").exit_code == 2
    assert cli("log", "").exit_code == 2
    assert cli("session", "get", "no-such-session").exit_code == 4
    assert cli("event", "get", "01a20000-0000-7000-8000-000000000000", "-S", sid).exit_code == 4
    name = f"taken-{sid}"
    assert cli("session", "create", "--name", name, "-q").exit_code == 0
    assert cli("session", "create", "--name", name).exit_code == 6
