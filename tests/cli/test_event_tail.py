"""`llmgine event tail`: usage errors, unknown sessions, --since parsing (the live part is in
tests/e2e/test_event_tail.py)."""

from __future__ import annotations

import datetime as dt

import pytest
import typer

from llmgine_cli.commands.event_tail import parse_since


def test_needs_a_session_or_all(cli):
    assert cli("event", "tail").exit_code == 2
    assert cli("event", "tail", "abc", "--all").exit_code == 2


def test_unknown_session_is_not_found(cli):
    result = cli("event", "tail", "no-such-session", "--no-reconnect")
    assert result.exit_code == 4
    assert "SESSION_NOT_FOUND" in result.stderr and "Traceback" not in result.stderr


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
    with pytest.raises(typer.BadParameter):
        parse_since("soon")
