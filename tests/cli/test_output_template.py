"""`-o/--format TEMPLATE`: docker-style templates, as real `llmgine` processes against a real
llmgined (the fast path for `session list`, the Typer path for the rest)."""

from __future__ import annotations

import json
import re

import pytest

from tests.clitools import no_traceback, run_cli, spawn_cli


@pytest.fixture(scope="module")
def session(daemon):
    sid = run_cli(["session", "create", "-q", "--meta", "team=core", "--meta", "note=a\nb"], daemon.env).stdout.strip()
    assert run_cli(["event", "publish", "Tpl", "-S", sid, "-q", "--data", '{"n": 1}'], daemon.env).returncode == 0
    return sid


def test_a_template_prints_a_line_per_record_on_both_paths(cli, daemon, session):
    """`session list` as a process runs on the fast path (hot.py); in-process (``cli``), on
    the Typer app: the same lines."""
    template = "{{.session_id}}\\t{{.metadata.team}}|{{json .metadata}}"
    fast = run_cli(["session", "list", "--limit", "1000", "--format", template], daemon.env)
    slow = cli("session", "list", "--limit", "1000", "-o", template)
    assert fast.returncode == slow.exit_code == 0, (fast.stderr, slow.stderr)
    ours = [line for line in fast.stdout.splitlines() if line.startswith(session)]
    # \t is a tab (as docker); a missing value is nothing; {{json}} is exact JSON.
    assert ours == [f'{session}\tcore|{{"team":"core","note":"a\\nb"}}']
    assert ours[0] in slow.stdout.splitlines()


def test_a_table_template_has_a_header_and_is_never_cut(daemon, session):
    long_name = "n" * 150
    sid = run_cli(["session", "create", "-q", "--name", long_name], daemon.env).stdout.strip()
    proc = run_cli(["session", "list", "-o", "table {{.session_id}}\\t{{.name}}"], {**daemon.env, "COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["SESSION_ID", "NAME"]
    assert f"{sid}  {long_name}" in lines


def test_nested_fields_and_single_objects(daemon, session):
    proc = run_cli(
        ["session", "get", session, "--format", "{{.counts.events}} {{.status}} {{.metadata.note}}"], daemon.env
    )
    assert proc.returncode == 0, proc.stderr
    # A string value is one line: control characters escaped, as in plain output.
    assert proc.stdout == "2 active a\\nb\n"
    events = run_cli(
        ["event", "list", "-S", session, "--format", "{{.seq}}:{{.event_type}}:{{json .data}}"], daemon.env
    )
    assert re.fullmatch(r'\d+:Tpl:\{"n":1\}', events.stdout.splitlines()[-1])  # seq counts over the daemon
    whole = run_cli(["event", "list", "-S", session, "--format", "{{json .}}"], daemon.env)
    assert [json.loads(line)["event_type"] for line in whole.stdout.splitlines()] == ["SessionStarted", "Tpl"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["session", "list", "--format", "{{.nmae}}"], "no field 'nmae' in the output (its fields: counts, created_at"),
        (["session", "get", "SID", "-o", "{{.metadata.team}} {{.meta.team}}"], "no field 'meta' in the output"),
        (["session", "list", "-o", "{{range .}}x{{end}}"], "unsupported template action '{{range .}}'"),
        (["session", "get", "SID", "-o", "{{upper .name}}"], "unsupported template action"),
        (["session", "list", "-o", "xml"], "'xml' is not one of table, plain, json, jsonl, nor a template"),
        (["session", "get", "SID", "-o", "{{.name"], "unclosed action in '{{.name': every {{ needs its }}"),
    ],
    ids=["typo-fast-path", "typo-nested", "range-fast-path", "function", "unknown-format", "unclosed"],
)
def test_a_template_that_cannot_work_is_a_usage_error(daemon, session, args, message):
    """A typo must not print empty lines that a script takes for data: exit 2, one line
    naming the fields there are."""
    proc = run_cli([session if a == "SID" else a for a in args], daemon.env)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    no_traceback(proc.stderr)


def test_format_is_an_alias_of_output_and_names_still_work(daemon, session):
    proc = run_cli(["session", "get", session, "--format", "JSON"], daemon.env)
    assert proc.returncode == 0 and json.loads(proc.stdout)["session_id"] == session
    helped = run_cli(["session", "list", "-h"], {**daemon.env, "COLUMNS": "200"})
    assert "--format" in helped.stdout and "{{json .x}}" in helped.stdout


def test_logs_and_event_tail_take_templates(daemon, session):
    logs = run_cli(["logs", "-n", "5", "--format", "{{.level}} {{.logger}}"], daemon.env)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout and all(len(line.split()) == 2 for line in logs.stdout.splitlines()), logs.stdout
    tail = spawn_cli(
        ["event", "tail", session, "--since", "all", "--format", "{{.seq}} {{.event_type}} {{.data.n}}"], daemon.env
    )
    try:
        assert tail.stdout is not None
        assert re.fullmatch(r"\d+ SessionStarted \n", tail.stdout.readline())  # no data.n: nothing
        assert re.fullmatch(r"\d+ Tpl 1\n", tail.stdout.readline())
    finally:
        tail.kill()
        tail.communicate()
    typo = run_cli(["event", "tail", session, "--since", "all", "--format", "{{.sq}}"], daemon.env)
    assert typo.returncode == 2 and "no field 'sq' in the output (its fields: data, event_id" in typo.stderr


def test_a_missing_value_below_a_field_prints_nothing(daemon, session):
    """Metadata, data and parameters are free-form: a key one record lacks is no error."""
    proc = run_cli(["session", "get", session, "--format", "[{{.metadata.absent}}]"], daemon.env)
    assert (proc.returncode, proc.stdout) == (0, "[]\n")


@pytest.mark.parametrize(
    ("option", "hint"),
    [
        (["--json"], "No such option: --json: use -o json (or -o jsonl; --format '{{.field}}' for some fields)"),
        (["--jq", ".x"], "No such option: --jq: pipe -o json into jq, or pick fields with --format '{{.field}}'"),
        (["--template", "x"], "No such option: --template: use --format '{{.field}}'"),
    ],
)
def test_gh_options_say_what_to_use_here(daemon, option, hint):
    """`gh ... --json` is muscle memory: the usage error says what this CLI spells it."""
    proc = run_cli(["session", "list", *option], daemon.env)
    assert proc.returncode == 2
    assert proc.stderr == f"error: {hint} (see 'llmgine session list -h')\n"


def test_trace_and_metrics_take_templates(daemon, session):
    """They draw a waterfall and a dashboard; with a template they printed those, ignoring it."""
    trace_id = run_cli(["traces", "-q", "-n", "1"], daemon.env).stdout.split()[0]
    trace = run_cli(["trace", trace_id, "--format", "{{.trace_id}} {{.span_count}}"], daemon.env)
    assert trace.returncode == 0, trace.stderr
    assert trace.stdout.split()[0] == trace_id and trace.stdout.split()[1].isdigit(), trace.stdout
    metrics = run_cli(["metrics", "--format", "{{.enabled}}"], daemon.env)
    assert (metrics.returncode, metrics.stdout) == (0, "true\n")


def test_a_template_typo_on_a_create_keeps_the_token_it_alone_showed(daemon):
    """`session create -o '{{.ID}}'` created the session, then exited 2 on the typo: its
    session token, shown only by that answer, was lost. The answer is on stderr as JSON."""
    proc = run_cli(["session", "create", "--name", "typo-keeps", "-o", "{{.ID}}"], daemon.env)
    assert proc.returncode == 2 and proc.stdout == "", (proc.stdout, proc.stderr)
    answer = json.loads(proc.stderr.splitlines()[0])
    assert answer["name"] == "typo-keeps" and answer["session_token"].startswith("lgs_")
    assert "no field 'ID' in the output" in proc.stderr
    no_traceback(proc.stderr)
