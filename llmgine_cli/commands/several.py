"""Commands that take several ids, as `docker rm` and `docker kill` do, so a listing's `-q`
feeds them through xargs (`llmgine webhook list -q | xargs -r llmgine webhook delete`): each id
in turn, a failure is its error line and the others still go, the exit code is the first
failure's. One id behaves as before: its error is the command's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from llmgine_cli.errors import ApiError
from llmgine_cli.failure import report
from llmgine_cli.ids import Ambiguous
from llmgine_cli.render import View, builtins, render, render_deleted


def ids_argument(kind: str, autocompletion: Any = None) -> Any:
    """The ID... argument: resolved one by one as they are acted on (resolving them all first,
    one that is not there stopped the others before any of them)."""
    return typer.Argument(
        metavar="ID...",
        help=f"The {kind}s: each its id, a unique prefix or its short id.",
        autocompletion=autocompletion,
    )


def resolver(app_ctx: Any, kind: str, path: str, items: str, key: str, *, paged: bool = True) -> Callable[[str], str]:
    """A function from an id as given (prefix, short id) to the full id (hot.resolve_id)."""
    from llmgine_cli.hot import resolve_id

    return lambda given: resolve_id(app_ctx, kind, given, path, items, key, paged=paged)


def each_in_turn(app_ctx: Any, given: list[str], act: Callable[[str], Any]) -> tuple[list[Any], int]:
    """``act`` on every id; what each returned, and the exit code of the first failure (0)."""
    done: list[Any] = []
    code = 0
    for one in given:
        try:
            done.append(act(one))
        except (ApiError, Ambiguous) as exc:
            if len(given) == 1:
                raise
            failed = report(exc, app_ctx)  # each failure its line; the exit code is the first's
            code = code or failed
    return done, code


def show_each(
    app_ctx: Any,
    given: list[str],
    act: Callable[[str], Any],
    one: View,
    items: str,
    many: View,
    output: Any,
    quiet: bool,
    show: Callable[[Any, View], None] | None = None,
) -> None:
    """``act`` on each id in turn and show what it returned: one id with ``one``, several as
    ``{items: [...]}`` with ``many`` (through ``show``, else ``render``); the exit code is the
    first failure's."""
    done, code = each_in_turn(app_ctx, given, act)
    if show is None:

        def show(data: Any, view: View) -> None:
            render(app_ctx.env, data, view, output, quiet)

    if len(given) == 1:
        show(done[0], one)
    else:
        show({items: [builtins(record) for record in done]}, many)
    if code:
        raise typer.Exit(code)


def delete_each(
    app_ctx: Any,
    given: list[str],
    delete: Callable[[str], dict[str, Any]],
    kind: str,
    items: str,
    id_field: str,
    output: Any,
    quiet: bool,
    verb: str = "deleted",
) -> None:
    """A delete with no record to show (render_deleted), of each id in turn: ``delete`` gets an
    id as given and returns what it deleted (``{id_field: full id, ...}``). Several: -o json
    is ``{items: [...]}``."""
    done, code = each_in_turn(app_ctx, given, delete)
    fmt = getattr(output, "value", output)
    if len(done) == 1 and len(given) == 1:
        record = done[0]
        render_deleted(app_ctx.env, record, f"{verb} {kind} {record[id_field]}", output, quiet, id_field)
    elif quiet or fmt in ("json", "jsonl"):
        records = [{**one, "deleted": True} for one in done]
        render(app_ctx.env, {items: records}, View(items=items, id_field=id_field), fmt, quiet)
    else:
        for one in done:
            app_ctx.env.err(f"{verb} {kind} {one[id_field]}")
    if code:
        raise typer.Exit(code)


def delete_listed(
    app_ctx: Any,
    given: list[str],
    kind: str,
    path: str,
    id_field: str,
    delete: Callable[[str], Any],
    output: Any,
    quiet: bool,
    *,
    paged: bool = True,
) -> None:
    """``delete_each`` for a kind listed at ``path`` (its ``items`` are ``kind`` + "s"): each id
    resolved there, then ``delete(full_id)``."""
    resolve = resolver(app_ctx, kind, path, f"{kind}s", id_field, paged=paged)

    def delete_one(one: str) -> dict[str, Any]:
        full = resolve(one)
        delete(full)
        return {id_field: full}

    delete_each(app_ctx, given, delete_one, kind, f"{kind}s", id_field, output, quiet)
