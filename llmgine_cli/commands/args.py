"""Argument parsing shared by the bus commands (commands, events, engines), and the waiting
loop for work that runs in the daemon."""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Callable
from typing import Annotated, Any

import typer
from llmgine_daemon.protocol import TERMINAL_STATUSES, Command

SessionOpt = Annotated[
    str,
    typer.Option("--session", "-S", envvar="LLMGINE_SESSION", metavar="ID", show_default=False,
                 help="The session (default: LLMGINE_SESSION)."),
]

# Each long poll asks the daemon to hold the answer this long; the CLI polls again until done.
LONG_POLL_S = 25.0
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def typed_value(text: str) -> Any:
    """``3`` -> 3, ``true`` -> True, ``{"a": 1}`` -> a dict; anything that is not JSON stays
    a string (quote it, ``'"3"'``, to force a string)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_pairs(pairs: list[str] | None, option: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=option)
        out[key] = typed_value(value)
    return out


def parse_object(text: str | None, option: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint=option) from None
    if not isinstance(value, dict):
        raise typer.BadParameter("must be a JSON object", param_hint=option)
    return value


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


def command_metadata(priority: str | None, timeout: float | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if priority:
        metadata["priority"] = priority
    if timeout is not None:
        metadata["timeout"] = timeout
    return metadata


def finish(record: Command, poll: Callable[[Command], Command], on_interrupt: Callable[[Command], None]) -> Command:
    """Long-poll until the command finished. Ctrl-C stops waiting, not the command."""
    try:
        while record.status not in TERMINAL_STATUSES:
            record = poll(record)
    except KeyboardInterrupt:
        on_interrupt(record)
        raise typer.Exit(130) from None
    return record


def text_view(record: dict[str, Any]) -> dict[str, Any]:
    """A record for table/plain output: the traceback stays in -o json."""
    error = record.get("error")
    if isinstance(error, dict) and isinstance(error.get("details"), dict):
        details = {k: v for k, v in error["details"].items() if k != "traceback"}
        record = {**record, "error": {**error, "details": details}}
    return record


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
