"""The command handler registry: which callable handles a ``command_type`` in which scope.

A handler is an async callable taking the command record (``protocol.Command``) and returning
a JSON-serialisable result; raising makes the command ``failed``. While it runs,
``bus.commands.current()`` gives it the execution context (to publish events in the command's
session). Built-in handlers (DummyEngine) are registered in-process; the user-code handlers of a
later issue register the same way, with a callable that forwards the command to a sandbox
worker.

Scope: a session id, or None for global (LLMGine's BUS scope). Resolution prefers the session's
handler over a global one. One command handler per type per scope: a second registration is a
CONFLICT, never a silent replacement.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from llmgine_daemon.bus.errors import BusError, handler_not_found
from llmgine_daemon.protocol import Command, ErrorCode

CommandHandler = Callable[[Command], Awaitable[Any]]


@dataclass(slots=True)
class Registration:
    command_type: str
    session_id: str | None
    handler: CommandHandler
    # Who registered it ("engine:<id>", "handler:<id>"), so an owner can be unregistered whole.
    owner: str
    # The handler's only effects are what it emits and returns (it calls nothing outside the
    # daemon): it may start before its submission has committed, so a command whose handler
    # never suspends is stored, run and finished in one transaction (DummyEngine).
    eager: bool = False
    registration_id: str = field(default_factory=lambda: str(uuid.uuid4()))


def taken(command_type: str, session_id: str | None, owner: str) -> BusError:
    """CONFLICT: the scope has a command handler for the type already (``owner``'s)."""
    scope = f"session {session_id!r}" if session_id else "the global scope"
    return BusError(
        ErrorCode.CONFLICT,
        f"a handler for {command_type!r} is already registered in {scope}",
        {"command_type": command_type, "session_id": session_id, "owner": owner},
    )


def check_free_in_store(
    conn: Any, command_type: str, session_id: str, engine_types: list[str], *, handlers: bool = True
) -> None:
    """The store's side of ``check_free``, inside the write that takes the slot: CONFLICT if
    the session has a live engine of one of ``engine_types`` (those whose command type this
    is) or (``handlers``) a user command handler of the type. The registry in memory is this node's only: on
    several nodes another node may have taken the slot a moment ago (its write is serialised
    with this one: bus/cluster.py), and memory learns of it only at the next re-read."""
    if engine_types:
        marks = ", ".join("?" * len(engine_types))
        row = conn.execute(
            f"SELECT engine_id FROM engines WHERE session_id = ? AND status != 'stopped' AND engine_type IN ({marks})"
            " LIMIT 1",
            (session_id, *engine_types),
        ).fetchone()
        if row is not None:
            raise taken(command_type, session_id, f"engine:{row[0]}")
    if not handlers:
        return
    row = conn.execute(
        "SELECT handler_id FROM handlers WHERE kind = 'command' AND type = ? AND session_id = ? LIMIT 1",
        (command_type, session_id),
    ).fetchone()
    if row is not None:
        raise taken(command_type, session_id, f"handler:{row[0]}")


class HandlerRegistry:
    def __init__(self) -> None:
        # (scope, command_type) -> registration; scope None = global.
        self._by_scope: dict[tuple[str | None, str], Registration] = {}

    def register(
        self,
        command_type: str,
        handler: CommandHandler,
        *,
        session_id: str | None = None,
        owner: str = "builtin",
        eager: bool = False,
    ) -> Registration:
        self.check_free(command_type, session_id)
        reg = Registration(command_type, session_id, handler, owner, eager)
        self._by_scope[(session_id, command_type)] = reg
        return reg

    def check_free(self, command_type: str, session_id: str | None) -> None:
        """Raise CONFLICT if the scope already has a handler for the type (callers check this
        before writing anything, then register after their write committed)."""
        existing = self._by_scope.get((session_id, command_type))
        if existing is not None:
            raise taken(command_type, session_id, existing.owner)

    def unregister(self, registration: Registration) -> bool:
        key = (registration.session_id, registration.command_type)
        if self._by_scope.get(key) is registration:
            del self._by_scope[key]
            return True
        return False

    def unregister_owner(self, owner: str) -> int:
        keys = [k for k, r in self._by_scope.items() if r.owner == owner]
        for key in keys:
            del self._by_scope[key]
        return len(keys)

    def drop_session(self, session_id: str) -> int:
        keys = [k for k in self._by_scope if k[0] == session_id]
        for key in keys:
            del self._by_scope[key]
        return len(keys)

    def resolve(self, session_id: str, command_type: str) -> Registration | None:
        """The session's handler for the type, else the global one, else None."""
        reg = self._by_scope.get((session_id, command_type))
        if reg is None:
            reg = self._by_scope.get((None, command_type))
        return reg

    def require(self, session_id: str, command_type: str, **extra: Any) -> Registration:
        reg = self.resolve(session_id, command_type)
        if reg is None:
            raise handler_not_found(
                "command", command_type, session_id, or_global=True, command_type=command_type, **extra
            )
        return reg

    def list(self, session_id: str | None = None) -> list[Registration]:
        return [r for (scope, _), r in self._by_scope.items() if session_id is None or scope == session_id]
