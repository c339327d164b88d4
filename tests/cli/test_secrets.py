"""`llmgine secret set|list|delete` against a real llmgined: the value goes in on stdin (or a
hidden prompt), never comes back, never lands in the daemon's log."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pexpect

from tests.clitools import full_env, run_cli


def cli(daemon, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmgine_cli", *args],
        input=stdin or "",
        env=full_env(daemon.env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_set_list_delete_and_the_value_never_shows(daemon):
    value = f"sk-{uuid.uuid4().hex}"
    name = f"T_{uuid.uuid4().hex[:8].upper()}"
    done = cli(daemon, "secret", "set", name, stdin=value + "\n")
    assert done.returncode == 0, done.stderr
    assert value not in done.stdout + done.stderr
    listed = run_cli(["secret", "list", "-o", "json"], daemon.env)
    assert listed.returncode == 0 and name in [s["name"] for s in json.loads(listed.stdout)["secrets"]]
    assert value not in listed.stdout
    assert run_cli(["secret", "delete", name, "-q"], daemon.env).stdout.strip() == name
    gone = run_cli(["secret", "delete", name], daemon.env)
    assert gone.returncode == 4 and "not found" in gone.stderr
    log = (daemon.home / "daemon-under-test.log").read_text()
    assert value not in log


def test_bad_input_is_a_usage_error(daemon):
    assert cli(daemon, "secret", "set", "lower-case", stdin="x").returncode == 2
    empty = cli(daemon, "secret", "set", "EMPTY_ONE", stdin="")
    assert empty.returncode == 2 and "empty" in empty.stderr


def test_on_a_terminal_the_value_is_asked_for_and_not_echoed(daemon):
    value = f"sk-{uuid.uuid4().hex}"
    child = pexpect.spawn(
        sys.executable,
        ["-m", "llmgine_cli", "secret", "set", "TTY_SECRET"],
        env=full_env(daemon.env),
        encoding="utf-8",
        timeout=30,
    )
    try:
        child.expect("TTY_SECRET: ")
        child.sendline(value)
        child.expect(pexpect.EOF)
        assert value not in child.before
    finally:
        child.close()
    assert child.exitstatus == 0
    assert "TTY_SECRET" in run_cli(["secret", "list"], daemon.env).stdout
    run_cli(["secret", "delete", "TTY_SECRET"], daemon.env)
