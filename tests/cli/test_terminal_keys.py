"""The CLI at a terminal: Ctrl-C, Ctrl-D and Ctrl-Z/fg in its interactive and waiting
commands, and what it draws for the terminal's width (tmux-like ptys, real processes)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.clitools import cli_env, default_signals, full_env, run_cli
from tests.eventually import eventually_blocking


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
