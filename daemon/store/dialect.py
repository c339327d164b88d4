"""SQLite's SQL as PostgreSQL takes it: the few points where the two differ, in one place.

The bus writes one SQL for both backends (``?`` placeholders, portable statements:
CONTRIBUTING.md). On PostgreSQL every statement passes through ``translate`` once (cached):

- ``?`` placeholders become ``%s`` (psycopg's), ``?N`` become named ones, and a literal ``%``
  becomes ``%%``; text in quotes is left alone;
- ``IS ?`` / ``IS NOT ?`` (null-safe comparisons) become ``IS [NOT] DISTINCT FROM``;
- scalar ``MAX(a, b)`` / ``MIN(a, b)`` become ``GREATEST`` / ``LEAST``;
- ``SELECT seq FROM sqlite_sequence WHERE name = 'events'`` is the newest committed seq;
- ``last_insert_rowid()`` becomes ``lastval()`` (the last identity value this connection
  took: the store's writer is one connection), ``instr(`` becomes ``strpos(`` (same
  arguments);
- ``FROM json_each(?)`` (a JSON array of rows, read as ``value->>N``) becomes
  ``json_array_elements(?::json) AS value``; in an ``INSERT INTO t (cols) SELECT value->>N``
  each item is cast to its column's type (``column_types``, read from the database once).

``translate_ddl`` turns a migration's DDL into PostgreSQL's: INTEGER -> BIGINT, REAL -> DOUBLE
PRECISION, BLOB -> BYTEA, ``INTEGER PRIMARY KEY [AUTOINCREMENT]`` -> an identity column, and
every table without one gets ``rowid``, an identity column, so ``ORDER BY rowid`` means
insertion order on both. Triggers and anything else SQLite-only have explicit versions
(store/pg_schema.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

_REWRITES = (
    (re.compile(r"\blast_insert_rowid\(\)", re.I), "lastval()"),
    (re.compile(r"\binstr\(", re.I), "strpos("),
    # SQLite's null-safe comparison.
    (re.compile(r"\bIS\s+NOT\s+\?", re.I), "IS DISTINCT FROM ?"),
    (re.compile(r"\bIS\s+\?", re.I), "IS NOT DISTINCT FROM ?"),
    (re.compile(r"\bFROM\s+json_each\(\?\)", re.I), "FROM json_array_elements(?::json) AS value"),
    # The last id an AUTOINCREMENT table handed out: on PostgreSQL the newest COMMITTED row's.
    # (Not the identity sequence's last_value: it moves at insert time, before the commit,
    # and a reader must never see a seq whose row it cannot read yet. Unlike sqlite_sequence it
    # goes back when the newest rows are deleted.)
    (
        re.compile(r"\bSELECT\s+seq\s+FROM\s+sqlite_sequence\s+WHERE\s+name\s*=\s*'events'", re.I),
        "SELECT MAX(seq) FROM events",
    ),
)
_INSERT_SELECT = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)\s*\(([^)]*)\)\s*SELECT\b", re.I | re.S)
_VALUE_ITEM = re.compile(r"\bvalue->>(\d+)")

ColumnTypes = Callable[[str], dict[str, str]]


def _placeholders(sql: str) -> str:
    """``?`` -> ``%s``, ``?N`` -> ``%(pN)s`` (SQLite's numbered parameter: the adapter then
    passes the parameters by name) and ``%`` -> ``%%``, outside quotes."""
    out: list[str] = []
    quote = ""
    i = 0
    while i < len(sql):
        ch = sql[i]
        i += 1
        if quote:
            if ch == quote:
                quote = ""
            out.append("%%" if ch == "%" else ch)
        elif ch in "'\"":
            quote = ch
            out.append(ch)
        elif ch == "?":
            digits = ""
            while i < len(sql) and sql[i].isdigit():
                digits += sql[i]
                i += 1
            out.append(f"%(p{digits})s" if digits else "%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


def numbered(sql: str) -> bool:
    """Whether ``sql`` (translated) takes its parameters by number (``?N``)."""
    return "%(p" in sql


def _cast_json_items(sql: str, column_types: ColumnTypes) -> str:
    match = _INSERT_SELECT.match(sql)
    if not match or "value->>" not in sql:
        return sql
    columns = [c.strip() for c in match.group(2).split(",")]
    types = column_types(match.group(1))

    def cast(item: re.Match[str]) -> str:
        index = int(item.group(1))
        kind = types.get(columns[index], "text") if index < len(columns) else "text"
        return f"(value->>{index})::{kind}"

    return _VALUE_ITEM.sub(cast, sql)


_MINMAX = re.compile(r"\b(MAX|MIN)\(", re.I)


def _scalar_minmax(sql: str) -> str:
    """SQLite's scalar ``MAX(a, b)`` / ``MIN(a, b)`` (two or more arguments) as GREATEST /
    LEAST; the one-argument aggregates stay."""
    out, pos = [], 0
    for match in _MINMAX.finditer(sql):
        if match.start() < pos:
            continue
        depth, i, comma = 1, match.end(), False
        while i < len(sql) and depth:
            ch = sql[i]
            depth += ch == "("
            depth -= ch == ")"
            comma = comma or (ch == "," and depth == 1)
            i += 1
        if comma:
            name = "GREATEST(" if match.group(1).upper() == "MAX" else "LEAST("
            out.append(sql[pos : match.start()] + name)
            pos = match.end()
    out.append(sql[pos:])
    return "".join(out)


def translate(sql: str, *, params: bool, column_types: ColumnTypes) -> str:
    """One statement in PostgreSQL's dialect (see the module docstring); uncached."""
    for pattern, replacement in _REWRITES:
        sql = pattern.sub(replacement, sql)
    if "(" in sql:
        sql = _scalar_minmax(sql)
    sql = _cast_json_items(sql, column_types)
    # psycopg reads placeholders (and so %) only when parameters are passed.
    return _placeholders(sql) if params else sql


# -- DDL ------------------------------------------------------------------------------------

_INT_PK = re.compile(r"\bINTEGER\s+PRIMARY\s+KEY(\s+AUTOINCREMENT)?\b", re.I)
_TYPES = (
    (re.compile(r"\bINTEGER\b", re.I), "BIGINT"),
    (re.compile(r"\bREAL\b", re.I), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b", re.I), "BYTEA"),
)
_CREATE_TABLE = re.compile(r"^\s*CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?(\w+)\s*\(", re.I)
_WITHOUT_ROWID = re.compile(r"\)\s*WITHOUT\s+ROWID\s*$", re.I)


def _strip_comments(sql: str) -> str:
    """Without ``-- comments`` (outside quotes)."""
    out: list[str] = []
    quote, i = "", 0
    while i < len(sql):
        ch = sql[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = len(sql) if end < 0 else end
            continue
        out.append(ch)
        i += 1
    return "".join(out)


@lru_cache(maxsize=512)
def translate_ddl(sql: str) -> str:
    """A CREATE TABLE / ALTER TABLE / CREATE INDEX of a migration, in PostgreSQL's types."""
    sql = _strip_comments(sql).strip()
    create = _CREATE_TABLE.match(sql)
    without_rowid = bool(_WITHOUT_ROWID.search(sql))
    if without_rowid:
        sql = _WITHOUT_ROWID.sub(")", sql)
    has_int_pk = bool(_INT_PK.search(sql))
    sql = _INT_PK.sub("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", sql)
    for pattern, replacement in _TYPES:
        sql = pattern.sub(replacement, sql)
    if create and not has_int_pk and not without_rowid:
        # ORDER BY rowid (insertion order) works on PostgreSQL too.
        close = sql.rstrip().rfind(")")
        sql = sql[:close].rstrip() + ",\n rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE" + sql[close:]
    return sql
