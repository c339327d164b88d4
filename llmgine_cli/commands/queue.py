"""`llmgine ps` and `llmgine top` ↔ GET /api/commands (api/lifecycle.py): the live queue.

`ps` prints the unfinished commands of every session (a session token: its own) once, like
`ollama ps` or `pueue status`; `top` redraws them with counts per status, throughput and the
sandbox pool's busy workers until `q` or Ctrl-C (exit 0 for q, 130 for Ctrl-C).
"""

from __future__ import annotations

import select
import signal
import sys
import time
from typing import Annotated, Any

import msgspec
import typer
from llmgine_daemon.protocol import UNFINISHED_STATUSES

from llmgine_cli.commands.args import choices, session_filter_callback
from llmgine_cli.options import Output, Quiet, state
from llmgine_cli.render import View, fitted_table, human_ms, render, resolve_format

app = typer.Typer()

UNFINISHED = UNFINISHED_STATUSES
PS_VIEW = View(
    columns="ID=command_id, SESSION=session_id, TYPE=command_type, STATUS=status, POS=position, WAITED=waited, RAN=ran",
    items="commands",
    id_field="command_id",
    empty="no command is queued, blocked, executing or waiting for approval",
)

StatusFilter = Annotated[
    str | None,
    typer.Option(
        "--status",
        callback=choices(*UNFINISHED, several=True),
        help="queued, blocked, executing or waiting_approval; comma-separated for several (default: all four).",
    ),
]
Limit = Annotated[
    int, typer.Option("--limit", "-l", "-n", metavar="N", min=1, max=1000, help="At most this many, oldest first.")
]
SessionFilter = Annotated[
    str | None,
    typer.Option(
        "--session",
        "-S",
        metavar="ID",
        callback=session_filter_callback,
        help="Only this session: its id, a unique prefix, its short id or its name.",
    ),
]


def _rows(view: Any) -> dict[str, Any]:
    data = msgspec.to_builtins(view)
    for item in data["commands"]:
        item["waited"] = human_ms(item["wait_s"] * 1000)
        item["ran"] = human_ms(item["run_s"] * 1000) if item.get("run_s") is not None else None
    return data


@app.command("ps")
def ps(
    ctx: typer.Context,
    status: StatusFilter = None,
    limit: Limit = 100,
    session: SessionFilter = None,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """The live queue: unfinished commands of every session, oldest first, with their place in
    their session's queue (POS, 1 = next), how long they waited and how long they have run.

    Examples:

      llmgine ps --status queued,executing

      llmgine ps -q | xargs -r llmgine command cancel
    """
    app_ctx = state(ctx)
    view = app_ctx.client().queue(status=status, limit=limit, session_id=session)
    fmt = resolve_format(app_ctx.env, output)
    raw = fmt in ("json", "jsonl") or "{{" in fmt  # the API's data (templates too)
    render(app_ctx.env, view if raw else _rows(view), PS_VIEW, output, quiet)
    if not quiet and fmt in ("table", "plain"):
        app_ctx.env.err(_summary(msgspec.to_builtins(view)))
    if (quiet or fmt in ("table", "plain")) and view.total > len(view.commands):
        # `ps -q | xargs ... command cancel` over the first --limit alone was silent.
        app_ctx.env.err(f"showing {len(view.commands)} of {view.total} (--limit up to 1000 shows more)")


def _summary(data: dict[str, Any]) -> str:
    # Statuses with no command are left out (queued is always there): with every status
    # named the line was 101 characters and wrapped on an 80-column terminal.
    counts = ", ".join(f"{n} {s}" for s in UNFINISHED if (n := data["counts"].get(s, 0)) or s == "queued")
    done = sum(data["finished_last_minute"].values())
    line = f"{counts}; {done} finished in the last minute"
    sandbox = data.get("sandbox_state")
    if sandbox not in (None, "running"):
        # No worker started yet (standby: they start with the first tool or handler), or none
        # running: a count of busy workers would say "0/N" of workers that do not exist. The
        # state's one word keeps the line within 80 columns (README, `llmgine ps`).
        line += f"; sandbox {sandbox}"
    elif data.get("sandbox_workers") is not None:
        line += f"; sandbox {data['sandbox_busy']}/{data['sandbox_workers']} busy"
    return line


def _dashboard(data: dict[str, Any], width: int) -> Any:
    """The rich renderable of one `top` frame."""
    from rich.console import Group
    from rich.text import Text

    finished = data["finished_last_minute"]
    header = Text(_summary(data), no_wrap=True, overflow="ellipsis")
    per_status = ", ".join(f"{n} {s}" for s, n in sorted(finished.items())) or "none"
    rate = Text(f"throughput: {sum(finished.values())}/min ({per_status})", no_wrap=True, overflow="ellipsis")
    longest = sorted((c for c in data["commands"] if c["status"] != "executing"), key=lambda c: -c["wait_s"])[:3]
    waits = "longest waits: " + (
        ", ".join(f"{c['command_id'][-8:]} {human_ms(c['wait_s'] * 1000)}" for c in longest) or "none"
    )
    # As `ps` draws it (render.fit_columns): ids and statuses whole, the type cut to fit; it
    # was a table at most 80 wide whose columns rich shrank alike, ids and statuses to "e8…".
    rows = [
        [
            item["command_id"][-8:],
            item["session_id"][-8:],
            item["command_type"],
            item["status"],
            str(item["position"] or "-"),
            item["waited"],
            item["ran"] or "-",
        ]
        for item in data["commands"]
    ]
    table, _hidden = fitted_table([c.header for c in PS_VIEW.columns], rows, width)
    keys = Text("q or Ctrl-C quits", style="dim")
    return Group(header, rate, Text(waits, no_wrap=True, overflow="ellipsis"), table, keys)


def _pressed_q(timeout: float) -> bool:
    """Wait up to ``timeout`` for a key on the terminal; True if it was q."""
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    return bool(ready) and sys.stdin.read(1).lower() == "q"


@app.command("top")
def top(
    ctx: typer.Context,
    status: StatusFilter = None,
    limit: Annotated[
        int, typer.Option("--limit", "-l", "-n", metavar="N", min=1, max=1000, help="At most this many rows.")
    ] = 20,
    session: SessionFilter = None,
    interval: Annotated[float, typer.Option("--interval", "-i", min=0.2, help="Seconds between refreshes.")] = 1.0,
    count: Annotated[int, typer.Option("--count", min=0, hidden=True, help="Stop after N refreshes.")] = 0,
) -> None:
    """The live queue, redrawn every --interval: counts per status, commands finished per
    minute, the longest waits, the sandbox's busy workers. q or Ctrl-C quits.

    Examples:

      llmgine top --interval 2
    """
    app_ctx = state(ctx)
    env = app_ctx.env
    client = app_ctx.client()
    interactive = env.redraws and sys.stdin.isatty()
    done = 0
    try:
        if not interactive:  # piped: one frame per refresh, as plain text
            while True:
                data = _rows(client.queue(status=status, limit=limit, session_id=session))
                render(env, data, PS_VIEW, "plain")
                env.out(_summary(data))
                done += 1
                if count and done >= count:
                    return
                time.sleep(interval)
                env.out("")
        import termios
        import tty

        from rich.console import Console
        from rich.live import Live

        console = Console(file=env.stdout, force_terminal=True)
        saved = termios.tcgetattr(sys.stdin)
        tty.setcbreak(sys.stdin.fileno())
        # Ctrl-Z, then fg: the shell gave the terminal back in its own (line) mode, where q
        # waited for Enter; a resumed top takes keys one by one again, as less and htop do.
        resumed = signal.signal(signal.SIGCONT, lambda _signum, _frame: tty.setcbreak(sys.stdin.fileno()))
        try:
            data = _rows(client.queue(status=status, limit=limit, session_id=session))
            with Live(_dashboard(data, console.width), console=console, auto_refresh=False, transient=True) as live:
                while not count or done < count:
                    if _pressed_q(interval):
                        return
                    done += 1
                    data = _rows(client.queue(status=status, limit=limit, session_id=session))
                    live.update(_dashboard(data, console.width), refresh=True)
        finally:
            signal.signal(signal.SIGCONT, resumed)
            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, saved)
    except KeyboardInterrupt:
        if not interactive:  # frames as lines: the echoed ^C ends one
            env.after_ctrl_c()
        raise typer.Exit(130) from None
