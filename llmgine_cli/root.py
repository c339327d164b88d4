"""The `llmgine` Typer app: global options, then one sub-app per resource (app.py runs it).

Adding a resource = one module in commands/ (a Typer app whose commands parse, make one
client call and render) + one line in COMMANDS below. Only the invoked command's module is
imported and built; the hot commands (hot.py) do not even get here.

Errors: every LlmgineError becomes one line on stderr and an exit code from status.py; an
unexpected exception becomes one line too (LLMGINE_DEBUG=1 shows its traceback). Never a
traceback by default.
"""

from __future__ import annotations

import copy
import importlib
import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any

import typer
from llmgine_daemon import __version__
from typer.core import TyperGroup

from llmgine_cli.context import AppContext, Environment
from llmgine_cli.failure import error_line, report
from llmgine_cli.status import describe

EPILOG = "Exit codes:\n" + describe()

__all__ = ["app", "error_line", "run"]

# What `llmgine NAME` runs, in the order --help lists them: (module in commands/, attribute,
# how). "group": the module's Typer app under NAME; "flat": the command NAME of a Typer app
# whose commands are top-level; "function": a function made a command. A module is imported,
# and its commands built, only when NAME is invoked (or --help lists them all).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "session": ("sessions", "app", "group"),
    "auth": ("auth", "app", "group"),
    "secret": ("secrets", "app", "group"),
    "command": ("commands", "app", "group"),
    "batch": ("batches", "app", "group"),
    "event": ("events", "app", "group"),
    "engine": ("engines", "app", "group"),
    "tool": ("tools", "app", "group"),
    "mcp": ("mcp", "app", "group"),
    "handler": ("handlers", "app", "group"),
    "webhook": ("webhooks", "app", "group"),
    "schedule": ("schedules", "app", "group"),
    "config": ("config", "app", "group"),
    "daemon": ("daemon", "app", "group"),
    "db": ("db", "app", "group"),
    "context": ("contexts", "app", "group"),
    "health": ("system", "app", "flat"),
    "status": ("system", "app", "flat"),
    "shutdown": ("system", "app", "flat"),
    "version": ("system", "app", "flat"),  # hidden: what --version prints, as `gh version`
    "logs": ("observability", "app", "flat"),
    "log": ("observability", "app", "flat"),
    "metrics": ("observability", "app", "flat"),
    "trace": ("observability", "app", "flat"),
    "traces": ("observability", "app", "flat"),
    "ps": ("queue", "app", "flat"),
    "top": ("queue", "app", "flat"),
    # Talking to an LLM engine (engines + event stream, llmgine_cli/conversation.py).
    "ask": ("chat", "ask", "function"),
    "chat": ("chat", "chat", "function"),
    "completion": ("completion", "app", "flat"),
    "usage": ("usage", "usage", "function"),
    "approval": ("approvals", "app", "group"),
}


def _is_cli_control(exc: BaseException) -> bool:
    """Exceptions click/Typer raise on purpose (usage errors, Exit, Abort): theirs to report.

    They all carry ``exit_code`` except Abort; Typer >= 0.26 vendors click, so the classes
    cannot be named portably.
    """
    return isinstance(exc, (typer.Exit, typer.Abort, BrokenPipeError)) or hasattr(exc, "exit_code")


def _prose(paragraph: str) -> bool:
    """A paragraph of sentences (not a list, an example or a ``\\b`` block kept as written)."""
    lines = paragraph.split("\n")
    return len(lines) > 1 and not any(
        line[:1].isspace() or line.lstrip().startswith(("\b", "$ ", "- ", "* ", "|")) for line in lines
    )


def _kept(paragraph: str) -> bool:
    """A paragraph kept as written: indented lines (commands to copy), or lines that are not
    prose (a table: the exit codes)."""
    lines = [line for line in paragraph.split("\n") if line.strip()]
    return bool(lines) and (all(line[:1].isspace() for line in lines) or (len(lines) > 1 and not _prose(paragraph)))


def rewrap_help(command: Any) -> Any:
    """``command`` and its subcommands, their help wrapped at the terminal's width.

    Typer's rich help keeps a docstring's line breaks: in the first paragraph where a group's
    --help lists its commands, and in every later paragraph of a command's own --help. The
    docstrings are wrapped at ~100 columns in the source, so at 80 every such line broke
    mid-sentence, and wrapped again. Paragraphs of prose are joined into one line each (the
    summary a list shows becomes the ``short_help``), which rich then wraps at the width.
    """
    text = command.help or ""
    paragraphs = text.strip().split("\n\n")
    if text and any(_prose(p) for p in paragraphs):
        paragraphs = [" ".join(p.split()) if _prose(p) else p for p in paragraphs]
        command.help = "\n\n".join(paragraphs)
    if text and command.short_help is None:
        # Whole: click's plain layout (under 80 columns) cut any other to 45 characters and
        # "...", so a group's list lost what its commands do ("Ask the daemon to exit...").
        command.short_help = paragraphs[0]
    for sub in getattr(command, "commands", {}).values():
        rewrap_help(sub)
    return command


# Typer gives every Typer app these two options; under `llmgine` only the root's mean anything
# (they install the root's completion), so the groups' --help does not list them again.
_COMPLETION_OPTIONS = frozenset({"install_completion", "show_completion"})


def build_command(name: str) -> Any:
    """The click command of ``llmgine NAME`` (importing its module now)."""
    command = _build_command(name)
    command.params = [p for p in command.params if p.name not in _COMPLETION_OPTIONS]
    return add_aliases(finite_floats(rewrap_help(command)))


# What docker users type (`docker image ls`, `docker rm`): `ls` for list, `rm` for delete, and
# `mcp delete` for its remove. Hidden: not in --help or completion, which stay one name each.
_ALIASES = (("ls", ("list",)), ("rm", ("delete", "remove")), ("delete", ("remove",)))


def add_aliases(command: Any) -> Any:
    commands = getattr(command, "commands", None)
    if commands is None:
        return command
    for sub in list(commands.values()):
        add_aliases(sub)
    for alias, names in _ALIASES:
        target = next((commands[n] for n in names if n in commands), None)
        if target is not None and alias not in commands:
            twin = copy.copy(target)
            twin.hidden = True
            commands[alias] = twin
    return command


_FINITE: dict[type, type] = {}


def _finite_type(base: type) -> type:
    """``base`` (click's float type, or its range) refusing nan, inf and 1e400."""

    def convert(self: Any, value: Any, param: Any, ctx: Any) -> Any:
        number = base.convert(self, value, param, ctx)
        if isinstance(number, float) and not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number

    if base not in _FINITE:
        _FINITE[base] = type(f"Finite{base.__name__}", (base,), {"convert": convert})
    return _FINITE[base]


def finite_floats(command: Any) -> Any:
    """``command`` and its subcommands, their float options refusing what is not a number.

    click reads "nan", "inf" and "1e400" (inf) as floats, and a range (min=0.01) lets them
    through (NaN compares false): --timeout nan then surfaced as an internal error, and a
    command's --timeout inf was sent as null. Each float parameter gets a copy of its type,
    of a subclass that refuses them (isinstance still holds: --help still shows the range).
    """
    finite_params(command)
    for sub in getattr(command, "commands", {}).values():
        finite_floats(sub)
    return command


def finite_params(command: Any) -> None:
    """finite_floats for ``command``'s own parameters only; and each option that takes a
    value and names none gets one for --help (`--name NAME`, `--port N`), where Typer showed
    the type's name (`--name <str>`, `--port <int range>`)."""
    for param in command.params:
        if getattr(param.type, "name", "") in ("float", "float range"):
            param.type = copy.copy(param.type)
            param.type.__class__ = _finite_type(type(param.type))
        if getattr(param, "param_type_name", "") == "option" and not param.is_flag and param.metavar is None:
            kind = getattr(param.type, "name", "")
            if kind in ("int", "int range"):
                param.metavar = "N"
            elif kind in ("float", "float range"):
                param.metavar = "SECONDS"
            elif kind == "str":
                longest = max(param.opts, key=len)
                param.metavar = longest.lstrip("-").replace("-", "_").upper()


def _build_command(name: str) -> Any:
    module_name, attr, how = COMMANDS[name]
    module = importlib.import_module(f"llmgine_cli.commands.{module_name}")
    target = getattr(module, attr)
    if how == "function":
        sub = typer.Typer()
        sub.command(name)(target)
        command = typer.main.get_command(sub)  # one command: the command itself
        command.name = name
        return command
    command = typer.main.get_command(target)
    if how == "group":
        command.name = name
        return command
    return command.commands[name] if hasattr(command, "commands") else command


class _LazyCommands(Mapping[str, Any]):
    def __init__(self) -> None:
        self._built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in COMMANDS:
            raise KeyError(name)
        if name not in self._built:
            self._built[name] = build_command(name)
        return self._built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS)


def usage_line(exc: Any) -> str:
    """A click usage error as one line: what is wrong, and where the help is."""
    message = " ".join(str(exc.format_message()).split())
    ctx = getattr(exc, "ctx", None)
    hint = _root_option_hint(exc, ctx)
    if hint:
        return f"error: {hint}"
    if ctx is not None and getattr(ctx, "command_path", None):
        help_option = (ctx.help_option_names or ["--help"])[0]
        familiar = _FAMILIAR.get(getattr(exc, "option_name", None) or "")
        if familiar and any(getattr(p, "name", None) == "output" for p in ctx.command.params):
            message = f"{message.rstrip('.')}: {familiar}"
        message = f"{message.rstrip('.')} (see '{ctx.command_path} {help_option}')"
    return f"error: {message}"


# What gh and docker users type, and its spelling here (on commands that take -o).
_FAMILIAR = {
    "--json": "use -o json (or -o jsonl; --format '{{.field}}' for some fields)",
    "--jq": "pipe -o json into jq, or pick fields with --format '{{.field}}'",
    "--template": "use --format '{{.field}}'",
}


def _root_option_hint(exc: Any, ctx: Any) -> str | None:
    """For `llmgine session list --utc` (no such option there): --utc, --url, --api-key and
    --timeout are llmgine's own options, given before the command."""
    option = getattr(exc, "option_name", None)
    if not option or ctx is None or ctx.parent is None:
        return None
    root = ctx.find_root()
    for param in root.command.params:
        if option in getattr(param, "opts", ()):
            value = "" if getattr(param, "is_flag", False) else f" {param.metavar or 'VALUE'}"
            command = ctx.command_path[len(root.info_name) :].strip()
            return (
                f"{option} is an option of {root.info_name} itself: give it before the command, "
                f"as in `{root.info_name} {option}{value} {command} ...`"
            )
    return None


# Typer's boxed help needs 80 columns: narrower, it cut option names and their help with "…"
# (`--allow…`, `--cancel-on-inte…` at 72 columns) rather than wrap them; click's plain layout,
# what it shows without rich, wraps the help and keeps every option name whole.
PLAIN_HELP_BELOW = 80


def terminal_columns() -> int:
    import shutil

    return max(shutil.get_terminal_size((PLAIN_HELP_BELOW, 24)).columns, 20)


def narrow_formatter(base: type[Any]) -> type[Any]:
    """click's help formatter with the option column at most a third of the width (click's is
    30 wide, which left 10 columns for the help at 40); a longer option name gets a line of its
    own, its help indented under it."""

    class Narrow(base):  # type: ignore[misc, valid-type]
        def write_dl(self, rows: Any, col_max: int = 30, col_spacing: int = 2) -> None:
            super().write_dl(rows, min(col_max, max(self.width // 3, 10)), col_spacing)

        def write_text(self, text: str) -> None:
            """An example (a paragraph of indented lines) and a table as written: rewrapped,
            an example's lines ran into one another (a copy did not run) and the exit codes
            into one paragraph. One wider than the terminal is wrapped by the terminal."""
            paragraphs = text.split("\n\n")
            super().write_text("\n\n".join(f"\b\n{p}" if _kept(p) else p for p in paragraphs))

    return Narrow


class RootGroup(TyperGroup):
    """Builds only the invoked command's group; wraps every command so errors are reported
    the same way, whatever raised them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = _LazyCommands()  # type: ignore[assignment]
        finite_params(self)  # its own (--timeout); the commands' as they are built

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Typer's main, except that a usage error is one line on stderr (exit 2), not a box,
        and that help is plain text on a narrow terminal (PLAIN_HELP_BELOW)."""
        import typer.core

        context, columns = self.context_class, terminal_columns()
        rich_help, formatter = typer.core.HAS_RICH, context.formatter_class
        if columns < PLAIN_HELP_BELOW:
            typer.core.HAS_RICH = False
            context.formatter_class = narrow_formatter(formatter)
            extra.setdefault("terminal_width", columns - 1)  # click's own floor is 50
        try:
            return self._main(args, prog_name, complete_var, standalone_mode, windows_expand_args, **extra)
        finally:
            typer.core.HAS_RICH, context.formatter_class = rich_help, formatter

    def _main(
        self,
        args: Sequence[str] | None,
        prog_name: str | None,
        complete_var: str | None,
        standalone_mode: bool,
        windows_expand_args: bool,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except Exception as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # `llmgine session`: its help
                exc.show()  # type: ignore[attr-defined]
                sys.exit(exc.exit_code)  # type: ignore[attr-defined]
            if hasattr(exc, "exit_code") and hasattr(exc, "format_message"):  # a ClickException
                sys.stderr.write(usage_line(exc) + "\n")
                sys.stderr.flush()
                sys.exit(exc.exit_code)
            if isinstance(exc, typer.Abort) or type(exc).__name__ == "Abort":
                sys.stderr.write("aborted\n")
                sys.exit(1)
            raise
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            # Ctrl-C where the command has no Ctrl-C of its own (a read of stdin, a request):
            # exit 130 as the waits do, ending the line the terminal echoed ^C on first (Typer
            # exited 130 without it: the shell's prompt came right after the ^C).
            env = ctx.obj.env if isinstance(ctx.obj, AppContext) else Environment.from_sys()
            if not env.ctrl_c_line_cleared:
                env.after_ctrl_c()
            raise typer.Exit(130) from None
        except Exception as exc:
            if _is_cli_control(exc):
                raise
            app_ctx = ctx.obj if isinstance(ctx.obj, AppContext) else None
            code = report(exc, app_ctx)
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


def _complete_context(incomplete: str) -> list[str]:
    from llmgine_cli.contexts import complete_names

    return complete_names(incomplete)


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"llmgine {__version__}\n")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            metavar="URL",
            show_default=False,
            help="The daemon: unix:///path or http://host:port (default: LLMGINE_URL, else the local socket).",
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", metavar="KEY", show_default=False, help="API key for TCP (default: LLMGINE_API_KEY)."
        ),
    ] = None,
    context: Annotated[
        str | None,
        typer.Option(
            "--context",
            metavar="NAME",
            show_default=False,
            autocompletion=_complete_context,
            help="A named daemon (`llmgine context ls`; default: LLMGINE_CONTEXT, else the one in use).",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            metavar="SECONDS",
            min=0.01,
            show_default=False,
            help="How long to wait for an answer (default: LLMGINE_TIMEOUT, else 30).",
        ),
    ] = None,
    utc: Annotated[
        bool,
        typer.Option("--utc", help="Show times in UTC (default: local time, with its zone)."),
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the CLI version and exit."),
    ] = False,
) -> None:
    if utc:
        from llmgine_cli import render

        render.USE_UTC = True
    if context:  # for this command, as LLMGINE_CONTEXT (and over LLMGINE_URL: it is a flag)
        os.environ["LLMGINE_CONTEXT"] = context
        if os.environ.pop("LLMGINE_URL", None) is not None:
            # ... with the key that goes with that URL: never sent to the context's daemon.
            os.environ.pop("LLMGINE_API_KEY", None)
    ctx.obj = AppContext(Environment.from_sys(), url=url, api_key=api_key, timeout=timeout)


def run(argv: list[str] | None = None) -> int:
    """The Typer app on ``argv``; its exit code."""
    try:
        app(args=argv, prog_name="llmgine")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
