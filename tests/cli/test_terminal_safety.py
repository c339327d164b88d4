"""Anybody's text never drives the operator's terminal: a session token's holder (or user code,
or a model) writes event data, tool results and tool-call arguments that `llmgine` prints.
Every renderer shows terminal controls as escapes: key/value keys, JSON output, templates, the
followed events of `command run`, the approval prompt."""

from __future__ import annotations

import json

from llmgine_cli.approve_inline import call_text

# A window title (OSC 0), a screen clear (CSI 2J), an 8-bit CSI and OSC (U+009B, U+009D: a
# terminal decoding UTF-8 obeys them), a right-to-left override, a line separator, DEL.
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\r\x9b31m\x9d0;t\x9c\u202eevil\u2028y\x7f\u200f"
OBEYED = {"\x1b", "\x07", "\r", "\x9b", "\x9d", "\x9c", "\u202e", "\u2028", "\x7f", "\u200f"}


def obeyed(text: str) -> set[str]:
    return OBEYED & set(text)


def _hostile_event(cli) -> tuple[str, str]:
    sid = cli("session", "create", "-q").stdout.strip()
    data = json.dumps({HOSTILE: HOSTILE, "nested": {HOSTILE: 1}})
    published = cli("event", "publish", "Note", "-S", sid, "-d", data, "-q")
    assert published.exit_code == 0, published.stderr
    return sid, published.stdout.strip()


def test_the_keys_of_anybodys_data_are_shown_as_escapes(cli):
    """Key/value output (`event get`, `command get`, `tool exec`...) escaped the values but
    printed the flattened keys raw: an event whose data had the key ESC ]0;title BEL ESC [2J
    set the operator's window title and cleared the screen."""
    sid, eid = _hostile_event(cli)
    for fmt in ("plain", "table"):
        shown = cli("event", "get", eid, "-S", sid, "-o", fmt)
        assert shown.exit_code == 0, shown.stderr
        assert not obeyed(shown.stdout), repr(shown.stdout)
        assert "data.\\x1b]0;pwned\\x07\\x1b[2J\\r\\x9b31m" in shown.stdout, shown.stdout
        assert "data.nested.\\x1b]0;pwned" in shown.stdout, shown.stdout


def test_json_output_shows_terminal_controls_as_escapes(cli):
    """JSON escapes C0 controls but not DEL, C1 (an 8-bit CSI or OSC), U+2028 nor the bidi
    overrides: `-o json` on a terminal obeyed them. They are written as \\u escapes: the same
    JSON values, which scripts read unchanged."""
    sid, eid = _hostile_event(cli)
    expected = {HOSTILE: HOSTILE, "nested": {HOSTILE: 1}}
    one = cli("event", "get", eid, "-S", sid, "-o", "json")
    assert not obeyed(one.stdout), repr(one.stdout)
    assert json.loads(one.stdout)["data"] == expected
    listed = cli("event", "list", "-S", sid, "--type", "Note", "-o", "jsonl")
    assert not obeyed(listed.stdout), repr(listed.stdout)
    assert json.loads(listed.stdout)["data"] == expected
    for template in ("{{json .data}}", "{{.}}"):
        shown = cli("event", "list", "-S", sid, "--type", "Note", "-o", template)
        assert shown.exit_code == 0, shown.stderr
        assert not obeyed(shown.stdout), repr(shown.stdout)
    assert json.loads(cli("event", "list", "-S", sid, "--type", "Note", "-o", "{{json .data}}").stdout) == expected


def test_followed_events_in_json_show_terminal_controls_as_escapes(cli):
    sid = cli("session", "create", "-q").stdout.strip()
    assert cli("engine", "create", "DummyEngine", "--session", sid, "-q").exit_code == 0
    run = cli("command", "run", "DummyEngineCommand", "-S", sid, "-p", f"prompt={HOSTILE}", "--follow", "-o", "jsonl")
    assert run.exit_code == 0, run.stderr
    assert not obeyed(run.stdout), repr(run.stdout)
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert "\u202eevil" in lines[-1]["result"]["response"]  # DummyEngine echoes the prompt


def test_the_approval_prompt_shows_a_calls_controls_as_escapes():
    """The line a person approves a tool call on: a model's arguments (text from a page it
    read) could carry a right-to-left override or an 8-bit CSI in a value, and anything in a
    key or the tool's name, and make the call read as another."""
    text = call_text("run\x1b[2K", {"cmd": "ls \u202e; rm -rf ~ \x9b2K", "k\x1b]0;t\x07": 1})
    assert not obeyed(text), repr(text)
    assert text == 'run\\x1b[2K(cmd="ls \\u202e; rm -rf ~ \\u009b2K", k\\x1b]0;t\\x07=1)'


def test_a_traces_errors_are_shown_as_escapes(cli, tmp_path):
    """A span's error is user code's exception text: `llmgine trace` (and `command get
    --trace`) printed it raw, so a handler raising ESC ]0;title BEL ESC [2J drove the
    terminal of whoever looked at its trace."""
    sid = cli("session", "create", "-q").stdout.strip()
    code = tmp_path / "boom.py"
    code.write_text(f"def handle(command):\n    raise RuntimeError({HOSTILE!r})\n")
    added = cli("handler", "add", "command", "Boom", str(code), "-S", sid)
    assert added.exit_code == 0, added.stderr
    failed = cli("command", "run", "Boom", "-S", sid, "-q")
    assert failed.exit_code == 1
    cid = cli("command", "list", "-S", sid, "-q").stdout.split()[0]
    shown = cli("command", "get", cid, "-S", sid, "--trace")
    assert shown.exit_code == 0, shown.stderr
    assert not obeyed(shown.stdout), repr(shown.stdout)
    assert "error: HandlerFailed: RuntimeError: \\x1b]0;pwned\\x07\\x1b[2J" in shown.stdout, shown.stdout


def test_metric_labels_are_shown_as_escapes(cli, tmp_path):
    """User code may publish any text as an event's type, which becomes the `type` label of
    events_published_total: `llmgine metrics` printed the label raw."""
    sid = cli("session", "create", "-q").stdout.strip()
    code = tmp_path / "pub.py"
    code.write_text(f"async def handle(command):\n    await bus.publish({'T' + HOSTILE!r}, {{}})\n    return 1\n")
    assert cli("handler", "add", "command", "Pub", str(code), "-S", sid).exit_code == 0
    assert cli("command", "run", "Pub", "-S", sid, "-q").exit_code == 0
    for fmt in ("plain", "table"):
        shown = cli("metrics", "-o", fmt, COLUMNS="400")
        assert shown.exit_code == 0, shown.stderr
        assert not obeyed(shown.stdout), repr(shown.stdout)
        assert "type=T\\x1b]0;pwned\\x07" in shown.stdout, shown.stdout


def _complete(env: dict, shell: str, words: str) -> str:
    import subprocess
    import sys

    from tests.clitools import full_env

    proc = subprocess.run(
        [sys.executable, "-m", "llmgine_cli"],
        capture_output=True,
        text=True,
        timeout=30,
        env=full_env(
            {
                **env,
                "_LLMGINE_COMPLETE": f"complete_{shell}",
                "COMP_WORDS": words,
                "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
                "_TYPER_COMPLETE_ARGS": words,
                "_TYPER_COMPLETE_FISH_ACTION": "get-args",
            }
        ),
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_completion_offers_nothing_that_drives_the_terminal(cli, daemon, tmp_path):
    """Shell completion lists event types user code published and tools' descriptions: a type
    holding a newline added candidates of its own choosing, and escapes in a type or a
    description reached zsh's and fish's menus raw. Such a type is no use to complete (no
    command takes it): it is left out; a description is shown with escapes."""
    sid = cli("session", "create", "-q").stdout.strip()
    code = tmp_path / "pub.py"
    code.write_text(
        "async def handle(command):\n"
        f"    await bus.publish({'Probe' + HOSTILE + chr(10) + 'Injected'!r}, {{}})\n"
        "    await bus.publish('ProbeOk', {})\n"
        "    return 1\n"
    )
    assert cli("handler", "add", "command", "Pub", str(code), "-S", sid).exit_code == 0
    assert cli("command", "run", "Pub", "-S", sid, "-q").exit_code == 0
    tool = tmp_path / "t.py"
    tool.write_text(f"def probe_tool(x: int) -> int:\n    {('Adds ' + HOSTILE)!r}\n    return x\n")
    assert cli("tool", "register", str(tool), "-S", sid, "-q").exit_code == 0
    for shell in ("bash", "zsh", "fish"):
        for words in (f"llmgine event list -S {sid} --type Pro", f"llmgine tool exec -S {sid} probe"):
            offered = _complete(daemon.env, shell, words)
            assert not obeyed(offered) and "Injected" not in offered, (shell, repr(offered))
            assert ("ProbeOk" if "event" in words else "probe_tool") in offered, (shell, offered)


def test_zsh_completion_runs_nothing_a_value_holds(cli, daemon, tmp_path):
    """typer's zsh script evals the candidates (as zsh's _arguments evals a ((...)) list),
    escaping quotes, $ and backquotes but not a backslash: an event type `!\\` ended its quoted
    string and the next type, `) ; touch FILE ; ws=( \\`, ran as commands in the operator's
    shell when they pressed <TAB> after `llmgine event list --type`. A value with a backslash
    is not offered; a description has none."""
    import shutil
    import subprocess

    sid = cli("session", "create", "-q").stdout.strip()
    pwned = tmp_path / "pwned"
    code = tmp_path / "pub.py"
    code.write_text(
        "async def handle(command):\n"
        "    await bus.publish('!\\\\', {})\n"
        f"    await bus.publish(') ; touch {pwned} ; ws=( \\\\', {{}})\n"
        "    return 1\n"
    )
    assert cli("handler", "add", "command", "Pub", str(code), "-S", sid).exit_code == 0
    assert cli("command", "run", "Pub", "-S", sid, "-q").exit_code == 0
    offered = _complete(daemon.env, "zsh", f"llmgine event list -S {sid} --type ")
    assert "touch" not in offered and "\\" not in offered, offered
    assert '"CommandResult"' in offered, offered
    zsh = shutil.which("zsh")
    assert zsh, "zsh is needed here (Debian package zsh; .ci/run installs it)"
    # What zsh's _arguments does with the answer (Completion/Base/_arguments).
    stub = '_arguments() { local action=${1#*: :}; eval ws\\=\\( "${action[3,-3]}" \\) }\n'
    subprocess.run([zsh, "-f", "-c", stub + "eval $(cat)"], input=offered, text=True, timeout=30, check=False)
    assert not pwned.exists()


def test_a_value_cannot_forge_a_key_value_line(cli):
    """Key/value output kept a value's line breaks: data holding "\\nsource  handler" printed a
    line that read as the event's own `source` (to a person, and to `awk '$1=="source"'`, as
    README suggests reading plain output), on a terminal too when a long unbreakable value
    made every row one line. Plain output (scripts') shows a value on its line, its breaks as
    \\n; a table keeps them, with the lines after the first under the value's column."""
    sid = cli("session", "create", "-q").stdout.strip()
    forged = "ok\nsource                         handler"
    data = json.dumps({"note": forged, "token": "x" * 300})
    eid = cli("event", "publish", "Note", "-S", sid, "-d", data, "-q").stdout.strip()
    plain = cli("event", "get", eid, "-S", sid, "-o", "plain").stdout.splitlines()
    assert [line.split()[1] for line in plain if line.split()[0] == "source"] == ["api"], plain
    assert any(line.split() == ["data.note", "ok\\nsource", "handler"] for line in plain), plain
    table = cli("event", "get", eid, "-S", sid, "-o", "table", COLUMNS="100").stdout.splitlines()
    assert not [line for line in table if line.startswith("source") and "handler" in line], table
    assert any(line.lstrip() == "source                         handler" for line in table), table


def test_an_answers_links_show_where_they_go():
    """`ask`/`chat` draw the answer as Markdown on a terminal: a link became an OSC 8
    hyperlink, so a model's `[https://bank.example](https://evil.example/x)` (text a tool
    fetched from a page steers it) showed the one address and opened the other. Links are
    shown with their target in parentheses, no hyperlink written."""
    import io
    import re

    from llmgine_cli.context import Environment
    from llmgine_cli.live import RichAnswer

    out = io.StringIO()
    with RichAnswer(Environment(out, io.StringIO(), True, True, {})) as answer:
        answer.finish("see [https://bank.example](https://evil.example/x) ![logo](https://evil.example/i.png)")
    drawn = out.getvalue()
    assert "\x1b]8;" not in drawn, repr(drawn)
    assert "https://evil.example/x" in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn), repr(drawn)


def test_an_object_with_thousands_of_fields_stays_one_value(cli):
    """Event data may hold tens of thousands of keys within the body limit: `event get` drew a
    row for each (60000 rows took half a minute in a terminal's table). An object wider than
    MAX_FIELDS shows as one value, compact JSON cut to a cell; -o json has every field."""
    sid = cli("session", "create", "-q").stdout.strip()
    data = {f"k{i}": i for i in range(5000)}
    eid = cli("event", "publish", "Wide", "-S", sid, "-d", json.dumps({"wide": data}), "-q").stdout.strip()
    shown = cli("event", "get", eid, "-S", sid, "-o", "plain").stdout.splitlines()
    assert len(shown) < 20, len(shown)
    assert [line.split()[0] for line in shown if line.startswith("data.wide")] == ["data.wide"], shown
    assert json.loads(cli("event", "get", eid, "-S", sid, "-o", "json").stdout)["data"]["wide"] == data
