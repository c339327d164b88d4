"""Approvals with real processes: `llmgine approval list|approve|deny`, and a command that
waits for a decision across a daemon restart (graceful or killed): it resumes waiting, the same
approval, and runs the tool once approved."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmgine_cli.client import Client
from tests.api.llm_helpers import MODELS, provider_env
from tests.clitools import (
    Daemon,
    cleanup_home,
    free_port,
    full_env,
    run_cli,
    short_home,
    start_daemon,
    stop_process,
)
from tests.eventually import eventually_blocking
from tests.fakes.provider import FakeProvider, FakeProviderThread, Reply

WEATHER = 'def get_weather(location: str) -> dict:\n    return {"location": location, "temp_c": 21}\n'


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProviderThread() as provider:
        yield provider


@pytest.fixture
def home() -> Iterator[Path]:
    path = short_home()
    try:
        yield path
    finally:
        cleanup_home(path)


def start(home: Path, fake: FakeProvider, port: int) -> Daemon:
    return start_daemon(home, port=port, env=provider_env(fake))


def cli(daemon: Daemon, *args: str) -> str:
    done = run_cli(list(args), daemon.env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def waiting_command(daemon: Daemon, fake: FakeProvider, location: str) -> tuple[Client, str, str]:
    """A ToolChat command waiting for approval of get_weather(location)."""
    client = Client(env=full_env(daemon.env), timeout=10)
    sid = client.create_session(name="approvals").session_id
    engine = client.create_engine("ToolChatEngine", sid, MODELS["openai"], {})
    client.register_tool(sid, WEATHER, requires_approval=True)
    fake.script(Reply("checking", tool_calls=[("get_weather", {"location": location})]))
    record = client.execute_engine(engine.engine_id, "Weather?", {}, {})
    return client, sid, record.command_id


def pending(daemon: Daemon, sid: str) -> list[dict[str, Any]]:
    return json.loads(cli(daemon, "approval", "list", "-S", sid, "-o", "json"))["approvals"]


def test_approve_and_deny_from_the_cli(home: Path, fake: FakeProvider) -> None:
    daemon = start(home, fake, free_port())
    try:
        client, sid, cid = waiting_command(daemon, fake, "Melbourne")
        eventually_blocking(lambda: pending(daemon, sid), timeout=20)
        approval = pending(daemon, sid)[0]
        table = cli(daemon, "approval", "list", "-S", sid)
        assert "get_weather" in table and "Melbourne" in table and approval["approval_id"][-8:] in table
        assert client.get_command(sid, cid).status == "waiting_approval"
        short = approval["approval_id"][-8:]
        shown = cli(daemon, "approval", "approve", short, "-S", sid, "--arguments", '{"location": "Sydney"}')
        assert "approved" in shown
        done = client.get_command(sid, cid, wait=20)
        assert done.status == "completed" and "Sydney" in done.result["text"]

        fake.script(Reply(tool_calls=[("get_weather", {"location": "Oslo"})]))
        cid = client.execute_engine(
            client.list_engines(session_id=sid).engines[0].engine_id, "Again?", {}, {}
        ).command_id
        eventually_blocking(lambda: pending(daemon, sid), timeout=20)
        cli(daemon, "approval", "deny", pending(daemon, sid)[0]["approval_id"], "-S", sid, "--reason", "no")
        done = client.get_command(sid, cid, wait=20)
        assert done.status == "completed" and "denied" in done.result["text"]
        missing = run_cli(["approval", "approve", "0" * 8, "-S", sid], daemon.env)
        assert missing.returncode == 4 and "not found" in missing.stderr and "Traceback" not in missing.stderr
    finally:
        stop_process(daemon.proc)


@pytest.mark.parametrize("how", ["graceful", "killed"])
def test_a_waiting_command_survives_a_restart(home: Path, fake: FakeProvider, how: str) -> None:
    port = free_port()
    daemon = start(home, fake, port)
    try:
        client, sid, cid = waiting_command(daemon, fake, "Perth")
        eventually_blocking(lambda: pending(daemon, sid), timeout=20)
        approval_id = pending(daemon, sid)[0]["approval_id"]
        calls_before = len(fake.requests)
        if how == "graceful":
            stop_process(daemon.proc)
        else:
            daemon.proc.kill()
            daemon.proc.wait()
        daemon = start(home, fake, port)
        client = Client(env=full_env(daemon.env), timeout=10)
        # Waiting again: the same approval, asked once, nothing run, the model not asked again.
        eventually_blocking(lambda: client.get_command(sid, cid).status == "waiting_approval", timeout=20)
        assert [a["approval_id"] for a in pending(daemon, sid)] == [approval_id]
        events = client.list_events(sid, limit=1000).events
        assert [e.event_type for e in events].count("ApprovalRequested") == 1
        assert "ToolExecuted" not in [e.event_type for e in events]
        assert len(fake.requests) == calls_before

        cli(daemon, "approval", "approve", approval_id, "-S", sid)
        done = client.get_command(sid, cid, wait=20)
        assert done.status == "completed", done
        assert "Perth" in done.result["text"] and "21" in done.result["text"]
        assert done.result["tool_rounds"] == 1 and len(fake.requests) == calls_before + 1
        history = client.engine_messages(client.list_engines(session_id=sid).engines[0].engine_id).messages
        assert [m.role for m in history] == ["user", "assistant", "tool", "assistant"]
    finally:
        stop_process(daemon.proc)


def test_a_decision_acknowledged_just_before_a_kill_is_carried_out_after_the_restart(
    home: Path, fake: FakeProvider
) -> None:
    """`approval approve` answered 200, then `kill -9`: the decision was stored, but the command
    (back to executing, its engine not yet going on) came back `interrupted` and the approved
    tool never ran. The engine takes a decision (clears its checkpoint) before it runs the tool,
    so a command whose decided approval still has its checkpoint had done nothing since: it is
    queued again and goes on from the decision, the model not asked again."""
    from tests.dbtools import open_home_db

    port = free_port()
    for _attempt in range(5):  # until the kill lands before the engine took the decision
        daemon = start(home, fake, port)
        try:
            fake.script_items.clear()
            client, sid, cid = waiting_command(daemon, fake, "Hobart")
            eventually_blocking(lambda: pending(daemon, sid), timeout=20)  # noqa: B023
            approval_id = pending(daemon, sid)[0]["approval_id"]
            calls_before = len(fake.requests)
            fake.script(Reply("Hobart: 21"))
            assert client.decide_approval(sid, approval_id, "approve").status == "approved"  # the 200
            daemon.proc.kill()
            daemon.proc.wait()
            with open_home_db(home) as db:
                [(status, untaken)] = db.execute(
                    "SELECT status, state IS NOT NULL FROM approvals WHERE approval_id = ?", (approval_id,)
                ).fetchall()
            assert status == "approved"
            if not untaken:  # the engine took it and went on to the tool: interrupted is right
                continue
            daemon = start(home, fake, port)
            client = Client(env=full_env(daemon.env), timeout=10)
            done = client.get_command(sid, cid, wait=30)
            assert done.status == "completed", done
            assert "Hobart" in done.result["text"] and len(fake.requests) == calls_before + 1
            events = [e.event_type for e in client.list_events(sid, limit=1000).events]
            assert events.count("ApprovalDecided") == 1 and events.count("ToolExecuted") == 1, events
            return
        finally:
            stop_process(daemon.proc)
            cleanup_home(home)
            home.mkdir(parents=True, exist_ok=True)
    pytest.fail("the kill never came before the engine took the decision")


def test_chat_asks_inline(home: Path, fake: FakeProvider) -> None:
    """`llmgine chat --tools` on a terminal: y runs the call, e runs it with typed arguments,
    Enter denies it (the model hears so)."""
    import sys

    import pexpect

    from tests.clitools import default_signals

    daemon = start(home, fake, free_port())
    try:
        client = Client(env=full_env(daemon.env), timeout=10)
        sid = client.create_session(name="inline").session_id
        client.register_tool(sid, WEATHER, requires_approval=True)
        child = pexpect.spawn(
            sys.executable,
            ["-m", "llmgine_cli", "chat", "--tools", "--model", MODELS["openai"], "--session", sid],
            env={k: v for k, v in full_env(daemon.env).items() if v is not None},
            encoding="utf-8",
            timeout=30,
            dimensions=(40, 120),
            preexec_fn=default_signals,
        )
        try:
            child.expect("you> ")
            fake.script(Reply("Let me look.", tool_calls=[("get_weather", {"location": "Melbourne"})]))
            child.sendline("weather in Melbourne?")
            child.expect_exact('Run get_weather(location="Melbourne")? [y/N/e(dit)]')
            child.sendline("y")
            child.expect("temp_c")  # the sandbox ran it
            child.expect("tool said:")
            child.expect("you> ")

            fake.script(Reply(tool_calls=[("get_weather", {"location": "Melbourne"})]))
            child.sendline("and in Sydney?")
            child.expect_exact('Run get_weather(location="Melbourne")? [y/N/e(dit)]')
            child.sendline("e")
            child.expect_exact("arguments (JSON object)")
            child.sendline('{"location": "Sydney"}')
            child.expect("Sydney")
            child.expect("tool said:")
            child.expect("you> ")

            fake.script(Reply(tool_calls=[("get_weather", {"location": "Oslo"})]))
            child.sendline("and Oslo?")
            child.expect_exact('Run get_weather(location="Oslo")? [y/N/e(dit)]')
            child.sendline("")
            child.expect("denied")
            child.expect("you> ")
            child.sendeof()
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
        decided = client.list_approvals(sid, status="all").approvals
        assert [(a.status, a.final_arguments) for a in decided] == [
            ("approved", {"location": "Melbourne"}),
            ("approved", {"location": "Sydney"}),
            ("denied", None),
        ]
        assert decided[-1].reason == "denied at the prompt"
        executed = [e for e in client.list_events(sid, limit=1000).events if e.event_type == "ToolExecuted"]
        assert [e.data["result"]["location"] for e in executed] == ["Melbourne", "Sydney"]
    finally:
        stop_process(daemon.proc)
