"""The `llmgine` command: global options, then one sub-app per resource.

Adding a resource = one module in commands/ (a Typer app whose commands parse, make one
client call and render) + one `add_typer` line below.

Errors: every LlmgineError becomes one line on stderr and an exit code from status.py; an
unexpected exception becomes one line too (LLMGINE_DEBUG=1 shows its traceback). Never a
traceback by default.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from llmgine_daemon import __version__
from llmgine_daemon.settings import ConfigError
from typer.core import TyperGroup

from llmgine_cli.client import (
    ApiError,
    DaemonError,
    DaemonTimeout,
    DaemonUnreachable,
    InvalidURL,
    LlmgineError,
    RequestTimeout,
)
from llmgine_cli.commands import (
    auth,
    chat,
    commands,
    completion,
    config,
    daemon,
    db,
    engines,
    event_tail,
    events,
    handlers,
    observability,
    sessions,
    system,
    tools,
)
from llmgine_cli.context import AppContext, Environment
from llmgine_cli.status import ExitStatus, describe, http_to_exit_status

EPILOG = "Exit codes:\n" + describe()


def error_line(exc: BaseException, app_ctx: AppContext | None) -> tuple[str, ExitStatus]:
    """The one stderr line and the exit code for an error."""
    if isinstance(exc, ApiError):
        line = f"error: {exc}"  # code: message, and for a validation error the field and why
        if exc.status >= 500 and exc.request_id:
            line += f" (request id {exc.request_id})"
        if exc.status == 401:
            line += " (pass --api-key or set LLMGINE_API_KEY)"
        return line, http_to_exit_status(exc.status)
    if isinstance(exc, DaemonUnreachable):
        hint = ""
        if exc.before_send and app_ctx is not None and app_ctx.target().is_default:
            hint = "; start it with `llmgine daemon start`"
            if not app_ctx.autostart_enabled:
                hint += " (auto-start is off: LLMGINE_NO_AUTOSTART)"
            return f"error: llmgined is not running ({exc}){hint}", ExitStatus.UNREACHABLE
        return f"error: {exc}", ExitStatus.UNREACHABLE
    if isinstance(exc, (RequestTimeout, DaemonTimeout)):
        return f"error: {exc}", ExitStatus.TIMEOUT
    if isinstance(exc, InvalidURL):
        return f"error: {exc}", ExitStatus.USAGE
    if isinstance(exc, DaemonError):
        return f"error: {exc}", ExitStatus.ERROR
    if isinstance(exc, (LlmgineError, ConfigError)):
        return f"error: {exc}", ExitStatus.ERROR
    line = (f"error: internal error: {type(exc).__name__}: {exc} "
            "(set LLMGINE_DEBUG=1 for a traceback)")
    return line, ExitStatus.ERROR


def _is_cli_control(exc: BaseException) -> bool:
    """Exceptions click/Typer raise on purpose (usage errors, Exit, Abort): theirs to report.

    They all carry ``exit_code`` except Abort; Typer >= 0.26 vendors click, so the classes
    cannot be named portably.
    """
    return isinstance(exc, (typer.Exit, typer.Abort, BrokenPipeError)) or hasattr(
        exc, "exit_code"
    )


class RootGroup(TyperGroup):
    """Wraps every command so errors are reported the same way, whatever raised them."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if _is_cli_control(exc):
                raise
            if os.environ.get("LLMGINE_DEBUG") and not isinstance(exc, LlmgineError):
                raise
            app_ctx = ctx.obj if isinstance(ctx.obj, AppContext) else None
            line, code = error_line(exc, app_ctx)
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
            raise typer.Exit(code) from None


app = typer.Typer(
    name="llmgine",
    cls=RootGroup,
    help="The LLMGine message bus from the command line (talks to the llmgined daemon).",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# One line per resource; the module name matches the daemon's api/<resource>.py.
app.add_typer(sessions.app, name="session")
app.add_typer(auth.app, name="auth")
app.add_typer(commands.app, name="command")
app.add_typer(events.app, name="event")
app.add_typer(engines.app, name="engine")
app.add_typer(tools.app, name="tool")
app.add_typer(handlers.app, name="handler")
app.add_typer(config.app, name="config")
app.add_typer(daemon.app, name="daemon")
# `event tail` holds a stream open (llmgine_cli/stream.py), so it lives in its own module.
events.app.command("tail")(event_tail.tail)
app.add_typer(db.app, name="db")
app.add_typer(system.app)  # health, status, shutdown: top-level
app.add_typer(observability.app)  # logs, log, metrics, trace, traces: top-level
# Talking to an LLM engine (engines + event stream, llmgine_cli/conversation.py): top-level.
app.command("ask")(chat.ask)
app.command("chat")(chat.chat)
app.add_typer(completion.app)  # completion bash|zsh|fish: top-level


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"llmgine {__version__}\n")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option("--url", metavar="URL", show_default=False,
                     help="The daemon: unix:///path or http://host:port "
                          "(default: LLMGINE_URL, else the local socket)."),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", metavar="KEY", show_default=False,
                     help="API key for TCP (default: LLMGINE_API_KEY)."),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", metavar="SECONDS", min=0.01, show_default=False,
                     help="How long to wait for an answer (default: LLMGINE_TIMEOUT, else 30)."),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True,
                     help="Print the CLI version and exit."),
    ] = False,
) -> None:
    ctx.obj = AppContext(Environment.from_sys(), url=url, api_key=api_key, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    try:
        app(args=argv, prog_name="llmgine")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
