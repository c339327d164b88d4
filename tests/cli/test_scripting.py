"""`llmgine` in shell pipelines, as real processes: what a script sees when the reader of its
output goes away (`| head -1`), reads stdin, or runs where the locale is not UTF-8."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.clitools import cli_env, default_signals, full_env
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
