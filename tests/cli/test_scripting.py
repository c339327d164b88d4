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
    sid = cli("session", "create", "--name", name, "--allow-duplicate", "-q").stdout.strip()
    result = run_cli(["session", "get", sid, "-o", fmt], {**daemon.env, **NOT_UTF8})
    assert result.returncode == 0, result.stderr
    assert result.stdout.isascii()
    if fmt == "plain":
        assert "\\u65e5\\u672c\\u8a9e" in result.stdout and "\\ud83d\\ude00" in result.stdout
    else:
        assert json.loads(result.stdout)["name"] == name
    # An error naming it (stderr) is its one line too, not a second failure while reporting it.
    assert cli("session", "create", "--name", name, "--allow-duplicate", "-q").exit_code == 0
    ambiguous = run_cli(["session", "get", name, "-o", fmt], {**daemon.env, **NOT_UTF8})
    assert ambiguous.returncode == 2, ambiguous.stderr
    assert "ambiguous" in ambiguous.stderr and "\\u65e5\\u672c\\u8a9e" in ambiguous.stderr


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
    "version",
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


def test_every_limit_takes_dash_n(cli, daemon):
    """`logs -n 5` and `traces -n 5` (as `head -n`), but `session|command|event|engine list`,
    `ps`, `top` and `webhook deliveries` took only `-l`: `-n 5` was a usage error there."""
    from llmgine_cli.root import COMMANDS, build_command

    limits = {
        path: opts for name in COMMANDS for path, opts in _leaves(build_command(name), [name]) if "--limit" in opts
    }
    assert len(limits) >= 10 and all("-n" in opts for opts in limits.values()), limits
    for _ in range(2):
        assert cli("session", "create", "-q").exit_code == 0
    for args in (["session", "list"], ["command", "list", "-S", "nope"]):  # a real process: the fast path
        result = run_cli([*args, "-n", "1", "-q"], daemon.env)
        if args[0] == "session":
            assert result.returncode == 0 and len(result.stdout.splitlines()) == 1, result.stderr
        else:
            assert result.returncode == 4, result.stderr  # -n taken; the session is not there


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
    assert cli("engine", "create", "DummyEngine", "-S", sid, "-q").exit_code == 0  # the schedule's handler
    schedule = cli("schedule", "add", "DummyEngineCommand", "--every", "3600", "-S", sid, "-q").stdout.strip()
    deleted = cli("schedule", "delete", schedule, "-o", "json")
    assert deleted.exit_code == 0 and json.loads(deleted.stdout) == {"schedule_id": schedule, "deleted": True}
    # Without -o: as before, a line on stderr and nothing on stdout; -q the id.
    _set_secret(daemon, "QA_SCRIPTING")
    plain = cli("secret", "delete", "QA_SCRIPTING")
    assert plain.stdout == "" and plain.stderr == "deleted secret QA_SCRIPTING\n"
    gone = cli("secret", "delete", "QA_SCRIPTING", "-o", "json")
    assert gone.exit_code == 4 and gone.stdout == ""
    # `tool delete` and `handler delete` printed a key/value table of what they were given on
    # stdout; as every other delete with no record to show: a line on stderr.
    code = "def shout(command):\n    return 1\n"
    assert _piped(daemon, ["tool", "register", "-", "-S", sid, "-q"], code).returncode == 0
    assert _piped(daemon, ["handler", "add", "command", "Shout", "-", "-S", sid, "-q"], code).returncode == 0
    tool = cli("tool", "delete", "shout", "-S", sid)
    assert (tool.exit_code, tool.stdout, tool.stderr) == (0, "", "deleted tool shout\n")
    handler = cli("handler", "delete", "command", "Shout", "-S", sid)
    assert (handler.stdout, handler.stderr) == ("", "deleted the session's command handler of Shout\n")


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


@pytest.mark.parametrize("locale", [{"LC_ALL": "C"}, {"LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8:strict"}])
def test_bytes_that_are_not_utf8_on_stdin_are_a_usage_error(cli, daemon, tmp_path, locale):
    """`llmgine tool register - < binary` was "internal error: UnicodeEncodeError" (exit 1): in
    the C locale stdin decodes with surrogateescape and the lone surrogates failed at sending;
    `command batch -f FILE` with such a file failed to decode as an internal error too. Every
    reader of stdin or of a file now says it is not UTF-8 text: a usage error, exit 2."""
    sid = cli("session", "create", "-q").stdout.strip()
    binary = bytes(range(128, 256))
    (tmp_path / "bin.jsonl").write_bytes(binary)
    cases = [
        (["tool", "register", "-"], "FILE"),
        (["handler", "add", "command", "T", "-"], "FILE"),
        (["command", "batch", "-f", "-"], "--file"),
        (["command", "run", "T", "-p", "a=@-"], "--param"),
        (["command", "run", "T", "--params", "-"], "--params"),
        (["event", "publish", "T", "--data", "@-"], "--data"),
        (["secret", "set", "QA_BINARY"], "stdin"),
        (["webhook", "add", "http://127.0.0.1:9/x", "--secret-stdin"], "--secret-stdin"),
    ]
    for args, where in cases:
        scoped = ["-S", sid] if args[0] not in ("secret", "webhook") else []
        result = subprocess.run(
            [sys.executable, "-m", "llmgine_cli", *args, *scoped],
            env=full_env({**daemon.env, **locale}),
            input=binary,
            capture_output=True,
            timeout=60,
        )
        err = result.stderr.decode()
        assert result.returncode == 2, (args, err)
        assert f"{where}: stdin is not UTF-8 text" in err and "internal error" not in err, (args, err)
    from_file = cli("command", "batch", "-f", str(tmp_path / "bin.jsonl"), "-S", sid)
    assert from_file.exit_code == 2 and "bin.jsonl is not UTF-8 text" in from_file.stderr, from_file.stderr


@pytest.mark.parametrize("name", ["my projet", "projekt-ü"])
def test_a_session_name_that_names_nothing_is_not_found(cli, daemon, name):
    """Names may have spaces and accents; a mistyped one ("my projet" for "my project") was
    sent on as an id, which the daemon refused as no identifier: VALIDATION_ERROR, exit 1,
    where `session get nope` is SESSION_NOT_FOUND, exit 4. A script testing whether a session
    exists got a different answer by the name's spelling."""
    assert cli("session", "create", "--name", "my project", "--reuse", "-q").exit_code == 0
    for args in (["session", "get", name], ["session", "delete", name], ["event", "list", "-S", name]):
        result = cli(*args)
        assert result.exit_code == 4, (args, result.stderr)
        assert result.stderr == f"error: SESSION_NOT_FOUND: session {name!r} not found\n"
    on_the_fast_path = run_cli(["command", "run", "T", "-S", name, "--no-wait"], daemon.env)
    assert on_the_fast_path.returncode == 4 and "SESSION_NOT_FOUND" in on_the_fast_path.stderr


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
    # --reuse: the setup script's line run again prints the engine there (same model, config);
    # one of another model or configuration is still the conflict, saying why.
    reused = cli("engine", "create", "DummyEngine", "-S", sid, "--reuse", "-q")
    assert (reused.exit_code, reused.stdout.strip()) == (0, engine), reused.stderr
    for other in (["-M", "gpt-x"], ["-c", "temperature:=0.1"]):
        refused = cli("engine", "create", "DummyEngine", "-S", sid, "--reuse", *other)
        assert refused.exit_code == 6 and "--reuse takes only one of the same" in refused.stderr, refused.stderr


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
