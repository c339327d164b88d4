"""Rendering results: table (rich, on a TTY), plain aligned text (piped), json, jsonl, ids.

The only module that imports rich, and only inside ``_rich_table``: `-o json`, `-q` and piped
output never pay for it.

A command describes its result with a ``View`` and calls ``render`` once:
- a list envelope (``items`` names the list field, e.g. "sessions") renders as rows;
- anything else renders as key/value pairs, nested objects flattened to dotted keys.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

import msgspec

from llmgine_cli.context import Environment

Format = Literal["table", "plain", "json", "jsonl"]
FORMATS: tuple[str, ...] = ("table", "plain", "json", "jsonl")


@dataclass(frozen=True)
class Column:
    header: str
    key: str  # dotted path into the item


@dataclass(frozen=True)
class View:
    columns: tuple[Column, ...] = ()
    items: str | None = None  # the list field of an envelope; None = one object
    id_field: str | None = None  # what -q prints; None = -q prints nothing
    fields: tuple[str, ...] = ()  # key/value view: these dotted keys, in order (default: all)
    title: str | None = None
    raw_keys: frozenset[str] = field(default_factory=frozenset)  # never humanise these


def resolve_format(env: Environment, fmt: str | Enum | None) -> str:
    if isinstance(fmt, Enum):
        fmt = str(fmt.value)
    return fmt or ("table" if env.stdout_isatty else "plain")


def render(
    env: Environment, data: Any, view: View, fmt: str | Enum | None = None, quiet: bool = False
) -> None:
    obj = msgspec.to_builtins(data)
    items: list[Any] | None = obj.get(view.items) if view.items and isinstance(obj, dict) else None
    if quiet:
        if view.id_field:
            for item in items if items is not None else [obj]:
                value = _get(item, view.id_field)
                if value is not None:
                    env.out(str(value))
        env.stdout.flush()
        return
    fmt = resolve_format(env, fmt)
    if fmt == "json":
        env.out(msgspec.json.format(msgspec.json.encode(obj), indent=2).decode())
    elif fmt == "jsonl":
        for item in items if items is not None else [obj]:
            env.out(msgspec.json.encode(item).decode())
    elif items is not None:
        headers = [c.header for c in view.columns]
        rows = [[_cell(c.key, _get(item, c.key), view) for c in view.columns] for item in items]
        _emit(env, fmt, headers, rows, view.title, kv=False)
    else:
        flat = _flatten(obj)
        keys = list(view.fields) if view.fields else list(flat)
        rows = [[key, _cell(key, flat.get(key), view)] for key in keys]
        _emit(env, fmt, ["KEY", "VALUE"], rows, view.title, kv=True)
    env.stdout.flush()


def render_text(env: Environment, text: str) -> None:
    """A bare value (`config get`, `config path`): the same in every text format."""
    env.out(text)
    env.stdout.flush()


# -- helpers -----------------------------------------------------------------------------


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    if isinstance(obj, dict) and (obj or not prefix):
        for key, value in obj.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
    else:
        flat[prefix[:-1]] = obj
    return flat


def _cell(key: str, value: Any, view: View) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(k, v, view)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(_cell(key, v, view) for v in value) or "-"
    leaf = key.rsplit(".", 1)[-1]
    if key not in view.raw_keys:
        if isinstance(value, str) and (leaf.endswith("_at") or leaf == "timestamp"):
            return _short_time(value)
        if leaf == "uptime" and isinstance(value, (int, float)):
            return duration(value)
        if leaf == "size_bytes" and isinstance(value, int):
            return size(value)
    return str(value)


def _short_time(text: str) -> str:
    """2024-01-01T00:00:00.123456Z -> 2024-01-01 00:00:00 (UTC, second precision)."""
    try:
        value = _dt.datetime.fromisoformat(text)
    except ValueError:
        return text
    return value.astimezone(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float) -> str:
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "",
             f"{minutes}m" if minutes else "", f"{secs}s"]
    return " ".join(p for p in parts if p)


def size(num: int) -> str:
    value = float(num)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{num} B"  # pragma: no cover


def _emit(
    env: Environment, fmt: str, headers: list[str], rows: list[list[str]], title: str | None,
    *, kv: bool,
) -> None:
    if fmt == "table":
        _rich_table(env, headers, rows, title, kv=kv)
        return
    # Plain: aligned columns, two spaces apart, like `docker ps` piped; no header for
    # key/value output so `llmgine status | awk '$1=="pid"{print $2}'` just works.
    table = rows if kv else [headers, *rows]
    if not table:
        return
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for row in table:
        line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row))
        env.out(line.rstrip())


def _rich_table(
    env: Environment, headers: list[str], rows: list[list[str]], title: str | None, *, kv: bool
) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(file=env.stdout, force_terminal=env.stdout_isatty or None,
                      highlight=False, soft_wrap=False)
    if kv:
        table = Table(box=None, show_header=False, title=title, pad_edge=False)
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column(overflow="fold")
    else:
        table = Table(box=box.SIMPLE_HEAD, title=title, pad_edge=False)
        for header in headers:
            table.add_column(header, style="cyan" if header == "ID" else None,
                             overflow="fold", no_wrap=header == "ID")
    for row in rows:
        table.add_row(*_escape(row))
    console.print(table)


def _escape(row: list[str]) -> list[str]:
    # Values are data, never markup: "[bold]" in a session name must print as typed.
    from rich.markup import escape

    return [escape(cell) for cell in row]
