"""What webhooks and schedules share: a caller's scope (a session token opens its own
session's only), per-session and global limits, and "not found" for them.

``scope`` is the session id of a session token, or None for an API key (or the socket's
owner), which may act on every session and on the global scope.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from llmgine_daemon.bus.errors import BusError
from llmgine_daemon.protocol import ErrorCode


def require_scope(scope: str | None, session_id: str | None, what: str) -> None:
    """A session token may only act for its own session (not for all of them: ``None``)."""
    if scope is not None and session_id != scope:
        raise BusError(
            ErrorCode.FORBIDDEN,
            f"a session token may only manage {what} of its own session",
            {"session_id": scope},
        )


def visible(scope: str | None, session_id: str | None) -> bool:
    return scope is None or session_id == scope


def missing(kind: str, ident: str) -> BusError:
    """404 for an id that does not exist, or that the caller's scope does not see."""
    return BusError(ErrorCode.NOT_FOUND, f"{kind} {ident!r} not found", {f"{kind}_id": ident})


def check_limits(
    conn: sqlite3.Connection,
    table: str,
    session_id: str | None,
    per_session: tuple[str, int],
    total: tuple[str, int],
) -> None:
    """409 LIMIT_REACHED when one more row of ``table`` would pass a limit (0: none); run in
    the creating write, so concurrent creations cannot both pass."""
    checks: list[tuple[str, int, str, tuple[Any, ...]]] = [(total[0], total[1], "", ())]
    if session_id is not None:
        checks.append((per_session[0], per_session[1], " WHERE session_id = ?", (session_id,)))
    for setting, maximum, where, params in checks:
        if maximum > 0 and conn.execute(f"SELECT COUNT(*) FROM {table}{where}", params).fetchone()[0] >= maximum:
            raise BusError(
                ErrorCode.LIMIT_REACHED,
                f"limit reached: at most {maximum} {table}{' per session' if where else ''} ({setting})",
                {"limit": setting, "max": maximum},
            )
