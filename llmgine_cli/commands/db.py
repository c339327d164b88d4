"""`llmgine db stats | vacuum` ↔ daemon api/db.py."""

from __future__ import annotations

import typer

from llmgine_cli.options import Output, Quiet, state
from llmgine_cli.render import View, render, resolve_format, size

app = typer.Typer(help="Inspect and compact the daemon's databases (main and telemetry).", no_args_is_help=True)

STATS_VIEW = View(
    columns="TABLE=name, ROWS=rows, SIZE=size_bytes, INDEXES=index_bytes, DATABASE=database",
    items="tables",
    id_field="name",
)
VACUUM_VIEW = View(fields=("before_bytes", "after_bytes", "reclaimed_bytes", "duration_ms"))


@app.command("stats")
def stats(ctx: typer.Context, output: Output = None, quiet: Quiet = False) -> None:
    """Rows and sizes per table of the main and telemetry databases (-o json: files, pages, retention).

    Examples:

      llmgine db stats

      llmgine db stats -o json | jq .retention
    """
    app_ctx = state(ctx)
    result = app_ctx.client().db_stats()
    fmt = resolve_format(app_ctx.env, output)
    if fmt in ("table", "plain") and not quiet and result.backend == "postgresql":
        # One database (pg_database_size) holds both: no files, no SQLite pages.
        app_ctx.env.err(f"{result.path}: {size(result.size_bytes)}, logs and spans in the same database")
    elif fmt in ("table", "plain") and not quiet:
        # One line per file: the main database, then the telemetry one (logs and spans).
        tel = {k.removeprefix("telemetry_"): n for k, n in result.file_bytes.items() if k.startswith("telemetry_")}
        main = {k: n for k, n in result.file_bytes.items() if not k.startswith("telemetry_")}

        def described(files: dict[str, int]) -> str:
            return f"{size(sum(files.values()))} ({', '.join(f'{name} {size(n)}' for name, n in files.items())})"

        app_ctx.env.err(
            f"{result.path}: {described(main)}, {result.freelist_pages} free page(s) of {result.page_count}"
        )
        if result.telemetry_path:
            app_ctx.env.err(f"{result.telemetry_path}: {described(tel)}, logs and spans")
    render(app_ctx.env, result, STATS_VIEW, output, quiet)


@app.command("vacuum")
def vacuum(ctx: typer.Context, output: Output = None, quiet: Quiet = False) -> None:
    """Rebuild both database files to give free pages back to the disk (writes wait meanwhile).

    Examples:

      llmgine db vacuum
    """
    app_ctx = state(ctx)
    render(app_ctx.env, app_ctx.client().db_vacuum(), VACUUM_VIEW, output, quiet)
