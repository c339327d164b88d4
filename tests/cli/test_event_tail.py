"""`llmgine event tail`: usage errors, unknown sessions, --since parsing (the live part is in
tests/e2e/test_event_tail.py)."""

from __future__ import annotations

import datetime as dt
import io
import json
import re

import pytest
import typer

from llmgine_cli.commands.event_tail import parse_since
from tests.clitools import spawn_cli
from tests.eventually import eventually_blocking


def test_needs_a_session_or_all(cli):
    result = cli("event", "tail", LLMGINE_SESSION=None)
    assert result.exit_code == 2 and "LLMGINE_SESSION" in result.stderr
    assert cli("event", "tail", "abc", "--all").exit_code == 2


def test_the_session_defaults_to_llmgine_session(cli):
    # As for every other command that takes -S: the environment names the session.
    result = cli("event", "tail", "--no-reconnect", LLMGINE_SESSION="no-such-session")
    assert result.exit_code == 4 and "SESSION_NOT_FOUND" in result.stderr, result.stderr


def test_unknown_session_is_not_found(cli):
    result = cli("event", "tail", "no-such-session", "--no-reconnect")
    assert result.exit_code == 4
    assert "SESSION_NOT_FOUND" in result.stderr and "Traceback" not in result.stderr
    # -S/--session, as the other commands take a session, means the same.
    result = cli("event", "tail", "-S", "no-such-session", "--no-reconnect")
    assert result.exit_code == 4 and "SESSION_NOT_FOUND" in result.stderr
    assert cli("event", "tail", "a", "-S", "b").exit_code == 2


def test_command_run_follow_of_a_command_that_finishes_at_once(cli):
    """DummyEngine without delay finishes in the write that stores it: --follow still prints
    all its events, then the record."""
    sid = cli("session", "create", "-q").stdout.strip()
    assert cli("engine", "create", "DummyEngine", "--session", sid, "-q").exit_code == 0
    result = cli("command", "run", "DummyEngineCommand", "-S", sid, "-p", "prompt=now", "--follow", "-o", "jsonl")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-1]["status"] == "completed"
    assert [e["event_type"] for e in lines[:-1]] == [
        "CommandStarted",
        "DummyEngineStatusUpdate",
        "DummyEngineStatusUpdate",
        "CommandResult",
    ]


def test_bad_since_is_a_usage_error(cli):
    result = cli("event", "tail", "--all", "--since", "yesterday")
    assert result.exit_code == 2


def test_parse_since():
    assert parse_since(None) is None and parse_since("now") is None
    assert parse_since("all") == 0 and parse_since("42") == 42
    ten_min = dt.datetime.fromisoformat(parse_since("10m").replace("Z", "+00:00"))
    age = dt.datetime.now(dt.UTC) - ten_min
    assert dt.timedelta(minutes=9) < age < dt.timedelta(minutes=11)
    assert parse_since("2024-01-01T00:00:00Z") == "2024-01-01T00:00:00Z"
    # As every other --since (and the daemon) reads them: weeks, any case, and "too long ago"
    # (1w was a usage error here alone; 99999999999d an OverflowError).
    week = dt.datetime.fromisoformat(parse_since("1W").replace("Z", "+00:00"))
    assert dt.timedelta(days=6) < dt.datetime.now(dt.UTC) - week < dt.timedelta(days=8)
    assert parse_since("99999999999d") == "0001-01-01T00:00:00.000000Z"
    with pytest.raises(typer.BadParameter):  # a digit to str.isdigit(), not to int(): was an internal error
        parse_since("²")
    with pytest.raises(typer.BadParameter):
        parse_since("soon")


def test_a_tailed_event_cannot_drive_the_terminal():
    """User code may publish any text as an event's type: the tail printed it raw, so a type
    holding ESC [2J cleared the watcher's screen; JSON escapes the data's C0 controls but not
    C1 (an 8-bit CSI) or U+2028. Both lines, plain and rich, show them as escapes."""
    from llmgine_daemon.protocol import Event
    from rich.console import Console

    from llmgine_cli.live import event_line, event_text

    event = Event(
        event_id="e",
        seq=7,
        session_id="01a24d36-7a5c-7035-abf4-3f7d4bbc7375",
        event_type="x\x1b[2Jy",
        data={"k": "a\x9b31mb\u2028c"},
        metadata={},
        timestamp="2026-01-01T00:00:00Z",
        source="handler",
    )
    console = Console(width=200, record=True, color_system=None, file=io.StringIO())
    console.print(event_text(event, 200), no_wrap=True, crop=True)
    for text in (event_line(event), console.export_text()):
        assert "\x1b" not in text and "\x9b" not in text and "\u2028" not in text, repr(text)
        assert "x\\x1b[2Jy" in text and "a\\x9b31mb\\u2028c" in text, text


def test_an_answer_or_a_tool_line_cannot_drive_the_terminal():
    """A model's answer (text a tool fetched from a page) and a tool's error message reached
    the terminal raw in `ask`/`chat`: ESC [2J in them cleared the screen. Shown as escapes;
    the answer keeps its line breaks."""
    from llmgine_cli.context import Environment
    from llmgine_cli.live import RichAnswer

    out, err = io.StringIO(), io.StringIO()
    with RichAnswer(Environment(out, err, True, True, {})) as answer:
        answer.delta("one\n\x1b[2Jtwo")
        answer.tool_call({"tool_name": "t\x1b[31m", "arguments": {"a": "\x9b"}})
        answer.tool_result({"tool_name": "t", "error": {"code": "TOOL_FAILED", "message": "bad\x1b]0;title\x07"}})
        answer.finish("")
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())  # rich's own colours and cursor moves
    assert "\x1b" not in drawn and "\x9b" not in drawn and "\x07" not in drawn, repr(drawn)
    assert "\\x1b[2Jtwo" in drawn and "bad\\x1b]0;title\\x07" in drawn and "\\x9b" in drawn, drawn


def test_command_run_follow_prints_its_events_then_the_result(cli):
    sid = cli("session", "create", "-q").stdout.strip()
    assert cli("engine", "create", "DummyEngine", "--session", sid, "-q").exit_code == 0
    # Another command's events in the same session, before ours: not printed.
    assert cli("command", "run", "DummyEngineCommand", "-S", sid, "-p", "prompt=before").exit_code == 0
    result = cli(
        "command",
        "run",
        "DummyEngineCommand",
        "-S",
        sid,
        "-p",
        "prompt=hi",
        "-p",
        "delay_ms:=50",
        "--follow",
        "-o",
        "jsonl",
    )
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    events, record = lines[:-1], lines[-1]
    assert record["status"] == "completed"
    assert [e["event_type"] for e in events] == [
        "CommandStarted",
        "DummyEngineStatusUpdate",
        "DummyEngineStatusUpdate",
        "CommandResult",
    ]
    assert {e["data"]["command_id"] for e in events} == {record["command_id"]}
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)


def test_command_run_follow_failure_exits_1(cli):
    sid = cli("session", "create", "-q").stdout.strip()
    assert cli("engine", "create", "DummyEngine", "--session", sid, "-q").exit_code == 0
    result = cli(
        "command",
        "run",
        "DummyEngineCommand",
        "-S",
        sid,
        "-p",
        "prompt=x",
        "-p",
        "fail:=true",
        "--follow",
        "-o",
        "plain",
    )
    assert result.exit_code == 1
    assert "CommandResult" in result.stdout and "COMMAND_EXECUTION_FAILED" in result.stderr


@pytest.mark.parametrize("columns", [80, 150])
def test_command_run_follow_on_a_terminal_draws_one_line_per_event(cli, columns):
    # On a terminal --follow printed the plain lines (each ~170 characters: two or three rows
    # of an 80-column terminal per event); it draws them as `event tail` does, cut to fit.
    import re

    sid = cli("session", "create", "-q").stdout.strip()
    assert cli("engine", "create", "DummyEngine", "--session", sid, "-q").exit_code == 0
    args = ["command", "run", "DummyEngineCommand", "-S", sid, "-p", "prompt=" + "x" * 300, "--follow"]
    result = cli(*args, "-o", "table", COLUMNS=str(columns))
    assert result.exit_code == 0, result.stderr
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in result.stdout.splitlines()]
    rows = [line for line in lines if re.match(r"\d\d:\d\d:\d\d \S+ #\d+ ", line)]
    assert [row.split()[4] for row in rows] == [
        "CommandStarted",
        "DummyEngineStatusUpdate",
        "DummyEngineStatusUpdate",
        "CommandResult",
    ], lines
    assert all(len(row) <= columns for row in rows) and rows[0].endswith("…"), rows


def test_command_run_follow_is_not_ended_by_a_forged_command_result(cli, daemon):
    """Any member of the session may publish a CommandResult naming a command: --follow took
    it for the end and stopped printing: the rest of the command's events, its real
    CommandResult among them, were never shown. It ends at the daemon's own (source "bus")."""
    sid = cli("session", "create", "-q").stdout.strip()
    assert cli("engine", "create", "DummyEngine", "--session", sid, "-q").exit_code == 0
    args = ["command", "run", "DummyEngineCommand", "-S", sid, "-p", "prompt=x", "-p", "delay_ms:=1500"]
    proc = spawn_cli([*args, "--follow", "-o", "jsonl"], daemon.env)
    try:

        def executing() -> str | None:
            listed = json.loads(cli("command", "list", "-S", sid, "-o", "json").stdout)["commands"]
            return next((c["command_id"] for c in listed if c["status"] == "executing"), None)

        cid = eventually_blocking(executing, timeout=30, message="the command executing")
        forged = json.dumps({"command_id": cid, "status": "completed", "result": {"forged": True}})
        assert cli("event", "publish", "CommandResult", "-S", sid, "--data", forged, "-q").exit_code == 0
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[-1]["status"] == "completed" and lines[-1]["result"] != {"forged": True}
    results = [e["source"] for e in lines[:-1] if e["event_type"] == "CommandResult"]
    assert results == ["api", "bus"]  # the forged one is shown (it is in the log), then the end


def test_an_unknown_source_is_a_usage_error_as_every_other_choice(cli):
    # `event list|tail --source nope` went to the daemon: exit 1 and its 422, where every
    # other option with a fixed set of values (--status, --kind, --priority) is exit 2 here.
    sid = cli("session", "create", "-q").stdout.strip()
    for args in (("event", "list", "-S", sid), ("event", "tail", sid, "--source", "api")):
        result = cli(*args, "--source", "nope")
        assert result.exit_code == 2, (args, result.stderr)
        assert "'nope' is not one of api, engine, handler, bus" in result.stderr
    assert cli("event", "list", "-S", sid, "--source", "api").exit_code == 0
    # The help says what a pipe gets: JSON lines (not "plain text", as other listings).
    assert "jsonl when piped" in re.sub(r"\s+", " ", cli("event", "tail", "--help").stdout)


def test_follow_with_no_wait_or_quiet_is_a_usage_error(cli):
    # `command run --follow --no-wait` printed no event and `--follow -q` printed the events
    # before the id (`ID=$(... --follow -q)` held them), both without a word; as --on-done
    # with --no-wait, each pair is now a usage error (exit 2), and nothing is submitted.
    sid = cli("session", "create", "-q").stdout.strip()
    for extra, words in ((["--no-wait"], "--no-wait"), (["-q"], "-q prints only the id")):
        result = cli("command", "run", "DummyEngineCommand", "-S", sid, "-p", "prompt=x", "--follow", *extra)
        assert result.exit_code == 2 and words in result.stderr, result.stderr
    assert json.loads(cli("session", "get", sid, "-o", "json").stdout)["counts"]["commands"] == 0
