"""Domain errors. The bus raises these; the API turns them into the error envelope.

BusError(code, message, details)   code is a protocol.ErrorCode; the HTTP status follows it
invalid(field, issue, **extra)     422 VALIDATION_ERROR "Invalid request parameters"
not_found(kind, **ids)             404 <KIND>_NOT_FOUND "<kind> 'id' not found [in session 's']"
handler_not_found(kind, type, session_id)  404 HANDLER_NOT_FOUND
StorageBusy / StorageFull / StorageError   the database could not take a write (store/db.py;
                                   named here so the API handles them without the store)
StorageRefused                     ... nor a value as given (a NUL in text, on PostgreSQL)
StorageUnavailable                 a StorageBusy: the database cannot be reached (PostgreSQL down)
StorageDamaged                     the database file is damaged (SQLite: malformed, not a database)
"""

from __future__ import annotations

from typing import Any

from llmgine_daemon.protocol import ErrorCode
from llmgine_daemon.store.errors import (
    StorageBusy,
    StorageDamaged,
    StorageError,
    StorageFull,
    StorageRefused,
    StorageUnavailable,
)

__all__ = [
    "BusError",
    "StorageBusy",
    "StorageDamaged",
    "StorageError",
    "StorageFull",
    "StorageRefused",
    "StorageUnavailable",
    "UserCodeError",
    "handler_not_found",
    "invalid",
    "not_found",
]


class BusError(Exception):
    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


def invalid(field: str, issue: str, **extra: Any) -> BusError:
    """The request names a bad value: which ``field``, what is wrong with it (``issue``)."""
    return BusError(ErrorCode.VALIDATION_ERROR, "Invalid request parameters", {"field": field, "issue": issue, **extra})


# kind -> (error code, how the message names it)
_NOT_FOUND: dict[str, tuple[str, str]] = {
    "session": (ErrorCode.SESSION_NOT_FOUND, "session"),
    "engine": (ErrorCode.ENGINE_NOT_FOUND, "engine"),
    "command": (ErrorCode.COMMAND_NOT_FOUND, "command"),
    "event": (ErrorCode.EVENT_NOT_FOUND, "event"),
    "tool": (ErrorCode.TOOL_NOT_FOUND, "tool"),
    "handler": (ErrorCode.HANDLER_NOT_FOUND, "handler"),
    "key": (ErrorCode.KEY_NOT_FOUND, "API key"),
    "mcp_server": (ErrorCode.NOT_FOUND, "MCP server"),
    "approval": (ErrorCode.NOT_FOUND, "approval"),
}


def not_found(kind: str, **ids: str | None) -> BusError:
    """No such ``kind`` (a key of _NOT_FOUND). The first of ``ids`` is the thing's own; a
    ``session_id`` after it says where it was looked for. All of them go in the details::

        not_found("command", command_id="c1", session_id="s1")
        -> COMMAND_NOT_FOUND "command 'c1' not found in session 's1'"
    """
    code, label = _NOT_FOUND[kind]
    own = next(iter(ids.values()))
    message = f"{label} {own!r} not found"
    session_id = ids.get("session_id")
    if kind != "session" and session_id is not None:
        message += f" in session {session_id!r}"
    return BusError(code, message, dict(ids))


def handler_not_found(
    kind: str, type_: str, session_id: str | None, *, or_global: bool = False, **extra: Any
) -> BusError:
    """No ``kind`` ("command" or "event") handler for ``type_`` in the session (``or_global``:
    nor a global one), or in the global scope when ``session_id`` is None."""
    if session_id is None:
        where = "the global scope"
    else:
        where = f"session {session_id!r}" + (" or the global scope" if or_global else "")
    return BusError(
        ErrorCode.HANDLER_NOT_FOUND,
        f"no handler for {kind} {type_!r} in {where}",
        {"kind": kind, "type": type_, "session_id": session_id, **extra},
    )


class UserCodeError(Exception):
    """User code run in the sandbox (a command handler) failed.

    ``error`` is the sandbox's ``{code, message, details}``: ``code`` says how it failed
    (EXECUTION_FAILED when the function raised, else TIMEOUT, WORKER_CRASHED, INVALID_RESULT,
    ...), and for a raise ``details`` holds the user's exception ``type``, ``message`` and
    ``traceback`` (from the first frame of user code on). The runner reports those, not the
    daemon's own traceback of re-raising it.
    """

    def __init__(self, error: dict[str, Any], *, output: str = "", **context: Any) -> None:
        super().__init__(error.get("message") or error.get("code") or "user code failed")
        self.error = error
        details = error.get("details") or {}
        self.reason: str = error.get("code") or "EXECUTION_FAILED"
        raised = "type" in details
        self.exception_type: str = str(details["type"]) if raised else self.reason
        self.user_message: str = details.get("message", "") if raised else (error.get("message") or "")
        self.user_traceback: str | None = details.get("traceback")
        self.output = output
        self.context = context

    def details(self) -> dict[str, Any]:
        """``error.details`` of the failed command."""
        extra = {
            k: v for k, v in (self.error.get("details") or {}).items() if k not in ("type", "message", "traceback")
        }
        out: dict[str, Any] = {
            "exception_type": self.exception_type,
            "message": self.user_message,
            "traceback": self.user_traceback,
            "reason": self.reason,
            **extra,
            **self.context,
        }
        if self.output:
            out["output"] = self.output[-4000:]
        return out
