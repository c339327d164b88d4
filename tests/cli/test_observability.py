"""`llmgine logs | log | metrics | trace | traces` against a real daemon."""

from __future__ import annotations

import json
import re

import pytest


def test_log_then_logs_filters(cli):
    sid = cli("session", "create", "-q").stdout.strip()
    made = json.loads(cli("log", "deploy finished", "--level", "warning", "-s", sid, "-m", "k=v", "-o", "json").stdout)
    assert made["source"] == "client" and made["session_id"] == sid and made["metadata"] == {"k": "v"}
    cli("log", "routine note", "-s", sid)

    plain = cli("logs", "--session", sid)
    assert plain.exit_code == 0
    lines = plain.stdout.splitlines()
    assert len(lines) == 2 and "WARNING" in lines[0] and "deploy finished" in lines[0] and f"session={sid}" in lines[0]

    warn = cli("logs", "--session", sid, "--level", "warning", "-o", "jsonl").stdout.splitlines()
    assert [json.loads(x)["message"] for x in warn] == ["deploy finished"]
    grep = cli("logs", "--grep", "ROUTINE", "--since", "1h", "-o", "jsonl").stdout.splitlines()
    assert [json.loads(x)["message"] for x in grep] == ["routine note"]
    assert cli("logs", "--since", "2999-01-01T00:00:00Z").stdout == ""
    ids = cli("logs", "--session", sid, "-q").stdout.split()
    assert ids == [str(made["id"]), str(made["id"] + 1)] or len(ids) == 2

    bad = cli("logs", "--level", "loud")
    assert bad.exit_code == 2
    # `llmgine log "$MSG"` with MSG empty was the daemon's 422 ("Expected `str` of length >= 1"),
    # exit 1; it is a usage error here, as an empty --data or FILE is.
    empty = cli("log", "")
    assert empty.exit_code == 2 and "MESSAGE: the message is empty" in empty.stderr, empty.stderr


def test_a_record_prints_as_one_line_without_terminal_escapes(cli):
    # Anybody's text (a client's message, its metadata): it must not forge a second record's
    # line nor send an escape sequence to the terminal that shows it.
    sid = cli("session", "create", "-q").stdout.strip()
    forged = "ok\n2026-01-01T00:00:00Z CRITICAL llmgine.server: forged\x1b]0;title\x07"
    assert cli("log", forged, "-s", sid, "-m", "k=a\x1b[2Jb").exit_code == 0
    out = cli("logs", "--session", sid).stdout
    assert len(out.splitlines()) == 1 and "\x1b" not in out and "\x07" not in out, out
    assert "ok\\n2026-01-01T00:00:00Z CRITICAL" in out and "k=a\\x1b[2Jb" in out
    assert json.loads(cli("logs", "--session", sid, "-o", "jsonl").stdout)["message"] == forged


def test_logs_follow_prints_new_records(cli):
    result = cli("logs", "-f", "--polls", "1", "--interval", "0.2", "--grep", "no-such-text-anywhere")
    assert result.exit_code == 0 and result.stdout == ""


def test_metrics_views(cli):
    cli("session", "create")
    plain = cli("metrics")
    assert plain.exit_code == 0
    assert re.search(r"http_requests_total\s+method=POST,route=/api/sessions,status=201\s+\d+", plain.stdout)
    data = json.loads(cli("metrics", "-o", "json").stdout)
    assert data["enabled"] is True and any(m["name"] == "storage_commit_duration_seconds" for m in data["metrics"])
    watched = cli("metrics", "--watch", "--count", "1", "--interval", "0.2", "-o", "jsonl").stdout.splitlines()
    assert len(watched) == 2
    table = cli("metrics", "-o", "table")
    assert table.exit_code == 0 and "llmgine metrics" in table.stdout and "P95" in table.stdout


@pytest.mark.parametrize("columns", [80, 1000])  # side by side needs ~170 here (the longest route)
def test_metrics_table_never_breaks_a_name_or_a_label(cli, columns):
    """At 80 columns the names and labels folded mid-word (``http_requests_tot`` / ``al``,
    ``statu`` / ``s=200``): narrower than they need side by side, the labels go on a line of
    their own under the name, each label whole."""
    cli("session", "create")
    table = cli("metrics", "-o", "table", COLUMNS=str(columns))
    assert table.exit_code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert all(len(line) <= columns for line in lines), lines
    assert any(re.match(r" http_request_duration_seconds\s", line) for line in lines), lines
    words = {word for line in lines for word in line.split()}
    if columns == 80:
        assert {"method=POST", "route=/api/sessions", "status=201"} <= words, lines
    else:
        assert "method=POST,route=/api/sessions,status=201" in words, lines


def test_metrics_table_at_80_columns_keeps_a_long_label_whole(cli):
    """The labels under a name were held to the METRIC column (38 of 80 columns), so a route
    broke mid-value (``route=/api/sessions/{session_id}/`` / ``commands``) and each series took
    four lines: they take the table's whole width now, and break only between labels."""
    sid = cli("session", "create", "-q").stdout.strip()
    assert cli("engine", "create", "DummyEngine", "-S", sid, "-q").exit_code == 0
    assert cli("command", "run", "DummyEngineCommand", "-S", sid, "-p", "prompt=hi", "-q").exit_code == 0
    lines = cli("metrics", "-o", "table", COLUMNS="80").stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    long_route = "route=/api/sessions/{session_id}/commands"
    assert any(re.fullmatch(rf" +method=POST {re.escape(long_route)} status=\d+ *", line) for line in lines), lines
    assert any(re.match(r" http_requests_total +\d+ +[\d.]+ +- +- +-$", line) for line in lines), lines
    wide = cli("metrics", "-o", "table", COLUMNS="120").stdout.splitlines()
    assert all(len(line) <= 120 for line in wide) and any(long_route in line for line in wide), wide


def test_trace_waterfall(cli):
    sid = cli("session", "create", "-q").stdout.strip()
    listing = json.loads(cli("traces", "--session", sid, "-o", "json").stdout)
    [summary] = [t for t in listing["traces"] if t["root"] == "POST /api/sessions"] or [listing["traces"][0]]
    trace_id = summary["trace_id"]
    drawn = cli("trace", trace_id)
    assert drawn.exit_code == 0
    lines = drawn.stdout.splitlines()
    assert lines[0].startswith(f"trace {trace_id}")
    assert "POST /api/sessions" in lines[1] and "█" in lines[1]
    assert "store.commit" in lines[2] and lines[2].index("store.commit") > lines[1].index("POST")
    assert json.loads(cli("trace", trace_id, "-o", "json").stdout)["trace_id"] == trace_id
    assert cli("traces", "-q").stdout.split()[0]
    missing = cli("trace", "a" * 32)
    assert missing.exit_code != 0 and "NOT_FOUND" in missing.stderr


def test_trace_of_an_unsampled_trace_says_so_in_one_line():
    from tests.clitools import cleanup_home, free_port, invoke, short_home, start_daemon, stop_process

    home = short_home()
    try:
        daemon = start_daemon(home, port=free_port(), env={"LLMGINE_TRACE_SAMPLE_RATE": "0.5"})
        try:
            unsampled = "4bf92f3577b34da6a3ce9291ffffffff"  # past 50% by its last 8 digits
            result = invoke(["trace", unsampled], daemon.env)
            assert result.exit_code != 0 and result.stdout == ""
            [line] = result.stderr.splitlines()
            assert line.startswith(f"error: NOT_FOUND: trace {unsampled} was not sampled")
            assert "50%" in line and "LLMGINE_TRACE_SAMPLE_RATE=1" in line
            # A trace id the rate keeps, but never made: the plain "not found".
            missing = invoke(["trace", "4bf92f3577b34da6a3ce929100000000"], daemon.env)
            assert missing.exit_code != 0 and "not sampled" not in missing.stderr and "NOT_FOUND" in missing.stderr
        finally:
            stop_process(daemon.proc)
    finally:
        cleanup_home(home)
