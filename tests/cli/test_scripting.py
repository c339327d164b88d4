"""`llmgine` in shell pipelines, as real processes: what a script sees when the reader of its
output goes away (`| head -1`), reads stdin, or runs where the locale is not UTF-8."""

from __future__ import annotations

import json
import os
import re
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


def _first_line(fd: int, until: bytes = b"") -> bytes:
    """The first line read from ``fd`` (the first that contains ``until``)."""
    data = b""
    while True:
        while b"\n" not in data:
            chunk = os.read(fd, 4096)
            assert chunk, "the follower closed its output before printing a line"
            data += chunk
        line, data = data.split(b"\n", 1)
        if until in line:
            return line


@pytest.mark.parametrize(
    "follower",
    [
        ["event", "tail", "--since", "all"],
        ["logs", "-f", "-n", "1"],
        ["daemon", "logs", "-f"],
        ["command", "run", "DummyEngineCommand", "-p", "prompt=x", "-p", "delay_ms:=600000", "--follow", "-o", "jsonl"],
    ],
    ids=["event-tail", "logs-f", "daemon-logs-f", "command-run-follow"],
)
def test_a_follower_ends_when_the_reader_of_its_output_goes(cli, daemon, cold_home, follower):
    """`llmgine event tail | head -1` printed its line, head exited, and the tail went on
    waiting for the next event (for ever, on a quiet session), so `$(... | head -1)` never
    returned; `logs -f`, `daemon logs -f` and `command run --follow` the same. As `tail -f`
    does, a follower now ends once nobody reads it: exit 1, as any write into a closed pipe
    (click's EPIPE), no message."""
    sid = cli("session", "create", "-q").stdout.strip()
    env = {**daemon.env, "LLMGINE_SESSION": sid}
    if follower[0] == "command":  # a command that runs for ten minutes, with nothing to print
        assert cli("engine", "create", "DummyEngine", "-S", sid, "-q").exit_code == 0
    if follower[:2] == ["daemon", "logs"]:  # a file, the daemon's log: in a home of its own
        env = cli_env(cold_home)
        (cold_home / "state").mkdir()
        (cold_home / "state" / "llmgined.log").write_text("a line of the daemon's log\n")
    proc, read_end = _follow_into_pipe(follower, env)
    try:
        # The command's follow: once it is running (its engine says so), nothing for ten minutes.
        assert _first_line(read_end, b"processing" if follower[0] == "command" else b"")
        os.close(read_end)  # head -1 has its line and exits
        read_end = -1
        _out, err = proc.communicate(timeout=30)  # a liveness bound: without the fix, never
    finally:
        if read_end >= 0:
            os.close(read_end)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for running in cli("ps", "--session", sid, "-q").stdout.split():  # it goes on, as after Ctrl-C
            cli("command", "cancel", running, "-S", sid, "-q")
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


@pytest.mark.parametrize("columns", [80, 200])
def test_top_keeps_ids_and_statuses_whole_and_cuts_the_type(cli, daemon, columns, tmp_path):
    """`top` drew its table at most 80 wide, and rich shrank every column alike: with a long
    command type the ids and statuses were "e8…" and "exec…", at 200 columns too. It fits the
    table as `ps` does: ids, statuses and times whole, the type cut with "…" (or whole)."""
    import pexpect

    sid = cli("session", "create", "-q").stdout.strip()
    assert cli("engine", "create", "DummyEngine", "-S", sid, "-q").exit_code == 0
    long_type = "AnExtremelyLongCommandTypeName.with.dots:and-dashes_to_fill_a_column"
    handler = tmp_path / "handler.py"
    handler.write_text("def handle(command):\n    return {}\n")  # never runs: blocked, then cancelled
    assert cli("handler", "add", "command", long_type, str(handler), "-S", sid, "-q").exit_code == 0
    blocker = cli("command", "run", "DummyEngineCommand", "-S", sid, "-p", "prompt=x", "-p", "delay_ms:=600000",
                  "--no-wait", "-q").stdout.strip()  # fmt: skip
    blocked = cli("command", "run", long_type, "-S", sid, "--after", blocker, "--no-wait", "-q").stdout.strip()
    env = full_env({**daemon.env, "COLUMNS": str(columns), "LINES": "40", "TERM": "xterm"})
    child = pexpect.spawn(
        sys.executable,
        ["-m", "llmgine_cli", "top", "--interval", "0.2", "--session", sid],
        env=env,
        timeout=30,
        encoding="utf-8",
        dimensions=(40, columns),
        preexec_fn=default_signals,
    )
    try:
        child.expect(r"(?s)blocked.*?q or Ctrl-C quits")
        frame = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", child.before + child.after)
        child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
        cli("command", "cancel", blocker, "-S", sid, "-q")
    row = next(line for line in frame.splitlines() if blocked[-8:] in line and "waits" not in line)
    assert sid[-8:] in row and "blocked" in row, frame
    assert (long_type in row) == (columns == 200), row
    assert all(len(line) <= columns for line in frame.splitlines()), frame


def test_every_session_option_takes_dash_capital_s():
    """`-S ID` names the session everywhere (`command list -S`, `event tail -S`), but `logs`,
    `log`, `metrics` and `traces` took only `-s`: `llmgine traces -S "$SID"` was a usage error.
    They take both now."""
    from llmgine_cli.root import COMMANDS, build_command

    without = {
        path
        for name in COMMANDS
        for path, opts in _leaves(build_command(name), [name])
        if "--session" in opts and "-S" not in opts
    }
    assert without == set()


def test_event_tail_without_a_daemon_exits_3_as_every_command(cold_home):
    """With no daemon (auto-start off, or --url naming one that is not there) every command
    exits 3 at once; `event tail --all` (or of a full session id, which needs no lookup) said
    "reconnecting ..." and waited for ever. Reconnecting is for a stream that was there."""
    for env in (cli_env(cold_home), cli_env(cold_home, LLMGINE_URL=f"unix://{cold_home}/none.sock")):
        for args in (["event", "tail", "--all"], ["event", "tail", "01a24c5c-9a68-7682-add6-133122496426"]):
            result = run_cli(args, env, timeout=30)  # without the fix: TimeoutExpired
            assert result.returncode == 3, result.stderr
            assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1, result.stderr


def _ctrl_c(proc: subprocess.Popen[str], waiting):
    """Ctrl-C to ``proc`` once ``waiting()`` returned (what it returned, and the stderr of
    ``proc``, which is killed if it does not end)."""
    import signal

    try:
        seen = waiting()
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return seen, err


@pytest.mark.parametrize("cancel", [True, False], ids=["cancel-on-interrupt", "continues"])
def test_ctrl_c_during_command_run_follow_is_as_without_follow(cli, daemon, cancel):
    """Ctrl-C in `command run --follow` exited 130 without a word, and --cancel-on-interrupt
    was ignored: the command went on. As without --follow, it is now cancelled with the flag,
    and otherwise the message says it goes on and how to stop it."""
    from tests.clitools import spawn_cli

    sid = cli("session", "create", "-q").stdout.strip()
    assert cli("engine", "create", "DummyEngine", "-S", sid, "-q").exit_code == 0
    args = ["command", "run", "DummyEngineCommand", "-S", sid, "-p", "prompt=x", "-p", "delay_ms:=600000"]
    args += ["--follow", "-o", "jsonl", *(["--cancel-on-interrupt"] if cancel else [])]
    proc = spawn_cli(args, daemon.env)
    started, err = _ctrl_c(proc, lambda: json.loads(proc.stdout.readline()))
    assert started["event_type"] == "CommandStarted", started
    cid = started["data"]["command_id"]
    assert proc.returncode == 130, err
    status = json.loads(cli("command", "get", cid, "-S", sid, "-o", "json").stdout)["status"]
    if cancel:
        assert f"interrupted: command {cid} cancelled" in err and status == "cancelled", (err, status)
    else:
        assert f"command {cid} continues in the daemon" in err and status == "executing", (err, status)
        assert cli("command", "cancel", cid, "-S", sid, "-q").exit_code == 0


def test_ctrl_c_during_engine_exec_names_the_command(cli, daemon):
    """`engine exec` held its first request open for the answer, so Ctrl-C there exited 130
    without a word (nor the command's id to cancel it). It waits as `command run` does now:
    the message names the command and how to stop it; --cancel-on-interrupt cancels it."""
    from tests.clitools import spawn_cli

    sid = cli("session", "create", "-q").stdout.strip()
    engine = cli("engine", "create", "DummyEngine", "-S", sid, "-q").stdout.strip()

    def executing() -> str | None:
        listed = json.loads(cli("command", "list", "-S", sid, "--status", "executing", "-o", "json").stdout)
        return listed["commands"][0]["command_id"] if listed["commands"] else None

    for extra, outcome in (([], "continues in the daemon"), (["--cancel-on-interrupt"], "cancelled")):
        proc = spawn_cli(["engine", "exec", engine, "hi", "-p", "delay_ms:=600000", *extra], daemon.env)
        cid, err = _ctrl_c(proc, lambda: eventually_blocking(executing, message="the command executing"))
        assert proc.returncode == 130 and f"interrupted: command {cid} {outcome}" in err, err
        if not extra:
            assert cli("command", "cancel", cid, "-S", sid, "-q").exit_code == 0


@pytest.mark.parametrize("flags", [["-q"], ["-o", "json"]])
def test_a_batch_that_did_not_complete_says_why_with_quiet_and_json(cli, tmp_path, flags):
    """`set -e` scripts die on exit 1: `command batch -q` (or -o json) with a failed command
    exited 1 without a word on stderr, where `command run -q` prints the error."""
    sid = cli("session", "create", "-q").stdout.strip()
    assert cli("engine", "create", "DummyEngine", "-S", sid, "-q").exit_code == 0
    batch = tmp_path / "batch.jsonl"
    lines = [
        {"command_type": "DummyEngineCommand", "parameters": {"prompt": "a", "fail": fail}} for fail in (False, True)
    ]
    batch.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = cli("command", "batch", "-f", str(batch), "-S", sid, "--sequential", *flags)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: batch ") and "1 completed, 1 failed" in result.stderr, result.stderr


def test_config_unset_twice_says_it_was_not_set(cold_cli, cold_home):
    """A re-run of a setup script: the second `config unset` said "unset KEY ...; restart the
    daemon to apply it" of a key the file no longer had, and rewrote the file."""
    assert cold_cli("config", "set", "server.workers", "2").exit_code == 0
    first = cold_cli("config", "unset", "server.workers")
    assert first.exit_code == 0 and first.stderr.startswith("unset server.workers in "), first.stderr
    again = cold_cli("config", "unset", "server.workers")
    assert again.exit_code == 0 and "server.workers is not set in " in again.stderr, again.stderr
    assert "restart" not in again.stderr


@pytest.mark.parametrize(("key", "code"), [("\x04", 2), ("\x03", 130)], ids=["ctrl-d", "ctrl-c"])
def test_ctrl_d_or_ctrl_c_at_the_secret_prompt(daemon, key, code):
    """Ctrl-D at `secret set`'s hidden prompt was "internal error: EOFError" (exit 1); Ctrl-C
    left the shell's prompt on the same line. Ctrl-D is a usage error (no value), Ctrl-C 130."""
    import pexpect

    child = pexpect.spawn(
        sys.executable,
        ["-m", "llmgine_cli", "secret", "set", "QA_PROMPTED"],
        env=full_env({**daemon.env, "TERM": "xterm"}),
        encoding="utf-8",
        timeout=30,
        preexec_fn=default_signals,
    )
    child.expect("QA_PROMPTED: ")
    child.send(key)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == code, child.before
    assert "internal error" not in child.before and child.before.startswith("\r\n"), repr(child.before)


def test_a_second_engine_of_a_type_is_explained(cli):
    """A re-run of `engine create DummyEngine -S s` said "a handler for 'DummyEngineCommand' is
    already registered" (no handler was added by hand); it names the engine there and the way
    out, as `ask`/`chat` do. Still a conflict: exit 6."""
    sid = cli("session", "create", "-q").stdout.strip()
    engine = cli("engine", "create", "DummyEngine", "-S", sid, "-q").stdout.strip()
    again = cli("engine", "create", "DummyEngine", "-S", sid, "-q")
    assert again.exit_code == 6 and again.stdout == ""
    assert f"already has a DummyEngine ({engine[-8:]}" in again.stderr, again.stderr
    assert f"llmgine engine exec {engine[-8:]} PROMPT" in again.stderr and "handler" not in again.stderr


def test_event_tail_quiet_prints_the_events_ids(cli):
    """-q (ids, one per line) is every listing's; `event tail -q` was a usage error."""
    sid = cli("session", "create", "-q").stdout.strip()
    assert cli("event", "publish", "One", "-S", sid, "-q").exit_code == 0
    assert cli("session", "delete", sid, "-q").exit_code == 0  # the tail ends with the session
    tailed = cli("event", "tail", sid, "--since", "all", "-q")
    assert tailed.exit_code == 0, tailed.stderr
    assert tailed.stdout.split() == cli("event", "list", "-S", sid, "-q").stdout.split()
    assert len(tailed.stdout.split()) == 3  # SessionStarted, One, SessionEnded


def test_an_empty_python_file_is_a_usage_error(cli, daemon, tmp_path):
    """`tool register -` with nothing piped in (or an empty FILE.py) reached the daemon and came
    back as VALIDATION_ERROR, exit 1; like an empty --data, it is a usage error (exit 2)."""
    sid = cli("session", "create", "-q").stdout.strip()
    piped = _piped(daemon, ["tool", "register", "-", "-S", sid], "")
    assert piped.returncode == 2 and "stdin is empty" in piped.stderr, piped.stderr
    empty = tmp_path / "empty.py"
    empty.write_text("\n")
    result = cli("handler", "add", "command", "Nothing", str(empty), "-S", sid)
    assert result.exit_code == 2 and "is empty: no Python source" in result.stderr, result.stderr


def test_session_delete_takes_several_ids_as_docker_rm(cli):
    """`llmgine session list -q | xargs llmgine session delete` was a usage error (one ID);
    several are ended in turn, a failure is its line and the exit code, the rest go on."""
    first, second = (cli("session", "create", "-q").stdout.strip() for _ in range(2))
    result = cli("session", "delete", first, "no-such-session", second, "-q")
    assert result.exit_code == 4
    assert result.stdout.split() == [first, second]
    assert result.stderr == "error: SESSION_NOT_FOUND: session 'no-such-session' not found\n"
    for sid in (first, second):
        assert json.loads(cli("session", "get", sid, "-o", "json").stdout)["status"] == "closed"
    listed = cli("session", "delete", first, second, "--purge", "-o", "json")
    assert listed.exit_code == 0
    assert json.loads(listed.stdout) == {"sessions": [{"session_id": s, "status": "purged"} for s in (first, second)]}
    # One ID: the record as before (and its error as it was: exit 4, nothing on stdout).
    alone = cli("session", "delete", first, "-o", "json")
    assert alone.exit_code == 4 and alone.stdout == ""
    # Every failure is its line, not only the first (the exit code is the first's).
    result = cli("session", "delete", "no-such-one", first, "no-such-two", "-q")
    assert result.exit_code == 4 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: SESSION_NOT_FOUND: session {name!r} not found" for name in ("no-such-one", first, "no-such-two")
    ], result.stderr


def test_the_metrics_title_shows_its_time_as_every_time_is_shown(daemon):
    """`metrics` (and `--watch`) titled the table with the raw ISO timestamp
    (2026-12-06T22:58:06.308511Z) where every other time is local with its zone, or --utc."""
    title = run_cli(["--utc", "metrics", "-o", "table"], daemon.env).stdout.strip().splitlines()[0]
    assert re.fullmatch(r"llmgine metrics - daemon - \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", title.strip()), title


def test_config_usage_errors_read_as_one_sentence(cold_cli):
    """They said where to look twice ("(see `llmgine config show --local`) (see 'llmgine config
    get -h')") and "Invalid value for VALUE: value: server.port = ..."."""
    unknown = cold_cli("config", "get", "nope.key", "--local")
    assert unknown.exit_code == 2
    assert unknown.stderr.count("(see ") == 1 and "`llmgine config show --local` lists them" in unknown.stderr
    bad = cold_cli("config", "set", "server.port", "abc")
    assert bad.exit_code == 2 and "for VALUE: server.port = 'abc': expected an integer" in bad.stderr, bad.stderr


def _daemons_of(home) -> list[int]:
    """The llmgined processes started with LLMGINE_HOME=home."""
    mark = f"LLMGINE_HOME={home}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"llmgine_daemon" not in f.read():
                    continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                if mark in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_ctrl_c_while_the_daemon_starts_stops_it(cold_home):
    """Ctrl-C while `daemon start` waited for the daemon to answer exited 130 without a word and
    left the daemon starting in its own session, with no record of its flags for `daemon
    restart`. It is stopped, as when it does not answer in time, and the message says so."""
    import socket

    from tests.clitools import spawn_cli

    with socket.socket() as silent:  # a "database" that accepts and never answers: it hangs there
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"postgresql://nobody@127.0.0.1:{silent.getsockname()[1]}/none"
        proc = spawn_cli(["daemon", "start"], cli_env(cold_home, DATABASE_URL=url))
        _pids, err = _ctrl_c(proc, lambda: eventually_blocking(lambda: _daemons_of(cold_home), message="started"))
        assert proc.returncode == 130 and "interrupted: the llmgined that was starting is stopped" in err, err
        eventually_blocking(lambda: not _daemons_of(cold_home), message="llmgined stopped")


def test_chat_keeps_its_line_editing_after_ctrl_z_and_fg(daemon):
    """In a real shell's job control (bash in a pty): Ctrl-Z at chat's prompt, then fg. bash
    gave the terminal back in its own mode, so readline's was gone (typed text echoed twice,
    no prompt); chat now puts the mode back and draws the prompt and what was typed."""
    import pexpect

    env = full_env({**daemon.env, "TERM": "xterm", "PS1": "$ ", "HISTFILE": "/dev/null"})
    shell = pexpect.spawn("bash", ["--norc", "--noprofile", "-i"], env=env, encoding="utf-8", timeout=30)
    try:
        shell.expect_exact("$ ")
        shell.sendline(f"{sys.executable} -m llmgine_cli chat")
        shell.expect_exact("you> ")
        shell.send("ab")
        shell.expect_exact("ab")
        shell.send("\x1a")  # Ctrl-Z: bash stops the job
        shell.expect("Stopped")
        shell.expect_exact("$ ")
        shell.sendline("fg")
        shell.expect_exact("you> ab")  # drawn again; without the fix, nothing (and this times out)
        shell.send("\x15/exit\r")  # readline's Ctrl-U clears "ab": then /exit
        shell.expect_exact("$ ")
        shell.sendline("exit")
        shell.expect(pexpect.EOF)
    finally:
        shell.close(force=True)
