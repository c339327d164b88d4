"""`llmgine daemon start | stop | restart | status | logs | install | uninstall`: run llmgined in
the background, or as a user service (service.py).

The process work lives in daemonctl.py (auto-start shares it); this module parses and renders.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Any

import typer
from llmgine_daemon.settings import get_paths

from llmgine_cli import daemonctl
from llmgine_cli.client import DaemonError, DaemonTimeout, RequestTimeout, Target
from llmgine_cli.context import AppContext, Environment
from llmgine_cli.options import Output, Quiet, state
from llmgine_cli.render import View, render, resolve_format
from llmgine_cli.status import ExitStatus
from llmgine_cli.target import default_target

app = typer.Typer(
    help="Run llmgined in the background: start, stop, restart, status, logs; install/uninstall it as a user service.",
    no_args_is_help=True,
)

STARTED_VIEW = View(id_field="pid")
STOPPED_VIEW = View(id_field="pid")
STATUS_VIEW = View(id_field="pid", fields=("pid", "version", "uptime", "started_at", "listeners"))

Host = Annotated[str | None, typer.Option("--host", help="Also listen on TCP at this host.")]
Port = Annotated[int | None, typer.Option("--port", min=0, max=65535, help="Also listen on TCP at this port.")]
Sock = Annotated[str | None, typer.Option("--socket", help="Unix socket path.")]
NoSock = Annotated[bool, typer.Option("--no-socket", help="TCP only.")]
ConfigFile = Annotated[str | None, typer.Option("--config", help="Another config file.")]
LogLevel = Annotated[str | None, typer.Option("--log-level", help="debug, info, warning, error or critical")]
LogFile = Annotated[str | None, typer.Option("--log-file", help="Log here instead of the daemon log.")]
Timeout = Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds to wait for it to answer.")]


def _path(value: str | None) -> str | None:
    return str(Path(value).expanduser().absolute()) if value else None


def _flags(
    host: str | None,
    port: int | None,
    socket: str | None,
    no_socket: bool,
    config: str | None,
    log_level: str | None,
    log_file: str | None,
) -> daemonctl.DaemonFlags:
    # Absolute paths: the daemon must find them whatever directory a later restart runs in.
    return daemonctl.DaemonFlags(
        host=host,
        port=port,
        socket=_path(socket),
        no_socket=no_socket,
        config=_path(config),
        log_level=log_level,
        log_file=_path(log_file),
    )


def managed_target(app_ctx: AppContext) -> tuple[Target, str | None]:
    """The daemon `llmgine daemon ...` manages: --url/LLMGINE_URL (--context/LLMGINE_CONTEXT),
    else the last start's, else the local default: never the context `llmgine context use`
    chose, which names someone else's daemon (`daemon stop` must not stop it)."""
    env = app_ctx.env.environ
    if app_ctx.url or env.get("LLMGINE_URL") or env.get("LLMGINE_CONTEXT"):
        return app_ctx.target(), app_ctx.api_key
    flags = daemonctl.load_flags(get_paths(env))
    if flags is not None:
        try:
            resolved = daemonctl.resolve(flags, env)
            return resolved.target, app_ctx.api_key or resolved.api_key
        except DaemonError:
            pass
    return default_target(env), app_ctx.api_key


def _say_started(app_ctx: AppContext, started: daemonctl.Started, output: str | None, quiet: bool) -> None:
    if quiet or resolve_format(app_ctx.env, output) in ("json", "jsonl"):
        render(app_ctx.env, asdict(started), STARTED_VIEW, output, quiet)
        return
    verb = "is already running" if started.already_running else "started"
    pid = f"pid {started.pid}" if started.pid else "pid unknown"
    app_ctx.env.out(f"llmgined {started.version} {verb} ({pid}), listening on {', '.join(started.listeners)}")


def _launcher(restarting: bool) -> Any:
    """`daemon start` and `daemon restart`: the same flags, one body."""

    def command(
        ctx: typer.Context,
        host: Host = None,
        port: Port = None,
        socket: Sock = None,
        no_socket: NoSock = False,
        config: ConfigFile = None,
        log_level: LogLevel = None,
        log_file: LogFile = None,
        timeout: Timeout = daemonctl.START_TIMEOUT,
        output: Output = None,
        quiet: Quiet = False,
    ) -> None:
        app_ctx = state(ctx)
        env = app_ctx.env.environ
        flags = _flags(host, port, socket, no_socket, config, log_level, log_file)
        stop_first = None
        if restarting:
            given: dict[str, Any] = {k: v for k, v in asdict(flags).items() if v not in (None, False)}
            flags = replace(daemonctl.load_flags(get_paths(env)) or daemonctl.DaemonFlags(), **given)
            target, api_key = managed_target(app_ctx)

            def stop_first() -> None:  # under the start lock: no client auto-starts meanwhile
                try:
                    stopped = daemonctl.stop(target, env, api_key=api_key)
                except KeyboardInterrupt:
                    app_ctx.env.err(
                        "interrupted: llmgined was being stopped (`llmgine daemon status` says whether it runs)"
                    )
                    raise typer.Exit(ExitStatus.INTERRUPTED) from None
                if stopped.was_running and not quiet:
                    app_ctx.env.err(f"llmgined stopped (pid {stopped.pid})")

        try:
            started = daemonctl.start(flags, env, timeout=timeout, before=stop_first)
        except KeyboardInterrupt:
            app_ctx.env.err("interrupted: the llmgined that was starting is stopped")
            raise typer.Exit(ExitStatus.INTERRUPTED) from None
        _say_started(app_ctx, started, output, quiet)

    command.__doc__ = (
        "Stop and start again with the flags of the last start (flags given here override)."
        "\n\nExamples:\n\n  llmgine daemon restart\n\n  llmgine daemon restart --log-level debug"
        if restarting
        else "Start llmgined in the background and wait until it answers."
        "\n\nExamples:\n\n  llmgine daemon start\n\n  llmgine daemon start --port 8000 -q"
    )
    return command


app.command("start")(_launcher(restarting=False))


@app.command("stop")
def stop(
    ctx: typer.Context, timeout: Timeout = daemonctl.STOP_TIMEOUT, output: Output = None, quiet: Quiet = False
) -> None:
    """Shut llmgined down gracefully and wait for it to exit.

    Examples:

      llmgine daemon stop --timeout 30
    """
    app_ctx = state(ctx)
    target, api_key = managed_target(app_ctx)
    stopped = daemonctl.stop(target, app_ctx.env.environ, api_key=api_key, timeout=timeout)
    if quiet or resolve_format(app_ctx.env, output) in ("json", "jsonl"):
        render(app_ctx.env, asdict(stopped), STOPPED_VIEW, output, quiet)
    elif stopped.was_running:
        app_ctx.env.out(f"llmgined stopped (pid {stopped.pid})")
    else:
        app_ctx.env.err(f"llmgined is not running (nothing at {stopped.url})")


app.command("restart")(_launcher(restarting=True))


@app.command("status")
def status(ctx: typer.Context, output: Output = None, quiet: Quiet = False) -> None:
    """Show pid, version, uptime and listeners (exit 3 when not running).

    Examples:

      llmgine daemon status -q

      llmgine daemon status -o json | jq -r '.listeners[]'
    """
    app_ctx = state(ctx)
    target, api_key = managed_target(app_ctx)
    client = app_ctx.client(autostart=False, target=target, timeout=app_ctx.timeout or 5.0)
    client.api_key = api_key or client.api_key
    try:
        answer = client.status()
    except RequestTimeout:
        pid = daemonctl.paused_pid(target, app_ctx.env.environ)
        if pid is None:
            raise
        raise DaemonTimeout(
            f"llmgined (pid {pid}) is stopped (SIGSTOP or Ctrl-Z) and cannot answer; "
            f"continue it with `kill -CONT {pid}`, or `llmgine daemon stop` ends it"
        ) from None
    render(app_ctx.env, answer, STATUS_VIEW, output, quiet)


@app.command("logs")
def logs(
    ctx: typer.Context,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")] = False,
    lines: Annotated[int | None, typer.Option("--lines", "-n", min=0, help="Only the last N lines.")] = None,
) -> None:
    """Print the daemon log (LOG_FILE if configured, else the `daemon start` log).

    Examples:

      llmgine daemon logs --lines 20

      llmgine daemon logs -f
    """
    app_ctx = state(ctx)
    env = app_ctx.env
    path = daemonctl.log_file(env.environ)
    if not path.exists() and not follow:
        env.err(f"error: no daemon log at {path} (has `llmgine daemon start` run?)")
        raise typer.Exit(ExitStatus.ERROR)
    position = 0
    if path.exists():
        if lines is None:
            with path.open("r", encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    env.stdout.write(line)
        else:
            for line in daemonctl.tail(path, lines):
                env.stdout.write(line + "\n")
        position = path.stat().st_size
    env.stdout.flush()
    if follow:
        try:
            _follow(env, path, position)
        except KeyboardInterrupt:
            env.after_ctrl_c()
            raise typer.Exit(130) from None  # Ctrl-C: as every wait ends (exit 130)


def _follow(env: Environment, path: Path, position: int) -> None:
    out = env.stdout
    inode = path.stat().st_ino if path.exists() else None
    while True:
        env.check_reader()  # `daemon logs -f | head -1`: ends when head does
        try:
            st = path.stat()
        except FileNotFoundError:
            time.sleep(0.2)
            continue
        if st.st_ino != inode or st.st_size < position:
            inode, position = st.st_ino, 0  # rotated or truncated: start from its top
        if st.st_size > position:
            with path.open("rb") as fh:
                fh.seek(position)
                chunk = fh.read()
            position += len(chunk)
            out.write(chunk.decode("utf-8", "replace"))
            out.flush()
        else:
            time.sleep(0.2)


# -- service install ---------------------------------------------------------------------

DryRun = Annotated[bool, typer.Option("--dry-run", help="Print what would be written; write nothing.")]
Platform = Annotated[
    str | None, typer.Option("--platform", hidden=True, help="linux or darwin (default: this machine's).")
]


@app.command("install")
def install(ctx: typer.Context, dry_run: DryRun = False, platform: Platform = None) -> None:
    """Install llmgined as a user service (systemd user unit; launchd agent on macOS).

    Examples:

      llmgine daemon install --dry-run

      llmgine daemon install
    """
    from llmgine_cli import service as svc

    env = state(ctx).env
    unit = svc.for_platform(env.environ, platform)
    if dry_run:
        env.err(f"would write {unit.path}:")
        env.stdout.write(unit.text)
        return
    existed = unit.path.exists()
    svc.install(unit)
    env.err(f"{'updated' if existed else 'wrote'} {unit.path} ({unit.kind})")
    env.err("enable and start it with:")
    for line in unit.enable:
        env.err(f"  {line}")


@app.command("uninstall")
def uninstall(ctx: typer.Context, dry_run: DryRun = False, platform: Platform = None) -> None:
    """Remove the user service written by `daemon install` (stop it first, as printed).

    Examples:

      llmgine daemon uninstall --dry-run
    """
    from llmgine_cli import service as svc

    env = state(ctx).env
    unit = svc.for_platform(env.environ, platform)
    if dry_run:
        env.err(f"would remove {unit.path}")
        return
    if not svc.uninstall(unit):
        env.err(f"no service installed at {unit.path}")
        return
    env.err(f"removed {unit.path}; if it was running, stop it with:")
    for line in unit.disable:
        env.err(f"  {line}")
