"""`llmgine command|event|engine ...` against a real daemon."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmgine_cli.app import app
from tests.clitools import Daemon, cleanup_home, free_port, one_line, short_home, start_daemon, stop_process

# One worker runs this module: its module-scoped daemons (SQLite, PostgreSQL) are set up once,
# not once per test (tests/scheduling.py).
pytestmark = pytest.mark.xdist_group("tests/cli/test_bus_cli.py")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def daemon(request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """This module runs twice: against a daemon on SQLite and one on PostgreSQL (a database of
    its own on the tests' server, tests/postgres.py)."""
    env, url, server = {}, None, None
    if request.param == "postgresql":
        server = request.getfixturevalue("pg_server")
        url = server.new_database()
        env["DATABASE_URL"] = url
    home = short_home()
    try:
        d = start_daemon(home, port=free_port(), env=env)
        yield d
        stop_process(d.proc)
    finally:
        cleanup_home(home)
        if server is not None and url is not None:
            server.drop_database(url)


def session_with_engine(cli, *config: str) -> tuple[str, str]:
    sid = cli("session", "create", "-q").stdout.strip()
    args = [arg for pair in config for arg in ("-c", pair)]
    result = cli("engine", "create", "DummyEngine", "--session", sid, "--model", "gpt-4", *args, "-q")
    assert result.exit_code == 0, result.stderr
    return sid, result.stdout.strip()


def test_command_run_waits_and_prints_the_result(cli):
    sid, _ = session_with_engine(cli)
    result = cli(
        "command",
        "run",
        "DummyEngineCommand",
        "--session",
        sid,
        "-p",
        "prompt=Hello",
        "--priority",
        "high",
        "--timeout",
        "30",
        "-o",
        "json",
    )
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "completed"
    assert record["result"]["response"] == "Dummy response to: Hello"
    assert record["metadata"] == {"priority": "high", "timeout": 30.0}
    # -q: only the id; LLMGINE_SESSION stands in for --session.
    result = cli("command", "run", "DummyEngineCommand", "--params", '{"prompt": "x"}', "-q", LLMGINE_SESSION=sid)
    assert result.exit_code == 0 and len(result.stdout.split()) == 1
    got = cli("command", "get", result.stdout.strip(), "--session", sid, "-o", "json")
    assert json.loads(got.stdout)["parameters"] == {"prompt": "x"}


def test_command_run_failure_and_timeout_exit_1(cli):
    sid, _ = session_with_engine(cli)
    result = cli("command", "run", "DummyEngineCommand", "-S", sid, "-p", "prompt=x", "-p", "fail:=true")
    assert result.exit_code == 1
    assert "COMMAND_EXECUTION_FAILED" in one_line(result.stderr)
    assert "failed" in result.stdout and "Traceback" not in result.stdout
    result = cli(
        "command",
        "run",
        "DummyEngineCommand",
        "-S",
        sid,
        "-p",
        "prompt=x",
        "-p",
        "delay_ms:=600000",
        "--timeout",
        "0.05",
        "-o",
        "json",
    )
    assert result.exit_code == 1
    assert json.loads(result.stdout)["status"] == "timed_out"


def test_a_command_refused_by_its_handler_names_the_parameter(cli):
    """A command that failed with VALIDATION_ERROR said only "Invalid request parameters":
    which parameter and why are in the error's details, which the line now names, as it
    does for a request the daemon refused."""
    sid, _ = session_with_engine(cli)
    for params, said in (
        ([], "(parameters.prompt: Field is required)"),
        (["-p", "prompt=x", "-p", "fail=true"], "(parameters.fail: must be of type boolean)"),
    ):
        result = cli("command", "run", "DummyEngineCommand", "-S", sid, *params)
        assert result.exit_code == 1, result.stderr
        assert one_line(result.stderr).endswith(f"failed: VALIDATION_ERROR: Invalid request parameters {said}")


def test_no_wait_list_and_cancel(cli):
    sid, _ = session_with_engine(cli)
    slow = cli(
        "command", "run", "DummyEngineCommand", "-S", sid, "-p", "prompt=s", "-p", "delay_ms:=600000", "--no-wait", "-q"
    )
    assert slow.exit_code == 0
    queued = cli("command", "run", "DummyEngineCommand", "-S", sid, "-p", "prompt=q", "--no-wait", "-o", "json")
    assert json.loads(queued.stdout)["status"] == "queued"
    listing = cli("command", "list", "-S", sid, "--status", "queued,executing", "-q")
    assert set(listing.stdout.split()) == {slow.stdout.strip(), json.loads(queued.stdout)["command_id"]}
    cancelled = cli("command", "cancel", slow.stdout.strip(), "-S", sid, "-o", "json")
    assert cancelled.exit_code == 0 and json.loads(cancelled.stdout)["status"] == "cancelled"
    again = cli("command", "cancel", slow.stdout.strip(), "-S", sid)
    assert again.exit_code == 6 and "CONFLICT" in one_line(again.stderr)
    missing = cli("command", "get", "nope", "-S", sid)
    assert missing.exit_code == 4 and "COMMAND_NOT_FOUND" in one_line(missing.stderr)


def test_command_errors(cli):
    sid = cli("session", "create", "-q").stdout.strip()
    result = cli("command", "run", "Nobody", "-S", sid)
    assert result.exit_code == 4 and "HANDLER_NOT_FOUND" in one_line(result.stderr)
    result = cli("command", "run", "DummyEngineCommand", "-S", "no-such-session")
    assert result.exit_code == 4 and "SESSION_NOT_FOUND" in one_line(result.stderr)
    result = cli("command", "run", "DummyEngineCommand", "-S", sid, "-p", "novalue")
    assert result.exit_code == 2
    result = cli("command", "run", "DummyEngineCommand", LLMGINE_SESSION=None)
    assert result.exit_code == 2 and "--session" in result.output
    # A validation error names the field and why, not only "Invalid request parameters".
    result = cli("event", "publish", "bad type", "-S", sid)
    line = one_line(result.stderr)
    assert result.exit_code == 1, line
    assert line.startswith("error: VALIDATION_ERROR: ") and "(event_type: must start with" in line


def test_a_batch_of_one_is_one_command(cli, tmp_path: Path):
    """The summary of a batch of one said `1 commands`."""
    sid, _ = session_with_engine(cli)
    path = tmp_path / "one.jsonl"
    path.write_text('{"command_type": "DummyEngineCommand", "parameters": {"prompt": "a"}}\n')
    result = cli("command", "batch", "-S", sid, "-f", str(path), "-o", "plain")
    assert result.exit_code == 0, result.stderr
    assert one_line(result.stderr).endswith(": 1 command, 1 completed"), result.stderr


def test_batch_jsonl_file_and_stdin(cli, tmp_path: Path, daemon):
    sid, _ = session_with_engine(cli)
    lines = [{"command_type": "DummyEngineCommand", "parameters": {"prompt": p}} for p in ("a", "b", "c")]
    path = tmp_path / "batch.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    result = cli("command", "batch", "-S", sid, "-f", str(path), "--sequential", "-o", "jsonl")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["result"]["response"] for r in records] == [f"Dummy response to: {p}" for p in "abc"]
    assert len({r["batch_id"] for r in records}) == 1

    # A JSON array on stdin; one failure: exit 1, a summary on stderr.
    lines[1]["parameters"]["fail"] = True
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["command", "batch", "-S", sid, "-f", "-", "--stop-on-error", "--sequential"],
        input=json.dumps(lines),
        env=dict(daemon.env),
        catch_exceptions=False,
    )
    assert result.exit_code == 1
    assert "1 cancelled, 1 completed, 1 failed" in result.stderr
    rows = result.stdout.splitlines()
    assert rows[0].split()[:4] == ["#", "ID", "TYPE", "STATUS"] and len(rows) == 4

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"command_type": "DummyEngineCommand"}\nnot json\n')
    result = cli("command", "batch", "-S", sid, "-f", str(bad))
    assert result.exit_code == 2 and "line 2" in result.output
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps([lines[0], {"command_type": "DummyEngineCommand", "metadata": {"priority": "x"}}]))
    result = cli("command", "batch", "-S", sid, "-f", str(invalid))
    assert result.exit_code == 1 and "VALIDATION_ERROR" in one_line(result.stderr)


@pytest.mark.parametrize("number", ["1e400", "-Infinity", "NaN"])
def test_json_input_that_is_not_json_is_refused(cli, tmp_path: Path, number):
    # Python's json takes NaN, Infinity and 1e400 (inf); the request then carried null in
    # their place, silently. They are usage errors, as the daemon's JSON refuses them too.
    sid, _ = session_with_engine(cli)
    path = tmp_path / "batch.jsonl"
    path.write_text(f'{{"command_type": "DummyEngineCommand", "parameters": {{"n": {number}}}}}\n')
    for args in (
        ("command", "batch", "-S", sid, "-f", str(path)),
        ("schedule", "add", "DummyEngineCommand", "-S", sid, "--every", "60", "--params", f'{{"n": {number}}}'),
        ("engine", "create", "DummyEngine", "-S", sid, "--config", f"n:={number}"),
    ):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert number in one_line(result.stderr), args
    listed = cli("command", "list", "-S", sid, "-o", "json")
    assert json.loads(listed.stdout)["total"] == 0


def test_ps_takes_the_session_as_every_command_does(cli):
    # `ps --session` took only a full id: the short id it shows listed nothing.
    sid, _ = session_with_engine(cli)
    busy = cli(
        "command", "run", "DummyEngineCommand", "-S", sid, "-p", "prompt=x", "-p", "delay_ms:=600000", "--no-wait"
    )
    cid = json.loads(cli("command", "get", busy.stdout.split()[1], "-S", sid, "-o", "json").stdout)["command_id"]
    try:
        for ref in (sid[-8:], sid[:13]):
            listed = json.loads(cli("ps", "--session", ref, "-o", "json").stdout)
            assert [c["command_id"] for c in listed["commands"]] == [cid], ref
    finally:
        cli("command", "cancel", cid, "-S", sid)


def test_after_takes_the_short_id_ps_shows(cli):
    # --after took only a full id: the short id of the command it waits for was COMMAND_NOT_FOUND.
    sid, _ = session_with_engine(cli)
    run = ["command", "run", "DummyEngineCommand", "-S", sid, "-p", "prompt=x"]
    first = cli(*run, "-p", "delay_ms:=600000", "--no-wait", "-q").stdout.strip()
    try:
        then = cli(*run, "--after", first[-8:], "--no-wait", "-o", "json")
        assert then.exit_code == 0, then.stderr
        assert json.loads(then.stdout)["status"] == "blocked"
    finally:
        cli("command", "cancel", first, "-S", sid)


def test_retry_takes_short_ids_and_prefixes(cli):
    # `command retry SHORT -S S` was COMMAND_NOT_FOUND "in session S" for a command listed there.
    sid, _ = session_with_engine(cli)
    run = ["command", "run", "DummyEngineCommand", "-S", sid, "-p", "prompt=x", "-p", "fail:=true", "-q"]
    cid = cli(*run).stdout.strip()
    for ref in (cid[-8:], cid[:13]):
        cli("command", "wait", cid, "-q")
        again = cli("command", "retry", ref, "-S", sid, "-q")
        assert again.exit_code == 0 and again.stdout.strip() == cid, (ref, again.stderr)
    assert cli("command", "retry", "nope", "-S", sid).exit_code == 4


def test_engine_exec_reads_the_prompt_from_stdin_with_a_dash(daemon):
    # As `llmgine ask -`: `cat prompt.txt | llmgine engine exec ID -` sent the prompt "-".
    runner = CliRunner()
    env = dict(daemon.env)
    sid = runner.invoke(app, ["session", "create", "-q"], env=env).stdout.strip()
    eid = runner.invoke(app, ["engine", "create", "DummyEngine", "-S", sid, "-q"], env=env).stdout.strip()
    result = runner.invoke(app, ["engine", "exec", eid, "-", "-o", "json"], input="piped prompt", env=env)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["result"]["response"] == "Dummy response to: piped prompt"


def test_events(cli):
    sid = cli("session", "create", "-q").stdout.strip()
    eid = cli("event", "publish", "StatusUpdate", "-S", sid, "--data", '{"status": "processing"}', "-q")
    assert eid.exit_code == 0
    for i in range(3):
        cli("event", "publish", "Tick", "-S", sid, "-d", json.dumps({"i": i}), "-m", "source=engine")
    got = json.loads(cli("event", "get", eid.stdout.strip(), "-S", sid, "-o", "json").stdout)
    assert got["data"] == {"status": "processing"} and got["source"] == "api"
    page = json.loads(cli("event", "list", "-S", sid, "--type", "Tick", "--limit", "2", "-o", "json").stdout)
    assert page["total"] == 3 and [e["data"]["i"] for e in page["events"]] == [0, 1]
    rest = json.loads(
        cli("event", "list", "-S", sid, "--type", "Tick", "--after", str(page["next_after"]), "-o", "json").stdout
    )
    assert [e["data"]["i"] for e in rest["events"]] == [2]
    recent = cli("event", "list", "-S", sid, "--since", "10m", "--source", "engine", "-o", "jsonl")
    assert len(recent.stdout.splitlines()) == 3
    assert cli("event", "list", "-S", sid, "--since", "soon").exit_code == 2
    plain = cli("event", "list", "-S", sid, "--type", "Status*")
    assert plain.stdout.splitlines()[0].split() == ["SEQ", "TYPE", "SOURCE", "TIME", "DATA"]
    missing = cli("event", "get", "nope", "-S", sid)
    assert missing.exit_code == 4 and "EVENT_NOT_FOUND" in one_line(missing.stderr)
    # By the seq the listing shows (it shows no id): that was EVENT_NOT_FOUND.
    seq = plain.stdout.splitlines()[1].split()[0]
    by_seq = json.loads(cli("event", "get", seq, "-S", sid, "-o", "json").stdout)
    assert by_seq == got and str(got["seq"]) == seq
    other = cli("session", "create", "-q").stdout.strip()
    assert cli("event", "get", seq, "-S", other).exit_code == 4  # another session's seq
    # A number past any seq was VALIDATION_ERROR about `after` (exit 1), a parameter not given.
    huge = cli("event", "get", "9" * 21, "-S", sid)
    assert huge.exit_code == 4 and "EVENT_NOT_FOUND" in huge.stderr and "after" not in huge.stderr


def test_control_characters_in_data_never_reach_the_terminal(cli):
    """Event data is anybody's text: a row stays one line when piped, and escape sequences
    (colours, window title, cursor moves) print as visible escapes."""
    sid = cli("session", "create", "-q").stdout.strip()
    hostile = "line one\nline two\x1b]0;pwned\x07\x1b[2J"
    cli("event", "publish", "Note", "-S", sid, "-d", json.dumps({"text": hostile}))
    listing = cli("event", "list", "-S", sid, "--type", "Note")
    assert listing.exit_code == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert len(lines) == 2  # the header and one row
    assert "\x1b" not in listing.stdout and "\x07" not in listing.stdout
    assert "line one\\nline two\\u001b]0;pwned\\u0007" in lines[1]  # a cell is compact JSON
    # Key/value output keeps line breaks in a table only (plain is a line per key:
    # test_terminal_safety.py), never the escapes.
    one = cli(
        "event",
        "get",
        json.loads(cli("event", "list", "-S", sid, "--type", "Note", "-o", "json").stdout)["events"][0]["event_id"],
        "-S",
        sid,
        "-o",
        "table",
    )
    assert "\x1b" not in one.stdout and "line one" in one.stdout and "line one\\n" not in one.stdout
    # JSON is unchanged data.
    page = json.loads(cli("event", "list", "-S", sid, "--type", "Note", "-o", "json").stdout)
    assert page["events"][0]["data"]["text"] == hostile


def test_engines(cli):
    types = cli("engine", "types", "-q")
    assert "DummyEngine" in types.stdout.split()
    sid, eid = session_with_engine(cli, "delay_ms:=0", "temperature:=0.5")
    got = json.loads(cli("engine", "get", eid, "-o", "json").stdout)
    assert got["configuration"] == {"delay_ms": 0, "temperature": 0.5} and got["model_name"] == "gpt-4"
    assert eid in cli("engine", "list", "--session", sid, "--status", "active", "-q").stdout.split()
    run = cli("engine", "exec", eid, "Hello, world!", "-o", "json")
    assert run.exit_code == 0, run.stderr
    assert json.loads(run.stdout)["result"]["response"] == "Dummy response to: Hello, world!"
    later = cli("engine", "exec", eid, "later", "--no-wait", "-q")
    assert later.exit_code == 0 and later.stdout.strip()
    dup = cli("engine", "create", "DummyEngine", "-S", sid)
    assert dup.exit_code == 6 and "CONFLICT" in one_line(dup.stderr)
    bad = cli("engine", "create", "Nope", "-S", sid)
    assert bad.exit_code == 1 and "VALIDATION_ERROR" in one_line(bad.stderr)
    assert cli("engine", "delete", eid, "-q").stdout.strip() == eid
    gone = cli("engine", "get", eid)
    assert gone.exit_code == 4 and "ENGINE_NOT_FOUND" in one_line(gone.stderr)


def test_a_bad_command_in_a_batch_file_names_its_line(cli, tmp_path: Path):
    # A line without command_type was the daemon's 422 "commands[1].command_type: Field is
    # required" (exit 1): the index counts commands, not the file's lines (blank ones skipped),
    # and a bad type quoted a regex. The file is checked here now: a usage error naming the line.
    sid = cli("session", "create", "-q").stdout.strip()
    for text, words in (
        ('{"command_type": "A"}\n\n{"parameters": {}}\n', "line 3: command_type: Field is required"),
        ('{"command_type": "A", "extra": 1}\n', "line 1: extra: Unknown field"),
        ('[{"command_type": "bad type"}]', "item 0: command_type: must start with a letter"),
    ):
        (tmp_path / "b.jsonl").write_text(text)
        result = cli("command", "batch", "-f", str(tmp_path / "b.jsonl"), "-S", sid)
        assert result.exit_code == 2 and words in result.stderr and "regex" not in result.stderr, result.stderr
    assert json.loads(cli("session", "get", sid, "-o", "json").stdout)["counts"]["commands"] == 0


def test_an_unknown_engine_type_names_the_types_there_are(cli):
    # "unknown engine type 'Nope'" said nothing of the types (they were in the 422's details).
    sid = cli("session", "create", "-q").stdout.strip()
    result = cli("engine", "create", "Nope", "-S", sid)
    assert result.exit_code == 1 and "unknown engine type 'Nope': one of " in result.stderr
    assert "DummyEngine" in one_line(result.stderr)
