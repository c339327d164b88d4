"""Every exception the client library (and the CLI built on it) raises on purpose.

Callers catch the root, or exactly what they can handle. ``ApiError`` and below mean the
daemon answered with the error envelope; there is one class per ``error.code``
(``llmgine_daemon.protocol.ErrorCode``), grouped by what a caller does about it::

    LlmgineError
     ├── InvalidURL                  the URL is not unix:///path or http://host:port
     ├── TransportError              no HTTP answer came back
     │    ├── DaemonUnreachable      nothing listens there (no socket, refused, connection lost)
     │    └── RequestTimeout         connected, but no answer in time
     ├── ProtocolError               the answer is not what the protocol says
     ├── DaemonError                 `llmgine daemon start/stop` (or auto-start) failed
     │    └── DaemonTimeout          the daemon did not come up (or go away) in time
     └── ApiError                    the daemon answered 4xx/5xx (status, code, message, details)
          ├── BadRequest             ValidationError, InvalidJson, UnsupportedMediaType,
          │                          PayloadTooLarge, MethodNotAllowed, IdempotencyKeyReused,
          │                          DependencyCycle, RequestBodyTimeout
          ├── AuthError              Unauthorized, Forbidden
          ├── NotFound               (NOT_FOUND: no such endpoint) SessionNotFound,
          │                          EngineNotFound, CommandNotFound, EventNotFound,
          │                          ToolNotFound, HandlerNotFound, KeyNotFound
          ├── Conflict               (CONFLICT) SessionClosed, LimitReached
          ├── RateLimited            429; ``retry_after`` seconds
          ├── ServerError            InternalError, ShuttingDown, StorageBusy,
          │                          InsufficientStorage, SandboxUnavailable
          ├── CommandFailed          a command ended without a result (Client.execute):
          │                          CommandExecutionFailed, CommandTimeout,
          │                          CommandCancelled, CommandInterrupted
          └── ProviderError          an LLM provider failed: ProviderAuthFailed,
                                     ProviderRateLimited, ProviderUnavailable, ProviderTimeout,
                                     ProviderBadResponse, ProviderBadRequest

``api_error(status, code, ...)`` builds the right class for a code; an unknown code (a newer
daemon) becomes the group of its status, else plain ``ApiError``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs a few ms to import: annotations only
if TYPE_CHECKING:
    from typing import Any

    from llmgine_daemon.protocol import Command


class LlmgineError(Exception):
    """Root of every error the client (and the CLI built on it) raises on purpose."""


class InvalidURL(LlmgineError):
    pass


class InvalidArgument(LlmgineError):
    """A value no request can carry: an empty id or name (it would address another route), a
    bad LLMGINE_* environment value."""


class TransportError(LlmgineError):
    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


class DaemonUnreachable(TransportError):
    def __init__(self, message: str, url: str, *, before_send: bool) -> None:
        super().__init__(message, url)
        self.hint = ""  # what else to do, after the message (failure.py)
        # True when the request never left this process, so retrying cannot repeat a write.
        self.before_send = before_send


class RequestTimeout(TransportError):
    pass


class ProtocolError(LlmgineError):
    pass


class DaemonError(LlmgineError):
    pass


class DaemonTimeout(DaemonError):
    pass


class ApiError(LlmgineError):
    """The daemon's error envelope. ``command`` is set when a command ended this way."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        request_id: str | None = None,
        *,
        command: Command | None = None,
    ) -> None:
        details = details or {}
        super().__init__(error_text(code, message, details))
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.request_id = request_id
        self.command = command


def error_text(code: Any, message: Any, details: Any) -> str:
    """``CODE: message``; a validation error's message is generic, so which field and why
    (its details) follow: ``(parameters.fail: must be of type boolean)``."""
    text = f"{code}: {message}"
    field, issue = (details.get("field"), details.get("issue")) if isinstance(details, dict) else (None, None)
    if isinstance(field, str) and isinstance(issue, str) and issue not in str(message):
        text += f" ({field}: {issue})"
    return text


# -- groups ------------------------------------------------------------------------------


class BadRequest(ApiError):
    pass


class AuthError(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class RateLimited(ApiError):
    @property
    def retry_after(self) -> float | None:
        value = self.details.get("retry_after")
        return float(value) if isinstance(value, (int, float)) else None


class ServerError(ApiError):
    pass


class CommandFailed(ApiError):
    pass


class ProviderError(ApiError):
    pass


# -- one class per code ------------------------------------------------------------------


class ValidationError(BadRequest):
    pass


class InvalidJson(BadRequest):
    pass


class UnsupportedMediaType(BadRequest):
    pass


class PayloadTooLarge(BadRequest):
    pass


class MethodNotAllowed(BadRequest):
    pass


class IdempotencyKeyReused(BadRequest):
    pass


class DependencyCycle(BadRequest):
    pass


class RequestBodyTimeout(BadRequest):
    """408 REQUEST_TIMEOUT: the daemon did not receive the request body in time."""


class Unauthorized(AuthError):
    pass


class Forbidden(AuthError):
    pass


class SessionNotFound(NotFound):
    pass


class EngineNotFound(NotFound):
    pass


class CommandNotFound(NotFound):
    pass


class EventNotFound(NotFound):
    pass


class ToolNotFound(NotFound):
    pass


class HandlerNotFound(NotFound):
    pass


class KeyNotFound(NotFound):
    pass


class SessionClosed(Conflict):
    pass


class LimitReached(Conflict):
    pass


class InternalError(ServerError):
    pass


class ShuttingDown(ServerError):
    pass


class StorageBusy(ServerError):
    pass


class InsufficientStorage(ServerError):
    pass


class StorageDamaged(ServerError):
    pass


class SandboxUnavailable(ServerError):
    pass


class CommandExecutionFailed(CommandFailed):
    pass


class CommandTimeout(CommandFailed):
    pass


class CommandCancelled(CommandFailed):
    pass


class CommandInterrupted(CommandFailed):
    pass


class ProviderAuthFailed(ProviderError):
    pass


class ProviderRateLimited(ProviderError):
    pass


class ProviderUnavailable(ProviderError):
    pass


class ProviderTimeout(ProviderError):
    pass


class ProviderBadResponse(ProviderError):
    pass


class ProviderBadRequest(ProviderError):
    pass


BY_CODE: dict[str, type[ApiError]] = {
    "VALIDATION_ERROR": ValidationError,
    "INVALID_JSON": InvalidJson,
    "UNSUPPORTED_MEDIA_TYPE": UnsupportedMediaType,
    "PAYLOAD_TOO_LARGE": PayloadTooLarge,
    "METHOD_NOT_ALLOWED": MethodNotAllowed,
    "IDEMPOTENCY_KEY_REUSED": IdempotencyKeyReused,
    "DEPENDENCY_CYCLE": DependencyCycle,
    "REQUEST_TIMEOUT": RequestBodyTimeout,
    "UNAUTHORIZED": Unauthorized,
    "FORBIDDEN": Forbidden,
    "NOT_FOUND": NotFound,
    "SESSION_NOT_FOUND": SessionNotFound,
    "ENGINE_NOT_FOUND": EngineNotFound,
    "COMMAND_NOT_FOUND": CommandNotFound,
    "EVENT_NOT_FOUND": EventNotFound,
    "TOOL_NOT_FOUND": ToolNotFound,
    "HANDLER_NOT_FOUND": HandlerNotFound,
    "KEY_NOT_FOUND": KeyNotFound,
    "CONFLICT": Conflict,
    "SESSION_CLOSED": SessionClosed,
    "LIMIT_REACHED": LimitReached,
    "RATE_LIMITED": RateLimited,
    "INTERNAL_ERROR": InternalError,
    "SHUTTING_DOWN": ShuttingDown,
    "STORAGE_BUSY": StorageBusy,
    "INSUFFICIENT_STORAGE": InsufficientStorage,
    "STORAGE_DAMAGED": StorageDamaged,
    "SANDBOX_UNAVAILABLE": SandboxUnavailable,
    "COMMAND_EXECUTION_FAILED": CommandExecutionFailed,
    "COMMAND_TIMEOUT": CommandTimeout,
    "COMMAND_CANCELLED": CommandCancelled,
    "COMMAND_INTERRUPTED": CommandInterrupted,
    "PROVIDER_AUTH_FAILED": ProviderAuthFailed,
    "PROVIDER_RATE_LIMITED": ProviderRateLimited,
    "PROVIDER_UNAVAILABLE": ProviderUnavailable,
    "PROVIDER_TIMEOUT": ProviderTimeout,
    "PROVIDER_BAD_RESPONSE": ProviderBadResponse,
    "PROVIDER_BAD_REQUEST": ProviderBadRequest,
}
_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: AuthError,
    403: AuthError,
    404: NotFound,
    405: BadRequest,
    408: BadRequest,
    409: Conflict,
    413: BadRequest,
    415: BadRequest,
    422: BadRequest,
    429: RateLimited,
}


def api_error(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    request_id: str | None = None,
    *,
    command: Command | None = None,
) -> ApiError:
    cls = BY_CODE.get(code) or _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(status, code, message, details, request_id, command=command)


def command_error(command: Command) -> ApiError:
    """The exception for a command that ended without a result (failed, timed out, ...)."""
    error = command.error
    code = (
        error.code
        if error is not None
        else {
            "timed_out": "COMMAND_TIMEOUT",
            "cancelled": "COMMAND_CANCELLED",
            "interrupted": "COMMAND_INTERRUPTED",
        }.get(command.status, "COMMAND_EXECUTION_FAILED")
    )
    message = error.message if error is not None else f"command {command.status}"
    details = error.details if error is not None else {}
    # A handler may fail with any code (TOOL_NOT_FOUND from a nested call, ...): the code's
    # own class is raised, with the command record attached.
    from llmgine_daemon.protocol import ERROR_STATUS

    return api_error(ERROR_STATUS.get(code, 500), code, message, details, command=command)


def not_found_code(kind: str) -> str:
    """The code the daemon answers for an id of ``kind`` it does not have: the kind's own
    (``SESSION_NOT_FOUND``, ``ENGINE_NOT_FOUND``, ...), else ``NOT_FOUND`` (webhooks,
    schedules, traces, ...: the CLI must not make up a ``WEBHOOK_NOT_FOUND``)."""
    code = f"{kind.upper()}_NOT_FOUND"
    return code if code in BY_CODE else "NOT_FOUND"
