"""An error as the one line a user sees on stderr, and its exit code (status.py).

Shared by the Typer app (app.py) and the fast path (hot.py); imports nothing heavy.
"""

from __future__ import annotations

import os
import sys

from llmgine_cli.errors import (
    ApiError,
    DaemonError,
    DaemonTimeout,
    DaemonUnreachable,
    InvalidArgument,
    InvalidURL,
    LlmgineError,
    RequestTimeout,
)
from llmgine_cli.render import visible_line
from llmgine_cli.status import ExitStatus, http_to_exit_status

TYPE_CHECKING = False
if TYPE_CHECKING:
    from llmgine_cli.context import AppContext


def error_line(exc: BaseException, app_ctx: AppContext | None) -> tuple[str, ExitStatus]:
    """The one stderr line and the exit code for an error."""
    if isinstance(exc, ApiError):
        # code: message, and for a validation error the field and why; one line, whatever
        # text of others (a name, a model server's error) the message quotes
        line = f"error: {visible_line(str(exc))}"
        if exc.status >= 500 and exc.request_id:
            line += f" (request id {exc.request_id})"
        if exc.status == 401:
            line += " (pass --api-key or set LLMGINE_API_KEY)"
        if exc.code == "PAYLOAD_TOO_LARGE":
            line += payload_hint(exc)
        if exc.code == "HANDLER_NOT_FOUND" and "or the global scope" in exc.message:  # a submit
            line += handler_hint(exc)
        if exc.code in ("SESSION_NOT_FOUND", "SESSION_CLOSED"):
            line += session_env_hint(exc, app_ctx)
        limit = (exc.details or {}).get("limit")
        if exc.code == "LIMIT_REACHED" and f"(security.limits.{limit})" in exc.message:  # a setting
            line += f" (`llmgine config set security.limits.{limit} N`, then `llmgine daemon restart`, raises it)"
        return line, http_to_exit_status(exc.status)
    if isinstance(exc, DaemonUnreachable):
        hint = ""
        if exc.before_send and app_ctx is not None and app_ctx.target().is_default:
            hint = "; start it with `llmgine daemon start`"
            if not app_ctx.autostart_enabled:
                hint += " (auto-start is off: LLMGINE_NO_AUTOSTART)"
            return f"error: llmgined is not running ({exc}){hint}{exc.hint}", ExitStatus.UNREACHABLE
        return f"error: {exc}{exc.hint}{context_hint(app_ctx)}", ExitStatus.UNREACHABLE
    if isinstance(exc, (RequestTimeout, DaemonTimeout)):
        return f"error: {exc}", ExitStatus.TIMEOUT
    from llmgine_cli.ids import Ambiguous

    # Ambiguous: a prefix or name that fits several ids (ids.py), wherever it was resolved.
    if isinstance(exc, (InvalidURL, InvalidArgument, Ambiguous)):
        return f"error: {exc}", ExitStatus.USAGE
    if isinstance(exc, (DaemonError, LlmgineError)):
        return f"error: {exc}", ExitStatus.ERROR
    from llmgine_daemon.settings import ConfigError

    if isinstance(exc, ConfigError):
        return f"error: {exc}", ExitStatus.ERROR
    if isinstance(exc, UnicodeEncodeError) and isinstance(exc.object, str) and exc.reason == "surrogates not allowed":
        # Bytes in an argument or variable that the locale did not decode (a Latin-1 name):
        # Python keeps them as lone surrogates, which no request can carry.
        around = exc.object[max(0, exc.start - 20) : exc.end + 20]
        return f"error: a value given is not UTF-8 text: {_short(repr(around), 80)}", ExitStatus.USAGE
    line = f"error: internal error: {type(exc).__name__}: {_short(str(exc))} (set LLMGINE_DEBUG=1 for a traceback)"
    return line, ExitStatus.ERROR


def payload_hint(exc: ApiError) -> str:
    """What the limit is and which setting raises it (the daemon's details say the limit)."""
    import re

    details = exc.details or {}
    limit = details.get("limit")
    if not isinstance(limit, int):
        found = re.search(r"(\d{3,})", str(details.get("issue") or exc.message))
        limit = int(found.group(1)) if found else None
    shown = f"the limit is {limit} bytes ({limit / 1048576:.1f} MiB); " if limit else ""
    return (
        f" ({shown}the setting server.max_body_size (LLMGINE_MAX_BODY_SIZE) raises it: "
        "`llmgine config set server.max_body_size BYTES`, then `llmgine daemon restart`)"
    )


def handler_hint(exc: ApiError) -> str:
    """What handles a command type: a handler of the user's, or the engine whose type it is."""
    kind, type_ = (exc.details or {}).get("kind"), (exc.details or {}).get("type")
    if kind != "command" or not isinstance(type_, str):
        return ""
    if type_.endswith("EngineCommand"):  # DummyEngineCommand: a DummyEngine's (engine types)
        return f" (create the engine that handles it: `llmgine engine create {type_.removesuffix('Command')}`)"
    return (
        f" (add a handler: `llmgine handler add command {type_} FILE.py`; `llmgine engine types` lists"
        " the command types engines handle)"
    )


def context_hint(app_ctx: AppContext | None) -> str:
    """The daemon not reached is a context's (`context use` of days ago): which, and the way
    back to the local one."""
    if app_ctx is None or app_ctx.url or app_ctx.env.environ.get("LLMGINE_URL"):
        return ""
    from llmgine_cli.contexts import selected

    try:
        chosen = selected(app_ctx.env.environ)
    except (InvalidArgument, OSError):
        return ""
    if chosen is None:
        return ""
    return (
        f" (the daemon of context {chosen[0]!r}: `--context default` talks to the local one,"
        " `llmgine context ls` lists them)"
    )


def session_env_hint(exc: ApiError, app_ctx: AppContext | None) -> str:
    """A session gone or ended that LLMGINE_SESSION named (an `export` of long ago), not -S:
    where it came from, and what to do."""
    given = getattr(app_ctx, "session_from_env", None) or []
    if not any(f"'{value}'" in exc.message for value in given):
        return ""
    return (
        " (it is LLMGINE_SESSION's: `export LLMGINE_SESSION=$(llmgine session create -q)` starts a new"
        " session, or give -S)"
    )


def _short(text: str, width: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def report(exc: BaseException, app_ctx: AppContext | None) -> int:
    """Write the error's line to stderr and return its exit code (LLMGINE_DEBUG=1 re-raises
    what is not one of ours, for its traceback)."""
    if os.environ.get("LLMGINE_DEBUG") and not isinstance(exc, LlmgineError):
        raise exc
    line, code = error_line(exc, app_ctx)
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    return int(code)
