"""What a user of gh or docker trips over at the edges of a terminal: a 40-column window,
closed standard streams, examples copied from --help. Real llmgine processes (pexpect where a
terminal is needed) against the shared real daemon."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pexpect

from tests.cli.test_help_examples import _commands
from tests.clitools import cli_on_terminal, default_signals, drawn_on_terminal, full_env, no_traceback, run_cli

# -- --help at 40 columns ----------------------------------------------------------------


def test_help_at_40_columns_names_every_option_whole(daemon):
    """Typer's boxed help cut option names to fit 40 columns (`--allow…`, `--outpu…`) and
    their help to a word a line: the options could not be read. Under 60 columns the help is
    click's plain layout, which wraps instead of cutting."""
    text, code = drawn_on_terminal(["session", "create", "--help"], daemon.env, 40)
    assert code == 0
    assert "…" not in text, text
    for option in ("--allow-duplicate", "--output", "--format", "--reuse", "--quiet"):
        assert option in text, (option, text)
    # Examples are kept as written (test_help_examples.py): the terminal wraps them.
    prose = [line for line in text.splitlines() if not re.match(r"^\s+([A-Z_]+=\$\()?llmgine ", line)]
    assert all(len(line) <= 40 for line in prose), text


def test_help_at_80_columns_keeps_its_boxes(daemon):
    text, code = drawn_on_terminal(["session", "create", "--help"], daemon.env, 80)
    assert code == 0 and "╭─ Options" in text and "--allow-duplicate" in text


# -- examples in --help ------------------------------------------------------------------


def test_help_examples_show_a_tab_as_backslash_t():
    r"""A docstring's `\t` was a tab character, which the help drew as a space: the example
    `-o 'table {{.a}}\t{{.b}}'` copied from the terminal printed one unaligned column."""
    tabbed = [" ".join(path) for path, cmd in _commands() if "\t" in (getattr(cmd.callback, "__doc__", "") or "")]
    assert not tabbed, tabbed
    shown = {" ".join(path): cmd.help or "" for path, cmd in _commands()}
    templated = {name: text for name, text in shown.items() if re.search(r"'table [^']*\}\}\s+\{\{", text)}
    assert not templated, templated  # table columns apart by blanks: a lost tab
    assert "{{.command_id}}\\t{{.error.message}}" in shown["command list"]


def test_help_pipes_into_xargs_with_r(daemon):
    """`llmgine session list -q | xargs llmgine session delete -q` with nothing listed ran
    `session delete` with no id: a usage error and exit 123 from xargs. `xargs -r` runs nothing."""
    piped = []
    for path, cmd in _commands():
        piped += [f"{' '.join(path)}: {m}" for m in re.findall(r"\| *xargs (?!-r)[^`\n]*", cmd.help or "")]
    assert not piped, piped
    empty = run_cli(["session", "list", "--format", "{{.name}}", "-n", "1"], daemon.env)
    assert empty.returncode == 0
    done = subprocess.run(
        "llmgine session list -q --all --offset 1000 | xargs -r llmgine session delete -q",
        shell=True,
        env=full_env({**daemon.env, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr


# -- closed standard streams -------------------------------------------------------------


def _closed(args: list[str], env: dict[str, str | None], fd: int) -> subprocess.CompletedProcess[str]:
    """llmgine with file descriptor ``fd`` closed (`<&-`, `>&-`, `2>&-` in a shell)."""

    def close_fd() -> None:
        default_signals()
        os.close(fd)

    return subprocess.run(
        [sys.executable, "-m", "llmgine_cli", *args],
        env=full_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=close_fd,
    )


def test_stdin_closed_is_empty_input_not_an_internal_error(daemon):
    """`llmgine ... <&-` (cron, some CI runners, nohup'd scripts): every read of stdin was
    `internal error: AttributeError: 'NoneType' object has no attribute 'isatty'`."""
    sid = run_cli(["session", "create", "-q"], daemon.env).stdout.strip()
    purge = _closed(["session", "delete", sid, "--purge", "-q"], daemon.env, 0)
    assert purge.returncode == 0, purge.stderr
    no_traceback(purge.stderr)
    publish = _closed(["event", "publish", "X", "-S", "demo-closed", "-d", "-"], daemon.env, 0)
    assert publish.returncode == 2 and "internal error" not in publish.stderr, publish.stderr
    secret = _closed(["secret", "set", "CLOSED_STDIN"], daemon.env, 0)
    assert secret.returncode == 2 and "the value is empty" in secret.stderr, secret.stderr


def test_stdout_or_stderr_closed_is_not_an_internal_error(daemon):
    out = _closed(["session", "create", "-n", "closed-stdout", "--reuse"], daemon.env, 1)
    assert out.returncode == 0 and "internal error" not in out.stderr, out.stderr
    err = _closed(["session", "get", "no-such-session"], daemon.env, 2)
    assert err.returncode == 4, err.stdout


# -- a 40-column table -------------------------------------------------------------------


def test_command_list_at_40_columns_keeps_the_status(daemon):
    """At 40 columns `command list` showed ID and TYPE and left out STATUS, what one looks
    for first: free text (TYPE) is cut further with "…" before a status is left out."""
    sid = run_cli(["session", "create", "-q"], daemon.env).stdout.strip()
    assert run_cli(["engine", "create", "DummyEngine", "-S", sid, "-q"], daemon.env).returncode == 0
    assert (
        run_cli(["command", "run", "DummyEngineCommand", "-S", sid, "-p", "prompt=a", "-q"], daemon.env).returncode == 0
    )
    text, code = drawn_on_terminal(["command", "list", "-S", sid], daemon.env, 40)
    assert code == 0
    header = next(line for line in text.splitlines() if "ID" in line)
    assert "STATUS" in header, text
    row = next(line for line in text.splitlines() if "completed" in line)
    assert "DummyEngine" in row and len(row) <= 40, text


# -- errors that say what to do next -----------------------------------------------------


def test_a_command_no_handler_takes_says_how_to_add_one(daemon):
    """`llmgine command run Report -S demo` (the --help's own example) in a fresh session was
    HANDLER_NOT_FOUND and nothing more: what handles a command type was not said."""
    sid = run_cli(["session", "create", "-q"], daemon.env).stdout.strip()
    done = run_cli(["command", "run", "Report", "-S", sid, "-p", "day:=3"], daemon.env)
    assert done.returncode == 4
    line = done.stderr.strip()
    assert "\n" not in line and line.startswith("error: HANDLER_NOT_FOUND: no handler for command 'Report'"), line
    assert "`llmgine handler add command Report FILE.py`" in line, line
    assert "`llmgine engine types`" in line, line
    engine = run_cli(["command", "run", "DummyEngineCommand", "-S", sid, "-p", "prompt=hi"], daemon.env)
    assert engine.returncode == 4 and "`llmgine engine create DummyEngine`" in engine.stderr, engine.stderr
    # Deleting a handler that is not there needs no such advice.
    gone = run_cli(["handler", "delete", "command", "Report", "-S", sid], daemon.env)
    assert gone.returncode == 4 and "handler add" not in gone.stderr, gone.stderr


# -- shell completion, as --help says to install it --------------------------------------


def test_completion_help_lines_work_in_a_fresh_home(tmp_path):
    """`llmgine completion bash > ~/.local/share/bash-completion/completions/llmgine`, as
    --help said, in a fresh home: `No such file or directory` (the folder is not there until
    something makes it). Every line of the help, run by a shell, now writes its file; then a
    bash that sources it completes `llmgine ses` to `session`."""
    from typer.testing import CliRunner

    from llmgine_cli.app import app

    shown = CliRunner().invoke(app, ["completion", "--help"], env={"COLUMNS": "200"}).stdout
    lines = [line.strip(" │") for line in shown.splitlines() if line.strip(" │").startswith(("mkdir ", "llmgine "))]
    lines = [line for line in lines if "zsh" not in line]  # zsh's goes into $fpath, not $HOME
    assert len(lines) == 4, shown
    bindir = os.path.dirname(sys.executable)
    env = full_env({"HOME": str(tmp_path), "PATH": f"{bindir}:{os.environ['PATH']}", "LLMGINE_NO_AUTOSTART": "1"})
    script = "set -e\n" + "\n".join(lines)
    done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, (script, done.stderr)
    script = tmp_path / ".local/share/bash-completion/completions/llmgine"
    assert (tmp_path / ".config/fish/completions/llmgine.fish").stat().st_size > 0
    words = subprocess.run(
        ["bash", "--norc", "-c", f"source {script}; COMP_WORDS=(llmgine ses); COMP_CWORD=1; "
         "_llmgine_completion llmgine; printf '%s\\n' \"${COMPREPLY[@]}\""],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert words.stdout.split() == ["session"], (words.stdout, words.stderr)


# -- Ctrl-C during a wait ----------------------------------------------------------------


def test_ctrl_c_while_a_batch_runs_says_which_batch_goes_on(daemon, tmp_path):
    """Ctrl-C in `command batch` while it waited for the batch to finish (the first wait,
    made with the submission) exited 130 and said nothing: the batch ran on, and its id, the
    way to find it, was never printed. Now it is, as for a later wait."""
    import json
    import signal

    from tests.clitools import spawn_cli

    sid = run_cli(["session", "create", "-q"], daemon.env).stdout.strip()
    assert run_cli(["engine", "create", "DummyEngine", "-S", sid, "-q"], daemon.env).returncode == 0
    jobs = tmp_path / "jobs.jsonl"
    slow = {"command_type": "DummyEngineCommand", "parameters": {"prompt": "a", "delay_ms": 600000}}
    jobs.write_text(json.dumps(slow) + "\n" + json.dumps(slow) + "\n")
    proc = spawn_cli(["command", "batch", "-f", str(jobs), "-S", sid], daemon.env)
    try:
        listed = ""
        while not listed:  # submitted: the CLI now waits for the batch
            assert proc.poll() is None, proc.communicate()
            listed = run_cli(["command", "list", "-S", sid, "-q"], daemon.env).stdout.strip()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    no_traceback(err)
    batch_id = run_cli(["command", "get", listed.split()[0], "-S", sid, "--format", "{{.batch_id}}"], daemon.env)
    assert f"interrupted: batch {batch_id.stdout.strip()} keeps running" in err, err
    for command_id in listed.split():
        run_cli(["command", "cancel", command_id, "-S", sid, "-q"], daemon.env)


def test_ctrl_c_in_a_follower_ends_the_echoed_line(daemon):
    """`llmgine logs -f` and `event tail -o jsonl` on a terminal, then Ctrl-C: the shell's prompt
    came right after the echoed `^C` (`^C$ `), and `command wait`'s message too (`^Cinterrupted:
    ...`); a program killed by SIGINT gets that newline from the shell, one exiting 130 by itself
    must write it."""
    sid = run_cli(["session", "create", "-q"], daemon.env).stdout.strip()
    mark = f"mark{sid[-8:]}"
    for args, publish in (
        (["logs", "-f", "--grep", mark], ["log"]),
        (["event", "tail", "-S", sid, "-o", "jsonl", "--since", "1h"], ["event", "publish", "-S", sid, "-q"]),
        (["event", "tail", "-S", sid, "--format", "{{.event_type}}", "--since", "1h"], ["event", "publish", "-S", sid]),
    ):
        child = cli_on_terminal(args, {**daemon.env, "TERM": "xterm-256color"})
        # The second record is written after the first was printed: the follower is in its loop.
        for n in ("1", "2"):
            assert run_cli([*publish, f"{mark}{n}"], daemon.env).returncode == 0
            child.expect_exact(f"{mark}{n}")
        child.expect("\n")
        child.sendintr()
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 130, (args, child.before)
        assert re.search(r"\^C\r?\n", child.before or ""), (args, child.before)


def test_health_quiet_says_what_it_prints(daemon):
    """`health -q` printed nothing (there is no id), while its --help said `Print only ids`."""
    done = run_cli(["health", "-q"], daemon.env)
    assert done.returncode == 0 and done.stdout == ""
    shown = run_cli(["health", "--help"], {**daemon.env, "COLUMNS": "200"}).stdout
    assert "Print nothing: the exit code answers." in shown and "Print only ids" not in shown, shown


def test_clicolor_force_colours_piped_output_as_gh_does(daemon):
    """`CLICOLOR_FORCE=1 llmgine session list -o table | less -R`: gh's switch was ignored (rich
    reads only FORCE_COLOR), so the table came out without colour."""
    run_cli(["session", "create", "-n", "colour", "--reuse", "-q"], daemon.env)
    colour = re.compile(r"\x1b\[3[0-7]m")
    args = ["session", "list", "-o", "table", "-n", "1"]
    assert colour.search(run_cli(args, {**daemon.env, "CLICOLOR_FORCE": "1"}).stdout)
    assert not colour.search(run_cli(args, {**daemon.env, "CLICOLOR_FORCE": "0"}).stdout)
    assert not colour.search(run_cli(args, {**daemon.env, "CLICOLOR_FORCE": "1", "NO_COLOR": "1"}).stdout)
    assert colour.search(run_cli(args, {**daemon.env, "FORCE_COLOR": "1"}).stdout)


def test_a_limit_reached_says_which_setting_raises_it(cold_home):
    """`error: LIMIT_REACHED: limit reached: at most 1 running engines in one session
    (security.limits.max_engines_per_session)` named the setting but not how to change it."""
    from tests.clitools import start_daemon, stop_process

    daemon = start_daemon(cold_home, env={"LLMGINE_MAX_ENGINES_PER_SESSION": "1"})
    try:
        sid = run_cli(["session", "create", "-q"], daemon.env).stdout.strip()
        assert run_cli(["engine", "create", "DummyEngine", "-S", sid, "-q"], daemon.env).returncode == 0
        done = run_cli(["engine", "create", "SinglePassEngine", "-S", sid, "-q"], daemon.env)
    finally:
        stop_process(daemon.proc)
    assert done.returncode == 6, done.stderr
    assert done.stderr.startswith("error: LIMIT_REACHED: ") and done.stderr.count("\n") == 1, done.stderr
    assert (
        "`llmgine config set security.limits.max_engines_per_session N`, then `llmgine daemon restart`" in done.stderr
    ), done.stderr


def test_version_as_a_command_as_gh_and_docker_have_it(cold_home):
    """`llmgine version` (gh's and docker's spelling) was `No such command 'version'. Did you
    mean 'session'?`; it prints what --version prints, and is not listed in --help."""
    from tests.clitools import cli_env

    env = cli_env(cold_home, LLMGINE_NO_AUTOSTART="1")
    done = run_cli(["version"], env)
    assert done.returncode == 0 and done.stdout == run_cli(["--version"], env).stdout, done.stderr
    assert done.stdout.startswith("llmgine ")
    shown = run_cli(["--help"], {**env, "COLUMNS": "200"}).stdout
    assert not [line for line in shown.splitlines() if line.lstrip("│ ").startswith("version ")], shown


def test_event_tail_at_40_columns_shows_the_data(daemon):
    """At 40 columns the live view padded the event type to 24 columns after time, seq and
    session: the data, what one tails for, was cut to a bare `…`."""
    sid = run_cli(["session", "create", "-q"], daemon.env).stdout.strip()
    child = cli_on_terminal(
        ["event", "tail", "-S", sid, "--since", "1h"],
        {**daemon.env, "TERM": "xterm-256color", "COLUMNS": None},
        columns=40,
    )
    try:
        assert run_cli(["event", "publish", "Ping", "-S", sid, "-d", '{"k":1}', "-q"], daemon.env).returncode == 0
        child.expect_exact('{"k":1}')  # whole, not cut to `{"k"…`
    finally:
        child.sendintr()
        child.expect(pexpect.EOF)
        child.close()


def test_top_and_metrics_watch_draw_on_a_dumb_terminal(daemon):
    """`TERM=dumb llmgine top` was a blank screen: rich's live display draws nothing on a
    terminal that cannot move the cursor until it stops, and top's is transient (nothing even
    then); `metrics --watch` showed its first frame only at Ctrl-C. There they print a frame per
    refresh, as when piped."""
    for args, seen in ((["top", "--interval", "0.2"], "queued;"), (["metrics", "--watch", "-i", "0.2"], "requests")):
        child = cli_on_terminal(args, {**daemon.env, "TERM": "dumb"}, columns=120)
        try:
            child.expect_exact(seen)  # a frame while it runs, not at its end
            child.expect_exact(seen)  # and another at the next refresh
        finally:
            child.sendintr()
            child.expect(pexpect.EOF)
            child.close()
        assert child.exitstatus == 130, args


def test_webhook_add_example_runs_as_written(daemon):
    """`webhook add`'s --help example used https://example.com, which a default daemon refuses
    (403 FORBIDDEN: webhooks.allowed_hosts is loopback only): the example did not run."""
    from typer.testing import CliRunner

    from llmgine_cli.app import app

    shown = CliRunner().invoke(app, ["webhook", "add", "--help"], env={"COLUMNS": "250"}).stdout
    joined = re.sub(r"\\\n\s*", "", shown)  # the example's lines, as the shell joins them
    example = re.search(r"^\s*(llmgine webhook add http[^`|\n]+)", joined, re.M)
    assert example, shown
    assert "webhooks.allowed_hosts" in shown, shown
    sid = run_cli(["session", "create", "-n", "demo", "--reuse", "-q"], daemon.env).stdout.strip()
    assert sid
    words = shlex.split(example.group(1))[1:]
    done = run_cli(words, daemon.env)
    assert done.returncode == 0, done.stderr
