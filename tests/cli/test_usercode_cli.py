"""`llmgine tool|handler ...` and `command get --trace` against a real daemon."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.clitools import one_line

WEATHER = textwrap.dedent('''
    def _round(x):
        return round(x, 1)

    async def get_weather(location: str, days: int = 1) -> dict:
        """Get weather information for a location.

        Args:
            location: City name
            days: how many days ahead
        """
        bus.log("info", "weather for " + location)
        return {"location": location, "days": days, "temperature_c": _round(21.04)}
''')
GREET = textwrap.dedent("""
    async def greet(command):
        weather = await bus.call_tool("get_weather", {"location": command.parameters["name"]})
        return {"hello": command.parameters["name"], "weather": weather}
""")


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def new_session(cli) -> str:
    result = cli("session", "create", "-q")
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


def test_tool_register_list_get_exec_delete(cli, tmp_path):
    sid = new_session(cli)
    path = write(tmp_path, "weather.py", WEATHER)
    result = cli("tool", "register", path, "--session", sid, "-o", "json")
    assert result.exit_code == 0, result.stderr
    tool = json.loads(result.stdout)
    # Name, description and parameters come from the function (found by the daemon's sandbox).
    assert tool["name"] == "get_weather"
    assert tool["description"] == "Get weather information for a location."
    assert tool["parameters"]["properties"]["location"] == {"type": "string", "description": "City name"}
    assert tool["parameters"]["required"] == ["location"] and tool["is_async"] is True

    again = cli("tool", "register", path, "--session", sid)
    assert again.exit_code == 6 and "CONFLICT" in one_line(again.stderr)
    # The way out as the CLI spells it (the daemon's message says ?replace=true, the HTTP way).
    assert "--replace replaces it" in one_line(again.stderr) and "?replace" not in again.stderr
    assert cli("tool", "register", path, "--session", sid, "--replace", "-q").stdout.strip() == "get_weather"
    named = cli("tool", "register", path, "-S", sid, "--name", "_round", "--description", "rounds", "-q")
    assert named.exit_code == 0, named.stderr

    listing = cli("tool", "list", "-S", sid, "-o", "plain")
    assert listing.exit_code == 0
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:2] == ["NAME", "PARAMETERS"]
    assert any(line.startswith("get_weather") and "location: string, days?: integer" in line for line in lines)
    assert cli("tool", "list", "-S", sid, "-q").stdout.split() == ["_round", "get_weather"]

    shown = cli("tool", "get", "get_weather", "-S", sid)
    assert "async def get_weather(location: str, days: int = 1) -> dict:" in shown.stdout
    assert json.loads(cli("tool", "get", "get_weather", "-S", sid, "-o", "json").stdout)["function_code"] == WEATHER

    run = cli(
        "tool", "exec", "get_weather", "-S", sid, "--arg", "location=Hobart", "--args", '{"days": 3}', "-o", "json"
    )
    assert run.exit_code == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["result"] == {"location": "Hobart", "days": 3, "temperature_c": 21.0} and out["error"] is None
    plain = cli("tool", "exec", "get_weather", "-S", sid, "-a", "location=Perth")
    assert "result.location" in plain.stdout and "Perth" in plain.stdout

    bad = cli("tool", "exec", "get_weather", "-S", sid, "--arg", "days:=2")
    assert bad.exit_code == 1 and "arguments.location" in one_line(bad.stderr)
    boom = write(tmp_path, "boom.py", "def boom():\n    raise ValueError('nope')\n")
    assert cli("tool", "register", boom, "-S", sid, "-q").exit_code == 0
    failed = cli("tool", "exec", "boom", "-S", sid)
    assert failed.exit_code == 1
    assert one_line(failed.stderr) == "error: tool boom failed: EXECUTION_FAILED: ValueError: nope"

    syntax = write(tmp_path, "syntax.py", "def broken(:\n    pass\n")
    rejected = cli("tool", "register", syntax, "-S", sid)
    assert rejected.exit_code == 1 and "syntax error at line 1" in one_line(rejected.stderr)

    assert cli("tool", "delete", "get_weather", "-S", sid, "-q").exit_code == 0
    gone = cli("tool", "exec", "get_weather", "-S", sid, "-a", "location=x")
    assert gone.exit_code == 4 and "TOOL_NOT_FOUND" in one_line(gone.stderr)
    assert cli("tool", "delete", "get_weather", "-S", sid).exit_code == 4
    missing = cli("tool", "register", str(tmp_path / "nope.py"), "-S", sid)
    assert missing.exit_code == 2


def test_tool_get_shows_escapes_in_the_source_instead_of_obeying_them(cli, tmp_path):
    """A tool's source is anybody's text (a session token may register code): `tool get` shows
    its terminal escapes (window title, screen clear, colours) as escapes, as `handler get`
    does; -o json keeps the source unchanged."""
    sid = new_session(cli)
    hostile = 'def t(x: str):\n    return "\x1b]0;pwned\x07\x1b[2J\x9b31m"\n'
    assert cli("tool", "register", write(tmp_path, "t.py", hostile), "-S", sid, "-q").exit_code == 0
    shown = cli("tool", "get", "t", "-S", sid)
    assert shown.exit_code == 0, shown.stderr
    assert not {"\x1b", "\x07", "\x9b"} & set(shown.stdout), repr(shown.stdout)
    assert 'return "\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m"' in shown.stdout
    assert json.loads(cli("tool", "get", "t", "-S", sid, "-o", "json").stdout)["function_code"] == hostile


def test_handlers_session_and_global(cli, tmp_path):
    sid = new_session(cli)
    assert cli("tool", "register", write(tmp_path, "w.py", WEATHER), "-S", sid, "-q").exit_code == 0
    greet = write(tmp_path, "greet.py", GREET)
    added = cli("handler", "add", "command", "Greet", greet, "--session", sid, "-o", "json")
    assert added.exit_code == 0, added.stderr
    handler = json.loads(added.stdout)
    assert handler["function"] == "greet" and handler["scope"] == "session"
    dup = cli("handler", "add", "command", "Greet", greet, "-S", sid)
    assert dup.exit_code == 6 and "CONFLICT" in one_line(dup.stderr)

    ran = cli("command", "run", "Greet", "-S", sid, "-p", "name=Ada", "-o", "json")
    assert ran.exit_code == 0, ran.stderr
    record = json.loads(ran.stdout)
    assert record["result"]["hello"] == "Ada" and record["result"]["weather"]["location"] == "Ada"

    # The command's trace, drawn: the HTTP request, the run, the handler, the tool.
    drawn = cli("command", "get", record["command_id"], "-S", sid, "--trace")
    assert drawn.exit_code == 0, drawn.stderr
    lines = drawn.stdout.splitlines()
    assert lines[0].startswith(f"trace {record['trace_id']}")
    names = [line.split()[1] if line.startswith("█") or line.startswith(" ") else "" for line in lines[1:]]
    body = "\n".join(lines[1:])
    for name in ("POST /api/sessions/{session_id}/commands", "command.run", "handler.run", "tool.call"):
        assert name in body, drawn.stdout
    indent = {
        n: next(line.index(n) for line in lines[1:] if n in line) for n in ("command.run", "handler.run", "tool.call")
    }
    assert indent["command.run"] < indent["handler.run"] < indent["tool.call"], (names, drawn.stdout)
    as_json = json.loads(cli("command", "get", record["command_id"], "-S", sid, "--trace", "-o", "json").stdout)
    assert as_json["trace_id"] == record["trace_id"]

    event_file = write(
        tmp_path,
        "on_tick.py",
        textwrap.dedent("""
        async def on_tick(event):
            await bus.publish("Tocked", {"n": event.data.get("n")})
    """),
    )
    ev = cli("handler", "add", "event", "Tick", event_file, "-S", sid, "--priority", "5", "-q")
    assert ev.exit_code == 0, ev.stderr
    glob = cli(
        "handler",
        "add",
        "command",
        "Shout",
        write(tmp_path, "shout.py", "def shout(command):\n    return command.parameters['text'].upper()\n"),
        "--global",
        "-o",
        "json",
    )
    assert glob.exit_code == 0, glob.stderr
    assert json.loads(glob.stdout)["scope"] == "global"
    assert json.loads(cli("command", "run", "Shout", "-S", sid, "-p", "text=hi", "-o", "json").stdout)["result"] == "HI"

    listing = cli("handler", "list", "-S", sid, "-o", "plain")
    rows = [line.split() for line in listing.stdout.splitlines()]
    assert rows[0][:4] == ["ID", "KIND", "TYPE", "SCOPE"]
    assert {(r[1], r[2]) for r in rows[1:]} == {("command", "Greet"), ("event", "Tick")}
    assert [r[1] for r in rows[1:] if r[2] == "Tick"] == ["event"]
    assert json.loads(cli("handler", "list", "-S", sid, "--kind", "event", "-o", "json").stdout)["total"] == 1
    glob_ids = cli("handler", "list", "--global", "-q").stdout.split()
    assert json.loads(glob.stdout)["handler_id"] in glob_ids
    source = json.loads(cli("handler", "get", ev.stdout.strip(), "-S", sid, "-o", "json").stdout)
    assert "async def on_tick" in source["handler_function"] and source["priority"] == 5

    assert cli("handler", "delete", "command", "Greet", "-S", sid, "-q").exit_code == 0
    gone = cli("command", "run", "Greet", "-S", sid, "-p", "name=x")
    assert gone.exit_code == 4 and "HANDLER_NOT_FOUND" in one_line(gone.stderr)
    assert cli("handler", "delete", "event", "Tick", "-S", sid).exit_code == 0
    again = cli("handler", "delete", "event", "Tick", "-S", sid)
    assert again.exit_code == 4 and "HANDLER_NOT_FOUND" in one_line(again.stderr)
    assert cli("handler", "delete", "command", "Shout", "--global").exit_code == 0
    nowhere = cli("handler", "list", LLMGINE_SESSION=None)
    assert nowhere.exit_code == 2 and "--global" in nowhere.stderr


def test_failing_handler_shows_the_users_error(cli, tmp_path):
    sid = new_session(cli)
    path = write(tmp_path, "bad.py", "def bad(command):\n    raise KeyError('missing key')\n")
    assert cli("handler", "add", "command", "Bad", path, "-S", sid, "-q").exit_code == 0
    result = cli("command", "run", "Bad", "-S", sid)
    assert result.exit_code == 1
    assert "COMMAND_EXECUTION_FAILED: KeyError: 'missing key'" in one_line(result.stderr)
    assert "error.details.exception_type" in result.stdout and "KeyError" in result.stdout
    assert "Traceback" not in result.stdout
    record = json.loads(cli("command", "list", "-S", sid, "-o", "json").stdout)["commands"][0]
    full = json.loads(cli("command", "get", record["command_id"], "-S", sid, "-o", "json").stdout)
    assert "raise KeyError('missing key')" in full["error"]["details"]["traceback"]


def test_user_codes_error_reaches_the_terminal_escaped(cli, tmp_path):
    """The error line of a failed `tool exec` and `command run` quotes the user code's exception
    message: written raw, its escapes cleared the operator's screen or set the window title."""
    sid = new_session(cli)
    code = "def evil(*args):\n    raise ValueError('\\x1b[2J\\x1b]0;pwned\\x07gone\\nforged line')\n"
    path = write(tmp_path, "evil.py", code)
    assert cli("tool", "register", path, "-S", sid, "-q").exit_code == 0
    assert cli("handler", "add", "command", "Evil", path, "-S", sid, "-q").exit_code == 0
    for argv, line in [
        (("tool", "exec", "evil"), "error: tool evil failed: EXECUTION_FAILED"),
        (("command", "run", "Evil"), "failed: COMMAND_EXECUTION_FAILED"),
    ]:
        result = cli(*argv, "-S", sid, "-o", "json")
        assert result.exit_code == 1, result.stderr
        assert line in one_line(result.stderr)
        assert "\x1b" not in result.stderr and "\x07" not in result.stderr
        assert "ValueError: \\x1b[2J\\x1b]0;pwned\\x07gone\\nforged line" in result.stderr


def test_a_spinning_tool_ends_with_the_daemons_timeout_not_the_clients(cli, tmp_path):
    """The client waits longer than the call may run in the sandbox (the tool's timeout here),
    so the daemon's TIMEOUT answer arrives instead of the CLI's own exit 7."""
    sid = cli("session", "create", "-q").stdout.strip()
    spin = write(tmp_path, "spin.py", "def spin():\n    while True:\n        pass\n")
    # The client's own timeout (2 s) is shorter than the tool's (3 s): without waiting for the
    # call's deadline it would give up first; with it, it has 2 s of slack for the answer (a
    # loaded machine needs some: 0.5 s was flaky).
    assert cli("tool", "register", spin, "-S", sid, "--timeout", "3", "-q").exit_code == 0
    ran = cli("--timeout", "2", "tool", "exec", "spin", "-S", sid)
    assert ran.exit_code == 1, ran.stderr
    assert "TIMEOUT" in one_line(ran.stderr)


def test_handler_add_replace(cli, tmp_path):
    # `tool register` had --replace, `handler add` not: a setup script run twice failed on its
    # command handler (exit 6) and doubled its event handlers (each ran twice).
    sid = new_session(cli)
    one = write(tmp_path, "one.py", "def one(command):\n    return 1\n")
    two = write(tmp_path, "two.py", "def two(command):\n    return 2\n")
    assert cli("handler", "add", "command", "V", one, "-S", sid, "-q").exit_code == 0
    taken = cli("handler", "add", "command", "V", two, "-S", sid)
    assert taken.exit_code == 6 and "--replace" in one_line(taken.stderr)
    replaced = cli("handler", "add", "command", "V", two, "-S", sid, "--replace", "-o", "json")
    assert replaced.exit_code == 0, replaced.stderr
    assert json.loads(replaced.stdout)["function"] == "two"
    assert json.loads(cli("command", "run", "V", "-S", sid, "-o", "json").stdout)["result"] == 2
    on = write(tmp_path, "on.py", "def on(event):\n    pass\n")
    for flags in ((), (), ("--replace",), ("--replace",)):
        assert cli("handler", "add", "event", "Tick", on, "-S", sid, "-q", *flags).exit_code == 0
    listed = json.loads(cli("handler", "list", "-S", sid, "--kind", "event", "-o", "json").stdout)
    assert [h["type"] for h in listed["handlers"]] == ["Tick"]
    helped = cli("handler", "add", "event", "--help")
    assert "--replace" in helped.stdout
    # A priority past 32 bits was the daemon's 422 quoting msgspec (exit 1); a usage error here.
    big = cli("handler", "add", "event", "Tick", on, "-S", sid, "-p", "99999999999999")
    assert big.exit_code == 2 and "-2147483648<=x<=2147483647" in big.stderr, big.stderr


def test_a_timeout_reads_as_a_duration(cli, tmp_path):
    """TIMEOUT in `tool list` and `handler list`, and `timeout` of a detail view, printed
    seconds as a bare float (`5.0`, `90.0`) where every other duration reads `35ms`, `2.5s`,
    `1m 5s` (README: Output); -o json keeps the number."""
    sid = new_session(cli)
    weather = write(tmp_path, "weather.py", WEATHER)
    assert cli("tool", "register", weather, "-S", sid, "--timeout", "5", "-q").exit_code == 0
    header, row = cli("tool", "list", "-S", sid, "-o", "plain").stdout.splitlines()
    assert row[header.index("TIMEOUT") :].split()[0] == "5.0s", (header, row)
    detail = cli("tool", "get", "get_weather", "-S", sid, "-o", "plain").stdout.splitlines()
    assert [line.split() for line in detail if line.startswith("timeout ")] == [["timeout", "5.0s"]]
    assert json.loads(cli("tool", "get", "get_weather", "-S", sid, "-o", "json").stdout)["timeout"] == 5.0
    greet = write(tmp_path, "greet.py", GREET)
    assert cli("handler", "add", "command", "Greet", greet, "-S", sid, "--timeout", "90", "-q").exit_code == 0
    header, row = cli("handler", "list", "-S", sid, "-o", "plain").stdout.splitlines()
    assert row[header.index("TIMEOUT") :].startswith("1m 30s "), (header, row)
