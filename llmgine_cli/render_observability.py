"""How observability data reads on a terminal: log lines (also for `logs -f`), the metrics
dashboard and a trace's waterfall. Imported only by the commands that show them."""

from __future__ import annotations

from typing import Any

from llmgine_cli.context import Environment
from llmgine_cli.render import builtins, emit, escape_markup, json_text, short_time, visible_line

LEVEL_STYLES = {"debug": "dim", "info": "", "warning": "yellow", "error": "red", "critical": "bold red"}


def log_line(record: dict[str, Any]) -> str:
    """One record as text: time, level, logger, message, then the known context."""
    extras = [
        f"{name}={record[key]}"
        for name, key in (
            ("session", "session_id"),
            ("command", "command_id"),
            ("engine", "engine_id"),
            ("trace", "trace_id"),
        )
        if record.get(key)
    ]
    meta = record.get("metadata") or {}
    extras += [f"{k}={v}" for k, v in meta.items() if k != "exception"]
    # A record's message and metadata are anybody's text (POST /api/observability/logs, a
    # tool's error): one line each, no terminal escapes, so nothing can forge a line.
    line = visible_line(f"{record['timestamp']} {record['level'].upper():<8} {record['logger']}: {record['message']}")
    if extras:
        line += "  " + visible_line(" ".join(extras))
    if meta.get("exception"):
        line += "\n" + str(meta["exception"])
    return line


def render_log_records(env: Environment, records: list[Any], fmt: str) -> None:
    """Log records as they arrive (also used by `logs -f`): coloured by level on a TTY."""
    items = [builtins(r) for r in records]
    if "{{" in fmt:  # -o/--format TEMPLATE: a line per record
        from llmgine_cli.template import apply

        apply(env, fmt, items)
    elif fmt in ("json", "jsonl"):
        for item in items:
            env.out(json_text(item, indent=False))
    elif fmt == "table" and env.stdout_isatty:
        from rich.console import Console
        from rich.text import Text

        console = Console(file=env.stdout, force_terminal=True, highlight=False, soft_wrap=True)
        for item in items:
            console.print(Text(log_line(item), style=LEVEL_STYLES.get(item["level"], "")))
    else:
        for item in items:
            env.out(log_line(item))
    env.stdout.flush()


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1000
    return f"{ms:.1f}ms" if ms < 1000 else f"{seconds:.2f}s"


def _is_error(labels: dict[str, str]) -> bool:
    status = labels.get("status", "")
    return (
        (status.isdigit() and int(status) >= 500)
        or status in ("failed", "timed_out")
        or labels.get("outcome") in ("error", "timeout", "crash")
    )


def metric_rows(
    snapshot: dict[str, Any],
    previous: dict[str, Any] | None,
    interval: float | None,
) -> list[tuple[str, str, str, str, str, str, str, bool]]:
    """(metric, labels, value/count, rate/s, p50, p95, p99, is_error) for every series.

    Rates: the change since the previous snapshot (with --watch), else the average since the
    daemon started.
    """
    before: dict[tuple[str, str], float] = {}
    if previous:
        for fam in previous["metrics"]:
            for s in fam["series"]:
                before[(fam["name"], _labels(s))] = s.get("value", s.get("count", 0)) or 0
    rows = []
    for fam in snapshot["metrics"]:
        for s in fam["series"]:
            labels = _labels(s)
            total = s.get("value") if fam["type"] != "histogram" else s.get("count")
            rate = ""
            if fam["type"] != "gauge" and total is not None:
                if previous is not None and interval:
                    rate = f"{(total - before.get((fam['name'], labels), 0)) / interval:.2f}"
                elif snapshot.get("uptime"):
                    rate = f"{total / snapshot['uptime']:.2f}"
            shown = "-" if total is None else (str(int(total)) if float(total).is_integer() else f"{total:.3f}")
            seconds = fam["name"].endswith("_seconds")
            pick = _ms if seconds else (lambda v: "-" if v is None else f"{v:g}")
            rows.append(
                (
                    fam["name"],
                    labels,
                    shown,
                    rate,
                    pick(s.get("p50")),
                    pick(s.get("p95")),
                    pick(s.get("p99")),
                    _is_error(s.get("labels", {})),
                )
            )
    return rows


def _labels(series: dict[str, Any]) -> str:
    return visible_line(",".join(f"{k}={v}" for k, v in sorted(series.get("labels", {}).items())))


METRIC_HEADERS = ["METRIC", "LABELS", "COUNT", "RATE/S", "P50", "P95", "P99"]


def as_data(env: Environment, data: Any, fmt: str) -> bool:
    """One object as data, not drawn: -o json/jsonl, or a -o/--format TEMPLATE. False: draw it."""
    if "{{" in fmt:
        from llmgine_cli.template import apply

        apply(env, fmt, [data])
    elif fmt in ("json", "jsonl"):
        env.out(json_text(data, indent=fmt == "json"))
    else:
        return False
    env.stdout.flush()
    return True


def render_metrics(
    env: Environment,
    snapshot: Any,
    fmt: str,
    *,
    previous: Any = None,
    interval: float | None = None,
    console: Any = None,
) -> Any:
    """The dashboard (table), aligned text (plain) or the snapshot (json/jsonl).

    Returns the rich renderable for table format when ``console`` is None and ``fmt`` is
    "table" and --watch drives a Live display; otherwise prints.
    """
    data = builtins(snapshot)
    prev = builtins(previous) if previous is not None else None
    if as_data(env, data, fmt):
        return None
    rows = metric_rows(data, prev, interval)
    if fmt != "table":
        emit(env, "plain", METRIC_HEADERS, [list(r[:7]) for r in rows if r[2] != "0"], None, kv=False)
        env.stdout.flush()
        return None
    from rich.console import Console

    out = console or Console(file=env.stdout, force_terminal=env.stdout_isatty or None, highlight=False)
    scope = f"session {data['session_id']}" if data.get("session_id") else "daemon"
    title = f"llmgine metrics - {scope} - {short_time(data['timestamp'])}"  # local time, as every time shown
    if not data.get("enabled", True):
        title += " (metrics disabled: ENABLE_METRICS=false)"
    shown = [r for r in rows if r[2] != "0"]
    # Names and labels are what you read: never cut. Side by side when they fit; else the
    # labels go on a line of their own under the name, as wide as the table.
    if _metrics_width(shown) > out.width:
        drawn: Any = _stacked_metrics(title, shown, out.width)
    else:
        drawn = _metrics_table(title, shown)
    if console is not None:
        return drawn
    out.print(drawn)
    env.stdout.flush()
    return None


def _metrics_table(title: str, shown: list[tuple[Any, ...]]) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, title=title, pad_edge=False)
    for header in METRIC_HEADERS:
        if header in ("METRIC", "LABELS"):
            table.add_column(header, overflow="fold")
        else:
            table.add_column(header, justify="right", no_wrap=True)
    group = None
    for row in shown:
        section = row[0].split("_", 1)[0]
        if group is not None and section != group:
            table.add_section()
        group = section
        table.add_row(*escape_markup(list(row[:7])), style="red" if row[7] else None)
    return table


def _stacked_metrics(title: str, shown: list[tuple[Any, ...]], width: int) -> Any:
    """The table too wide for ``width``: each series is its name and figures on a line, then
    its labels on lines of their own as wide as the terminal, broken only between labels (in
    the name's column alone a route broke mid-value, and a series took four lines at 80
    columns). A name longer than its column has its figures on the next line."""
    import textwrap

    from rich.console import Group
    from rich.text import Text

    headers = [h for h in METRIC_HEADERS if h != "LABELS"]
    figures = [[str(r[i]) for i in range(2, 7)] for r in shown]
    widths = [max([len(h), *(len(f[i]) for f in figures)]) for i, h in enumerate(headers[1:])]
    room = width - 1 - sum(w + 2 for w in widths)
    name_width = max(len(headers[0]), min(room, max((len(r[0]) for r in shown), default=0)))
    total = 1 + name_width + sum(w + 2 for w in widths)

    def line(name: str, cells: list[str]) -> str:
        return " " + name.ljust(name_width) + "".join("  " + c.rjust(w) for c, w in zip(cells, widths, strict=True))

    lines: list[Any] = [Text(title.center(total).rstrip(), style="italic"), Text("")]
    lines += [Text(line(headers[0], headers[1:]), style="bold"), Text(" " + "─" * (total - 1))]
    group = None
    for row, cells in zip(shown, figures, strict=True):
        section = row[0].split("_", 1)[0]
        if group is not None and section != group:
            lines.append(Text(""))
        group = section
        style = "red" if row[7] else ""
        if len(row[0]) > name_width:
            lines += [Text(f" {row[0]}", style=style), Text(line("", cells), style=style)]
        else:
            lines.append(Text(line(row[0], cells), style=style))
        said = str(row[1]).replace(",", " ")
        wrapped = textwrap.wrap(said, max(width - 3, 10), break_on_hyphens=False) if said else []
        lines += [Text(f"   {text}", style=style or "dim") for text in wrapped]
    return Group(*lines)


def _metrics_width(rows: list[tuple[Any, ...]]) -> int:
    """The columns the table needs with names and labels side by side, uncut."""
    widths = [max([len(h), *(len(str(r[i])) for r in rows)]) for i, h in enumerate(METRIC_HEADERS)]
    return sum(widths) + 2 * (len(widths) - 1)


def render_trace(env: Environment, trace: Any, fmt: str) -> None:
    """A waterfall tree: name, offset from the trace start, duration, a bar; errors in red."""
    data = builtins(trace)
    if as_data(env, data, fmt):
        return
    total = data["duration_ms"] or 1.0
    width = 30

    def bar(node: dict[str, Any]) -> str:
        start = int(node["offset_ms"] / total * width)
        length = max(1, round(node["duration_ms"] / total * width))
        start = min(start, width - 1)
        return " " * start + "█" * min(length, width - start)

    def label(node: dict[str, Any]) -> str:
        # A span's error is user code's exception text (and its name a client's): shown, not obeyed.
        text = f"{visible_line(str(node['name']))}  +{node['offset_ms']:.1f}ms  {node['duration_ms']:.1f}ms"
        if node.get("error"):
            text += f"  error: {visible_line(str(node['error']))}"
        return text

    header = visible_line(
        f"trace {data['trace_id']}  {data['root']}  {data['duration_ms']:.1f}ms  "
        f"{data['span_count']} span{'' if data['span_count'] == 1 else 's'}  {data['status']}"
    )
    if fmt == "table" and env.stdout_isatty:
        from rich.console import Console
        from rich.text import Text
        from rich.tree import Tree

        tree = Tree(Text(header, style="bold red" if data["status"] == "error" else "bold"))

        def add(parent: Any, node: dict[str, Any]) -> None:
            style = "red" if node["status"] == "error" else ""
            line = Text(f"{bar(node):<{width}} ", style="cyan")
            line.append(label(node), style=style)
            branch = parent.add(line)
            for child in node["children"]:
                add(branch, child)

        for root in data["spans"]:
            add(tree, root)
        Console(file=env.stdout, force_terminal=True, highlight=False).print(tree)
    else:
        env.out(header)

        def walk(node: dict[str, Any], depth: int) -> None:
            env.out(f"{bar(node):<{width}} {'  ' * depth}{label(node)}")
            for child in node["children"]:
                walk(child, depth + 1)

        for root in data["spans"]:
            walk(root, 0)
    env.stdout.flush()
