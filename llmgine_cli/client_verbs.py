"""What Client adds on top of one method per endpoint: the bus's own verbs (publish, execute,
events, as LLMGine's bus spells them), the composite calls, and the helpers every method uses.
Client (client.py) inherits BusVerbs; AsyncClient gets all of them the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from llmgine_daemon.protocol import TERMINAL_STATUSES, Command, Event

from llmgine_cli.errors import LlmgineError, command_error
from llmgine_cli.transport import segment

# Each long poll asks the daemon to hold the answer this long (execute() polls until done).
LONG_POLL_S = 25.0
# The daemon's default sandbox.deadline, if its configuration cannot be read.
SANDBOX_DEADLINE = 30.0

SessionRef = Any  # a session id, or anything with a ``session_id`` (Session, Command, ...)


def _id(session: SessionRef) -> str:
    """The session id (as is: the path is %-encoded where it is built, Client._op)."""
    return session if isinstance(session, str) else session.session_id


_sid = _id


def _scoped(operation: str, session: SessionRef | None, /, **path: str) -> tuple[str, dict[str, str]]:
    """A handler (or MCP server) endpoint in a session's scope, or its global twin
    (``registerGlobal...``), with its path values."""
    if session is None:
        for verb in ("register", "list", "get", "delete"):
            if operation.startswith(verb):
                return f"{verb}Global{operation[len(verb) :]}", path
    return operation, {"session_id": _id(session), **path}


def _source(function: Callable[..., Any] | str) -> str:
    """A function's own source (dedented), or the text as given."""
    if isinstance(function, str):
        return function
    import inspect
    import textwrap

    try:
        return textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError) as exc:
        raise LlmgineError(f"cannot send {function!r}: its source is not available ({exc})") from None


def _outcome(record: Command) -> Any:
    if record.status == "completed":
        return record.result
    raise command_error(record)


def _wait(seconds: float) -> dict[str, str]:
    return {"wait": f"{seconds:g}"} if seconds > 0 else {}


_seg = segment


class BusVerbs:
    """Composite calls, built from Client's endpoint methods (not endpoints of their own)."""

    def tool_deadline(self, session_id: str, name: str) -> float:
        """How long a call of the tool may run in the sandbox: its own timeout, else the
        daemon's ``sandbox.deadline``."""
        tool = self.get_tool(session_id, name)
        if tool.timeout is not None:
            return tool.timeout
        for setting in self.config().settings:
            if setting.key == "sandbox.deadline" and isinstance(setting.value, (int, float)):
                return float(setting.value)
        return SANDBOX_DEADLINE

    def delete_handlers(self, session_id: str | None, kind: str, type_: str) -> None:
        """Remove the scope's handlers of that kind for that type (all event handlers of it)."""
        {"command": self.delete_command_handler, "event": self.delete_event_handler}[kind](session_id, type_)

    # -- the message bus, the way bus.py spelled it --------------------------------------------

    def publish(self, session_id: SessionRef, event_type: str, /, **data: Any) -> Event:
        """``bus.publish(Event(**data))``: publish ``event_type`` with ``data``."""
        return self.publish_event(_sid(session_id), event_type, data, {})

    def execute(self, session_id: SessionRef, command_type: str, /, **parameters: Any) -> Any:
        """``await bus.execute(Command(**parameters))``: run it and return its result.

        Waits as long as the command runs (its own timeout bounds it); a command that fails,
        times out or is cancelled raises the error code's class (CommandFailed, ProviderError,
        ...) with the record in ``.command``. For priority, timeout or not waiting, use
        ``submit_command``.
        """
        record = self.submit_command(_sid(session_id), command_type, parameters, {}, wait=LONG_POLL_S)
        while record.status not in TERMINAL_STATUSES:
            record = self.get_command(record.session_id, record.command_id, wait=LONG_POLL_S)
        return _outcome(record)

    def events(
        self,
        session_id: SessionRef | None = None,
        *,
        event_types: Sequence[str] = (),
        sources: Sequence[str] = (),
        since: int | str | None = None,
        reconnect: bool = True,
    ) -> Iterator[Event]:
        """Events as they happen, in seq order (one session, or every session with None),
        until the session ends; break out of the loop to stop earlier.

        The live stream (stream.py, Server-Sent Events, as `llmgine event tail`): it resumes
        from the last seq it handed out, so dropped connections and daemon restarts cost
        nothing and no event comes twice. ``since``: a seq to start after (0: the whole log)
        or an ISO time; default: only new events.
        """
        from llmgine_cli.stream import EventStream

        stream = EventStream(
            self,
            None if session_id is None else _sid(session_id),
            event_types=event_types,
            sources=sources,
            since=since,
            reconnect=reconnect,
        )
        return (item for item in stream if isinstance(item, Event))
