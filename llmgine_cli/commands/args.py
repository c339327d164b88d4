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

SessionOpt = Annotated[
    str,
    typer.Option("--session", "-S", envvar="LLMGINE_SESSION", metavar="ID", show_default=False,
                 autocompletion=completion.session_ids,
                 help="The session (default: LLMGINE_SESSION)."),
]

# Each long poll asks the daemon to hold the answer this long; the CLI polls again until done.
LONG_POLL_S = 25.0
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def usage(exc: InputError) -> typer.BadParameter:
    """An input error as Typer's usage error (exit 2, with the option named)."""
    return typer.BadParameter(str(exc), param_hint=exc.option)


def parse_pairs(pairs: list[str] | None, option: str) -> dict[str, Any]:
    """KEY=VALUE (a string) and KEY:=JSON pairs (inputs.py)."""
    try:
        return inputs.parse_pairs(pairs, option)
    except InputError as exc:
        raise usage(exc) from None


def parse_object(text: str | None, option: str) -> dict[str, Any]:
    """A JSON object, inline, @file or - (stdin)."""
    try:
        return inputs.parse_object(text, option)
    except InputError as exc:
        raise usage(exc) from None


def parse_time(text: str | None, option: str) -> str | None:
    """``10m``, ``2h``, ``1d``, ``30s`` ago, or an ISO 8601 time as is."""
    if text is None:
        return None
    match = _RELATIVE.match(text.strip())
    if match:
        delta = _dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
        return (_dt.datetime.now(_dt.UTC) - delta).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    try:
        _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter("use 10m, 2h, 1d or an ISO 8601 time", param_hint=option) from None
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
