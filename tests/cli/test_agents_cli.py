"""The CLI of #21's agent features against a real llmgined whose providers are the fake one:
`llmgine usage` and the usage of `session get` / `engine get` / `command get`."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.api.llm_helpers import MODELS, provider_env
from tests.clitools import Daemon, cleanup_home, free_port, run_cli, short_home, start_daemon, stop_process
from tests.fakes.provider import FakeProvider, FakeProviderThread, Reply

PRICES = json.dumps({"gpt-4o-mini": [1000, 2000]})


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProviderThread() as provider:
        yield provider


@pytest.fixture(scope="module")
def daemon(fake: FakeProvider) -> Iterator[Daemon]:
    home = short_home()
    try:
        d = start_daemon(home, port=free_port(), env=provider_env(fake, LLMGINE_PRICES=PRICES))
        yield d
        stop_process(d.proc)
    finally:
        cleanup_home(home)


def cli(daemon: Daemon, *args: str) -> str:
    done = run_cli(list(args), daemon.env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_usage_report_and_records(daemon: Daemon, fake: FakeProvider) -> None:
    fake.script(Reply("one", usage=(100, 10)), Reply("two", usage=(200, 20)))
    sid = cli(daemon, "session", "create", "-q", "--name", "usage-test").strip()
    engine = json.loads(
        cli(daemon, "engine", "create", "SinglePassEngine", "--session", sid, "--model", MODELS["openai"], "-o", "json")
    )
    for prompt in ("a", "b"):
        cli(daemon, "engine", "exec", engine["engine_id"], prompt, "-o", "json")

    report = json.loads(cli(daemon, "usage", "--session", sid, "--by", "model", "-o", "json"))
    assert report["total"]["prompt_tokens"] == 300 and report["total"]["completion_tokens"] == 30
    assert report["total"]["cost_usd"] == pytest.approx((300 * 1000 + 30 * 2000) / 1e6)
    assert [g["key"] for g in report["groups"]] == [MODELS["openai"]]

    table = cli(daemon, "usage", "--session", "usage-test", "--by", "engine")
    assert engine["engine_id"][-8:] in table.replace("-", "") and "total" in table
    assert "0.3600" in table
    assert all(len(line) <= 80 for line in table.splitlines())

    shown = cli(daemon, "session", "get", sid)
    assert "usage.prompt_tokens" in shown and "300" in shown
    shown = cli(daemon, "engine", "get", engine["engine_id"])
    assert "usage.cost_usd" in shown and "0.36" in shown

    bad = run_cli(["usage", "--by", "day"], daemon.env)
    assert bad.returncode == 2 and "day" in bad.stderr


def test_session_fork(daemon: Daemon, fake: FakeProvider) -> None:
    sid = cli(daemon, "session", "create", "-q", "--name", "fork-test").strip()
    engine = json.loads(
        cli(daemon, "engine", "create", "SinglePassEngine", "--session", sid, "--model", MODELS["openai"], "-o", "json")
    )
    first = json.loads(cli(daemon, "engine", "exec", engine["engine_id"], "first", "-o", "json"))
    cli(daemon, "engine", "exec", engine["engine_id"], "second", "-o", "json")
    events = json.loads(cli(daemon, "event", "list", "--session", sid, "-o", "json"))["events"]
    at = next(
        e["seq"]
        for e in events
        if e["event_type"] == "CommandResult" and e["data"]["command_id"] == first["command_id"]
    )
    new_sid = cli(daemon, "session", "fork", "fork-test", "--at", str(at), "-q").strip()
    assert new_sid and new_sid != sid
    engines = json.loads(cli(daemon, "engine", "list", "--session", new_sid, "-o", "json"))["engines"]
    assert len(engines) == 1
    history = json.loads(cli(daemon, "engine", "messages", engines[0]["engine_id"], "-o", "json"))["messages"]
    assert [m["content"] for m in history] == ["first", "echo: first"]
    shown = cli(daemon, "session", "fork", sid)
    assert "from_session_id" in shown and "engines." in shown
    bad = run_cli(["session", "fork", "0190a000-0000-7000-8000-000000000000"], daemon.env)
    assert bad.returncode == 4 and "not found" in bad.stderr and "Traceback" not in bad.stderr
