"""The schema on PostgreSQL: the migrations of store/migrations.py (and obs_migrations.py), run
through ``translate_ddl`` (store/dialect.py), except the few that are SQLite-only, which have
an explicit PostgreSQL version here (``PG_VERSIONS``): the session counts' triggers (migration 5)
are PL/pgSQL here; a plain trigger of a migration is translated (``translate_trigger``).

``apply`` runs them at start-up under ``pg_advisory_xact_lock`` (two nodes starting together:
the second waits, then finds everything applied), each in its own transaction, and refuses a
database whose schema is newer than this code (``SchemaTooNew``). Logs and spans (40-49) are
in the same database as the rest: one backup, one connection string.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from llmgine_daemon.protocol import now_iso
from llmgine_daemon.store import pg_cluster
from llmgine_daemon.store.dialect import translate_ddl
from llmgine_daemon.store.errors import SchemaTooNew
from llmgine_daemon.store.migrations import (
    MIGRATIONS,
    SESSION_COUNTS_RECOUNT,
    TELEMETRY_VERSIONS,
    check_known,
    event_bytes_of,
    event_bytes_recount,
)

log = logging.getLogger("llmgine.store")

# Any number the two halves of the lock share; the second is "migrations".
LOCK_KEY = (0x6C6C6D67, 1)

PgMigration = Callable[[Any], None]
PG_VERSIONS: dict[int, PgMigration] = {
    # The cluster's tables (store/cluster_migrations.py: nothing on SQLite).
    120: pg_cluster.m120_cluster,
    121: pg_cluster.m121_registry_changes,
    122: pg_cluster.m122_event_seq_in_transaction,
}


def pg_version(version: int) -> Callable[[PgMigration], PgMigration]:
    def register(fn: PgMigration) -> PgMigration:
        PG_VERSIONS[version] = fn
        return fn

    return register


_TRIGGER = re.compile(
    r"^\s*CREATE\s+TRIGGER\s+(\w+)\s+(AFTER|BEFORE)\s+(.+?)\s+ON\s+(\w+)\s+(?:FOR\s+EACH\s+ROW\s+)?"
    r"BEGIN\s+(.*?);?\s*END\s*$",
    re.I | re.S,
)


def translate_trigger(sql: str) -> list[str] | None:
    """SQLite's ``CREATE TRIGGER name AFTER event ON table BEGIN body; END`` as a PL/pgSQL
    function and a row trigger calling it (the body's statements, NEW and OLD mean the same);
    None if ``sql`` is not a trigger."""
    match = _TRIGGER.match(sql)
    if not match:
        return None
    name, when, event, table, body = match.groups()
    return [
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body}; RETURN NULL; END $$",
        f"CREATE TRIGGER {name} {when} {event} ON {table} FOR EACH ROW EXECUTE FUNCTION {name}()",
    ]


class DdlConnection:
    """What a migration function is given on PostgreSQL: ``execute`` translates its DDL
    (types, identity columns: ``translate_ddl``; triggers: ``translate_trigger``)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Any = None) -> Any:
        if params is not None:
            return self.conn.execute(sql.replace("?", "%s"), params)
        trigger = translate_trigger(sql)
        if trigger is None:
            return self.conn.execute(translate_ddl(sql))
        for statement in trigger:
            self.conn.execute(statement)
        return None


def apply(conn: Any, *, telemetry: bool) -> list[int]:
    """Apply what this database has not seen (``conn``: psycopg, autocommit off)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", LOCK_KEY)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        check_known(done)
        applied = []
        for version, name, fn in MIGRATIONS:
            if version in done or (version in TELEMETRY_VERSIONS) != telemetry:
                continue
            with conn.transaction():  # a savepoint: one migration is all or nothing
                PG_VERSIONS.get(version, lambda c, fn=fn: fn(DdlConnection(c)))(conn)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                    (version, name, now_iso()),
                )
            applied.append(version)
    return applied


def newer_schema(conn: Any) -> str | None:
    """Why this code must not go on writing to the database (``conn``: the bus's connection,
    store/postgres.py), or None: a newer llmgined recorded migrations this code does not have
    (the SchemaTooNew message a start would have given)."""
    known = [version for version, _, _ in MIGRATIONS]
    rows = conn.execute("SELECT version FROM schema_migrations WHERE NOT (version = ANY(?))", (known,)).fetchall()
    if not rows:
        return None
    try:
        check_known({int(row[0]) for row in rows})
    except SchemaTooNew as exc:
        return str(exc)
    return None


# -- the SQLite-only migrations ---------------------------------------------------------------


def _not_counting_inserts(conn: Any, table: str) -> None:
    conn.execute(f"DROP TRIGGER session_counts_{table} ON {table}")
    conn.execute(
        f"CREATE TRIGGER session_counts_{table} AFTER DELETE OR UPDATE OF session_id ON {table}"
        f" FOR EACH ROW EXECUTE FUNCTION session_counts_{table}()"
    )


@pg_version(130)
def m130_events_counted_by_insert(conn: Any) -> None:
    """store/migrations.py m130: the events' trigger no longer counts inserts."""
    _not_counting_inserts(conn, "events")


@pg_version(131)
def m131_commands_counted_by_insert(conn: Any) -> None:
    """store/migrations.py m131: the commands' trigger no longer counts inserts."""
    _not_counting_inserts(conn, "commands")


# UTF-8 bytes (m133; store/migrations.py EVENT_BYTES): ``length`` of a text counts characters.
PG_EVENT_BYTES = "COALESCE(octet_length({row}.data), 0) + COALESCE(octet_length({row}.metadata), 0)"


def _count_event_bytes(conn: Any) -> None:
    """store/migrations.py ``_count_event_bytes``: the recount and the trigger functions."""
    conn.execute(event_bytes_recount(PG_EVENT_BYTES))
    old, new = PG_EVENT_BYTES.format(row="OLD"), PG_EVENT_BYTES.format(row="NEW")
    recount = SESSION_COUNTS_RECOUNT.format(sid="NEW.session_id")
    conn.execute(
        f"""
        CREATE OR REPLACE FUNCTION session_counts_sessions() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                INSERT INTO session_counts (session_id, commands, events, engines, tools, handlers, event_bytes)
                VALUES (NEW.session_id, {recount}, {event_bytes_of(PG_EVENT_BYTES, "NEW.session_id")})
                ON CONFLICT (session_id) DO UPDATE SET commands = EXCLUDED.commands,
                    events = EXCLUDED.events, engines = EXCLUDED.engines, tools = EXCLUDED.tools,
                    handlers = EXCLUDED.handlers, event_bytes = EXCLUDED.event_bytes;
            ELSE
                DELETE FROM session_counts WHERE session_id = OLD.session_id;
            END IF;
            RETURN NULL;
        END $$"""
    )
    conn.execute(
        f"""
        CREATE OR REPLACE FUNCTION session_counts_events() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('DELETE', 'UPDATE') THEN
                UPDATE session_counts SET events = events - 1, event_bytes = event_bytes - ({old})
                WHERE session_id = OLD.session_id;
            END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                UPDATE session_counts SET events = events + 1, event_bytes = event_bytes + ({new})
                WHERE session_id = NEW.session_id;
            END IF;
            RETURN NULL;
        END $$"""
    )


@pg_version(132)
def m132_event_bytes(conn: Any) -> None:
    """store/migrations.py m132: the bytes of each session's events, counted by the inserts
    (bus/events.py) and by the events' trigger function (deleted, moved)."""
    conn.execute("ALTER TABLE session_counts ADD COLUMN event_bytes BIGINT NOT NULL DEFAULT 0")
    _count_event_bytes(conn)


@pg_version(133)
def m133_event_bytes_in_utf8(conn: Any) -> None:
    """store/migrations.py m133: recounted in UTF-8 bytes (m132 counted characters)."""
    _count_event_bytes(conn)


@pg_version(5)
def m005_session_counts(conn: Any) -> None:
    """store/migrations.py m005: the counts kept by triggers, as PL/pgSQL."""
    conn.execute(
        "CREATE TABLE session_counts ("
        " session_id TEXT PRIMARY KEY,"
        " commands BIGINT NOT NULL, events BIGINT NOT NULL, engines BIGINT NOT NULL,"
        " tools BIGINT NOT NULL, handlers BIGINT NOT NULL)"
    )
    conn.execute(
        "INSERT INTO session_counts (session_id, commands, events, engines, tools, handlers)"
        f" SELECT s.session_id, {SESSION_COUNTS_RECOUNT.format(sid='s.session_id')} FROM sessions s"
    )
    recount = SESSION_COUNTS_RECOUNT.format(sid="NEW.session_id")
    conn.execute(
        f"""
        CREATE FUNCTION session_counts_sessions() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                INSERT INTO session_counts (session_id, commands, events, engines, tools, handlers)
                VALUES (NEW.session_id, {recount})
                ON CONFLICT (session_id) DO UPDATE SET commands = EXCLUDED.commands,
                    events = EXCLUDED.events, engines = EXCLUDED.engines, tools = EXCLUDED.tools,
                    handlers = EXCLUDED.handlers;
            ELSE
                DELETE FROM session_counts WHERE session_id = OLD.session_id;
            END IF;
            RETURN NULL;
        END $$"""
    )
    conn.execute(
        "CREATE TRIGGER session_counts_sessions AFTER INSERT OR DELETE ON sessions"
        " FOR EACH ROW EXECUTE FUNCTION session_counts_sessions()"
    )
    # Commands and events: counted up and down by one (and moved, should a row change session).
    for table in ("events", "commands"):
        conn.execute(
            f"""
            CREATE FUNCTION session_counts_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP IN ('DELETE', 'UPDATE') THEN
                    UPDATE session_counts SET {table} = {table} - 1 WHERE session_id = OLD.session_id;
                END IF;
                IF TG_OP IN ('INSERT', 'UPDATE') THEN
                    UPDATE session_counts SET {table} = {table} + 1 WHERE session_id = NEW.session_id;
                END IF;
                RETURN NULL;
            END $$"""
        )
        conn.execute(
            f"CREATE TRIGGER session_counts_{table} AFTER INSERT OR DELETE OR UPDATE OF session_id ON {table}"
            f" FOR EACH ROW EXECUTE FUNCTION session_counts_{table}()"
        )
    # Engines (live ones), tools, handlers: few per session; each write recounts.
    for table, extra, columns in (
        ("engines", " AND status != 'stopped'", "status, session_id"),
        ("tools", "", "session_id"),
        ("handlers", "", "session_id"),
    ):

        def count(sid: str, table: str = table, extra: str = extra) -> str:
            return (
                f"UPDATE session_counts SET {table} = (SELECT COUNT(*) FROM {table} WHERE session_id = {sid}{extra})"
                f" WHERE session_id = {sid};"
            )

        conn.execute(
            f"""
            CREATE FUNCTION session_counts_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP IN ('DELETE', 'UPDATE') THEN {count("OLD.session_id")} END IF;
                IF TG_OP IN ('INSERT', 'UPDATE') THEN {count("NEW.session_id")} END IF;
                RETURN NULL;
            END $$"""
        )
        conn.execute(
            f"CREATE TRIGGER session_counts_{table} AFTER INSERT OR DELETE OR UPDATE OF {columns} ON {table}"
            f" FOR EACH ROW EXECUTE FUNCTION session_counts_{table}()"
        )
