"""A question before what cannot be undone (`session delete --purge`, `secret delete`): on a
terminal (pexpect), real llmgine and llmgined processes; scripts are never asked."""

from __future__ import annotations

import subprocess
import sys

import pexpect
import pytest

from tests.clitools import cli_on_terminal, full_env, run_cli


def _spawn(args: list[str], daemon) -> pexpect.spawn:
    return cli_on_terminal(args, {**daemon.env, "TERM": "xterm-256color"})


def _ended(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus if child.exitstatus is not None else 128 + child.signalstatus


def _session(daemon) -> str:
    return run_cli(["session", "create", "-q"], daemon.env).stdout.strip()


def test_purge_asks_on_a_terminal_and_no_keeps_the_session(daemon):
    sid = _session(daemon)
    child = _spawn(["session", "delete", sid, "--purge"], daemon)
    child.expect_exact(f"Purge session {sid[-8:]} and everything in it? This cannot be undone. [y/N] ")
    child.sendline("n")
    child.expect_exact("error: not confirmed: nothing was deleted (--yes skips the question)")
    assert _ended(child) == 1
    assert run_cli(["session", "get", sid, "-o", "{{.status}}"], daemon.env).stdout == "active\n"

    child = _spawn(["session", "delete", sid, "--purge"], daemon)
    child.expect_exact("[y/N] ")
    child.sendline("y")
    child.expect_exact("purged")
    assert _ended(child) == 0
    assert run_cli(["session", "get", sid], daemon.env).returncode == 4


def test_several_sessions_are_one_question(daemon):
    a, b = _session(daemon), _session(daemon)
    child = _spawn(["session", "delete", a, b, "--purge"], daemon)
    child.expect_exact(f"Purge 2 sessions {a[-8:]}, {b[-8:]} and everything in them?")
    child.sendline("yes")
    assert _ended(child) == 0
    assert run_cli(["session", "get", b], daemon.env).returncode == 4


@pytest.mark.parametrize("flag", ["--yes", "-y"])
def test_yes_does_not_ask(daemon, flag):
    sid = _session(daemon)
    child = _spawn(["session", "delete", sid, "--purge", flag, "-q"], daemon)
    child.expect_exact(sid)
    assert "[y/N]" not in child.before
    assert _ended(child) == 0


def test_a_script_is_never_asked(daemon):
    """stdin not a terminal (a pipe, /dev/null, cron): as before, no question, no --yes needed."""
    sid = _session(daemon)
    proc = run_cli(["session", "delete", sid, "--purge", "-q"], daemon.env)
    assert (proc.returncode, proc.stdout.strip(), proc.stderr) == (0, sid, "")


def test_closing_a_session_is_not_asked(daemon):
    sid = _session(daemon)
    child = _spawn(["session", "delete", sid, "-q"], daemon)
    child.expect_exact(sid)
    assert _ended(child) == 0


def test_secret_delete_asks_and_ctrl_c_or_ctrl_d_keep_it(daemon):

    subprocess.run(
        [sys.executable, "-m", "llmgine_cli", "secret", "set", "CONFIRM_ME"],
        input="value",
        env=full_env(daemon.env),
        text=True,
        check=True,
        capture_output=True,
    )
    child = _spawn(["secret", "delete", "CONFIRM_ME"], daemon)
    child.expect_exact("Delete secret CONFIRM_ME? Whatever uses it will fail. This cannot be undone. [y/N] ")
    child.sendintr()
    assert _ended(child) == 130
    assert "Traceback" not in child.before
    child = _spawn(["secret", "delete", "CONFIRM_ME"], daemon)
    child.expect_exact("[y/N] ")
    child.sendeof()
    child.expect_exact("nothing was deleted")
    assert _ended(child) == 1
    assert "CONFIRM_ME" in run_cli(["secret", "list", "-q"], daemon.env).stdout
    assert run_cli(["secret", "delete", "CONFIRM_ME", "-q"], daemon.env).returncode == 0
