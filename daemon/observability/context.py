"""What is being worked on right now, carried in contextvars.

Two variables, set at the edges (the HTTP middleware, the command runner, engines, the sandbox
pool) and read anywhere below them without being passed down:

- ``FIELDS``: session_id, command_id, engine_id, request_id. Every log record and every new
  span picks them up, so code deep in the bus logs "with its session" for free.
- ``CURRENT_SPAN``: the span new spans nest under; its trace_id/span_id go on log records,
  events and command records.

asyncio copies the context into each new task, so a task started while handling a command
keeps that command's fields. Threads do not inherit it: ``Store.write`` captures the caller's
context and runs the write function inside it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmgine_daemon.observability.tracing import Span

FIELD_NAMES = ("session_id", "command_id", "engine_id", "request_id")

# An immutable dict per binding: a bind replaces it, so a task that copied the context earlier
# never sees a later change made by someone else.
FIELDS: ContextVar[dict[str, str]] = ContextVar("llmgine_fields", default={})  # noqa: B039 - never mutated
CURRENT_SPAN: ContextVar[Span | None] = ContextVar("llmgine_span", default=None)


def fields() -> dict[str, str]:
    return FIELDS.get()


def field(name: str) -> str | None:
    return FIELDS.get().get(name)


def set_fields(**values: Any) -> Token[dict[str, str]]:
    """Add fields to the current context; keep the token to ``reset_fields`` later."""
    merged = dict(FIELDS.get())
    for name, value in values.items():
        if value is not None:
            merged[name] = str(value)
    return FIELDS.set(merged)


def reset_fields(token: Token[dict[str, str]]) -> None:
    FIELDS.reset(token)


@contextlib.contextmanager
def bind(**values: Any) -> Iterator[None]:
    """``with bind(session_id=s, command_id=c): ...`` - everything logged inside carries them."""
    token = set_fields(**values)
    try:
        yield
    finally:
        FIELDS.reset(token)


def current_trace_id() -> str | None:
    span = CURRENT_SPAN.get()
    return span.trace_id if span is not None else None
