"""Every command's --help has an example, and its examples work when pasted: each command's
run in order in bash (`set -eo pipefail`) against a real daemon, where the README's walk-through
has made a session named demo with a DummyEngine, and the files and handlers the examples name
exist (as a reader who followed the README and the example before has them)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmgine_cli.client import Client
from tests.cli.test_help_examples import _commands, _example_lines
from tests.clitools import Daemon, running_daemon, shell

pytestmark = pytest.mark.e2e  # real daemons and CLI processes in bash, about 250 of them

FILES = {
    "weather.py": (
        'def get_weather(location: str) -> str:\n    """The weather at a place."""\n    return f"sunny in {location}"\n'
    ),
    "greet.py": 'def greet(command):\n    return {"hello": command.parameters.get("name", "you")}\n',
    "notify.py": "def notify(event):\n    pass\n",
    "jobs.jsonl": '{"command_type": "Greet", "parameters": {"name": "Ada"}}\n',
    "key.txt": "lgk_example\n",
}
HANDLED = ("Greet", "Report", "Ping", "Remind")  # the command types the examples run

# Examples that are not run here, and why (they are still checked by test_help_examples.py).
NOT_RUN = {
    "ask": "an LLM provider's key",
    "chat": "an LLM provider's key and a terminal",
    "top": "a terminal: it redraws until q",
    "shutdown": "it stops the daemon the other examples talk to",
    "daemon start": "it starts a daemon of the user's",
    "daemon stop": "it stops the daemon the other examples talk to",
    "daemon restart": "it stops the daemon the other examples talk to",
    "completion": "zsh and fish",
    "mcp add": "an MCP server program",
    "mcp get": "an MCP server program",
    "mcp tools": "an MCP server program",
    "mcp remove": "an MCP server program",
    "daemon install": "it installs a user service",
    "daemon logs": "the log of a daemon that `daemon start` started",
    "approval approve": "a tool call of an LLM waiting for a person",
    "approval deny": "a tool call of an LLM waiting for a person",
}
# A line that follows (until Ctrl-C) is not run either.
FOLLOWS = re.compile(r"llmgine (event tail|logs .*-f\b|metrics .*--watch|daemon logs .*-f\b)")


def _documented() -> list[tuple[str, Any]]:
    """Each visible command once (not its aliases: `ls`, `rm`)."""
    seen: set[int] = set()
    out = []
    for path, cmd in _commands():
        if cmd.hidden or id(cmd.callback) in seen:
            continue
        seen.add(id(cmd.callback))
        out.append((" ".join(path), cmd))
    return out


COMMANDS = _documented()


def test_every_command_has_an_example():
    """gh's and docker's --help show how a command is used; 70 of ours showed none."""
    missing = [name for name, cmd in COMMANDS if not _example_lines(cmd.help or "", inline=False)]
    assert not missing, missing


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with running_daemon() as d:
        yield d


@pytest.fixture
def walked(daemon: Daemon, tmp_path: Path) -> Path:
    """A directory with the examples' files; the daemon with the README's session demo (made
    again when an example ended it) and the handlers and tool the examples use."""
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    client = Client(daemon.socket_url, env={"LLMGINE_HOME": str(daemon.home)})
    sid = client.create_session("demo", if_exists="reuse").session_id
    if not client.list_engines(session_id=sid).engines:
        client.create_engine("DummyEngine", sid, None, {})
    client.register_tool(sid, FILES["weather.py"], replace=True)
    for type_ in HANDLED:
        client.register_command_handler(sid, type_, FILES["greet.py"], replace=True)
    return tmp_path


def _runnable(cmd: Any) -> list[str]:
    """A command's examples that end by themselves (the ones that follow a stream are not run)."""
    return [line for line in _example_lines(cmd.help or "", inline=False) if not FOLLOWS.search(line)]


@pytest.mark.parametrize("name", [name for name, cmd in COMMANDS if name not in NOT_RUN and _runnable(cmd)])
def test_the_examples_work_when_pasted(daemon: Daemon, walked: Path, name: str) -> None:
    lines = _runnable(dict(COMMANDS)[name])
    env = {**daemon.env, "HOME": str(walked), "LLMGINE_NO_AUTOSTART": "1", "OPENAI_API_KEY": "sk-example"}
    result = shell("set -eo pipefail\n" + "\n".join(lines), env, cwd=walked)
    assert result.returncode == 0, f"{name}: {lines}\n{result.stderr}"
    assert "Traceback" not in result.stderr
