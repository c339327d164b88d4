"""`llmgine session ...` against a real daemon, in every output format."""

from __future__ import annotations

import json
import uuid

from llmgine_cli.ids import short_id
from tests.clitools import one_line, run_cli


def create(cli, *args: str) -> str:
    result = cli("session", "create", "-q", *args)
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


def test_create_quiet_prints_only_the_id(cli):
    result = cli("session", "create", "-q")
    assert result.exit_code == 0
    sid = result.stdout.strip()
    assert str(uuid.UUID(sid)) == sid
    assert result.stdout == sid + "\n"
    assert result.stderr == ""


def test_create_with_name_and_meta_json(cli):
    result = cli("session", "create", "--name", "demo", "--meta", "user=ann", "-m", "x=a=b", "-o", "json")
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["name"] == "demo"
    assert body["metadata"] == {"user": "ann", "x": "a=b"}
    assert body["status"] == "active"


def test_meta_takes_json_values_as_every_other_pair_option(cli, tmp_path):
    # `session create --meta n:=3` stored the key "n:" with the string "3" (and `log --meta`
    # the same), where -p, --meta of event publish, --arg... read KEY:=JSON as the README says.
    (tmp_path / "note.txt").write_text("from a file\n")
    pairs = ["-m", "n:=3", "-m", 'tags:=["a"]', "-m", f"note=@{tmp_path / 'note.txt'}", "-m", "s=x"]
    expected = {"n": 3, "tags": ["a"], "note": "from a file", "s": "x"}
    session = cli("session", "create", *pairs, "-o", "json")
    assert session.exit_code == 0, session.stderr
    assert json.loads(session.stdout)["metadata"] == expected
    record = cli("log", "metadata as JSON", *pairs, "-o", "json")
    assert record.exit_code == 0, record.stderr
    assert json.loads(record.stdout)["metadata"] == expected
    bad = cli("session", "create", "-m", "n:=nope")
    assert bad.exit_code == 2 and "--meta" in bad.stderr


def test_create_bad_meta_is_a_usage_error(cli):
    result = cli("session", "create", "--meta", "novalue")
    assert result.exit_code == 2
    assert "KEY=VALUE" in result.output


def test_get_plain_is_key_value_text(cli):
    sid = create(cli, "--name", "kv")
    result = cli("session", "get", sid)
    assert result.exit_code == 0
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert lines["session_id"] == sid
    assert lines["name"] == "kv"
    assert lines["status"] == "active"
    assert "counts.events" in lines


def test_get_json_and_jsonl(cli):
    sid = create(cli)
    as_json = json.loads(cli("session", "get", sid, "-o", "json").stdout)
    assert as_json["session_id"] == sid
    assert set(as_json["counts"]) == {"commands", "events", "engines", "tools", "handlers"}
    jsonl = cli("session", "get", sid, "-o", "jsonl").stdout
    assert jsonl.count("\n") == 1
    assert json.loads(jsonl) == as_json


def test_get_unknown_exits_4_with_one_line(cli):
    result = cli("session", "get", "no-such-session")
    assert result.exit_code == 4
    assert result.stdout == ""
    line = one_line(result.stderr)
    assert line.startswith("error: SESSION_NOT_FOUND: ")
    assert "no-such-session" in line


def test_list_formats(cli):
    sids = [create(cli, "--name", f"list-{i}") for i in range(3)]
    plain = cli("session", "list", "--limit", "200").stdout.splitlines()
    assert plain[0].split() == ["ID", "NAME", "STATUS", "CREATED", "LAST", "ACTIVITY"]
    ids = [line.split()[0] for line in plain[1:]]
    short = [short_id(sid) for sid in sids]  # a person reads the random part of the id
    assert ids.index(short[2]) < ids.index(short[1]) < ids.index(short[0])  # newest first

    quiet = cli("session", "list", "-q", "--limit", "200").stdout.split()
    assert set(sids) <= set(quiet)

    page = json.loads(cli("session", "list", "-o", "json", "--limit", "2").stdout)
    assert set(page) == {"sessions", "total", "limit", "offset"}
    assert page["limit"] == 2 and len(page["sessions"]) == 2

    lines = cli("session", "list", "-o", "jsonl", "--limit", "2").stdout.splitlines()
    assert [json.loads(line)["session_id"] for line in lines] == [s["session_id"] for s in page["sessions"]]


def test_list_more_pages_note_goes_to_stderr(cli):
    create(cli)
    create(cli)
    result = cli("session", "list", "--limit", "1")
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 2  # header + one row
    assert "showing 1-1 of" in result.stderr and "--offset 1" in result.stderr


def test_list_offset_and_status_filter(cli):
    for _ in range(2):  # at least two active sessions, whichever tests ran before on this daemon
        create(cli)
    sid = create(cli)
    assert cli("session", "delete", sid, "-q").stdout.strip() == sid
    closed = cli("session", "list", "--status", "closed", "-q", "--limit", "200").stdout.split()
    active = cli("session", "list", "--status", "active", "-q", "--limit", "200").stdout.split()
    assert sid in closed and sid not in active
    first = cli("session", "list", "-q", "--limit", "1").stdout.split()
    second = cli("session", "list", "-q", "--limit", "1", "--offset", "1").stdout.split()
    assert len(first) == len(second) == 1 and first != second


def test_list_rejects_a_bad_status_as_a_usage_error(cli):
    result = cli("session", "list", "--status", "bogus")
    assert result.exit_code == 2  # a bad option value, as README's exit-code table says
    line = one_line(result.stderr)
    assert line.startswith("error: ") and "'bogus' is not one of active, closed" in line


def test_list_limit_must_be_positive(cli):
    assert cli("session", "list", "--limit", "0").exit_code == 2


def test_delete_closes_and_purge_removes(cli):
    sid = create(cli)
    closed = json.loads(cli("session", "delete", sid, "-o", "json").stdout)
    assert closed["status"] == "closed" and closed["ended_at"]
    assert json.loads(cli("session", "get", sid, "-o", "json").stdout)["status"] == "closed"

    purged = cli("session", "delete", sid, "--purge", "-o", "json")
    assert purged.exit_code == 0
    assert json.loads(purged.stdout) == {"session_id": sid, "status": "purged"}
    assert cli("session", "get", sid).exit_code == 4
    assert cli("session", "delete", sid).exit_code == 4


def test_table_output_renders_a_table(cli):
    sid = create(cli, "--name", "[bold]tbl[/bold]")
    result = cli("session", "get", sid, "-o", "table")
    assert result.exit_code == 0
    assert "[bold]tbl[/bold]" in result.stdout  # data is never taken as markup
    listing = cli("session", "list", "-o", "table", "--limit", "200").stdout
    assert "ID" in listing and "LAST ACTIVITY" in listing and short_id(sid) in listing
    assert "─" in listing  # rich's rule under the header


def test_piped_output_is_plain_text(daemon):
    """A real process whose stdout is a pipe: aligned plain text, no colours, no boxes."""
    created = run_cli(["session", "create", "-q", "--name", "piped"], daemon.env)
    assert created.returncode == 0, created.stderr
    sid = created.stdout.strip()
    result = run_cli(["session", "list", "--limit", "200"], daemon.env)
    assert result.returncode == 0
    assert "\x1b[" not in result.stdout and "─" not in result.stdout
    header, *rows = result.stdout.splitlines()
    assert header.startswith("ID ")
    row = next(r for r in rows if r.startswith(short_id(sid)))
    assert row.split()[1:3] == ["piped", "active"]
    # Columns are aligned: every row's NAME starts where the header's does.
    col = header.index("NAME")
    assert all(r[col - 2 : col] == "  " for r in rows)


def test_list_shows_active_sessions_unless_all(cli, daemon):
    open_sid, closed_sid = create(cli), create(cli)
    assert cli("session", "delete", closed_sid, "-q").exit_code == 0
    for run in (lambda *a: cli(*a).stdout, lambda *a: run_cli(list(a), daemon.env).stdout):  # Typer, fast path
        active = run("session", "list", "-q", "--limit", "1000").split()
        assert open_sid in active and closed_sid not in active
        everything = run("session", "list", "--all", "-q", "--limit", "1000").split()
        assert {open_sid, closed_sid} <= set(everything)
        closed = run("session", "list", "--status", "closed", "-q", "--limit", "1000").split()
        assert closed_sid in closed and open_sid not in closed


def test_sessions_by_name_prefix_and_short_id(cli):
    sid = create(cli, "--name", f"named-{uuid.uuid4().hex[:6]}")
    name = json.loads(cli("session", "get", sid, "-o", "json").stdout)["name"]
    for given in (name, sid[:13], short_id(sid), sid):
        got = cli("session", "get", given, "-q")
        assert (got.exit_code, got.stdout.strip()) == (0, sid), given
    twin = create(cli, "--name", name, "--allow-duplicate")
    ambiguous = cli("session", "get", name)
    assert ambiguous.exit_code == 2
    line = one_line(ambiguous.stderr)
    assert "ambiguous" in line and short_id(sid) in line and short_id(twin) in line
    assert cli("event", "publish", "Hi", "-S", short_id(twin), "-q").exit_code == 0


def test_an_empty_id_is_a_usage_error_and_names_nothing(cli):
    # `llmgine session delete "$SID"` with SID empty (a failed $(...)) must not act on a session
    # without a name, nor answer "no such endpoint". (An empty name is refused now:
    # tests/cli/test_exit_codes.py.)
    unnamed = cli("session", "create", "-q").stdout.strip()
    for args in (
        ("session", "get", ""),
        ("session", "delete", ""),
        ("command", "get", "", "-S", unnamed),
        ("tool", "get", "", "-S", unnamed),
        ("auth", "key", "get", ""),
        ("event", "list", "-S", ""),
    ):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        assert "empty" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert json.loads(cli("session", "get", unnamed, "-o", "json").stdout)["status"] == "active"


def test_plain_columns_line_up_with_wide_characters(cli):
    # Piped output pads by the columns a terminal gives each character: a CJK or emoji name
    # (two columns a character) must not push the rest of its row out of line.
    import unicodedata

    def columns(text: str) -> int:
        return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)

    cli("session", "create", "--name", "日本語の名前😀", "-q")
    cli("session", "create", "--name", "plain-ascii-name", "-q")
    lines = cli("session", "list", "-o", "plain", "--limit", "2").stdout.splitlines()
    starts = {columns(line[: line.index("active")]) for line in lines[1:]}
    assert len(starts) == 1 and columns(lines[0][: lines[0].index("STATUS")]) in starts, lines


def test_a_taken_name_is_refused_reused_or_duplicated_on_request(cli):
    # `session create --name X` made a second session of the name, so a setup script run twice
    # left `-S X` ambiguous (exit 2) for every later command. A taken name is now exit 6 (as
    # `docker create --name`), --reuse prints that session (exit 0), --allow-duplicate is the
    # old behaviour.
    name = f"setup-{uuid.uuid4().hex[:6]}"
    sid = create(cli, "--name", name)
    taken = cli("session", "create", "--name", name, "-q")
    assert taken.exit_code == 6 and taken.stdout == ""
    line = one_line(taken.stderr)
    assert "already named" in line and sid in line and "--reuse" in line
    assert create(cli, "--name", name, "--reuse") == sid
    again = json.loads(cli("session", "create", "-n", name, "--reuse", "-o", "json").stdout)
    assert again["session_id"] == sid and again["session_token"] is None
    assert cli("session", "get", name, "-q").stdout.strip() == sid  # still one: not ambiguous
    twin = create(cli, "--name", name, "--allow-duplicate")
    assert twin != sid and cli("session", "get", name).exit_code == 2
    for args in (("--reuse",), ("--allow-duplicate",), ("-n", name, "--reuse", "--allow-duplicate")):
        bad = cli("session", "create", *args)
        assert bad.exit_code == 2 and "Traceback" not in bad.stderr, bad.stderr
    # A fork given the name is refused the same way (its default name is taken as it is).
    forked = cli("session", "fork", sid, "--name", name)
    assert forked.exit_code == 6 and "already named" in forked.stderr and "--reuse" not in forked.stderr
    assert cli("session", "fork", sid, "--name", name, "--allow-duplicate", "-q").exit_code == 0
    # An empty name is no name (a usage error, as -S "" is): never "taken", never made.
    assert cli("session", "create", "--name", "", "-q").exit_code == 2
    # An ended session gives its name back.
    other = f"ended-{uuid.uuid4().hex[:6]}"
    old = create(cli, "--name", other)
    assert cli("session", "delete", old, "-q").exit_code == 0
    assert create(cli, "--name", other) != old


def test_a_setup_script_can_run_twice(daemon, tmp_path):
    import subprocess
    import sys

    from tests.clitools import full_env

    name = f"script-{uuid.uuid4().hex[:6]}"
    script = tmp_path / "setup.sh"
    script.write_text(
        "set -euo pipefail\n"
        f'llmgine() {{ "{sys.executable}" -m llmgine_cli "$@"; }}\n'
        f"SID=$(llmgine session create --name {name} --reuse -q)\n"
        f"llmgine event publish Ready -S {name} -q >/dev/null\n"
        'echo "$SID"\n'
    )
    runs = [
        subprocess.run(["bash", str(script)], env=full_env(daemon.env), capture_output=True, text=True, timeout=60)
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
    assert runs[0].stdout == runs[1].stdout and len(runs[0].stdout.strip()) == 36


def test_a_token_in_a_detail_table_is_never_folded(cli):
    # At 80 columns the fork's key column (session.usage.completion_tokens) left the session
    # token too little room: rich folded it over two lines, and a copy from the terminal took
    # the newline and the indentation with it. Each row is now one line, and long words stay
    # whole (the terminal wraps them); a detail view whose values fit is the table it was.
    sid = cli("session", "create", "--name", "tok", "-q").stdout.strip()
    forked = cli("session", "fork", sid, "-o", "table", COLUMNS="80")
    assert forked.exit_code == 0, forked.stderr
    lines = forked.stdout.splitlines()
    token_line = next(line for line in lines if line.startswith("session.session_token"))
    assert token_line.split()[1].startswith("lgs_") and len(token_line) > 80, token_line
    assert not [line for line in lines if line.startswith(" ")], lines  # no folded piece
    assert all(line.rstrip() == line for line in lines)  # no padding for the terminal to wrap
    plain = cli("session", "get", sid, "-o", "table", COLUMNS="80")
    assert all(len(line) <= 80 for line in plain.stdout.splitlines()), plain.stdout
