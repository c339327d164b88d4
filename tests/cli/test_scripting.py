"""`llmgine` in shell pipelines, as real processes: what a script sees when the reader of its
output goes away (`| head -1`), reads stdin, or runs where the locale is not UTF-8."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.clitools import cli_env, default_signals, full_env, run_cli
from tests.eventually import eventually_blocking


def _follow_into_pipe(args: list[str], env: dict[str, str | None]) -> tuple[subprocess.Popen[bytes], int]:
    """``llmgine ARGS`` writing into a pipe whose read end the caller holds (``| head``)."""
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmgine_cli", *args],
        env=full_env(env),
        stdout=write_end,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        preexec_fn=default_signals,
    )
    os.close(write_end)
    return proc, read_end


def _first_line(fd: int) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = os.read(fd, 4096)
        assert chunk, "the follower closed its output before printing a line"
        data += chunk
    return data.split(b"\n", 1)[0]


@pytest.mark.parametrize(
    "follower",
    [["event", "tail", "--since", "all"], ["logs", "-f", "-n", "1"], ["daemon", "logs", "-f"]],
    ids=["event-tail", "logs-f", "daemon-logs-f"],
)
def test_a_follower_ends_when_the_reader_of_its_output_goes(cli, daemon, cold_home, follower):
    """`llmgine event tail | head -1` printed its line, head exited, and the tail went on
    waiting for the next event (for ever, on a quiet session), so `$(... | head -1)` never
    returned; `logs -f` and `daemon logs -f` the same. As `tail -f` does, a follower now ends
    once nobody reads it: exit 1, as any write into a closed pipe (click's EPIPE), no message."""
    sid = cli("session", "create", "-q").stdout.strip()
    env = {**daemon.env, "LLMGINE_SESSION": sid}
    if follower[:2] == ["daemon", "logs"]:  # a file, the daemon's log: in a home of its own
        env = cli_env(cold_home)
        (cold_home / "state").mkdir()
        (cold_home / "state" / "llmgined.log").write_text("a line of the daemon's log\n")
    proc, read_end = _follow_into_pipe(follower, env)
    try:
        assert _first_line(read_end)
        os.close(read_end)  # head -1 has its line and exits
        read_end = -1
        _out, err = proc.communicate(timeout=30)  # a liveness bound: without the fix, never
    finally:
        if read_end >= 0:
            os.close(read_end)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert b"Traceback" not in err and b"Exception ignored" not in err, err


def test_a_follower_keeps_going_while_it_is_read(cli, daemon):
    """The watch is for a reader that went away, not for a quiet one: a tail whose reader is
    there still prints what comes later."""
    sid = cli("session", "create", "-q").stdout.strip()
    proc, read_end = _follow_into_pipe(["event", "tail", "-S", sid, "--since", "all"], daemon.env)
    try:
        assert b"SessionStarted" in _first_line(read_end)
        assert cli("event", "publish", "Later", "-S", sid, "-q").exit_code == 0
        assert b'"Later"' in eventually_blocking(lambda: _first_line(read_end), timeout=30)
        assert proc.poll() is None
    finally:
        os.close(read_end)
        proc.kill()
        proc.wait()


# Output in an encoding that lacks CJK and emoji, as a terminal or cron job whose locale is not
# UTF-8 gives (en_US.ISO-8859-1); set directly, since this machine may have no such locale.
NOT_UTF8 = {"PYTHONIOENCODING": "ascii"}


@pytest.mark.parametrize("fmt", ["plain", "json", "jsonl"])
def test_output_in_a_locale_that_is_not_utf8(cli, daemon, fmt):
    """A session named in Japanese (or with an emoji) made `session list` an internal error
    (UnicodeEncodeError, exit 1) where the output's encoding lacks those characters, `-o json`
    too. What the encoding cannot write is now a JSON escape: tables stay readable, and JSON is
    JSON with the same data."""
    name = "日本語のセッション😀"
    sid = cli("session", "create", "--name", name, "-q").stdout.strip()
    result = run_cli(["session", "get", sid, "-o", fmt], {**daemon.env, **NOT_UTF8})
    assert result.returncode == 0, result.stderr
    assert result.stdout.isascii()
    if fmt == "plain":
        assert "\\u65e5\\u672c\\u8a9e" in result.stdout and "\\ud83d\\ude00" in result.stdout
    else:
        assert json.loads(result.stdout)["name"] == name
    # An error naming it (stderr) is its one line too, not a second failure while reporting it.
    assert cli("session", "create", "--name", name, "-q").exit_code == 0
    ambiguous = run_cli(["session", "get", name, "-o", fmt], {**daemon.env, **NOT_UTF8})
    assert ambiguous.returncode == 2, ambiguous.stderr
    assert "ambiguous" in ambiguous.stderr and "\\u65e5\\u672c\\u8a9e" in ambiguous.stderr


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def test_top_takes_q_again_after_ctrl_z_and_fg(daemon):
    """Ctrl-Z stopped `top`, the shell took the terminal back in its line mode, and after `fg`
    q did nothing until Enter (it was echoed instead). A resumed top sets its key-by-key mode
    again. Here the test plays the shell: it stops top, puts the terminal in line mode, goes on."""
    import signal
    import termios

    import pexpect

    env = full_env({**daemon.env, "COLUMNS": "80", "LINES": "30", "TERM": "xterm"})
    child = pexpect.spawn(
        sys.executable,
        ["-m", "llmgine_cli", "top", "--interval", "0.2"],
        env=env,
        timeout=30,
        encoding="utf-8",
        preexec_fn=default_signals,
    )
    try:
        child.expect("q or Ctrl-C quits")
        os.kill(child.pid, signal.SIGSTOP)  # Ctrl-Z (a terminal's SIGTSTP reaches no orphan here)
        eventually_blocking(lambda: _stopped(child.pid), message="top stopped")
        mode = termios.tcgetattr(child.child_fd)
        mode[3] |= termios.ICANON | termios.ECHO  # what the shell leaves: line mode, echo
        termios.tcsetattr(child.child_fd, termios.TCSANOW, mode)
        os.kill(child.pid, signal.SIGCONT)  # fg
        # Without the fix the terminal stays in line mode: this times out, and so would q.
        eventually_blocking(
            lambda: not termios.tcgetattr(child.child_fd)[3] & termios.ICANON, message="key-by-key mode again"
        )
        child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, (child.exitstatus, child.signalstatus)


# Commands without -o: live views and streams of text (top, ask, chat, daemon logs, completion)
# and edits of local files that print a hint (config set/unset, daemon install/uninstall).
WITHOUT_OUTPUT = {
    "ask",
    "chat",
    "completion",
    "config set",
    "config unset",
    "daemon install",
    "daemon logs",
    "daemon uninstall",
    "top",
}


def _leaves(command, path):
    for name, sub in getattr(command, "commands", {}).items():
        yield from _leaves(sub, [*path, name])
    if not hasattr(command, "commands"):
        yield " ".join(path), {opt for param in command.params for opt in getattr(param, "opts", ())}


def test_every_command_that_prints_data_takes_dash_o():
    """README: every command takes -o. `secret delete`, `mcp remove`, `webhook delete` and
    `schedule delete` did not (`-o json` was a usage error, exit 2, in a script that passes it
    to every call), while `tool delete` and `handler delete` did."""
    from llmgine_cli.root import COMMANDS, build_command

    missing = {path for name in COMMANDS for path, opts in _leaves(build_command(name), [name]) if "-o" not in opts}
    assert missing == WITHOUT_OUTPUT


def _set_secret(daemon, name):
    done = subprocess.run(
        [sys.executable, "-m", "llmgine_cli", "secret", "set", name, "-q"],
        env=full_env(daemon.env),
        input="v",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_a_delete_without_a_record_prints_one_with_dash_o_json(cli, daemon):
    sid = cli("session", "create", "-q").stdout.strip()
    _set_secret(daemon, "QA_SCRIPTING")
    deleted = cli("secret", "delete", "QA_SCRIPTING", "-o", "json")
    assert deleted.exit_code == 0 and json.loads(deleted.stdout) == {"name": "QA_SCRIPTING", "deleted": True}
    webhook = cli("webhook", "add", "http://127.0.0.1:9/hook", "-S", sid, "-q").stdout.strip()
    deleted = cli("webhook", "delete", webhook[-8:], "-o", "jsonl")
    assert deleted.exit_code == 0 and json.loads(deleted.stdout) == {"webhook_id": webhook, "deleted": True}
    schedule = cli("schedule", "add", "DummyEngineCommand", "--every", "3600", "-S", sid, "-q").stdout.strip()
    deleted = cli("schedule", "delete", schedule, "-o", "json")
    assert deleted.exit_code == 0 and json.loads(deleted.stdout) == {"schedule_id": schedule, "deleted": True}
    # Without -o: as before, a line on stderr and nothing on stdout; -q the id.
    _set_secret(daemon, "QA_SCRIPTING")
    plain = cli("secret", "delete", "QA_SCRIPTING")
    assert plain.stdout == "" and plain.stderr == "deleted secret QA_SCRIPTING\n"
    gone = cli("secret", "delete", "QA_SCRIPTING", "-o", "json")
    assert gone.exit_code == 4 and gone.stdout == ""


def _piped(daemon, args, stdin):
    return subprocess.run(
        [sys.executable, "-m", "llmgine_cli", *args],
        env=full_env(daemon.env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_stdin_is_read_once_for_a_usage_error_of_the_fast_path(cli, daemon):
    """`echo '[1]' | llmgine event publish T --data -`: the fast path read stdin, found no object
    and left the command to Typer, which read stdin again, found it empty, and said "not JSON:
    Expecting value" of valid JSON. Both now read the same text: "must be a JSON object"."""
    sid = cli("session", "create", "-q").stdout.strip()
    for args, option in ((["event", "publish", "T", "--data", "-"], "--data"),
                         (["command", "run", "T", "--params", "-", "--no-wait"], "--params")):  # fmt: skip
        refused = _piped(daemon, [*args, "-S", sid], "[1]\n")
        assert refused.returncode == 2 and f"{option}: must be a JSON object" in refused.stderr, refused.stderr
    published = _piped(daemon, ["event", "publish", "T", "--data", "-", "-S", sid, "-o", "json"], '{"a": 1}')
    assert published.returncode == 0 and json.loads(published.stdout)["data"] == {"a": 1}


@pytest.mark.parametrize("name", ["my projet", "projekt-ü"])
def test_a_session_name_that_names_nothing_is_not_found(cli, daemon, name):
    """Names may have spaces and accents; a mistyped one ("my projet" for "my project") was
    sent on as an id, which the daemon refused as no identifier: VALIDATION_ERROR, exit 1,
    where `session get nope` is SESSION_NOT_FOUND, exit 4. A script testing whether a session
    exists got a different answer by the name's spelling."""
    assert cli("session", "create", "--name", "my project", "-q").exit_code == 0
    for args in (["session", "get", name], ["session", "delete", name], ["event", "list", "-S", name]):
        result = cli(*args)
        assert result.exit_code == 4, (args, result.stderr)
        assert result.stderr == f"error: SESSION_NOT_FOUND: session {name!r} not found\n"
    on_the_fast_path = run_cli(["command", "run", "T", "-S", name, "--no-wait"], daemon.env)
    assert on_the_fast_path.returncode == 4 and "SESSION_NOT_FOUND" in on_the_fast_path.stderr


def _on_a_terminal(args: list[str], env: dict[str, str | None]) -> tuple[int, str]:
    import pexpect

    child = pexpect.spawn(
        sys.executable,
        ["-m", "llmgine_cli", *args],
        env=full_env({**env, "COLUMNS": "80", "TERM": "xterm"}),
        encoding="utf-8",
        timeout=30,
        dimensions=(40, 80),
        preexec_fn=default_signals,
    )
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus, child.before


def test_an_empty_listing_on_a_terminal_says_so(cold_home):
    """On a terminal an empty listing was a table of headers and nothing else (`session list`
    on a new daemon: is it empty, or are the sessions elsewhere?); it now says so in a line, as
    gh does ("no open pull requests"). Piped, it stays the header row scripts expect."""
    from tests.clitools import start_daemon, stop_process

    daemon = start_daemon(cold_home)
    try:
        code, text = _on_a_terminal(["session", "list"], daemon.env)
        assert code == 0 and "no active sessions (--all lists closed ones too)" in text, text
        assert "LAST ACTIVITY" not in text
        sid = run_cli(["session", "create", "-q"], daemon.env).stdout.strip()
        code, text = _on_a_terminal(["engine", "list", "--session", sid], daemon.env)
        assert code == 0 and "no engines" in text and "MODEL" not in text, text
        piped = run_cli(["engine", "list", "--session", sid], daemon.env)
        assert piped.returncode == 0 and piped.stdout.split() == ["ID", "TYPE", "MODEL", "STATUS", "SESSION", "CREATED"]
        assert piped.stderr == ""
        as_json = run_cli(["engine", "list", "--session", sid, "-o", "json"], daemon.env)
        assert json.loads(as_json.stdout)["engines"] == []
    finally:
        stop_process(daemon.proc)
