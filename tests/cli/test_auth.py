"""`llmgine auth key ...` and `llmgine session token` against a real daemon."""

from __future__ import annotations

import json
import re

import pytest

from llmgine_cli.commands.auth import parse_expiry
from tests.clitools import one_line

KEY_RE = re.compile(r"^lgk_[0-9a-f]{12}_[A-Za-z0-9_\-]{40,}$")


def test_create_quiet_prints_only_the_key(cli, daemon):
    result = cli("auth", "key", "create", "-q", "--name", "ci")
    assert result.exit_code == 0, result.stderr
    key = result.stdout.strip()
    assert KEY_RE.match(key) and result.stdout == key + "\n" and result.stderr == ""
    # The key works over TCP, as the only credential.
    over_tcp = cli("--url", daemon.tcp_url, "--api-key", key, "session", "list", "-q")
    assert over_tcp.exit_code == 0, over_tcp.stderr


def test_create_shows_the_key_once_and_warns(cli):
    result = cli("auth", "key", "create", "--name", "once", "--expires", "30d", "-o", "json")
    assert result.exit_code == 0, result.stderr
    created = json.loads(result.stdout)
    assert KEY_RE.match(created["key"]) and created["expires_at"]
    assert "cannot be shown again" in result.stderr
    listed = cli("auth", "key", "list", "-o", "json")
    assert created["key"] not in listed.stdout
    row = next(k for k in json.loads(listed.stdout)["keys"] if k["key_id"] == created["key_id"])
    assert row["name"] == "once" and row["state"] == "active"
    assert set(row) >= {"prefix", "created_at", "last_used_at", "expires_at"}


def test_list_table_and_quiet(cli):
    key_id = json.loads(cli("auth", "key", "create", "-o", "json").stdout)["key_id"]
    table = cli("auth", "key", "list")
    assert table.exit_code == 0
    header = table.stdout.splitlines()[0]
    for column in ("ID", "NAME", "PREFIX", "STATE", "CREATED", "LAST USED", "EXPIRES"):
        assert column in header
    assert key_id in cli("auth", "key", "list", "-q").stdout.split()


def test_revoke(cli, daemon):
    created = json.loads(cli("auth", "key", "create", "-o", "json").stdout)
    result = cli("auth", "key", "revoke", created["key_id"], "-o", "json")
    assert result.exit_code == 0 and json.loads(result.stdout)["state"] == "revoked"
    refused = cli("--url", daemon.tcp_url, "--api-key", created["key"], "session", "list")
    assert refused.exit_code == 5
    assert created["key"] not in refused.stderr
    missing = cli("auth", "key", "revoke", "000000000000")
    assert missing.exit_code == 4 and one_line(missing.stderr).startswith("error: KEY_NOT_FOUND")


def test_bad_expiry_is_a_usage_error(cli):
    result = cli("auth", "key", "create", "--expires", "tomorrow")
    assert result.exit_code == 2 and "--expires" in result.output


@pytest.mark.parametrize(
    "text,expected",
    [
        ("30d", (30 * 86400, None)),
        ("12h", (43200, None)),
        ("90m", (5400, None)),
        ("2w", (14 * 86400, None)),
        ("3600", (3600, None)),
        ("2030-01-31", (None, "2030-01-31")),
    ],
)
def test_parse_expiry(text, expected):
    assert parse_expiry(text) == expected


def test_session_token(cli, daemon):
    sid = cli("session", "create", "-q").stdout.strip()
    result = cli("session", "token", sid, "-q")
    assert result.exit_code == 0, result.stderr
    token = result.stdout.strip()
    assert token.startswith("lgs_")
    own = cli("--url", daemon.tcp_url, "--api-key", token, "session", "get", sid, "-q")
    assert own.exit_code == 0 and own.stdout.strip() == sid
    other = cli("--url", daemon.tcp_url, "--api-key", token, "session", "list")
    assert other.exit_code == 5 and "FORBIDDEN" in other.stderr
