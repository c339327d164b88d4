"""Shell completion: the scripts (``llmgine completion bash|zsh|fish``) and the values that
complete from the running daemon (session ids, engine ids, tool names, event types).

A completer asks the daemon the command line names (``--url``, ``LLMGINE_URL``, else the
default socket) with a short timeout, and never starts one: completing must be quick, and
silent when nothing runs. Any failure completes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import typer

from llmgine_cli.render import visible_line

PROG = "llmgine"
COMPLETE_VAR = "_LLMGINE_COMPLETE"
SHELLS = ("bash", "zsh", "fish")
TIMEOUT = 0.5  # seconds; a completion that takes longer is worse than none


def script(shell: str) -> str:
    """The completion script for ``shell`` (what `completions/` holds, byte for byte)."""
    from typer._completion_shared import get_completion_script

    text = get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell)
    return text.rstrip("\n") + "\n"


def _client(ctx: typer.Context) -> Any:
    """A client for the daemon this command line names, or None when none is there."""
    from llmgine_cli.client import Client, resolve_target

    root = ctx.find_root()
    url = root.params.get("url")
    api_key = root.params.get("api_key")
    target = resolve_target(url, os.environ)
    if target.socket_path is not None and not os.path.exists(target.socket_path):
        return None  # nothing runs; do not even try
    return Client(target, api_key=api_key, timeout=TIMEOUT)


def _session(ctx: typer.Context) -> str | None:
    node: Any = ctx
    while node is not None:
        value = node.params.get("session") or node.params.get("session_id")
        if isinstance(value, str) and value:
            return value
        node = node.parent
    return os.environ.get("LLMGINE_SESSION") or None


def _session_id(client: Any, ctx: typer.Context) -> str | None:
    """The session the command line names, as its id. Completing runs no option callback, so
    a name, short id or prefix (``-S demo``, LLMGINE_SESSION=demo) is still as typed, and
    the API takes only ids: the session's tools, engines and types completed to nothing."""
    from llmgine_cli.hot import resolve_session_in

    given = _session(ctx)
    return None if given is None else resolve_session_in(client, given)


def _offered(value: str, incomplete: str) -> bool:
    """Whether to offer ``value``: anybody's text (an event type user code published, an MCP
    server's tool name) with a control character (a newline is a candidate line of its own to
    the shell) or a backslash is no use to complete, and typer's zsh script evals what it is
    given with only quotes, ``$`` and backquotes escaped: ``x\\`` ended the quoted string, and
    the next value ran as commands in the user's shell at <TAB>."""
    return value.startswith(incomplete) and "\\" not in value and visible_line(value) == value


def _shown(description: str) -> str:
    """A description as a menu may show it: escapes for control characters, and no backslash
    (zsh evals it, as the values: ``_offered``), which looks alike (U+2216)."""
    return visible_line(description).replace("\\", "\u2216")


def _complete(
    fetch: Callable[[Any, typer.Context], Iterable[tuple[str, str]]],
) -> Callable[[typer.Context, str], list[tuple[str, str]]]:
    def complete(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
        try:
            client = _client(ctx)
            if client is None:
                return []
            return [(value, _shown(help_)) for value, help_ in fetch(client, ctx) if _offered(value, incomplete)]
        except Exception:  # a completer must never print or fail
            return []

    complete.__name__ = fetch.__name__
    return complete


@_complete
def session_ids(client: Any, ctx: typer.Context) -> Iterable[tuple[str, str]]:
    """Active sessions: each id with its name beside it, and each name (every command takes a
    session's name too) with its short id beside it."""
    from llmgine_cli.ids import short_id

    sessions = client.list_sessions(limit=200, status="active").sessions
    for s in sessions:
        yield s.session_id, s.name or s.created_at
    named: dict[str, list[str]] = {}
    for s in sessions:
        if s.name and not s.name.startswith("-") and " " not in s.name:
            named.setdefault(s.name, []).append(short_id(s.session_id))
    for name, shorts in named.items():
        yield name, f"session {', '.join(shorts)}" + (" (ambiguous: use the id)" if len(shorts) > 1 else "")


@_complete
def engine_ids(client: Any, ctx: typer.Context) -> Iterable[tuple[str, str]]:
    for e in client.list_engines(limit=200, session_id=_session_id(client, ctx)).engines:
        yield e.engine_id, f"{e.engine_type} {e.model_name or ''}".strip()


@_complete
def engine_types(client: Any, ctx: typer.Context) -> Iterable[tuple[str, str]]:
    for t in client.engine_types().types:
        yield t.engine_type, t.description.split("\n")[0][:60]


@_complete
def tool_names(client: Any, ctx: typer.Context) -> Iterable[tuple[str, str]]:
    session = _session_id(client, ctx)
    if session:
        for t in client.list_tools(session).tools:
            yield t.name, t.description.split("\n")[0][:60]


@_complete
def event_types(client: Any, ctx: typer.Context) -> Iterable[tuple[str, str]]:
    session = _session_id(client, ctx)
    if session:
        page = client.list_events(session, limit=1000)
        yield from ((t, "") for t in sorted({e.event_type for e in page.events}))


@_complete
def command_types(client: Any, ctx: typer.Context) -> Iterable[tuple[str, str]]:
    found: dict[str, str] = {}
    session = _session_id(client, ctx)
    if session:
        for e in client.list_engines(limit=200, session_id=session).engines:
            found.setdefault(e.command_type, e.engine_type)
    for h in client.list_handlers(session, kind="command").handlers:
        found.setdefault(h.type, f"handler {h.function}")
    return found.items()
