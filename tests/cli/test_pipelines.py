"""`llmgine` as a shell script uses it, as real processes: ids passed through `xargs` and
`$(...)`, bodies read from stdin or files, the errors a script branches on."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.clitools import no_traceback, one_line, run_cli, shell


def _slow_command(env: dict[str, str | None]) -> tuple[str, str]:
    """A session with a DummyEngine and a command in it that runs for ten minutes."""
    sid = run_cli(["session", "create", "-q"], env).stdout.strip()
    assert run_cli(["engine", "create", "DummyEngine", "-S", sid, "-q"], env).returncode == 0
    run = run_cli(
        [
            "command",
            "run",
            "DummyEngineCommand",
            "-S",
            sid,
            "-p",
            "prompt=x",
            "-p",
            "delay_ms:=600000",
            "--no-wait",
            "-q",
        ],
        env,
    )
    assert run.returncode == 0, run.stderr
    return sid, run.stdout.strip()


def test_command_cancel_takes_ids_from_xargs_of_any_session(daemon):
    """`llmgine ps -q | xargs -r llmgine command cancel` stopped at a usage error: cancel took
    one id, and only with the command's session (-S), which `ps` (every session) and `command
    run --no-wait -q` (an id alone) do not print. It takes several now, of any session, as
    `command wait` does; a short id as `ps` shows it works too."""
    env = daemon.env
    s1, a = _slow_command(env)
    s2, b = _slow_command(env)
    _, c = _slow_command(env)
    result = shell(f"printf '%s\\n' {a} {b} | xargs -r llmgine command cancel -q", env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [a, b]
    for sid, cid in ((s1, a), (s2, b)):
        got = run_cli(["command", "get", cid, "-S", sid, "-o", "json"], env)
        assert json.loads(got.stdout)["status"] == "cancelled"
    short = run_cli(["command", "cancel", c[-8:], "-o", "json"], env)  # as `llmgine ps` shows it
    assert short.returncode == 0, short.stderr
    assert json.loads(short.stdout)["status"] == "cancelled"


def test_command_cancel_of_several_goes_on_past_a_failure(daemon):
    """As `session delete ID...`: each failure is its line on stderr, the others are cancelled,
    and the exit code is the first failure's (4: not found; 6: finished already)."""
    env = daemon.env
    sid, live = _slow_command(env)
    missing = "01a25032-0000-7000-8000-000000000000"
    result = run_cli(["command", "cancel", missing, live, live, "-o", "json"], env)
    assert result.returncode == 4, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and "COMMAND_NOT_FOUND" in lines[0] and "CONFLICT" in lines[1], (lines, result.stdout)
    assert [c["command_id"] for c in json.loads(result.stdout)["commands"]] == [live]
    no_traceback(result.stderr)
    # With -S the command is looked for in that session (finished ones too): exit 6 now.
    again = run_cli(["command", "cancel", live[-8:], "-S", sid], env)
    assert again.returncode == 6, again.stderr


def test_log_dash_reads_the_message_from_stdin(daemon):
    """`some-step 2>&1 | llmgine log -` recorded the message "-", as `engine exec ID -` and
    `ask -` read their prompt from stdin; it reads stdin now (its text, the last newline cut)."""
    result = shell("printf 'disk full\\non /var\\n' | llmgine log - --level warning -o json", daemon.env)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert (record["message"], record["level"]) == ("disk full\non /var", "warning")
    empty = shell("llmgine log - < /dev/null", daemon.env)
    assert empty.returncode == 2 and "empty" in one_line(empty.stderr), empty.stderr


def test_a_prompt_on_stdin_that_is_not_utf8_is_a_usage_error(daemon):
    """`engine exec ID -` and `ask -` read stdin with Python's own decoding: bytes that are not
    UTF-8 became lone surrogates and failed in the request (`internal error:
    UnicodeEncodeError`, exit 1); now a usage error names stdin, as `--data -` does."""
    env = daemon.env
    sid = run_cli(["session", "create", "-q"], env).stdout.strip()
    engine = run_cli(["engine", "create", "DummyEngine", "-S", sid, "-q"], env).stdout.strip()
    for args in (f"engine exec {engine} -", "ask -", "log -"):
        result = shell(f"printf '\\377\\376' | llmgine {args}", env)
        assert result.returncode == 2, (args, result.stderr)
        assert "stdin is not UTF-8 text" in one_line(result.stderr), result.stderr


def test_json_that_does_not_parse_is_named_by_where_it_came_from(daemon, tmp_path):
    """`--data @payload.json` with a stray comma said "--data: not JSON: ... line 1 column 9": of
    a file, or of stdin, the error names it now; `command batch -f` said "line 2 is not JSON:
    ...: line 1 column 2", two lines in one message."""
    env = daemon.env
    sid = run_cli(["session", "create", "-q"], env).stdout.strip()
    (tmp_path / "payload.json").write_text('{"a": 1,}')
    (tmp_path / "jobs.jsonl").write_text('{"command_type": "T"}\n{bad}\n')
    cases = [
        (f"llmgine event publish T -S {sid} --data @{tmp_path}/payload.json", f"{tmp_path}/payload.json is not JSON"),
        (f"llmgine event publish T -S {sid} --data - < {tmp_path}/payload.json", "--data: stdin is not JSON"),
        (f"llmgine command run T -S {sid} --params @- < {tmp_path}/payload.json", "--params: stdin is not JSON"),
        (
            f"llmgine command batch -S {sid} -f {tmp_path}/jobs.jsonl",
            f"--file: {tmp_path}/jobs.jsonl line 2 is not JSON: Expecting property name enclosed in double quotes "
            "(column 2)",
        ),
        (f"llmgine command batch -S {sid} -f - < {tmp_path}/jobs.jsonl", "--file: stdin line 2 is not JSON"),
    ]
    for script, expected in cases:
        result = shell(script, env)
        assert result.returncode == 2, (script, result.stderr)
        assert expected in one_line(result.stderr), (script, result.stderr)


def test_an_empty_secret_on_stdin_is_a_usage_error_everywhere(daemon):
    """`webhook add URL --secret-stdin < /dev/null` sent an empty secret and got the daemon's
    VALIDATION_ERROR (exit 1), where `secret set` and `context add --api-key-stdin` say the
    value on stdin is empty (exit 2): a script's `$(vault read ...)` that came back empty."""
    for args in ("webhook add http://127.0.0.1:9/hook --secret-stdin", "secret set EMPTY_ONE"):
        result = shell(f"llmgine {args} < /dev/null", daemon.env)
        assert result.returncode == 2, (args, result.stderr)
        assert "empty" in one_line(result.stderr), result.stderr
    hooks = json.loads(shell("llmgine webhook list -o json", daemon.env).stdout)["webhooks"]
    assert not [h for h in hooks if h["url"] == "http://127.0.0.1:9/hook"]


def _reading_stdin(pid: int) -> bool:
    """Whether process ``pid`` is blocked in read(0, ...) (/proc/PID/syscall: number, fd)."""
    import platform

    read = {"x86_64": "0", "aarch64": "63"}.get(platform.machine())
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return read is not None and fields[:2] == [read, "0x0"]


def test_ctrl_c_anywhere_ends_the_echoed_line(daemon):
    """Ctrl-C in a command with no Ctrl-C of its own (`tool register -` waiting for the source
    on a terminal) exited 130 with the shell's prompt right after the echoed `^C` (`^C$ `):
    only the followers and waits ended that line. Every command does now (after a spinner,
    whose line is cleared on the way out, nothing more is written)."""
    import pexpect

    from tests.clitools import cli_on_terminal
    from tests.eventually import eventually_blocking

    env = {**daemon.env, "TERM": "xterm-256color"}
    sid = run_cli(["session", "create", "-q"], env).stdout.strip()
    child = cli_on_terminal(["tool", "register", "-", "-S", sid], env)
    eventually_blocking(lambda: _reading_stdin(child.pid))
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130, child.before
    assert re.search(r"\^C\r?\n", child.before or ""), repr(child.before)
    no_traceback(child.before)


def test_deletes_take_the_ids_a_listing_prints(daemon):
    """`llmgine webhook list -q | xargs -r llmgine webhook delete` was a usage error (`Got
    unexpected extra argument`, exit 2, nothing deleted) with two webhooks or more, and so for
    schedules (and their pause), engines, tools, API keys and secrets: `xargs -n1` was needed.
    They take several ids now, as `session delete` and `docker rm` do; a failure is its line and
    the exit code, the others still go. (The engines come before the schedules: a schedule
    needs a handler.)"""
    env = daemon.env
    sid = run_cli(["session", "create", "-q"], env).stdout.strip()
    hooks = [
        run_cli(["webhook", "add", f"http://127.0.0.1:9/{n}", "-S", sid, "-q"], env).stdout.strip() for n in (1, 2)
    ]
    engines = [
        run_cli(["engine", "create", t, "-S", sid, "-q"], env).stdout.strip() for t in ("DummyEngine", "ToolChatEngine")
    ]
    made = [
        run_cli(["schedule", "add", "DummyEngineCommand", "-S", sid, "--every", f"{n}h", "-q"], env).stdout.strip()
        for n in (1, 2)
    ]
    paused = run_cli(["schedule", "pause", *made, "-o", "json"], env)
    assert paused.returncode == 0, paused.stderr
    assert [s["status"] for s in json.loads(paused.stdout)["schedules"]] == ["paused", "paused"]
    for kind, ids in (("webhook", hooks), ("schedule", made), ("engine", engines)):
        assert all(ids), (kind, ids)
        result = shell(f"llmgine {kind} list -S {sid} -q | xargs -r llmgine {kind} delete -q", env)
        assert result.returncode == 0, (kind, result.stderr)
        assert sorted(result.stdout.split()) == sorted(ids), (kind, result.stdout)
    for name in ("one", "two"):
        source = f"def {name}() -> int:\n    return 1\n"
        assert shell(f"llmgine tool register - -S {sid} -q", env, stdin=source).returncode == 0
    tools = shell(f"llmgine tool list -S {sid} -q | xargs -r llmgine tool delete -S {sid} -o json", env)
    assert tools.returncode == 0, tools.stderr
    assert [t["name"] for t in json.loads(tools.stdout)["tools"]] == ["one", "two"]
    keys = [run_cli(["auth", "key", "create", "-o", "json"], env).stdout for _ in (1, 2)]
    key_ids = [json.loads(k)["key_id"] for k in keys]
    revoked = run_cli(["auth", "key", "revoke", *key_ids, "-q"], env)
    assert revoked.returncode == 0 and revoked.stdout.split() == key_ids, revoked.stderr
    secrets = [f"S11_{sid[-8:].upper()}_{n}" for n in (1, 2)]
    for name in secrets:
        assert shell(f"printf x | llmgine secret set {name} -q", env).returncode == 0
    gone = run_cli(["secret", "delete", *secrets, "-q"], env)
    assert gone.returncode == 0 and gone.stdout.split() == secrets, gone.stderr
    again = run_cli(["webhook", "delete", hooks[0], "-o", "json"], env)
    assert again.returncode == 4 and "NOT_FOUND" in one_line(again.stderr)
    hook = run_cli(["webhook", "add", "http://127.0.0.1:9/3", "-S", sid, "-q"], env).stdout.strip()
    mixed = run_cli(["webhook", "delete", hooks[0], hook[-8:], "-o", "json"], env)
    assert mixed.returncode == 4 and "NOT_FOUND" in one_line(mixed.stderr), mixed.stderr
    assert json.loads(mixed.stdout) == {"webhooks": [{"webhook_id": hook, "deleted": True}]}


def test_command_get_finds_the_session_of_an_id(daemon):
    """`ID=$(llmgine command run T --no-wait -q); llmgine command get "$ID"` was `Missing option
    '--session'` (exit 2) unless LLMGINE_SESSION was set, while `command wait "$ID"` took it
    alone: an id names its command in every session. `command get` takes it alone too (a
    short id: of an unfinished command, as `command wait` and `cancel` take them)."""
    env = daemon.env
    sid, slow = _slow_command(env)  # its session's queue is busy: another for the one that ends
    other = run_cli(["session", "create", "-q"], env).stdout.strip()
    run_cli(["engine", "create", "DummyEngine", "-S", other, "-q"], env)
    done = run_cli(["command", "run", "DummyEngineCommand", "-S", other, "-p", "prompt=x", "-q"], env)
    got = run_cli(["command", "get", done.stdout.strip(), "-o", "json"], env)
    assert got.returncode == 0, got.stderr
    assert (json.loads(got.stdout)["session_id"], json.loads(got.stdout)["status"]) == (other, "completed")
    short = run_cli(["command", "get", slow[-8:], "--format", "{{.session_id}} {{.status}}"], env)
    assert short.returncode == 0 and short.stdout.split() == [sid, "executing"], short.stderr
    missing = run_cli(["command", "get", "01a25032-0000-7000-8000-000000000000"], env)
    assert missing.returncode == 4 and "COMMAND_NOT_FOUND" in one_line(missing.stderr)
    run_cli(["command", "cancel", slow, "-q"], env)


def test_command_wait_takes_more_ids_than_one_request_holds(daemon, tmp_path):
    """`llmgine command batch -f big.jsonl --no-wait -q | xargs llmgine command wait` with more
    than 1000 commands was the daemon's VALIDATION_ERROR (`command_ids: Expected array of length
    <= 1000`, exit 1): one request holds 1000 ids. The CLI waits for them 1000 at a time now."""
    env = daemon.env
    sid = run_cli(["session", "create", "-q"], env).stdout.strip()
    assert run_cli(["engine", "create", "DummyEngine", "-S", sid, "-q"], env).returncode == 0
    line = '{"command_type": "DummyEngineCommand", "parameters": {"prompt": "x"}}\n'
    (tmp_path / "big.jsonl").write_text(line * 1001)
    result = shell(
        f"llmgine command batch -S {sid} -f {tmp_path}/big.jsonl --no-wait -q | xargs llmgine command wait -q", env
    )
    assert result.returncode == 0, result.stderr[-500:]
    assert len(result.stdout.split()) == 1001
    listed = run_cli(["command", "list", "-S", sid, "--status", "completed", "-o", "json", "-n", "1"], env)
    assert json.loads(listed.stdout)["total"] == 1001
    many = shell(f"llmgine command list -S {sid} -q -n 1000 | xargs llmgine command wait --any -q", env)
    assert many.returncode == 0, many.stderr


def test_ids_cut_by_the_limit_say_so_on_stderr(daemon):
    """`llmgine session list -q | xargs -r llmgine session delete -q` (the README's way to end
    every session) ended the newest 50 and said nothing: -q left out the "showing 1-50 of 62"
    note the other formats print. The note goes to stderr with -q too (stdout keeps only ids).
    `engine list` said nothing of the rest in any format, and `ps -q` (100 by default) neither."""
    env = daemon.env
    sid = run_cli(["session", "create", "-q"], env).stdout.strip()
    run_cli(["session", "create", "-q"], env)
    for n in (1, 2):
        run_cli(["event", "publish", f"T{n}", "-S", sid, "-q"], env)
    lists = (["session", "list"], ["event", "list", "-S", sid], ["command", "list", "-S", sid], ["engine", "list"])
    for args in lists:
        if args[0] == "command":
            assert run_cli(["engine", "create", "DummyEngine", "-S", sid, "-q"], env).returncode == 0
            assert run_cli(["engine", "create", "ToolChatEngine", "-S", sid, "-q"], env).returncode == 0
            for _ in (1, 2):
                run_cli(["command", "run", "DummyEngineCommand", "-S", sid, "-p", "prompt=x", "-q"], env)
        result = run_cli([*args, "-q", "-n", "1"], env)
        assert result.returncode == 0 and len(result.stdout.split()) == 1, (args, result.stdout)
        assert "showing 1" in one_line(result.stderr) and " of " in result.stderr, (args, result.stderr)
    slow = [_slow_command(env)[1] for _ in (1, 2)]  # `ps` lists the unfinished commands
    queue = run_cli(["ps", "-q", "-n", "1"], env)
    assert queue.returncode == 0 and len(queue.stdout.split()) == 1, queue.stdout
    assert "showing 1 of " in one_line(queue.stderr), queue.stderr
    assert run_cli(["command", "cancel", *slow, "-q"], env).returncode == 0


def test_a_key_read_on_a_terminal_is_asked_for_and_not_shown(daemon):
    """`context add NAME --url U --api-key-stdin` (and `webhook add --secret-stdin`) on a
    terminal waited, without a word, for Ctrl-D, and the key was shown as it was typed (on the
    screen, in a recording of it). They ask for it without echo now, as `secret set` does."""
    import pexpect

    from tests.clitools import cli_on_terminal

    env = {**daemon.env, "TERM": "xterm-256color"}
    name = f"tty{daemon.port}"
    child = cli_on_terminal(["context", "add", name, "--url", "http://127.0.0.1:9", "--api-key-stdin", "-q"], env)
    child.expect_exact(f"API key for {name}: ")
    child.sendline("lgk_typed_on_the_terminal")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert "lgk_typed_on_the_terminal" not in (child.before or ""), child.before
    shown = run_cli(["context", "ls", "-o", "json"], env).stdout
    assert any(c["name"] == name and c["api_key"] == "set" for c in json.loads(shown)["contexts"]), shown
    assert run_cli(["context", "rm", name, "-q"], env).returncode == 0


def test_mcp_remove_takes_several_names(daemon):
    """`llmgine mcp list -q | xargs -r llmgine mcp remove` with two servers was `Got unexpected
    extra argument` (exit 2): each name is removed in turn now, each failure its own line."""
    result = run_cli(["mcp", "remove", "nope_one", "nope_two"], daemon.env)
    assert result.returncode == 4, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and "nope_one" in lines[0] and "nope_two" in lines[1], lines
    no_traceback(result.stderr)


def test_an_argument_that_is_not_utf8_is_a_usage_error(daemon):
    """`llmgine event publish "$TYPE"` with TYPE holding bytes that are not UTF-8 (a Latin-1
    file name, say) was `internal error: UnicodeEncodeError ... surrogates not allowed` (exit 1)
    on the fast path and in Typer's commands alike: a usage error now, showing the value."""
    env = daemon.env
    sid = run_cli(["session", "create", "-q"], env).stdout.strip()
    for args in (f"event publish $'T\\xff' -S {sid} -q", f"log $'msg\\xff' -S {sid}", "webhook add $'http://x/\\xff'"):
        result = shell(f"llmgine {args}", env)
        assert result.returncode == 2, (args, result.stderr)
        line = one_line(result.stderr)
        assert "not UTF-8 text" in line and "internal error" not in line, line
