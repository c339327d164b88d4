"""Argument parsing shared by the bus commands (commands, events, engines), and the waiting
loop for work that runs in the daemon."""

from __future__ import annotations

import datetime as _dt
import json
import re
from typing import Annotated, Any

import typer

from llmgine_cli import completion, inputs
from llmgine_cli.hot import text_view  # noqa: F401  (re-exported)
from llmgine_cli.inputs import InputError, command_metadata  # noqa: F401  (re-exported)


def session_callback(ctx: typer.Context, param: Any, value: str | None) -> str | None:
    """A session given by id, unique prefix, short id or name, as its id (hot.py)."""
    if value is None or ctx.resilient_parsing:
        return value
    from llmgine_cli.hot import resolve_session
    from llmgine_cli.ids import Ambiguous
    from llmgine_cli.options import state

    # param None: event tail's SESSION taken from LLMGINE_SESSION by hand.
    # (by name: Typer has a click of its own, whose ParameterSource is not click's)
    from_env = param is None or getattr(ctx.get_parameter_source(param.name), "name", "") == "ENVIRONMENT"
    try:
        return resolve_session(state(ctx), value, from_env=from_env)
    except Ambiguous as exc:
        raise typer.BadParameter(str(exc)) from None


def stdin_argument(param_hint: str, what: str) -> str:
    """The text piped in for an argument given as ``-`` (`engine exec ID -`, `log -`): a usage
    error on a terminal, or when it is not UTF-8 (Python's own decoding made lone surrogates of
    such bytes, which failed in the request as an internal error)."""
    import sys

    if sys.stdin.isatty():
        raise typer.BadParameter(f"- reads {what} from stdin: pipe one in", param_hint=param_hint)
    try:
        return inputs.read_stdin()
    except inputs.NotText as exc:
        raise typer.BadParameter(str(exc), param_hint=param_hint) from None


def hidden_input(prompt: str, param_hint: str) -> str:
    """A secret from stdin: asked for on a terminal without echo (getpass, as `secret set`),
    else the text piped in; its last newline cut. (`context add --api-key-stdin` and `webhook
    add --secret-stdin` on a terminal waited for Ctrl-D with the key shown as it was typed.)"""
    import getpass
    import sys

    if sys.stdin.isatty():
        try:
            value = getpass.getpass(f"{prompt}: ")
        except (EOFError, KeyboardInterrupt) as exc:  # Ctrl-D, Ctrl-C at the prompt
            sys.stderr.write("\n")  # getpass leaves the cursor after its prompt
            if isinstance(exc, EOFError):
                raise typer.BadParameter("no value given (Ctrl-D at the prompt)", param_hint=param_hint) from None
            raise typer.Exit(130) from None
    else:
        value = read_text("-", param_hint)
    return value.rstrip("\r\n")


def session_filter_callback(ctx: typer.Context, param: Any, value: str | None) -> str | None:
    """session_callback for an option that filters a listing (ps, traces, logs, engine,
    schedule and webhook lists): the daemon lists nothing for a session it does not know, so
    a mistyped name was an empty listing (exit 0), not SESSION_NOT_FOUND (exit 4)."""
    resolved = session_callback(ctx, param, value)
    if resolved is not None and resolved == value and not ctx.resilient_parsing:
        from llmgine_cli.ids import is_full_id

        if not is_full_id(value):  # a match is a full id: nothing matched
            from llmgine_cli.errors import api_error

            raise api_error(404, "SESSION_NOT_FOUND", f"session {value!r} not found")
    return resolved


def choices(*allowed: str, several: bool = False) -> Any:
    """An option callback: the value must be one of ``allowed`` (comma-separated ones with
    ``several``), else a usage error (exit 2) instead of the daemon's 422 (exit 1)."""

    def callback(ctx: typer.Context, param: Any, value: str | list[str] | None) -> str | list[str] | None:
        if value is None or ctx.resilient_parsing:
            return value
        # A repeatable option (a list) holds each value given.
        given = list(value) if isinstance(value, list) else value.split(",") if several else [value]
        bad = [v for v in given if v.strip() not in allowed]
        if bad:
            raise typer.BadParameter(f"{bad[0]!r} is not one of {', '.join(allowed)}")
        return value

    return callback


def id_callback(
    kind: str,
    path: str,
    items: str,
    key: str,
    *,
    in_session: bool = False,
    name_key: str | None = None,
    paged: bool = True,
) -> Any:
    """An option/argument callback resolving an id prefix or short id of ``kind``;
    ``in_session``: ``path`` has a ``{session}`` the command's --session fills."""

    def callback(ctx: typer.Context, param: Any, value: str | None) -> str | None:
        if value is None or ctx.resilient_parsing:
            return value
        from llmgine_cli.hot import resolve_id
        from llmgine_cli.ids import Ambiguous, is_full_id
        from llmgine_cli.options import state

        if is_full_id(value):
            return value
        where = path
        if in_session:
            session = ctx.params.get("session")
            if session is None:
                return value  # resolved when --session is known (it is parsed first: is_eager)
            where = path.format(session=session)
        try:
            return resolve_id(state(ctx), kind, value, where, items, key, name_key=name_key, paged=paged)
        except Ambiguous as exc:
            raise typer.BadParameter(str(exc)) from None

    return callback


def id_argument(
    kind: str, path: str, items: str, key: str, *, help: str | None = None, autocompletion: Any = None, **options: Any
) -> Any:
    """The ID argument of a command on one ``kind``: an id, a unique prefix or a short id,
    resolved by ``id_callback`` (its other keywords: in_session, paged)."""
    return typer.Argument(
        metavar="ID",
        help=help or f"The {kind}: its id, a unique prefix or its short id.",
        autocompletion=autocompletion,
        callback=id_callback(kind, path, items, key, **options),
    )


def session_option(
    help: str, *, eager: bool = True, complete: bool = True, envvar: str | None = "LLMGINE_SESSION"
) -> Any:
    """The `--session`/`-S` option (an id, prefix, short id or name, resolved by
    ``session_callback``; from LLMGINE_SESSION unless ``envvar`` is None), with its own help."""
    return typer.Option(
        "--session",
        "-S",
        envvar=envvar,
        metavar="ID",
        show_default=False,
        autocompletion=completion.session_ids if complete else None,
        callback=session_callback,
        is_eager=eager,
        help=help,
    )


SessionOpt = Annotated[
    str,
    session_option("The session: its id, a unique prefix, its short id or its name (default: LLMGINE_SESSION)."),
]

# Each long poll asks the daemon to hold the answer this long; the CLI polls again until done.
LONG_POLL_S = 25.0
# As the daemon reads since/until (daemon/api/observability.py query_time): the commands that
# send them as typed (logs, traces, usage) and those that send the time (event list) agree.
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def usage(exc: InputError) -> typer.BadParameter:
    """An input error as Typer's usage error (exit 2, with the option named)."""
    return typer.BadParameter(str(exc), param_hint=exc.option)


def parse_pairs(pairs: list[str] | None, option: str) -> dict[str, Any]:
    """KEY=VALUE (a string) and KEY:=JSON pairs (inputs.py)."""
    try:
        return inputs.parse_pairs(pairs, option)
    except InputError as exc:
        raise usage(exc) from None


def read_text(path: str, option: str) -> str:
    """The text of a file or of stdin (``-``): not readable, or not UTF-8, is a usage error."""
    try:
        return inputs.read_text("@" + path, option)
    except InputError as exc:
        raise usage(exc) from None


def parse_object(text: str | None, option: str) -> dict[str, Any]:
    """A JSON object, inline, @file or - (stdin)."""
    try:
        return inputs.parse_object(text, option)
    except InputError as exc:
        raise usage(exc) from None


def parse_time(text: str | None, option: str) -> str | None:
    """``30s``, ``10m``, ``2h``, ``1d``, ``1w`` ago, or an ISO 8601 time as is; anything else
    is a usage error (exit 2), not the daemon's 422 (exit 1)."""
    if text is None:
        return None
    match = _RELATIVE.match(text.strip().lower())
    if match:
        try:
            delta = _dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
            return (_dt.datetime.now(_dt.UTC) - delta).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        except OverflowError:  # "99999999999d" ago is before year 1: since the beginning
            return "0001-01-01T00:00:00.000000Z"
    try:
        _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter("use 90s, 15m, 2h, 1d, 1w or an ISO 8601 time", param_hint=option) from None
    return text


def summary(record: dict[str, Any], width: int = 60) -> str:
    """One cell for a command's outcome: its result (compact JSON) or its error."""
    error = record.get("error")
    if error:
        text = f"{error.get('code')}: {error.get('message')}"
    elif record.get("result") is not None:
        text = json.dumps(record["result"], separators=(",", ":"), ensure_ascii=False)
    else:
        text = "-"
    return text if len(text) <= width else text[: width - 1] + "…"
