"""Numbered schema migrations, recorded in the ``schema_migrations`` table.

Each migration is a function registered with ``@migration(N, "name")``; they run in order,
each in its own transaction, on start-up. Never edit a released migration: add a new one.
(Pattern from simonw/llm's migrations.py.)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from llmgine_daemon import __version__
from llmgine_daemon.protocol import now_iso
from llmgine_daemon.store.errors import SchemaTooNew

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[tuple[int, str, Migration]] = []
# Numbers 40-49 belong to the telemetry database (logs and spans: obs_migrations.py), a file of
# its own beside the main one; every other number to the main database.
TELEMETRY_VERSIONS = range(40, 50)


def migration(version: int, name: str) -> Callable[[Migration], Migration]:
    def register(fn: Migration) -> Migration:
        if any(v == version for v, _, _ in MIGRATIONS):
            raise RuntimeError(f"migration {version} registered twice")
        MIGRATIONS.append((version, name, fn))
        MIGRATIONS.sort(key=lambda item: item[0])
        return fn

    return register


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run DDL statements inside the current transaction (executescript would COMMIT first)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def check_known(done: set[int]) -> None:
    """Refuse a database migrated by newer code (versions this code does not have)."""
    unknown = sorted(done - {version for version, _, _ in MIGRATIONS})
    if unknown:
        raise SchemaTooNew(
            f"the database schema is newer than this llmgined (it has migration(s) {', '.join(map(str, unknown))}"
            f" this version {__version__} does not know); upgrade llmgined"
        )


def apply_migrations(conn: sqlite3.Connection, *, telemetry: bool = False) -> list[int]:
    """Run the migrations this database (the main one, or ``telemetry``) has not seen; returns
    the versions applied. A database with migrations this code does not know is refused
    (``SchemaTooNew``)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    check_known(done)
    applied = []
    for version, name, fn in MIGRATIONS:
        if version in done or (version in TELEMETRY_VERSIONS) != telemetry:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            fn(conn)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (version, name, now_iso()),
            )
            conn.execute("COMMIT")
        except BaseException:
            # A full disk or an I/O error may have rolled the transaction back already: a
            # ROLLBACK then fails ("no transaction is active") and would hide the cause.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied


@migration(1, "core tables")
def m001_core(conn: sqlite3.Connection) -> None:
    # JSON columns hold msgspec-encoded text. Timestamps are ISO text (they sort as text).
    run_script(
        conn,
        """
        CREATE TABLE sessions (
            session_id TEXT PRIMARY KEY,
            name TEXT,
            metadata TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            last_activity_at TEXT NOT NULL,
            ended_at TEXT
        );
        CREATE INDEX sessions_created ON sessions (created_at);

        -- One append-only log: seq is global and strictly increasing.
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL UNIQUE,
            session_id TEXT,
            event_type TEXT NOT NULL,
            data TEXT NOT NULL DEFAULT '{}',
            metadata TEXT NOT NULL DEFAULT '{}',
            source TEXT NOT NULL,
            timestamp TEXT NOT NULL,
            trace_id TEXT
        );
        CREATE INDEX events_session ON events (session_id, seq);
        CREATE INDEX events_type ON events (event_type, seq);

        CREATE TABLE commands (
            command_id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            command_type TEXT NOT NULL,
            parameters TEXT NOT NULL DEFAULT '{}',
            metadata TEXT NOT NULL DEFAULT '{}',
            priority INTEGER NOT NULL DEFAULT 1,
            timeout REAL,
            status TEXT NOT NULL,
            result TEXT,
            error TEXT,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            batch_id TEXT,
            trace_id TEXT
        );
        CREATE INDEX commands_session ON commands (session_id, created_at);
        CREATE INDEX commands_status ON commands (status);

        CREATE TABLE engines (
            engine_id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            engine_type TEXT NOT NULL,
            model_name TEXT,
            configuration TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX engines_session ON engines (session_id);

        CREATE TABLE tools (
            session_id TEXT NOT NULL,
            name TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            parameters TEXT NOT NULL DEFAULT '{}',
            function_code TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (session_id, name)
        );

        -- session_id NULL = global (LLMGine's BUS scope).
        CREATE TABLE handlers (
            handler_id TEXT PRIMARY KEY,
            session_id TEXT,
            kind TEXT NOT NULL CHECK (kind IN ('command', 'event')),
            type TEXT NOT NULL,
            code TEXT NOT NULL,
            priority INTEGER NOT NULL DEFAULT 100,
            created_at TEXT NOT NULL
        );
        CREATE INDEX handlers_scope ON handlers (session_id, kind, type);
        """,
    )


@migration(2, "command queue: duration, batches, idempotency keys")
def m002_command_queue(conn: sqlite3.Connection) -> None:
    run_script(
        conn,
        """
        -- Measured with a monotonic clock at the end of the execution, not derived from the
        -- wall-clock timestamps.
        ALTER TABLE commands ADD COLUMN duration_ms REAL;
        -- Restart resumes queued commands in (priority, rowid) order, and lists filter by status.
        CREATE INDEX commands_session_status ON commands (session_id, status, priority);
        CREATE INDEX commands_batch ON commands (batch_id);

        -- A batch's mode is needed to resume its queued commands after a restart.
        CREATE TABLE batches (
            batch_id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            mode TEXT NOT NULL,
            stop_on_error INTEGER NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX batches_session ON batches (session_id);

        -- Idempotency-Key: written in the same transaction as what the request created, so a
        -- key is never recorded without its commands (or the other way round).
        CREATE TABLE idempotency_keys (
            scope TEXT NOT NULL,
            key TEXT NOT NULL,
            body_hash TEXT NOT NULL,
            kind TEXT NOT NULL,
            ref TEXT NOT NULL,
            session_id TEXT,
            created_at TEXT NOT NULL,
            PRIMARY KEY (scope, key)
        );
        CREATE INDEX idempotency_keys_session ON idempotency_keys (session_id);
        """,
    )


@migration(3, "user code: tool and handler timeouts, handler function names")
def m003_user_code(conn: sqlite3.Connection) -> None:
    run_script(
        conn,
        """
        ALTER TABLE tools ADD COLUMN timeout REAL;
        ALTER TABLE tools ADD COLUMN is_async INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE handlers ADD COLUMN function TEXT NOT NULL DEFAULT '';
        ALTER TABLE handlers ADD COLUMN timeout REAL;
        CREATE INDEX handlers_kind_type ON handlers (kind, type)
        """,
    )


@migration(4, "commands: index only what is looked up by status or batch")
def m004_partial_command_indexes(conn: sqlite3.Connection) -> None:
    # Every command paid for an entry in commands_status and commands_batch, though only
    # queued/executing ones are ever looked up by status (at start-up: recovery) and only
    # batched ones by batch. Partial indexes: a finished, unbatched command (nearly all of
    # them) writes two B-trees fewer. Queries must repeat the index's WHERE term to use it
    # (ACTIVE in bus/commands/records.py); `batch_id = ?` implies `batch_id IS NOT NULL` by itself.
    run_script(
        conn,
        """
        DROP INDEX commands_status;
        CREATE INDEX commands_active ON commands (status) WHERE status IN ('queued', 'executing');
        DROP INDEX commands_batch;
        CREATE INDEX commands_batch ON commands (batch_id) WHERE batch_id IS NOT NULL
        """,
    )


# A session's counts, as GET /api/sessions/{id} reports them; SESSION_COUNTS_RECOUNT computes
# them from the tables (migration 5 fills session_counts with it, a new session starts with it).
SESSION_COUNTS_RECOUNT = (
    "(SELECT COUNT(*) FROM commands WHERE session_id = {sid}),"
    " (SELECT COUNT(*) FROM events WHERE session_id = {sid}),"
    " (SELECT COUNT(*) FROM engines WHERE session_id = {sid} AND status != 'stopped'),"
    " (SELECT COUNT(*) FROM tools WHERE session_id = {sid}),"
    " (SELECT COUNT(*) FROM handlers WHERE session_id = {sid})"
)


def _recount(column: str, table: str, sid: str, extra: str = "") -> str:
    return (
        f"UPDATE session_counts SET {column} = (SELECT COUNT(*) FROM {table} WHERE session_id = {sid}{extra})"
        f" WHERE session_id = {sid}"
    )


@migration(5, "session counts kept by triggers")
def m005_session_counts(conn: sqlite3.Connection) -> None:
    """Counting a session's commands and events on every GET is a scan of its index entries:
    0.5 ms at a few thousand, and it grows with the session. The counts are kept instead, by
    triggers, in the same transaction as the write that changes them (so they are exact
    whatever writes: the bus, retention, a purge, a migration). Since migrations 130-131 the
    inserts of events and commands are counted by the statements that make them instead
    (bus/events.py, bus/commands/records.py): a raw INSERT elsewhere must count too.

    Commands and events are counted up and down by one (a recount would be that same scan).
    Engines, tools and handlers are few per session, and their writes are rare and varied
    (``INSERT OR REPLACE`` into tools fires no delete trigger; an engine's status changes):
    each of those writes recounts the session's rows of that table."""
    conn.execute(
        "CREATE TABLE session_counts ("
        " session_id TEXT PRIMARY KEY,"
        " commands INTEGER NOT NULL, events INTEGER NOT NULL, engines INTEGER NOT NULL,"
        " tools INTEGER NOT NULL, handlers INTEGER NOT NULL"
        ") WITHOUT ROWID"
    )
    conn.execute(
        "INSERT INTO session_counts (session_id, commands, events, engines, tools, handlers)"
        f" SELECT s.session_id, {SESSION_COUNTS_RECOUNT.format(sid='s.session_id')} FROM sessions s"
    )
    triggers = {
        "session_counts_new": (
            "AFTER INSERT ON sessions",
            "INSERT OR REPLACE INTO session_counts (session_id, commands, events, engines, tools, handlers)"
            f" VALUES (NEW.session_id, {SESSION_COUNTS_RECOUNT.format(sid='NEW.session_id')})",
        ),
        "session_counts_gone": (
            "AFTER DELETE ON sessions",
            "DELETE FROM session_counts WHERE session_id = OLD.session_id",
        ),
        "session_counts_event_in": (
            "AFTER INSERT ON events",
            "UPDATE session_counts SET events = events + 1 WHERE session_id = NEW.session_id",
        ),
        "session_counts_event_out": (
            "AFTER DELETE ON events",
            "UPDATE session_counts SET events = events - 1 WHERE session_id = OLD.session_id",
        ),
        "session_counts_command_in": (
            "AFTER INSERT ON commands",
            "UPDATE session_counts SET commands = commands + 1 WHERE session_id = NEW.session_id",
        ),
        "session_counts_command_out": (
            "AFTER DELETE ON commands",
            "UPDATE session_counts SET commands = commands - 1 WHERE session_id = OLD.session_id",
        ),
    }
    live = " AND status != 'stopped'"
    for table, extra, columns in (
        ("engines", live, "status, session_id"),
        ("tools", "", "session_id"),
        ("handlers", "", "session_id"),
    ):
        new, old = _recount(table, table, "NEW.session_id", extra), _recount(table, table, "OLD.session_id", extra)
        triggers[f"session_counts_{table}_in"] = (f"AFTER INSERT ON {table}", new)
        triggers[f"session_counts_{table}_out"] = (f"AFTER DELETE ON {table}", old)
        # An engine's status changes (stopped); a row could move to another session.
        triggers[f"session_counts_{table}_changed"] = (f"AFTER UPDATE OF {columns} ON {table}", f"{old}; {new}")
    # Events and commands never change session, but should one, the counts follow.
    for table, column in (("events", "events"), ("commands", "commands")):
        triggers[f"session_counts_{table}_moved"] = (
            f"AFTER UPDATE OF session_id ON {table}",
            f"UPDATE session_counts SET {column} = {column} - 1 WHERE session_id = OLD.session_id;"
            f" UPDATE session_counts SET {column} = {column} + 1 WHERE session_id = NEW.session_id",
        )
    for name, (when, body) in triggers.items():
        conn.execute(f"CREATE TRIGGER {name} {when} FOR EACH ROW BEGIN {body}; END")


@migration(60, "engine conversation memory")
def m060_engine_memory(conn: sqlite3.Connection) -> None:
    run_script(
        conn,
        """
        -- One row per conversation message of an LLM engine, ordered by message_id. API keys
        -- and provider settings are never stored here (nor anywhere in the database).
        CREATE TABLE engine_messages (
            message_id INTEGER PRIMARY KEY AUTOINCREMENT,
            engine_id TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'tool')),
            content TEXT NOT NULL DEFAULT '',
            tool_calls TEXT,
            tool_call_id TEXT,
            name TEXT,
            -- 1 for an answer cut short (cancelled, timed out): what had arrived.
            partial INTEGER NOT NULL DEFAULT 0,
            is_error INTEGER NOT NULL DEFAULT 0,
            command_id TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX engine_messages_engine ON engine_messages (engine_id, message_id);
        """,
    )
    # An engine's memory goes with it, however it is deleted (DELETE /api/engines/{id}, or its
    # session purged), without the engines code knowing about memory. (Not in run_script: the
    # trigger body contains a semicolon.)
    conn.execute(
        "CREATE TRIGGER engine_messages_gc AFTER DELETE ON engines BEGIN"
        " DELETE FROM engine_messages WHERE engine_id = OLD.engine_id; END"
    )


# -- 30-39: credentials (bus/auth.py) ----------------------------------------------------


@migration(30, "api keys and session tokens")
def m030_credentials(conn: sqlite3.Connection) -> None:
    # Only sha256 of each secret is stored (secrets are 256-bit random: no slow hash needed).
    # kind 'local' = the key llmgined mints for the local CLI; 'user' = `auth key create`.
    run_script(
        conn,
        """
        CREATE TABLE api_keys (
            key_id TEXT PRIMARY KEY,
            name TEXT,
            kind TEXT NOT NULL CHECK (kind IN ('user', 'local')),
            digest TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT,
            last_used_at TEXT,
            revoked_at TEXT
        );
        CREATE TABLE session_tokens (
            token_id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            digest TEXT NOT NULL,
            created_at TEXT NOT NULL,
            revoked_at TEXT
        );
        CREATE INDEX session_tokens_session ON session_tokens (session_id);
        """,
    )


# -- 110-119: MCP tool servers (bus/mcp_servers.py) ---------------------------------------


@migration(110, "mcp tool servers")
def m110_mcp_servers(conn: sqlite3.Connection) -> None:
    # scope: the session id, or '' for a global server. spec: the registration as JSON
    # (command, args, url, env, trusted, mounts, timeout); env values that name a secret
    # (secret:NAME) are resolved when the server starts, never stored resolved.
    run_script(
        conn,
        """
        CREATE TABLE mcp_servers (
            scope TEXT NOT NULL,
            name TEXT NOT NULL,
            spec TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (scope, name)
        );
        """,
    )


# -- 130-139: counts kept by the writes themselves ------------------------------------------


@migration(130, "session counts: events counted by their insert")
def m130_events_counted_by_insert(conn: sqlite3.Connection) -> None:
    # A row trigger ran one UPDATE of session_counts per event: 4 per DummyEngine command, a
    # third of a set-based batch's statements. bus/events.py now adds each statement's events
    # to the count in the same transaction, one UPDATE per session and statement. Deleting
    # and moving events still count through their triggers.
    conn.execute("DROP TRIGGER session_counts_event_in")


@migration(131, "session counts: commands counted by their insert")
def m131_commands_counted_by_insert(conn: sqlite3.Connection) -> None:
    # As m130 for events: bus/commands/records.py counts the commands it inserts (a batch of
    # 10,000 ran 10,000 trigger UPDATEs); deleting and moving commands still count by trigger.
    conn.execute("DROP TRIGGER session_counts_command_in")


# The bytes of a session's events (data and metadata as stored, UTF-8): the length of the text
# as a BLOB (``length`` of a TEXT counts characters, as m132 did: a "€" counted 1 of its 3
# bytes), as bus/events.py counts them: security.limits.max_event_bytes_per_session.
EVENT_BYTES = "COALESCE(length(CAST({row}.data AS BLOB)), 0) + COALESCE(length(CAST({row}.metadata AS BLOB)), 0)"


def event_bytes_of(size: str, sid: str) -> str:
    """The sum of ``size`` (EVENT_BYTES, or PostgreSQL's) over the events of session ``sid``."""
    return f"(SELECT COALESCE(SUM({size.format(row='e')}), 0) FROM events e WHERE e.session_id = {sid})"


def event_bytes_recount(size: str) -> str:
    return "UPDATE session_counts SET event_bytes = " + event_bytes_of(size, "session_counts.session_id")


def _count_event_bytes(conn: sqlite3.Connection) -> None:
    """Every session's event bytes recounted, and the triggers that count them out (and in,
    for a session made where events of its id already are) made with EVENT_BYTES."""
    conn.execute(event_bytes_recount(EVENT_BYTES))
    old, new = EVENT_BYTES.format(row="OLD"), EVENT_BYTES.format(row="NEW")
    # A session made where events of its id already are (none the bus writes) counts theirs.
    conn.execute("DROP TRIGGER session_counts_new")
    conn.execute(
        "CREATE TRIGGER session_counts_new AFTER INSERT ON sessions FOR EACH ROW BEGIN"
        " INSERT OR REPLACE INTO session_counts (session_id, commands, events, engines, tools, handlers, event_bytes)"
        f" VALUES (NEW.session_id, {SESSION_COUNTS_RECOUNT.format(sid='NEW.session_id')},"
        f" {event_bytes_of(EVENT_BYTES, 'NEW.session_id')}); END"
    )
    conn.execute("DROP TRIGGER session_counts_event_out")
    conn.execute(
        "CREATE TRIGGER session_counts_event_out AFTER DELETE ON events FOR EACH ROW BEGIN"
        f" UPDATE session_counts SET events = events - 1, event_bytes = event_bytes - ({old})"
        " WHERE session_id = OLD.session_id; END"
    )
    conn.execute("DROP TRIGGER session_counts_events_moved")
    conn.execute(
        "CREATE TRIGGER session_counts_events_moved AFTER UPDATE OF session_id ON events FOR EACH ROW BEGIN"
        f" UPDATE session_counts SET events = events - 1, event_bytes = event_bytes - ({old})"
        " WHERE session_id = OLD.session_id;"
        f" UPDATE session_counts SET events = events + 1, event_bytes = event_bytes + ({new})"
        " WHERE session_id = NEW.session_id; END"
    )


@migration(132, "session counts: the bytes of each session's events")
def m132_event_bytes(conn: sqlite3.Connection) -> None:
    # A session token could store events without bound (retention is off by default): their
    # bytes are counted by the statements that insert them (bus/events.py, in the UPDATE that
    # counts them, which also checks the cap) and by the triggers that delete and move them.
    conn.execute("ALTER TABLE session_counts ADD COLUMN event_bytes INTEGER NOT NULL DEFAULT 0")
    _count_event_bytes(conn)


@migration(133, "session counts: events' bytes in UTF-8, not characters")
def m133_event_bytes_in_utf8(conn: sqlite3.Connection) -> None:
    # m132 as first released counted characters (``length`` of a TEXT): a budget of N bytes
    # let up to 4N bytes of non-ASCII text in. Recounted, and counted in bytes from now on.
    _count_event_bytes(conn)


@migration(136, "sessions: active ones by name")
def m136_active_sessions_by_name(conn: sqlite3.Connection) -> None:
    # POST /api/sessions?if_exists=reuse|error (`session create --reuse`) looks up the active
    # session of a name in the create's transaction: a seek, not a scan of every session.
    conn.execute("CREATE INDEX sessions_active_name ON sessions (name) WHERE status = 'active'")


# The WHERE term of the partial index commands_session_unfinished (migration 137), word for word
# as a query must repeat it to use the index (SQLite matches the text; PostgreSQL proves it):
# bus/commands/records.py UNFINISHED. Released: never edit it; a new migration may replace it.
UNFINISHED_TERM = "status IN ('queued', 'blocked', 'executing', 'waiting_approval')"


@migration(137, "commands: the session/status index holds unfinished commands only")
def m137_unfinished_by_session(conn: sqlite3.Connection) -> None:
    # commands_session_status (m002) had an entry for every command, so every command dirtied
    # a page of it in its session's part of the tree: with commands in 16 sessions a commit
    # wrote ~21 of its ~111 pages there (bench/README.md), and the index was looked up only
    # for unfinished commands (the pending count, a session's running ones). Finished ones
    # (nearly all) are listed through commands_session; an eager command, stored finished,
    # never enters this one.
    run_script(
        conn,
        f"""
        DROP INDEX commands_session_status;
        CREATE INDEX commands_session_unfinished ON commands (session_id, status, priority)
            WHERE {UNFINISHED_TERM}
        """,
    )


@migration(138, "engines: the characters of their conversation rows")
def m138_engine_memory_chars(conn: sqlite3.Connection) -> None:
    # security.limits.max_engine_memory_per_session (engines/memory.py): every row an
    # engine keeps, dropped ones (kept for forks) too, counted by the writes that add and
    # delete them; the rows there are now counted once here.
    conn.execute("ALTER TABLE engines ADD COLUMN memory_chars INTEGER NOT NULL DEFAULT 0")
    conn.execute(
        "UPDATE engines SET memory_chars = (SELECT COALESCE(SUM(length(content) + COALESCE(length(tool_calls), 0)), 0)"
        " FROM engine_messages m WHERE m.engine_id = engines.engine_id)"
    )
