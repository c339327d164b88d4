"""Domain errors. The bus raises these; the API turns them into the error envelope.

    BusError(code, message, details)   code is a protocol.ErrorCode; the HTTP status follows it
"""

from __future__ import annotations

from typing import Any


class BusError(Exception):
    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


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
        extra = {k: v for k, v in (self.error.get("details") or {}).items()
                 if k not in ("type", "message", "traceback")}
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
