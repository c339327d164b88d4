"""`llmgine webhook`, `llmgine schedule` and `command run --on-done`, as real processes against
the shared real daemon."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.clitools import Daemon, no_traceback, run_cli
from tests.eventually import eventually_blocking

pytestmark = pytest.mark.e2e


def llmgine(daemon: Daemon, *args: str, code: int = 0) -> str:
    done = run_cli(list(args), daemon.env)
    assert done.returncode == code, (done.stdout, done.stderr)
    no_traceback(done.stdout, done.stderr)
    return done.stdout if code == 0 else done.stderr


@pytest.fixture
def session(daemon: Daemon) -> str:
    sid = llmgine(daemon, "session", "create", "-q").strip()
    llmgine(daemon, "engine", "create", "DummyEngine", "--session", sid, "-q")
    return sid


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.bodies.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_webhook_add_list_deliveries_delete(daemon: Daemon, session: str) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.bodies = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        added = json.loads(llmgine(daemon, "webhook", "add", url, "-e", "Cli.*", "--session", session, "-o", "json"))
        assert added["secret"].startswith("whsec_") and added["events"] == ["Cli.*"]
        hook_id = added["webhook_id"]
        llmgine(daemon, "event", "publish", "Cli.Done", "--session", session, "-q")
        eventually_blocking(lambda: server.bodies, timeout=30)  # type: ignore[attr-defined]
        assert server.bodies[0]["type"] == "Cli.Done"  # type: ignore[attr-defined]
        listed = llmgine(daemon, "webhook", "list", "--session", session)
        assert hook_id[-8:] in listed and "Cli.*" in listed
        assert llmgine(daemon, "webhook", "list", "--session", session, "-q").split() == [hook_id]

        def attempted() -> list[dict[str, Any]]:
            rows = json.loads(llmgine(daemon, "webhook", "deliveries", hook_id[:13], "-o", "json"))["deliveries"]
            return [r for r in rows if r["status"] == "delivered"]

        (row,) = eventually_blocking(attempted, timeout=30)
        assert row["history"][0]["status_code"] == 200
        table = llmgine(daemon, "webhook", "deliveries", hook_id)
        assert "Cli.Done" in table and "200" in table and "delivered" in table
        assert "whsec_" not in llmgine(daemon, "webhook", "get", hook_id, "-o", "json")
        llmgine(daemon, "webhook", "delete", hook_id)
        assert "not found" in llmgine(daemon, "webhook", "get", hook_id, code=4)
        # A host the daemon does not allow: refused, exit 5 (403), one line.
        err = llmgine(daemon, "webhook", "add", "http://192.0.2.1/hook", code=5)
        assert "webhooks.allowed_hosts" in err and len(err.strip().splitlines()) == 1
    finally:
        server.shutdown()


def test_schedule_add_list_pause_resume_delete(daemon: Daemon, session: str) -> None:
    out = llmgine(
        daemon, "schedule", "add", "DummyEngineCommand", "--session", session, "--every", "1s", "-p", "prompt=hi"
    )
    assert "next_due" in out and "upcoming" in out
    sched = json.loads(llmgine(daemon, "schedule", "list", "--session", session, "-o", "json"))["schedules"][0]
    schedule_id = sched["schedule_id"]
    listed = llmgine(daemon, "schedule", "list", "--session", session)
    assert "every 1s" in listed and "active" in listed

    def fired() -> int:
        got = json.loads(llmgine(daemon, "schedule", "get", schedule_id, "-o", "json"))
        return got["fire_count"] >= 2

    eventually_blocking(fired, timeout=30)
    commands = json.loads(llmgine(daemon, "command", "list", "--session", session, "-o", "json"))["commands"]
    assert any(c["metadata"].get("schedule_id") == schedule_id for c in commands)
    paused = json.loads(llmgine(daemon, "schedule", "pause", schedule_id[:13], "-o", "json"))
    assert paused["status"] == "paused" and paused["next_due"] is None
    resumed = json.loads(llmgine(daemon, "schedule", "resume", schedule_id, "-o", "json"))
    assert resumed["status"] == "active" and len(resumed["upcoming"]) == 3
    llmgine(daemon, "schedule", "delete", schedule_id)
    assert llmgine(daemon, "schedule", "list", "--session", session, "-q").strip() == ""
    # cron in a zone; a bad expression and a bad zone are one-line errors (exit 1: 422).
    cron = json.loads(
        llmgine(
            daemon,
            "schedule",
            "add",
            "DummyEngineCommand",
            "-S",
            session,
            "--cron",
            "0 9 * * *",
            "--tz",
            "Asia/Tokyo",
            "-o",
            "json",
        )  # fmt: skip
    )
    assert cron["next_due"].endswith("T00:00:00.000000Z")  # 09:00 in Tokyo
    err = llmgine(daemon, "schedule", "add", "DummyEngineCommand", "-S", session, "--cron", "0 25 * * *", code=1)
    assert "cron" in err and len(err.strip().splitlines()) == 1
    err = llmgine(daemon, "schedule", "add", "X", "-S", session, "--every", "5", "--tz", "No/Where", code=1)
    assert "timezone" in err
    err = llmgine(daemon, "schedule", "add", "X", "-S", session, "--every", "5", "--cron", "* * * * *", code=2)
    assert "exactly one" in err


def test_on_done_runs_in_the_cli_with_the_outcome(daemon: Daemon, session: str, tmp_path: Path) -> None:
    out = tmp_path / "hook.txt"
    hook = f'echo "$LLMGINE_STATUS $LLMGINE_COMMAND_ID $LLMGINE_SESSION_ID $LLMGINE_COMMAND_TYPE" > {out}; echo hi'
    done = run_cli(
        ["command", "run", "DummyEngineCommand", "-S", session, "-p", "prompt=x", "--on-done", hook, "-o", "json"],
        daemon.env,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)  # the hook's own output went to stderr
    assert "hi" in done.stderr
    assert out.read_text().split() == ["completed", record["command_id"], session, "DummyEngineCommand"]
    # A failed command: the hook still runs (with its status); the exit code stays the command's.
    done = run_cli(
        [
            "command",
            "run",
            "DummyEngineCommand",
            "-S",
            session,
            "-p",
            "prompt=x",
            "-p",
            "fail:=true",
            "--on-done",
            f"env > {out}",
        ],
        daemon.env,
    )
    assert done.returncode == 1
    assert "LLMGINE_STATUS=failed" in out.read_text()
    # A failing hook is a warning; --no-wait cannot have one.
    done = run_cli(
        ["command", "run", "DummyEngineCommand", "-S", session, "-p", "prompt=x", "--on-done", "exit 3"], daemon.env
    )
    assert done.returncode == 0 and "--on-done exited 3" in done.stderr
    done = run_cli(
        ["command", "run", "DummyEngineCommand", "-S", session, "--no-wait", "--on-done", "true"], daemon.env
    )
    assert done.returncode == 2 and "--on-done" in done.stderr


def test_a_slow_hooks_output_shows_as_it_is_written(daemon: Daemon, session: str) -> None:
    # The hook's output was captured and printed when it ended: a slow hook showed nothing
    # while it ran, and nothing at all once Ctrl-C ended the wait (exit 130).
    import pexpect

    from tests.clitools import full_env

    args = ["-m", "llmgine_cli", "command", "run", "DummyEngineCommand", "-S", session, "-p", "prompt=x", "-q"]
    child = pexpect.spawn(
        sys.executable,
        [*args, "--on-done", "echo started-hook; sleep 600"],
        env=full_env(daemon.env),
        timeout=30,
        encoding="utf-8",
    )
    try:
        child.expect("started-hook")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 130, (child.exitstatus, child.signalstatus)


def test_on_done_on_command_wait_runs_once_per_command(daemon: Daemon, session: str, tmp_path: Path) -> None:
    ids = [
        llmgine(
            daemon, "command", "run", "DummyEngineCommand", "-S", session, "-p", "prompt=x", "--no-wait", "-q"
        ).strip()
        for _ in range(2)
    ]
    out = tmp_path / "hooks.txt"
    done = run_cli(
        ["command", "wait", *ids, "--on-done", f'echo "$LLMGINE_COMMAND_ID $LLMGINE_STATUS" >> {out}', "-q"],
        daemon.env,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(out.read_text().splitlines()) == sorted(f"{i} completed" for i in ids)


def test_webhook_and_schedule_tables_fit_80_columns(daemon: Daemon, session: str) -> None:
    import re

    from tests.cli.test_process import _on_a_terminal
    from tests.clitools import full_env

    long_url = "http://127.0.0.1:9/" + "a-very-long-path/" * 8 + "hook"
    hook_id = llmgine(daemon, "webhook", "add", long_url, "-e", "Wide.*", "-S", session, "-q").strip()
    llmgine(daemon, "event", "publish", "Wide.One", "-S", session, "-q")  # port 9: refused, recorded

    def attempted() -> bool:
        page = json.loads(llmgine(daemon, "webhook", "deliveries", hook_id, "-o", "json"))
        return any(d["attempts"] for d in page["deliveries"])

    eventually_blocking(attempted, timeout=30)
    sched = llmgine(daemon, "schedule", "add", "DummyEngineCommand", "-S", session, "--cron", "0 9 * * 1-5",
                    "--tz", "America/Argentina/Buenos_Aires", "-q").strip()  # fmt: skip
    env = full_env({**daemon.env, "COLUMNS": None, "TERM": "xterm-256color", "NO_COLOR": "1"})
    for args in (
        ["webhook", "list", "-S", session],
        ["webhook", "deliveries", hook_id],
        ["schedule", "list", "-S", session],
    ):
        text = re.sub(r"\x1b\[[0-9;]*m", "", _on_a_terminal(args, env))
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines and all(len(line) <= 80 for line in lines), lines
    llmgine(daemon, "webhook", "delete", hook_id)
    llmgine(daemon, "schedule", "delete", sched)


def test_schedule_times_read_like_every_other_time(daemon: Daemon, session: str) -> None:
    # next_due and upcoming were printed raw (2030-01-01T00:00:00.000000Z) beside created_at in
    # local time with its zone: the times a schedule is about were the ones not shown so.
    args = ["schedule", "add", "DummyEngineCommand", "-S", session, "--at", "2030-01-01T00:00:00Z"]
    shown = run_cli(["--utc", *args], daemon.env)
    assert shown.returncode == 0, shown.stderr
    rows = dict(line.split(None, 1) for line in shown.stdout.splitlines())
    assert rows["next_due"].strip() == "2030-01-01 00:00:00 UTC"
    assert rows["upcoming"].strip() == "2030-01-01 00:00:00 UTC"
    listed = run_cli(["--utc", "schedule", "list", "-S", session], daemon.env).stdout
    assert listed.splitlines()[1].endswith("active  2030-01-01 00:00:00 UTC  0"), listed  # NEXT, FIRED
    melbourne = run_cli(["schedule", "list", "-S", session], {**daemon.env, "TZ": "Australia/Melbourne"}).stdout
    assert "2030-01-01 11:00:00 AEDT" in melbourne
    raw = json.loads(run_cli(["schedule", "list", "-S", session, "-o", "json"], daemon.env).stdout)
    assert raw["schedules"][0]["next_due"] == "2030-01-01T00:00:00.000000Z"  # -o json: unchanged


def test_a_setup_script_run_twice_adds_each_webhook_and_schedule_once(daemon, session):
    # `webhook add` and `schedule add` made a second webhook (each event POSTed twice) and a
    # second schedule (each firing twice) when a setup script ran again. --reuse prints the
    # one already there.
    url = "http://127.0.0.1:9/setup-hook"
    hook_args = ["webhook", "add", url, "-e", "Command*", "-S", session, "--reuse"]
    sched_args = ["schedule", "add", "DummyEngineCommand", "-S", session, "--every", "1h", "-p", "prompt=x", "--reuse"]
    first_hook = llmgine(daemon, *hook_args, "-o", "json")
    assert json.loads(first_hook)["secret"].startswith("whsec_")
    again = run_cli([*hook_args, "-o", "json"], daemon.env)
    assert again.returncode == 0 and json.loads(again.stdout)["secret"] is None
    assert json.loads(again.stdout)["webhook_id"] == json.loads(first_hook)["webhook_id"]
    assert "already there" in again.stderr
    ids = {llmgine(daemon, *sched_args, "-q").strip() for _ in range(2)}
    assert len(ids) == 1
    listed = json.loads(llmgine(daemon, "schedule", "list", "-S", session, "-o", "json"))["schedules"]
    assert [s["schedule_id"] for s in listed] == list(ids)
    hooks = json.loads(llmgine(daemon, "webhook", "list", "-S", session, "-o", "json"))["webhooks"]
    assert [h["url"] for h in hooks] == [url]


def test_an_unknown_webhook_or_schedule_is_the_daemons_not_found(daemon: Daemon) -> None:
    """A short id or prefix that matches nothing was WEBHOOK_NOT_FOUND / SCHEDULE_NOT_FOUND, codes
    the CLI made up (the daemon has none such, README "Errors"; a full id said NOT_FOUND): the
    same NOT_FOUND now, whichever form of the id was given."""
    for kind in ("webhook", "schedule"):
        for given in ("0000", "01a24fac-275b-7b00-ae22-6fed415fe8b1"):
            said = llmgine(daemon, kind, "get", given, code=4)
            assert said.strip() == f"error: NOT_FOUND: {kind} '{given}' not found", said
