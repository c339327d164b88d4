"""llmgined on PostgreSQL as an operator runs it: the password of ``database.url`` wherever it
is given (a libpq keyword/value string, a ``password=`` parameter, the ``--database-url`` flag)
never shows in a message or in ``ps``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.clitools import (
    cleanup_home,
    free_port,
    run_cli,
    short_home,
    start_daemon,
    stop_process,
)
from tests.e2e.test_postgres import start_failure
from tests.eventually import eventually_blocking
from tests.postgres import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.own_database(reason="makes its own PostgreSQL databases")]

SECRET = "op-secret-7c2e"  # noqa: S105 - not a real one; the tests look for it


@pytest.fixture
def home(cli_home: Path) -> Path:
    return cli_home


def refused(home: Path, url: str) -> tuple[int, str]:
    """llmgined given ``url``, which it must refuse before connecting: (exit code, the line)."""
    return start_failure(home, url, SECRET)


def test_a_libpq_keyword_string_is_refused_without_its_password(home: Path) -> None:
    # libpq's other form of a connection string, as an operator may paste it from elsewhere.
    code, line = refused(home, f"host=db.internal port=5432 user=llmgine password={SECRET} dbname=llmgine")
    assert code == 2, line
    assert "password=********" in line and "postgresql://USER@HOST:PORT/DB" in line, line
    code, line = refused(home, f"host=db user=u password='{SECRET} x' dbname=d")
    assert code == 2 and "********" in line, line


def test_a_password_parameter_of_the_url_is_not_shown(home: Path) -> None:
    code, line = refused(home, f"postgresql://u@127.0.0.1:notaport/db?sslmode=require&password={SECRET}")
    assert code == 2 and "port is not a number" in line and "password=********" in line, line
    assert "sslmode=require" in line, line


def test_a_password_given_with_the_flag_is_not_on_the_command_line(home: Path, pg_url: str) -> None:
    # ``ps`` shows every user every process's arguments: a password in --database-url stayed
    # there for the daemon's life. The daemon takes it into its environment (readable by its
    # user only) and runs itself again without it, the same process.
    d = start_daemon(home, "--database-url", pg_url, env={"DATABASE_URL": None})
    try:
        status = json.loads(run_cli(["status", "-o", "json"], d.env).stdout)
        assert status["storage"]["backend"] == "postgresql", status
        cmdline = Path(f"/proc/{d.proc.pid}/cmdline").read_bytes().decode()
        assert PASSWORD not in cmdline and "--database-url" not in cmdline, cmdline
        assert "llmgine_daemon" in cmdline, cmdline
    finally:
        stop_process(d.proc)
    assert d.proc.returncode == 0
    assert PASSWORD not in (home / "daemon-under-test.log").read_text()


def test_the_flag_abbreviated_is_taken_off_the_command_line_too(home: Path) -> None:
    # argparse takes any unique prefix of --database-url, down to --d; that one was left on the
    # command line, so the daemon ran itself again, found the password again, and so on for
    # ever (the same pid, at 100% CPU). Here nothing listens at the URL: it must say so.
    port = free_port()
    for flag in ("--d", "--datab", "--database-url"):
        url = f"postgresql://u:{SECRET}@127.0.0.1:{port}/db"
        code, line = start_failure(home, url, SECRET, flag=flag)
        assert code == 1 and f"127.0.0.1:{port}" in line, (flag, line)


def test_a_running_node_stops_when_a_newer_llmgined_migrates_the_database(home: Path, pg_url: str) -> None:
    # Upgrades need every node stopped first (README, "Running several nodes"), but an old node
    # still running went on writing with the old statements under the new schema. It now sees
    # the migration it does not know within a second and stops, saying why (exit 1); started
    # again it is refused (test_postgres.py), until it is upgraded.
    import psycopg

    d = start_daemon(home, env={"DATABASE_URL": pg_url, "LLMGINE_LEASE_TIMEOUT": "3"})
    try:
        with psycopg.connect(pg_url) as conn:  # one transaction, as a migration is
            conn.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, 'future', 'now')")
            # Which may change what the old node's statements use (its tick's heartbeat here).
            conn.execute("ALTER TABLE cluster_nodes RENAME COLUMN heartbeat TO last_seen")
        code = d.proc.wait(timeout=60)
    finally:
        stop_process(d.proc)
    log = (home / "daemon-under-test.log").read_text()
    assert code == 1, log
    assert "Traceback" not in log, log
    last = log.strip().splitlines()[-1]
    assert last.startswith("llmgined: stopped:") and "9999" in last and "upgrade" in last, last


def test_a_statement_the_server_is_still_running_is_not_cut_as_a_frozen_server(home: Path, pg_url: str) -> None:
    # The watchdog cut any statement unanswered for busy_timeout + 15 s as a frozen server: a
    # write the server was still working on (a very large event, a slow disk, a trigger) was a
    # 503 "not reachable", and its backend went on holding the event log's lock, so every
    # write after it failed with a lock timeout until it ended. The server is now asked first:
    # a statement its backend is still running is left to finish. Here a trigger of the
    # operator's makes one insert take 18 s.
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.event_type = 'Slow' THEN PERFORM pg_sleep(18); END IF; RETURN NEW; END $$"
        )
        conn.execute("CREATE TRIGGER slow_insert BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION slow_insert()")
    d = start_daemon(home, env={"DATABASE_URL": pg_url, "LLMGINE_DB_BUSY_TIMEOUT": "1"})
    try:
        sid = json.loads(run_cli(["session", "create", "-o", "json"], d.env).stdout)["session_id"]
        out = run_cli(["event", "publish", "Slow", "-S", sid, "-q"], d.env)
        assert out.returncode == 0, out.stdout + out.stderr
        out = run_cli(["event", "publish", "Fast", "-S", sid, "-q"], d.env)
        assert out.returncode == 0, out.stdout + out.stderr
    finally:
        stop_process(d.proc)
    log = (home / "daemon-under-test.log").read_text()
    assert "has not answered" not in log and "Traceback" not in log, log[-3000:]


def test_the_listen_connection_outlives_the_servers_idle_session_timeout(home: Path, pg_url: str) -> None:
    # Managed servers often end idle sessions (idle_session_timeout, PostgreSQL 14+). The
    # cluster's LISTEN connection is idle by design: it was ended at every timeout, a warning
    # each time and notifications missed until it was made again. It now opts out for itself.
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        if conn.info.server_version < 140000:
            pytest.skip("idle_session_timeout is PostgreSQL 14's")
    url = pg_url + "?options=-c%20idle_session_timeout%3D500"
    d = start_daemon(home, env={"DATABASE_URL": url})
    try:
        listening = "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%%' AND datname = current_database()"
        with psycopg.connect(pg_url, autocommit=True) as conn:
            before = eventually_blocking(lambda: conn.execute(listening).fetchall(), timeout=30)
            time.sleep(1.5)  # three idle timeouts
            assert conn.execute(listening).fetchall() == before
        assert json.loads(run_cli(["session", "create", "-o", "json"], d.env).stdout)["session_id"]
    finally:
        stop_process(d.proc)
    assert "LISTEN connection lost" not in (home / "daemon-under-test.log").read_text()


def test_a_node_that_migrates_names_the_nodes_that_were_running(home: Path, pg_url: str) -> None:
    # The other side of an upgrade with a node left running: the new node's log said only
    # "applied migrations [...]". It now names the nodes heard from meanwhile. (A migration
    # this code already has is made to look new by forgetting its record: 122 is idempotent.)
    import psycopg

    other = short_home()
    a = start_daemon(home, env={"DATABASE_URL": pg_url})
    try:
        node_a = json.loads(run_cli(["status", "-o", "json"], a.env).stdout)["cluster"]["node_id"]
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("DELETE FROM schema_migrations WHERE version = 122")
        b = start_daemon(other, env={"DATABASE_URL": pg_url})
        stop_process(b.proc)
    finally:
        stop_process(a.proc)
        log = (other / "daemon-under-test.log").read_text()
        cleanup_home(other)
    assert "applied migrations [122]" in log, log
    line = next((ln for ln in log.splitlines() if "node(s) ran on it" in ln), log)
    assert node_a in line and "WARNING" in line and "stopped by hand" in line, line
