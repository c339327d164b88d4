"""Rendering results: table (rich, on a TTY), plain aligned text (piped), json, jsonl, ids.

With ``live.py`` (the views that keep drawing: `event tail`, `ask`/`chat`) the only modules
that import rich, and only inside the functions that draw: `-o json`, `-q` and piped output
never pay for it.

A command describes its result with a ``View`` and calls ``render`` once:
- a list envelope (``items`` names the list field, e.g. "sessions") renders as rows;
- anything else renders as key/value pairs, nested objects flattened to dotted keys.
"""

from __future__ import annotations

from llmgine_daemon.textsafe import CONTROL_ESCAPES, json_visible

# No dataclasses or typing at run time: this module is on every call's path (hot.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from enum import Enum
    from typing import Any

    from llmgine_cli.context import Environment

FORMATS: tuple[str, ...] = ("table", "plain", "json", "jsonl")


class Column:
    __slots__ = ("header", "key")

    def __init__(self, header: str, key: str) -> None:
        self.header = header
        self.key = key  # dotted path into the item

    def __repr__(self) -> str:
        return f"Column({self.header!r}, {self.key!r})"


class View:
    """How a result renders: a list envelope as rows of ``columns``, else key/value pairs.

    ``columns`` is written as one string, ``"ID=command_id, TYPE=command_type"``: a header
    (spaces allowed) and its dotted key per column, separated by commas."""

    def __init__(
        self,
        columns: str = "",
        items: str | None = None,
        id_field: str | None = None,
        fields: tuple[str, ...] = (),
        title: str | None = None,
        raw_keys: frozenset[str] = frozenset(),
        empty: str | None = None,
    ) -> None:
        self.columns = tuple(Column(*part.strip().split("=", 1)) for part in columns.split(",") if part.strip())
        self.items = items  # the list field of an envelope; None = one object
        self.id_field = id_field  # what -q prints; None = -q prints nothing
        self.fields = fields  # key/value view: these dotted keys, in order (default: all)
        self.title = title
        self.raw_keys = raw_keys  # never humanise these
        # An empty listing on a terminal: this line on stderr instead of a table of headers
        # (as gh says "no open pull requests"); default "no <items>". Piped: the header row.
        self.empty = empty

    def replace(self, **changes: Any) -> View:
        """A copy with ``changes`` (as dataclasses.replace)."""
        other = object.__new__(View)
        other.__dict__.update(self.__dict__, **changes)
        return other


def resolve_format(env: Environment, fmt: str | Enum | None) -> str:
    value = getattr(fmt, "value", fmt)  # a str (a format name or a template), or a str Enum
    return str(value) if value else ("table" if env.stdout_isatty else "plain")


def cut_note(env: Environment, output: Any, quiet: bool, total: int, offset: int, shown: int) -> None:
    """A page of a listing that is not all of it says so on stderr (`-q` too: `... list -q |
    xargs` over the first 50 was silent)."""
    if (quiet or resolve_format(env, output) in ("table", "plain")) and total > offset + shown:
        env.err(
            f"showing {offset + 1 if shown else offset}-{offset + shown} of {total} "
            f"(use --offset {offset + shown} for more)"
        )


def output_format(text: str, names: tuple[str, ...] = FORMATS) -> str | None:
    """The fast path's reading of a -o value (or of another choice among ``names``): the name
    in lower case, a valid template (llmgine_cli/template.py), or None (Typer reports it)."""
    if names is FORMATS and "{{" in text:
        from llmgine_cli.template import Template, valid_template

        return Template(text) if valid_template(text) else None
    return text.lower() if text.lower() in names else None


def builtins(data: Any) -> Any:
    """A protocol model as plain JSON values (dicts, lists, str, ...); plain values as they are."""
    if data is None or isinstance(data, (dict, list, str, int, float)):
        return data
    import msgspec

    return msgspec.to_builtins(data)


def json_text(obj: Any, *, indent: bool) -> str:
    """Plain JSON values as JSON text: pretty (two spaces) or one compact line. Anybody's
    strings are in it: what a terminal would obey (C1 controls, bidi overrides...) is written
    as \\u escapes, the same JSON (textsafe.json_visible)."""
    import json

    try:
        if indent:
            return json_visible(json.dumps(obj, indent=2, ensure_ascii=False))
        return json_visible(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))
    except RecursionError:
        # Data nested deeper than Python's recursion limit (anybody's event can be): msgspec
        # has no such limit, and the text is the same JSON.
        import msgspec

        encoded = msgspec.json.encode(obj)
        return json_visible((msgspec.json.format(encoded, indent=2) if indent else encoded).decode())


MAX_DEPTH = 16  # nested deeper than this, a cell shows "…" (and key/value output stops flattening)
CELL_WIDTH = 200


def compact(value: Any, width: int = CELL_WIDTH) -> str:
    """A value as compact JSON on one line, at most ``width`` characters (then "…"), at most
    MAX_DEPTH levels deep: safe for anything, however big or deeply nested."""
    import json

    parts: list[str] = []
    budget = width + 1

    def emit(text: str) -> bool:
        nonlocal budget
        parts.append(text)
        budget -= len(text)
        return budget > 0

    def walk(v: Any, depth: int) -> bool:
        if isinstance(v, dict):
            if depth >= MAX_DEPTH:
                return emit("{…}")
            if not emit("{"):
                return False
            for i, (k, x) in enumerate(v.items()):
                if (i and not emit(",")) or not emit(json.dumps(str(k), ensure_ascii=False) + ":"):
                    return False
                if not walk(x, depth + 1):
                    return False
            return emit("}")
        if isinstance(v, (list, tuple)):
            if depth >= MAX_DEPTH:
                return emit("[…]")
            if not emit("["):
                return False
            for i, x in enumerate(v):
                if (i and not emit(",")) or not walk(x, depth + 1):
                    return False
            return emit("]")
        try:
            return emit(json.dumps(v, ensure_ascii=False))
        except (TypeError, ValueError):
            return emit(json.dumps(str(v), ensure_ascii=False))

    walk(value, 0)
    text = "".join(parts)
    return text if len(text) <= width else text[: width - 1] + "…"


def render(env: Environment, data: Any, view: View, fmt: str | Enum | None = None, quiet: bool = False) -> None:
    obj = builtins(data)
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
    if "{{" in fmt:  # -o/--format TEMPLATE
        from llmgine_cli.template import apply

        apply(env, fmt, items if items is not None else [obj], answer=items is None)
    elif fmt == "json":
        env.out(json_text(obj, indent=True))
    elif fmt == "jsonl":
        for item in items if items is not None else [obj]:
            env.out(json_text(item, indent=False))
    elif items is not None and not items and fmt == "table":
        offset, total = obj.get("offset"), obj.get("total")
        # A page past the end is not an empty listing (it said "no active sessions").
        past = isinstance(offset, int) and isinstance(total, int) and offset > 0 and total > 0
        env.err(f"nothing at --offset {offset}: there are {total} in all" if past else view.empty or f"no {view.items}")
    elif items is not None:
        headers = [c.header for c in view.columns]
        compact_times = fmt == "table"  # a terminal: today's times without the date
        rows = [
            [_visible(_list_cell(c.key, _get(item, c.key), view, compact_times), one_line=True) for c in view.columns]
            for item in items
        ]
        emit(env, fmt, headers, rows, view.title, kv=False)
    else:
        flat = _flatten(obj)
        keys = list(view.fields) if view.fields else list(flat)
        # The keys are anybody's too (an event's data): one line, escaped, as the values. A
        # value keeps its line breaks in a table only (under its column: _rich_table); plain
        # output, scripts', is a line per key, so no value forges a `key value` line.
        one_line = fmt != "table"
        rows = [[visible_line(key), _visible(_cell(key, flat.get(key), view), one_line=one_line)] for key in keys]
        emit(env, fmt, ["KEY", "VALUE"], rows, view.title, kv=True)
    env.stdout.flush()


def render_deleted(
    env: Environment, record: dict[str, Any], message: str, fmt: str | Enum | None, quiet: bool, id_field: str
) -> None:
    """What a delete with no record to show prints: -q its id, -o json/jsonl ``record``
    (``{..., "deleted": true}``), else ``message`` on stderr (stdout stays empty)."""
    chosen = getattr(fmt, "value", fmt)
    if quiet or chosen in ("json", "jsonl"):
        render(env, {**record, "deleted": True}, View(id_field=id_field), chosen, quiet)
    else:
        env.err(message)


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


# A nested object with more fields than this stays one value (compact JSON, cut): anybody's
# event data may hold 60000 keys in its 1 MiB, and `event get` drew a 60000-row table for half
# a minute on a terminal. -o json shows them all.
MAX_FIELDS = 100


def _flatten(obj: Any, prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """Nested objects as dotted keys (``counts.events``), down to a few levels and MAX_FIELDS
    fields; what is deeper or wider stays one value (shown as compact JSON)."""
    flat: dict[str, Any] = {}
    if isinstance(obj, dict) and depth < 4 and (not prefix or 0 < len(obj) <= MAX_FIELDS):
        for key, value in obj.items():
            flat.update(_flatten(value, f"{prefix}{key}.", depth + 1))
    else:
        flat[prefix[:-1]] = obj
    return flat


# Data that reaches a terminal is anybody's text: its control characters are shown as escapes,
# with the table the daemon's text log uses (llmgine_daemon/textsafe.py).
_CONTROLS = CONTROL_ESCAPES
_CONTROLS_KEEP_LINES = {c: v for c, v in _CONTROLS.items() if c not in (ord("\n"), ord("\t"))}


def _visible(text: str, *, one_line: bool) -> str:
    """Control characters written as escapes: a list row stays one line (one item per line
    when piped), a key/value value keeps its line breaks (a handler's source)."""
    return text.translate(_CONTROLS if one_line else _CONTROLS_KEEP_LINES)


def visible_line(text: str) -> str:
    """``text`` on one line, its control characters (newlines, terminal escapes) as escapes."""
    return text.translate(_CONTROLS)


def visible_text(text: str) -> str:
    """``text`` with its line breaks and tabs, its other control characters as escapes."""
    return text.translate(_CONTROLS_KEEP_LINES)


# Fields holding a time (ISO 8601, UTC) besides those named *_at; and lists of times.
_TIME_KEYS = frozenset({"timestamp", "start", "next_due"})
_TIME_LISTS = frozenset({"upcoming"})  # a schedule's next firing times


def is_time_key(leaf: str) -> bool:
    """Whether a field named ``leaf`` holds a time (shown local, with its zone, or --utc)."""
    return leaf.endswith("_at") or leaf in _TIME_KEYS


def _list_cell(key: str, value: Any, view: View, compact_times: bool = False) -> str:
    """A cell of a listing row: ids short (their random part: ids.py), the rest as _cell."""
    leaf = key.rsplit(".", 1)[-1]
    if isinstance(value, str) and (leaf.endswith("_id") or leaf == "id") and key not in view.raw_keys:
        from llmgine_cli.ids import short_id

        return short_id(value)
    if compact_times and isinstance(value, str) and is_time_key(leaf) and key not in view.raw_keys:
        return short_time(value, compact=True)
    return _cell(key, value, view)


def _cell(key: str, value: Any, view: View) -> str:
    if value is None or value == "":  # an empty cell would shift `KEY VALUE` lines for scripts
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        if not value:
            return "-"
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            if key.rsplit(".", 1)[-1] in _TIME_LISTS and key not in view.raw_keys:
                return ", ".join(short_time(v) for v in value)
            return ", ".join(value)  # listeners, tags: as a person writes them
        return compact(value)
    leaf = key.rsplit(".", 1)[-1]
    if key not in view.raw_keys:
        if isinstance(value, str) and is_time_key(leaf):
            return short_time(value)
        if leaf == "duration_ms" and isinstance(value, (int, float)):
            return human_ms(value)
        if leaf == "timeout" and isinstance(value, (int, float)):  # seconds (a tool's, a command's)
            return human_ms(value * 1000)
        if leaf == "uptime" and isinstance(value, (int, float)):
            return duration(value)
        if (leaf.endswith("_bytes") or key.startswith("file_bytes.")) and isinstance(value, int):
            return size(value)
    return str(value)


# Times in table and plain output: local time with its zone, or UTC (`llmgine --utc`).
USE_UTC = False


def short_time(text: str, *, compact: bool = False) -> str:
    """2024-01-01T00:00:00.123456Z -> 2024-01-01 10:00:00 AEST (local time, its zone,
    second precision; UTC with --utc). ``compact`` (table cells): a time of today without its
    date, ``10:00:00 AEST``."""
    import datetime as _dt

    try:
        value = _dt.datetime.fromisoformat(text)
    except ValueError:
        return text
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.UTC)
    local = value.astimezone(_dt.UTC) if USE_UTC else value.astimezone()
    zone = local.tzname() or local.strftime("%z")
    now = _dt.datetime.now(local.tzinfo)
    if compact and local.date() == now.date():
        return local.strftime("%H:%M:%S ") + zone
    return local.strftime("%Y-%m-%d %H:%M:%S ") + zone


def human_ms(ms: float) -> str:
    """A duration in milliseconds as a person reads it: 12ms, 1.5s, 2m 5s, 1h 2m."""
    if ms < 1000:
        return f"{ms:.0f}ms" if ms >= 10 else f"{ms:.1f}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    return duration(seconds) if seconds >= 3600 else f"{int(seconds // 60)}m {int(seconds % 60)}s"


def duration(seconds: float) -> str:
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s"]
    return " ".join(p for p in parts if p)


def size(num: int) -> str:
    value = float(num)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{num} B"  # pragma: no cover


def _unbreakable(value: str, room: int) -> bool:
    """Whether ``value`` holds a word (no space in it) longer than ``room`` columns."""
    return cell_width(value) > room and any(cell_width(word) > room for word in value.split(" "))


def emit(
    env: Environment,
    fmt: str,
    headers: list[str],
    rows: list[list[str]],
    title: str | None,
    *,
    kv: bool,
) -> None:
    if fmt == "table":
        _rich_table(env, headers, rows, title, kv=kv)
        return
    # Plain: aligned columns, two spaces apart, like `docker ps` piped; no header for
    # key/value output so `llmgine status | awk '$1=="pid"{print $2}'` just works.
    table = rows if kv else [headers, *rows]
    if not table:
        return
    widths = [max(cell_width(r[i]) for r in table) for i in range(len(table[0]))]
    for row in table:
        line = "  ".join(cell + " " * (widths[i] - cell_width(cell)) for i, cell in enumerate(row))
        env.out(line.rstrip())


def cell_width(text: str) -> int:
    """How many terminal columns ``text`` takes: CJK and emoji take two, combining marks none
    (so plain columns line up whatever the names are written in); rich is not imported here."""
    if text.isascii():
        return len(text)
    import unicodedata

    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _rich_table(env: Environment, headers: list[str], rows: list[list[str]], title: str | None, *, kv: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=env.stdout, force_terminal=env.stdout_isatty or None, highlight=False, soft_wrap=False)
    if kv:
        keys = max(cell_width(r[0]) for r in rows)
        if any(_unbreakable(row[1], console.width - keys - 2) for row in rows):
            # A value that is one word too long for its column (a token, a URL) is not folded
            # into pieces that a copy from the terminal would join with a newline: every row
            # is one line, as `kubectl describe` prints them, and the terminal wraps it.
            from rich.text import Text

            if title:
                console.print(Text(title, style="italic"), soft_wrap=True)
            for key, value in rows:
                line = Text(key, style="bold cyan")
                # A value's lines after its first go under it: no line of a value reads as a key's.
                line.append(" " * (keys - cell_width(key) + 2) + value.replace("\n", "\n" + " " * (keys + 2)))
                console.print(line, soft_wrap=True)
            return
        table = Table(box=None, show_header=False, title=title, pad_edge=False)
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column(overflow="fold")
        for row in rows:
            table.add_row(*escape_markup(row))
        console.print(table)
        return
    table, hidden = fitted_table(headers, rows, console.width, title)
    console.print(table)
    if hidden:
        note = f"(not shown at this width: {', '.join(hidden)}; -o plain shows every column)"
        if len(note) > console.width:  # the note fits the terminal too, as the table does
            note = f"(not shown: {', '.join(hidden)}; -o plain shows all)"
        env.err(note)


def fitted_table(
    headers: list[str], rows: list[list[str]], width: int, title: str | None = None
) -> tuple[Any, list[str]]:
    """A listing as a rich Table that fits ``width`` (fit_columns: ids, times and statuses keep
    their width, free text is cut with "…"), and the headers of the columns left out."""
    from rich import box
    from rich.table import Table

    keep, limits = fit_columns(headers, rows, width)
    table = Table(box=box.SIMPLE_HEAD, title=title, pad_edge=False)
    for i in keep:
        table.add_column(
            headers[i],
            style="cyan" if headers[i] in ("ID", "TRACE") else None,
            no_wrap=True,
            overflow="ellipsis",
            min_width=len(headers[i]),
            max_width=limits[i],
        )
    status = headers.index("STATUS") if "STATUS" in headers else None
    for row in rows:
        cells = escape_markup([row[i] for i in keep])
        style = STATUS_STYLES.get(row[status]) if status is not None else None
        if style and status in keep:
            at = keep.index(status)
            cells[at] = f"[{style}]{cells[at]}[/]"
        table.add_row(*cells)
    return table, [headers[i] for i in range(len(headers)) if i not in keep]


STATUS_STYLES = {
    "completed": "green",
    "active": "green",
    "ok": "green",
    "healthy": "green",
    "degraded": "yellow",
    "running": "green",
    "failed": "red",
    "error": "red",
    "timed_out": "red",
    "cancelled": "yellow",
    "interrupted": "yellow",
    "queued": "dim",
    "blocked": "dim",
    "executing": "cyan",
    "closed": "dim",
}
_FLEX_MIN = 16  # a long column (data, names, descriptions) shrinks to no less, with "…"
_FLEX_TIGHT = 8  # ... or to this, rather than leave out the other columns still shown
# Columns of free text: they shrink (with "…") before anything is left out, and go last.
FLEX_HEADERS = frozenset(
    {
        "DATA",
        "DESCRIPTION",
        "NAME",
        "RESULT",
        "ROOT",
        "MESSAGE",
        "PARAMETERS",
        "TYPE",
        "MODEL",
        "FUNCTION",
        "LABELS",
        "METRIC",
        "SCOPE",
        "URL",
        "EVENTS",
        "ERROR",
        "WHEN",
        "VALUE",
    }
)


def fit_columns(headers: list[str], rows: list[list[str]], width: int) -> tuple[list[int], list[int | None]]:
    """Which columns a table shows at ``width``, and the widest each may be.

    Ids, times, statuses, counts and the first column (what the next command takes) keep their
    width; free-text columns (FLEX_HEADERS) shrink to _FLEX_MIN with "…", widest first. When
    even that does not fit, the other columns are left out from the right, then free text
    shrinks to _FLEX_TIGHT, then the free-text columns go, and STATUS last; the first column
    always stays, whole.
    No header is ever narrower than itself, and no cell wraps: every row stays one line.
    """
    natural = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    # The first column is what the next command takes (an id; a tool's, a secret's NAME): never cut.
    flex = [h in FLEX_HEADERS and i > 0 for i, h in enumerate(headers)]
    floor = [max(len(h), min(n, _FLEX_MIN)) if f else n for h, n, f in zip(headers, natural, flex, strict=True)]
    keep = list(range(len(headers)))

    def need(widths: list[int]) -> int:  # cells plus a 3-wide gap between, 1 at each edge
        return sum(widths[i] for i in keep) + 3 * (len(keep) - 1) + 2

    # A status is what one looks for first: it goes last, after free text that is cut to
    # _FLEX_TIGHT first (at 40 columns `command list` left STATUS out to keep 16 of TYPE).
    status = [i for i in keep[1:] if headers[i] == "STATUS"]
    plain = [i for i in reversed(keep[1:]) if not flex[i] and i not in status]
    for i in [*plain, None, *[i for i in reversed(keep[1:]) if flex[i]], *status]:
        if need(floor) <= width:
            break
        if i is None:  # the other columns are gone: free text shrinks further before it goes
            floor = [max(len(h), min(n, _FLEX_TIGHT)) if f else n for h, n, f in zip(headers, floor, flex, strict=True)]
        else:
            keep.remove(i)
    limits: list[int | None] = [None] * len(headers)
    widths = list(natural)
    while need(widths) > width:
        widest = max(keep, key=lambda i: widths[i] - floor[i])
        if widths[widest] <= floor[widest]:
            break
        widths[widest] = max(floor[widest], widths[widest] - (need(widths) - width))
        limits[widest] = widths[widest]
    return keep, limits


def escape_markup(row: list[str]) -> list[str]:
    # Values are data, never markup: "[bold]" in a session name must print as typed.
    from rich.markup import escape

    return [escape(cell) for cell in row]
