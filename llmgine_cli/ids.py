"""Ids as people read and type them.

The daemon's ids are UUIDv7s (sessions, commands, events, engines, handlers) and trace ids
whose first digits are a timestamp: ids made in the same minute share their first eight
digits. The short form is therefore the LAST eight hex digits (the random part), as docker
and git show a short hash; `short_id` gives it, and tables and live views print it.

Wherever a command takes an id it also takes a unique prefix of it, its short id (a unique
suffix) or the start of the short id, or, for sessions, the session's name (`resolve`). Ambiguity is a usage error that
lists the candidates (exit 2); no match leaves the text as it is, and the daemon answers
NOT_FOUND (exit 4).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

SHORT = 8
_HEX = frozenset("0123456789abcdef")


def _bare(value: str) -> str:
    return value.replace("-", "").lower()


def is_full_id(value: str) -> bool:
    """A whole UUID (with or without dashes) or 32-digit trace id: nothing to resolve."""
    bare = _bare(value)
    return len(bare) == 32 and set(bare) <= _HEX


def short_id(value: str | None) -> str:
    """The last eight hex digits of a long hex id; anything else as it is."""
    if not value:
        return "-"
    bare = _bare(value)
    if len(bare) >= 16 and set(bare) <= _HEX:
        return bare[-SHORT:]
    return value


class Ambiguous(Exception):
    """More than one id matches what was typed; the message lists them."""

    def __init__(self, kind: str, given: str, matches: list[tuple[str, str | None]]) -> None:
        shown = ", ".join(f"{short_id(i)} ({name})" if name else short_id(i) for i, name in matches[:10])
        more = f" and {len(matches) - 10} more" if len(matches) > 10 else ""
        super().__init__(f"{kind} {given!r} is ambiguous: it matches {shown}{more}; type more of the id")
        self.matches = matches


def matches(given: str, candidates: Iterable[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    """The (id, name) candidates ``given`` names: by whole id, prefix, short id (suffix) or name."""
    bare = _bare(given)
    exact: list[tuple[str, str | None]] = []
    by_id: list[tuple[str, str | None]] = []
    by_name: list[tuple[str, str | None]] = []
    for ident, name in candidates:
        ident_bare = _bare(ident)
        if ident == given or ident_bare == bare:
            exact.append((ident, name))
        elif (
            bare
            and len(bare) >= 4
            and set(bare) <= _HEX | {"-"}
            and (
                ident_bare.startswith(bare)
                or ident_bare.endswith(bare)
                or (len(ident_bare) >= 16 and ident_bare[-SHORT:].startswith(bare))
            )
        ):
            by_id.append((ident, name))
        elif name is not None and name == given:
            by_name.append((ident, name))
    return exact or by_id + by_name


def resolve(kind: str, given: str, candidates: Iterable[tuple[str, str | None]]) -> str:
    """The one id ``given`` names; ``given`` itself when nothing matches (the daemon will say
    NOT_FOUND); Ambiguous when several do. An empty ``given`` names nothing (not a session
    whose name is empty: `llmgine session delete "$SID"` with SID unset must not act)."""
    if not given:
        from llmgine_cli.errors import InvalidArgument

        ways = "its id, a unique prefix, its short id or its name" if kind == "session" else "its id or a prefix"
        raise InvalidArgument(f"an empty {kind} id names nothing: give {ways}")
    found = matches(given, candidates)
    unique = list(dict.fromkeys(found))
    if len(unique) == 1:
        return unique[0][0]
    if len(unique) > 1:
        raise Ambiguous(kind, given, unique)
    return given
