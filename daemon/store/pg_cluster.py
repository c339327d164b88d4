"""The PostgreSQL side of several daemons on one database: the schema and the statements
``bus/cluster_shared.py`` runs (session leases, node heartbeats, cancel requests).

Events: one global order, gap-free, on every node. A sequence (``BIGSERIAL``) is not enough:
sequence order is not commit order, so a reader resuming at seq N could skip an N-1 that
commits later. Here seq is allocated inside the writing transaction from one row,
``event_head`` (a BEFORE INSERT trigger: ``UPDATE event_head SET seq = seq + 1``): the row stays
locked until COMMIT, so transactions that write events commit in seq order, and a reader that
sees seq N sees every seq below it (the trigger also moves the column's own sequence to that
seq, so ``lastval()`` - the store's ``cursor.lastrowid`` - answers it). A statement trigger
sends ``NOTIFY llmgine_events`` with an empty payload; PostgreSQL folds identical notifications
of one transaction into one, so each group commit wakes every listening node once (each then
reads ``seq > its head``).

Leases: a ``session_leases`` row per session being run: the node that holds it, an expiry
(the database's clock, seconds since the epoch) and a fencing ``epoch`` bumped whenever the
lease changes hands. Only the holder starts the session's commands, and every write that starts
or finishes one checks, in its own transaction and with the row locked (FOR SHARE), that the
lease is still its own with the same epoch, so a node that lost its lease cannot write results.

The statements use ``?`` placeholders (the store's connection turns them into the driver's);
the DDL (dollar-quoted function bodies) is migrations 120-121 (store/cluster_migrations.py), run
on the raw connection by store/pg_schema.py.
"""

from __future__ import annotations

import time
from typing import Any

CHANNEL_EVENTS = "llmgine_events"  # payload '': new events committed
CHANNEL_WORK = "llmgine_work"  # payload: a session id with queued work
CHANNEL_CANCEL = "llmgine_cancel"  # payload: "reason:command_id" (cancel, session)
CHANNEL_REGISTRY = "llmgine_registry"  # payload '': engines or handlers changed (registry_changes)

# The database's clock, so that nodes with skewed clocks agree on when a lease expires.
NOW = "EXTRACT(EPOCH FROM clock_timestamp())::double precision"
# The key of the advisory locks of ``serialize`` (any constant of our own).
INSTALL_LOCK = 0x6C6C6D67696E65

DDL = """
CREATE TABLE IF NOT EXISTS event_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL);
INSERT INTO event_head (id, seq) SELECT 1, COALESCE(MAX(seq), 0) FROM events ON CONFLICT (id) DO NOTHING;
CREATE OR REPLACE FUNCTION llmgine_event_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE event_head SET seq = seq + 1 WHERE id = 1 RETURNING seq INTO NEW.seq;
  -- So lastval() (the store's cursor.lastrowid, last_insert_rowid()) is this seq.
  PERFORM setval(pg_get_serial_sequence('events', 'seq'), NEW.seq);
  RETURN NEW;
END $$;
CREATE OR REPLACE FUNCTION llmgine_event_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('llmgine_events', '');
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS llmgine_events_seq ON events;
CREATE TRIGGER llmgine_events_seq BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION llmgine_event_seq();
DROP TRIGGER IF EXISTS llmgine_events_notify ON events;
CREATE TRIGGER llmgine_events_notify AFTER INSERT ON events
  FOR EACH STATEMENT EXECUTE FUNCTION llmgine_event_notify();
DO $$ BEGIN
  IF to_regclass('sqlite_sequence') IS NULL THEN
    -- Where the bus reads the log's end (bus/streams.py), as on SQLite; survives purges.
    CREATE VIEW sqlite_sequence AS SELECT 'events'::text AS name, seq FROM event_head;
  END IF;
END $$;
CREATE TABLE IF NOT EXISTS cluster_nodes (
  node_id TEXT PRIMARY KEY,
  host TEXT NOT NULL,
  pid INTEGER NOT NULL,
  started_at TEXT NOT NULL,
  heartbeat DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS session_leases (
  session_id TEXT PRIMARY KEY,
  node_id TEXT NOT NULL,
  epoch BIGINT NOT NULL,
  expires DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS session_leases_node ON session_leases (node_id);
CREATE INDEX IF NOT EXISTS session_leases_expires ON session_leases (expires);
CREATE TABLE IF NOT EXISTS command_cancels (
  command_id TEXT PRIMARY KEY,
  session_id TEXT NOT NULL,
  reason TEXT NOT NULL,
  requested DOUBLE PRECISION NOT NULL
);
"""

# Registries (engines, user-code handlers) are kept in each node's memory for dispatch; every
# write that changes them adds a row here with the next ``version`` (taken from one locked row,
# as event seq: commit order is version order, so a node reading ``version > seen`` misses
# nothing) naming the scope it changed (a session id, NULL for the global handlers). The other
# nodes re-read that scope from the store (bus/cluster_shared.py). Rows older than an hour go.
REGISTRY_DDL = """
CREATE TABLE IF NOT EXISTS registry_head (id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL);
INSERT INTO registry_head (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS registry_changes (
  version BIGINT PRIMARY KEY,
  scope TEXT,
  changed DOUBLE PRECISION NOT NULL
);
"""
REGISTRY_KEEP_S = 3600

# Run first in every write transaction of a node (store/base.py ``first_statements``): a group
# commit holds many writes, so one transaction could lock a session's lease row and then wait
# for event_head (an event of another write) while another node's holds event_head and waits for
# that lease - a deadlock PostgreSQL breaks only after deadlock_timeout (1 s: seen as one command
# in eight taking a second on two nodes). Taking event_head first puts every lock after it.
# Holding it, the transaction counts its events' seqs in a transaction-local setting
# (``llmgine.seq``: the event trigger of migration 122 takes the next from it; a write rolled back
# to its savepoint gives its numbers back with it) and writes the head once, last
# (``SAVE_HEAD``, store/base.py ``last_statements``), instead of updating the row per event: a
# row updated N times in one transaction leaves a chain of N versions each update walks.
LOCK_FIRST = "SELECT set_config('llmgine.seq', seq::text, true) FROM event_head WHERE id = 1 FOR UPDATE"
SAVE_HEAD = (
    "UPDATE event_head SET seq = current_setting('llmgine.seq')::bigint"
    " WHERE id = 1 AND seq < current_setting('llmgine.seq')::bigint"
)

# Migration 122: the seq of an event inserted in a transaction that took LOCK_FIRST comes from
# ``llmgine.seq``; elsewhere (a statement outside a node's group commit) from the row, as before.
EVENT_SEQ_DDL = """
CREATE OR REPLACE FUNCTION llmgine_event_seq() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  head text := current_setting('llmgine.seq', true);
BEGIN
  IF head IS NULL OR head = '' THEN
    UPDATE event_head SET seq = seq + 1 WHERE id = 1 RETURNING seq INTO NEW.seq;
  ELSE
    NEW.seq := head::bigint + 1;
    PERFORM set_config('llmgine.seq', NEW.seq::text, true);
  END IF;
  -- So lastval() (the store's cursor.lastrowid, last_insert_rowid()) is this seq.
  PERFORM setval(pg_get_serial_sequence('events', 'seq'), NEW.seq);
  RETURN NEW;
END $$;
"""


def m120_cluster(conn: Any) -> None:
    """Migration 120 (store/cluster_migrations.py) on PostgreSQL: the tables and triggers above.
    Idempotent: a database whose nodes installed them at start (before 120) keeps its rows."""
    conn.execute(DDL)


def m121_registry_changes(conn: Any) -> None:
    """Migration 121 on PostgreSQL: the registry's change log (``registry_changed``)."""
    conn.execute(REGISTRY_DDL)


def m122_event_seq_in_transaction(conn: Any) -> None:
    """Migration 122 on PostgreSQL: event seqs counted in the transaction (``LOCK_FIRST``)."""
    conn.execute(EVENT_SEQ_DDL)


# -- nodes ---------------------------------------------------------------------------------


def clock_offset(conn: Any) -> float:
    """Seconds to add to this host's clock to read the database's (NOW), measured around one
    round trip (its midpoint: off by at most half of it)."""
    before = time.time()
    server = float(conn.execute(f"SELECT {NOW}").fetchone()[0])
    return server - (before + time.time()) / 2


def running_during_migration(conn: Any) -> str | None:
    """After this node applied migrations (``conn``: psycopg's own): the nodes heard from in
    the last 30 s, which ran the older code meanwhile, as a warning; None if none were."""
    rows = conn.execute(f"SELECT node_id, host, pid FROM cluster_nodes WHERE heartbeat >= {NOW} - 30").fetchall()
    if not rows:
        return None
    names = ", ".join(f"{node} ({host}, pid {pid})" for node, host, pid in rows)
    return (
        f"migrated the database while {len(rows)} node(s) ran on it: {names}; a node of this version"
        " or newer stops by itself within a second, an older one must be stopped by hand (README, Upgrades)"
    )


def heartbeat(conn: Any, node_id: str, host: str, pid: int, started_at: str, timeout: float) -> None:
    """This node is alive; nodes silent for ten lease timeouts are forgotten."""
    conn.execute(f"DELETE FROM cluster_nodes WHERE heartbeat < {NOW} - ?", (timeout * 10,))
    conn.execute(
        "INSERT INTO cluster_nodes (node_id, host, pid, started_at, heartbeat)"
        f" VALUES (?, ?, ?, ?, {NOW}) ON CONFLICT (node_id) DO UPDATE SET heartbeat = EXCLUDED.heartbeat",
        (node_id, host, pid, started_at),
    )


def leave(conn: Any, node_id: str) -> None:
    """A clean shutdown: the node's leases and row go (queued work is taken by the others)."""
    conn.execute("DELETE FROM session_leases WHERE node_id = ?", (node_id,))
    conn.execute("DELETE FROM cluster_nodes WHERE node_id = ?", (node_id,))


def node_process(conn: Any, node_id: str) -> tuple[str, int] | None:
    """(host, pid) a node last reported, or None if it is not (or no longer) known."""
    row = conn.execute("SELECT host, pid FROM cluster_nodes WHERE node_id = ?", (node_id,)).fetchone()
    return (str(row[0]), int(row[1])) if row is not None else None


def forget(conn: Any, node_id: str) -> list[str]:
    """A node known to be dead: its leases expire now (whoever takes its sessions over next
    interrupts what it was executing) and its row goes. Returns the sessions it held."""
    rows = conn.execute(
        f"UPDATE session_leases SET expires = {NOW} - 1 WHERE node_id = ? RETURNING session_id", (node_id,)
    ).fetchall()
    conn.execute("DELETE FROM cluster_nodes WHERE node_id = ?", (node_id,))
    return [str(r[0]) for r in rows]


def live_nodes(conn: Any, timeout: float) -> list[tuple[Any, ...]]:
    """(node_id, host, pid, started_at, heartbeat as epoch seconds, leases held) of every node
    heard from within ``timeout``."""
    return list(
        conn.execute(
            "SELECT n.node_id, n.host, n.pid, n.started_at, n.heartbeat,"
            " (SELECT COUNT(*) FROM session_leases l WHERE l.node_id = n.node_id)"
            f" FROM cluster_nodes n WHERE n.heartbeat >= {NOW} - ? ORDER BY n.started_at",
            (timeout,),
        ).fetchall()
    )


# -- leases --------------------------------------------------------------------------------


def acquire(
    conn: Any, session_id: str, node_id: str, timeout: float, *, take_expired: bool = True
) -> tuple[int, str] | None:
    """Take or renew the session's lease: (epoch, how) - ``held`` (it was this node's already),
    ``free`` (nobody held it) or ``expired`` (taken over from a node whose lease had expired,
    unless ``take_expired`` is false) - or None while another node holds it."""
    row = conn.execute(
        f"SELECT node_id, epoch, expires < {NOW} FROM session_leases WHERE session_id = ? FOR UPDATE",
        (session_id,),
    ).fetchone()
    if row is None:
        got = conn.execute(
            f"INSERT INTO session_leases (session_id, node_id, epoch, expires) VALUES (?, ?, 1, {NOW} + ?)"
            " ON CONFLICT (session_id) DO NOTHING RETURNING epoch",
            (session_id, node_id, timeout),
        ).fetchone()
        return (int(got[0]), "free") if got is not None else None
    holder, epoch, expired = row
    if holder == node_id:
        conn.execute(f"UPDATE session_leases SET expires = {NOW} + ? WHERE session_id = ?", (timeout, session_id))
        return int(epoch), "held"
    if not expired or not take_expired:
        return None
    conn.execute(
        f"UPDATE session_leases SET node_id = ?, epoch = ?, expires = {NOW} + ? WHERE session_id = ?",
        (node_id, epoch + 1, timeout, session_id),
    )
    return int(epoch) + 1, "expired"


def fence(conn: Any, session_id: str, node_id: str, epoch: int) -> bool:
    """True if the lease is still this node's, at ``epoch``; the row stays locked (shared) until
    the caller's transaction ends, so nobody takes it over before this write commits."""
    row = conn.execute(
        "SELECT 1 FROM session_leases WHERE session_id = ? AND node_id = ? AND epoch = ? FOR SHARE",
        (session_id, node_id, epoch),
    ).fetchone()
    return row is not None


def busy(conn: Any, session_id: str) -> bool:
    """Has the session queued or executing commands in the store?"""
    row = conn.execute(
        "SELECT 1 FROM commands WHERE session_id = ? AND status IN ('queued', 'executing') LIMIT 1", (session_id,)
    ).fetchone()
    return row is not None


def renew(conn: Any, node_id: str, timeout: float) -> dict[str, int]:
    """Push back the expiry of every lease this node holds; returns them (session -> epoch)."""
    rows = conn.execute(
        f"UPDATE session_leases SET expires = {NOW} + ? WHERE node_id = ? RETURNING session_id, epoch",
        (timeout, node_id),
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


def release(conn: Any, session_id: str, node_id: str, epoch: int) -> bool:
    """Give an idle session's lease up, unless work was queued for it meanwhile (then the
    caller keeps it and runs that work). True if released."""
    cur = conn.execute(
        "DELETE FROM session_leases WHERE session_id = ? AND node_id = ? AND epoch = ? AND NOT EXISTS"
        " (SELECT 1 FROM commands WHERE session_id = ? AND status IN ('queued', 'executing'))",
        (session_id, node_id, epoch, session_id),
    )
    return bool(cur.rowcount)


def orphans(conn: Any, limit: int, *, expired: bool = True) -> list[str]:
    """Sessions nobody runs that need a node: a lease that expired (its node died or stalled),
    or queued, executing or waiting (for an approval) commands and no lease at all (a node
    that stopped gave its leases back). Leases another node is taking over
    right now are skipped (SKIP LOCKED). ``expired`` false: only those without a lease."""
    lapsed = (
        conn.execute(
            f"SELECT session_id FROM session_leases WHERE expires < {NOW} LIMIT ? FOR UPDATE SKIP LOCKED",
            (limit,),
        ).fetchall()
        if expired
        else []
    )
    unleased = conn.execute(
        "SELECT DISTINCT c.session_id FROM commands c WHERE c.status IN ('queued', 'executing', 'waiting_approval')"
        " AND NOT EXISTS (SELECT 1 FROM session_leases l WHERE l.session_id = c.session_id) LIMIT ?",
        (limit,),
    ).fetchall()
    return [r[0] for r in lapsed] + [r[0] for r in unleased]


def log_head(conn: Any) -> int:
    """The last committed seq: ``event_head`` is written in the transaction of the events it
    counts (a sequence's value is not: it includes transactions not yet committed)."""
    row = conn.execute("SELECT seq FROM event_head WHERE id = 1").fetchone()
    return int(row[0]) if row is not None else 0


def notify(conn: Any, channel: str, payload: str) -> None:
    """Sent when the caller's transaction commits (and only then)."""
    conn.execute("SELECT pg_notify(?, ?)", (channel, payload))


def serialize(conn: Any, name: str) -> None:
    """Make the rest of the caller's transaction run one at a time across every node, for all
    callers passing ``name`` (a transaction-scoped advisory lock)."""
    conn.execute("SELECT pg_advisory_xact_lock(?::integer, hashtext(?))", (INSTALL_LOCK & 0x7FFFFFFF, name))


# -- registries ----------------------------------------------------------------------------


def registry_changed(conn: Any, scope: str | None) -> None:
    """Inside a write that changes engines or handlers of ``scope``: log it, wake the others."""
    version = conn.execute("UPDATE registry_head SET version = version + 1 WHERE id = 1 RETURNING version").fetchone()
    conn.execute(
        f"INSERT INTO registry_changes (version, scope, changed) VALUES (?, ?, {NOW})", (int(version[0]), scope)
    )
    notify(conn, CHANNEL_REGISTRY, "")


def registry_head(conn: Any) -> int:
    """The last committed registry version."""
    row = conn.execute("SELECT version FROM registry_head WHERE id = 1").fetchone()
    return int(row[0]) if row is not None else 0


def prune_registry_changes(conn: Any) -> None:
    conn.execute(f"DELETE FROM registry_changes WHERE changed < {NOW} - ?", (REGISTRY_KEEP_S,))


def registry_changes(conn: Any, since: int) -> list[tuple[int, str | None]]:
    """(version, scope) of the changes after ``since``, in order. Versions are dense (a write
    rolled back gives its number back), so a first version above ``since + 1`` means the ones
    between were pruned: the caller then re-reads everything."""
    rows = conn.execute(
        "SELECT version, scope FROM registry_changes WHERE version > ? ORDER BY version", (since,)
    ).fetchall()
    return [(int(r[0]), r[1]) for r in rows]


# -- cancels -------------------------------------------------------------------------------

# The statuses of a command its node runs: a task there, which only that node can cancel.
RUNNING = "('executing', 'waiting_approval')"


def request_cancel(conn: Any, session_id: str, command_id: str | None, reason: str) -> int:
    """Ask the node running ``command_id`` (None: every executing command of the session) to
    cancel it; recorded too, as its node re-reads pending requests in case the notification
    is lost. Returns how many running commands were asked (executing, or waiting there for an
    approval's decision)."""
    if command_id is None:
        rows = conn.execute(
            f"SELECT command_id FROM commands WHERE session_id = ? AND status IN {RUNNING}", (session_id,)
        ).fetchall()
    else:
        rows = conn.execute(
            f"SELECT command_id FROM commands WHERE command_id = ? AND session_id = ? AND status IN {RUNNING}",
            (command_id, session_id),
        ).fetchall()
    for (cid,) in rows:
        conn.execute(
            f"INSERT INTO command_cancels (command_id, session_id, reason, requested) VALUES (?, ?, ?, {NOW})"
            " ON CONFLICT (command_id) DO NOTHING",
            (cid, session_id, reason),
        )
        notify(conn, CHANNEL_CANCEL, f"{reason}:{cid}")
    return len(rows)


def void_cancels(conn: Any, command_id: str) -> None:
    """The command runs again (a manual retry, the same id): the requests made for its last run
    are forgotten, or its node would apply them to this run at its next tick."""
    conn.execute("DELETE FROM command_cancels WHERE command_id = ?", (command_id,))


def pending_cancels(conn: Any, node_id: str) -> list[tuple[str, str]]:
    """(command id, reason) of cancel requests for sessions this node holds; old ones go."""
    conn.execute(f"DELETE FROM command_cancels WHERE requested < {NOW} - 3600")
    rows = conn.execute(
        "SELECT c.command_id, c.reason FROM command_cancels c JOIN session_leases l ON l.session_id = c.session_id"
        " WHERE l.node_id = ?",
        (node_id,),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]
