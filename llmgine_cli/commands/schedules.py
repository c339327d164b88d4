"""`llmgine schedule add|list|get|pause|resume|delete` ↔ daemon api/schedules.py.

A schedule submits a command on a cron expression (in a time zone), every N seconds, or once
at a time; each firing is a normal command with schedule_id in its metadata (`llmgine command
list` shows them). The listing shows the next firing times.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import typer
from llmgine_daemon.protocol import CommandCreate

from llmgine_cli import completion
from llmgine_cli.commands import several
from llmgine_cli.commands.args import SessionOpt, choices, command_metadata, id_argument, parse_object, parse_pairs
from llmgine_cli.commands.webhooks import OptionalSession
from llmgine_cli.options import Output, Quiet, state
from llmgine_cli.render import View, render

app = typer.Typer(
    help="Schedules: a command submitted on a cron expression, every N seconds, or once at a time.",
    no_args_is_help=True,
)

LIST_VIEW = View(
    columns="ID=schedule_id, TYPE=command.command_type, WHEN=when, STATUS=status, NEXT=next_due, FIRED=fire_count",
    items="schedules",
    id_field="schedule_id",
)
ONE_VIEW = View(id_field="schedule_id")

ScheduleId = Annotated[
    str,
    id_argument("schedule", "/api/schedules", "schedules", "schedule_id", paged=False),
]


def _when(item: dict[str, Any]) -> str:
    spec = item["spec"]
    if item["kind"] == "every":
        return f"every {float(spec):g}s"
    if item["kind"] == "cron":
        return spec if item["timezone"] == "UTC" else f"{spec} {item['timezone']}"
    return f"at {spec}"


def _show(ctx: typer.Context, data: Any, view: View, output: Any, quiet: bool) -> None:
    obj = msgspec.to_builtins(data)
    for item in obj.get("schedules", [obj]):
        item["when"] = _when(item)
    render(state(ctx).env, obj, view, output, quiet)


@app.command("add")
def add(
    ctx: typer.Context,
    command_type: Annotated[
        str,
        typer.Argument(
            metavar="TYPE",
            help="The command type to submit: the session must have its handler (an engine, a command"
            " handler, or a global one) when the schedule is added (exit 4 otherwise).",
            autocompletion=completion.command_types,
        ),
    ],
    session: SessionOpt,
    cron: Annotated[
        str | None, typer.Option("--cron", metavar="EXPR", help='A cron expression, e.g. "*/5 * * * *".')
    ] = None,
    every: Annotated[
        str | None, typer.Option("--every", metavar="INTERVAL", help="Seconds, or 90s, 5m, 2h, 1d (at least 1s).")
    ] = None,
    at: Annotated[str | None, typer.Option("--at", metavar="TIME", help="Once, at an ISO 8601 time.")] = None,
    tz: Annotated[
        str, typer.Option("--tz", metavar="ZONE", help="The time zone of --cron and of a --at without one.")
    ] = "UTC",
    missed: Annotated[
        str,
        typer.Option(
            "--missed",
            metavar="skip|run_once",
            callback=choices("skip", "run_once"),
            help="Firings due while the daemon was down: skip them, or run_once now.",
        ),
    ] = "skip",
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", metavar="KEY=VALUE", help="A parameter (as `command run`). Repeatable."),
    ] = None,
    params: Annotated[
        str | None,
        typer.Option("--params", metavar="JSON", help="All parameters as a JSON object (or @FILE, - for stdin)."),
    ] = None,
    priority: Annotated[
        str | None,
        typer.Option(
            "--priority",
            metavar="high|normal|low",
            help="Each command's priority (default normal).",
            callback=choices("high", "normal", "low"),
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", metavar="SECONDS", min=0.001, help="Each command's timeout.")
    ] = None,
    reuse: Annotated[
        bool,
        typer.Option(
            "--reuse",
            help="If the session already has this schedule (same command, parameters and timing), print it "
            "instead of adding a second one: a setup script can run again.",
        ),
    ] = False,
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Schedule a command (exactly one of --cron, --every, --at) and print its next firing times.

    TYPE needs a handler in the session now, as `command run` does: create the engine
    (`llmgine engine create DummyEngine -S demo`) or add the command handler first.

    Examples:

      llmgine schedule add Report -S demo --cron '0 9 * * 1-5' --tz Europe/Berlin

      llmgine schedule add Ping -S demo --every 5m --reuse -q

      llmgine schedule add Remind -S demo --at 2030-01-01T09:00:00 --tz UTC
    """
    if sum(v is not None for v in (cron, every, at)) != 1:
        raise typer.BadParameter("give exactly one of --cron, --every and --at", param_hint="--cron/--every/--at")
    command = CommandCreate(
        command_type=command_type,
        parameters={**parse_object(params, "--params"), **parse_pairs(param, "--param")},
        metadata=command_metadata(priority, timeout),
    )
    when: dict[str, Any] = {"cron": cron, "at": at, "timezone": tz, "missed": missed}
    if every is not None:
        when["every"] = float(every) if every.replace(".", "", 1).isdigit() else every
    created = state(ctx).client().create_schedule(session, command, if_exists="reuse" if reuse else None, **when)
    _show(ctx, created, ONE_VIEW, output, quiet)


@app.command("list")
def list_(ctx: typer.Context, session: OptionalSession = None, output: Output = None, quiet: Quiet = False) -> None:
    """List schedules with their next firing time and how often they fired.

    Examples:

      llmgine schedule list -S demo

      llmgine schedule list -q | xargs -r -n1 llmgine schedule delete
    """
    _show(ctx, state(ctx).client().list_schedules(session), LIST_VIEW, output, quiet)


@app.command("get")
def get(ctx: typer.Context, schedule_id: ScheduleId, output: Output = None, quiet: Quiet = False) -> None:
    """Show one schedule with its next three firing times (upcoming).

    Examples:

      S=$(llmgine schedule add Ping -S demo --every 5m --reuse -q)

      llmgine schedule get "$S" -o json | jq -r '.upcoming[]'
    """
    _show(ctx, state(ctx).client().get_schedule(schedule_id), ONE_VIEW, output, quiet)


ScheduleIds = Annotated[list[str], several.ids_argument("schedule")]


def _each(ctx: typer.Context, given: list[str], act: Any, output: Any, quiet: bool) -> None:
    """``act`` (pause, resume) on each schedule in turn, as `docker pause` takes several."""
    app_ctx = state(ctx)
    resolve = several.resolver(app_ctx, "schedule", "/api/schedules", "schedules", "schedule_id", paged=False)

    def show(data: Any, view: View) -> None:
        _show(ctx, data, view, output, quiet)

    several.show_each(
        app_ctx, given, lambda one: act(resolve(one)), ONE_VIEW, "schedules", LIST_VIEW, output, quiet, show
    )


@app.command("pause")
def pause(ctx: typer.Context, schedule_ids: ScheduleIds, output: Output = None, quiet: Quiet = False) -> None:
    """Pause schedules: nothing fires until they are resumed (exit 6 if one is done); several
    in turn (one that fails is its error line and the exit code; the others still go).

    Examples:

      S=$(llmgine schedule add Ping -S demo --every 5m --reuse -q)

      llmgine schedule pause "$S"

      llmgine schedule list -S demo -q | xargs -r llmgine schedule pause -q
    """
    _each(ctx, schedule_ids, state(ctx).client().pause_schedule, output, quiet)


@app.command("resume")
def resume(ctx: typer.Context, schedule_ids: ScheduleIds, output: Output = None, quiet: Quiet = False) -> None:
    """Resume schedules from their next firing after now (what came due while paused is not made
    up); several in turn, as pause.

    Examples:

      S=$(llmgine schedule add Ping -S demo --every 5m --reuse -q)

      llmgine schedule pause "$S" -q && llmgine schedule resume "$S"
    """
    _each(ctx, schedule_ids, state(ctx).client().resume_schedule, output, quiet)


@app.command("delete")
def delete(
    ctx: typer.Context,
    schedule_ids: Annotated[list[str], several.ids_argument("schedule")],
    output: Output = None,
    quiet: Quiet = False,
) -> None:
    """Delete schedules (commands they submitted stay); several in turn, as `docker rm` (one that
    fails is its error line and the exit code; the others still go).

    Examples:

      S=$(llmgine schedule add Ping -S demo --every 5m --reuse -q)

      llmgine schedule delete "$S"

      llmgine schedule list -S demo -q | xargs -r llmgine schedule delete
    """
    app_ctx = state(ctx)
    delete_call = app_ctx.client().delete_schedule
    several.delete_listed(
        app_ctx, schedule_ids, "schedule", "/api/schedules", "schedule_id", delete_call, output, quiet, paged=False
    )
