"""llmgined on PostgreSQL, as a real process: start-up failures are one line naming the host and
the reason (never the password), and a daemon on a database works through the real CLI.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.clitools import (
    Daemon,
    cleanup_home,
    cli_env,
    free_port,
    full_env,
    no_traceback,
    one_line,
    run_cli,
    short_home,
    start_daemon,
    stop_process,
)
from tests.eventually import eventually_blocking
from tests.postgres import PASSWORD, PgServer, with_database

pytestmark = [pytest.mark.e2e, pytest.mark.own_database(reason="makes its own PostgreSQL databases")]


@pytest.fixture
def home(cli_home: Path) -> Path:
    return cli_home


def start_failure(home: Path, url: str, secret: str = PASSWORD, *, flag: str | None = None) -> tuple[int, str]:
    """llmgined with DATABASE_URL=url (or ``flag`` url), which must not start, nor show
    ``secret``: (exit code, the line it said)."""
    given = [flag, url] if flag is not None else []
    proc = subprocess.run(
        [sys.executable, "-m", "llmgine_daemon", "--no-socket", "--port", str(free_port()), *given],
        env=full_env(cli_env(home, DATABASE_URL=None if flag is not None else url)),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode != 0, proc.stderr
    assert secret not in proc.stderr + proc.stdout, proc.stderr
    return proc.returncode, one_line(proc.stderr)


def test_unreachable_server_is_one_line_naming_the_host(home: Path) -> None:
    # The port is held bound and not listening, so connections to it are refused: a port that
    # was merely free could be taken meanwhile by another test's server (a frozen one, in a CI
    # run: "connection timeout expired" instead of refused).
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        _, line = start_failure(home, f"postgresql://llmgine_test:{PASSWORD}@127.0.0.1:{port}/llmgine")
    assert f"127.0.0.1:{port}" in line and "refused" in line.lower(), line


def test_wrong_password_and_missing_database(home: Path, pg_server: PgServer, pg_url: str) -> None:
    if pg_server.proc is None:
        pytest.skip("an existing server (LLMGINE_TEST_DATABASE_URL) has its own authentication")
    parts = urlsplit(pg_url)
    wrong = pg_url.replace(f":{PASSWORD}@", ":not-the-password@")
    _, line = start_failure(home, wrong)
    assert f"{parts.hostname}:{parts.port}" in line and "password authentication failed" in line, line
    assert "not-the-password" not in line
    _, line = start_failure(home, with_database(pg_url, "no_such_database"))
    assert 'database "no_such_database" does not exist' in line, line


def test_a_malformed_url_is_a_configuration_error(home: Path) -> None:
    _, line = start_failure(home, f"postgresql://u:{PASSWORD}@127.0.0.1:notaport/db")
    assert "port is not a number" in line and "********" in line, line


@pytest.fixture
def pg_daemon(home: Path, pg_url: str) -> Iterator[Daemon]:
    d = start_daemon(home, env={"DATABASE_URL": pg_url})
    yield d
    stop_process(d.proc)


def cli_json(d: Daemon, *args: str) -> dict:
    out = run_cli([*args, "-o", "json"], d.env)
    no_traceback(out.stderr)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_daemon_on_postgresql_status_stats_and_a_restart(home: Path, pg_url: str, pg_daemon: Daemon) -> None:
    status = cli_json(pg_daemon, "status")
    assert status["storage"]["backend"] == "postgresql"
    assert PASSWORD not in json.dumps(status)
    assert status["storage"]["path"].endswith(urlsplit(pg_url).path)
    session = cli_json(pg_daemon, "session", "create", "--name", "on-pg")
    sid = session["session_id"]
    out = run_cli(["event", "publish", "Tick", "-S", sid, "--data", '{"i": 1}', "-q"], pg_daemon.env)
    assert out.returncode == 0, out.stderr
    stats = cli_json(pg_daemon, "db", "stats")
    assert stats["backend"] == "postgresql" and stats["size_bytes"] > 0
    tables = {t["name"]: t for t in stats["tables"]}
    assert tables["sessions"]["rows"] == 1 and tables["spans"]["database"] == "telemetry"
    # The table's header: the database's size; no SQLite pages, no empty telemetry file.
    out = run_cli(["db", "stats"], pg_daemon.env)
    assert out.returncode == 0 and "sessions" in out.stdout, out.stderr
    header = out.stderr.strip()
    assert header.startswith("postgresql://") and "logs and spans in the same database" in header, header
    assert "page" not in header and "()" not in header and PASSWORD not in header, header
    # Everything is in the database, not the home: a new daemon (another home) sees it.
    stop_process(pg_daemon.proc)
    other = short_home()
    try:
        d2 = start_daemon(other, env={"DATABASE_URL": pg_url})
        try:
            assert cli_json(d2, "session", "get", sid)["name"] == "on-pg"
        finally:
            stop_process(d2.proc)
    finally:
        cleanup_home(other)


def test_a_database_migrated_by_newer_code_is_refused(home: Path, pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, 'future', 'now')")
    _, line = start_failure(home, pg_url)
    assert "newer than this llmgined" in line and "9999" in line, line


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("llmgine", timeout=60)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def call(d: Daemon, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request to the daemon's Unix socket: (status, decoded body)."""
    conn = _UnixHTTP(d.socket_url.removeprefix("unix://"))
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def set_connections(pg_server: PgServer, pg_url: str, allow: bool) -> None:
    """Open or close ``pg_url``'s database to new connections; closing ends those it has (the
    server going down, as the daemon sees it, without stopping the tests' shared server)."""
    import psycopg

    name = urlsplit(pg_url).path.lstrip("/")
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}')  # type: ignore[arg-type]
        if not allow:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))


def test_the_database_unreachable_under_the_daemon_is_503_then_it_reconnects(
    pg_server: PgServer, pg_url: str, pg_daemon: Daemon
) -> None:
    # The server restarting or refusing connections (here: the database closed to new
    # connections and the daemon's own ones ended): a write or read made a new connection,
    # failed to, and was answered 500 INTERNAL_ERROR "storage error"; a request to try again
    # later is 503, as for a connection lost in the middle of a write.
    import psycopg

    name = urlsplit(pg_url).path.lstrip("/")

    def allow_connections(allow: bool) -> None:
        set_connections(pg_server, pg_url, allow)

    def end_connections(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))

    status, session = call(pg_daemon, "POST", "/api/sessions", {})
    assert status == 201
    sid = session["session_id"]
    status, before = call(pg_daemon, "POST", f"/api/sessions/{sid}/events", {"event_type": "Before"})
    assert status == 201
    allow_connections(False)
    try:
        # The first finds its connection gone; the next ones try to make a new one.
        for method, path, body in [
            ("POST", f"/api/sessions/{sid}/events", {"event_type": "While"}),
            ("GET", f"/api/sessions/{sid}/events", None),
        ] * 3:
            status, answer = call(pg_daemon, method, path, body)
            assert status == 503 and answer["error"]["code"] == "STORAGE_BUSY", (method, status, answer)
            assert "not reachable" in answer["error"]["message"], answer  # not "locked by another process"
        # Health said "healthy" throughout: a load balancer or monitor saw nothing wrong.
        assert call(pg_daemon, "GET", "/api/health")[1]["status"] == "degraded"
    finally:
        allow_connections(True)
    status, after = call(pg_daemon, "POST", f"/api/sessions/{sid}/events", {"event_type": "After"})
    assert status == 201, after
    assert call(pg_daemon, "GET", "/api/health")[1]["status"] == "healthy"
    # A restart between two requests (the daemon's connections ended, new ones welcome): a
    # read on an idle connection the server ended was a 503; it is tried on a new one.
    assert call(pg_daemon, "GET", f"/api/sessions/{sid}")[0] == 200  # a reader connection, idle now
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        end_connections(conn)
    for _ in range(3):
        status, page = call(pg_daemon, "GET", f"/api/sessions/{sid}/events")
        assert status == 200, page
        mine = [e["event_id"] for e in page["events"] if e["event_type"] in ("Before", "While", "After")]
        assert mine == [before["event_id"], after["event_id"]]


def test_a_database_outage_is_logged_in_lines_not_tracebacks(
    home: Path, pg_server: PgServer, pg_url: str, pg_daemon: Daemon
) -> None:
    # The database down under the daemon is an outage, not a bug: the cluster's tick (every
    # second) and the last telemetry flush at the stop each logged a whole traceback.
    status, session = call(pg_daemon, "POST", "/api/sessions", {})
    sid = session["session_id"]
    # The background loops that read the database on their own: a schedule's, a webhook's.
    assert call(pg_daemon, "POST", "/api/engines", {"engine_type": "DummyEngine", "session_id": sid})[0] == 201
    every = {"session_id": sid, "command": {"command_type": "DummyEngineCommand"}, "every": 1}
    assert call(pg_daemon, "POST", "/api/schedules", every)[0] == 201
    assert call(pg_daemon, "POST", "/api/webhooks", {"url": "http://127.0.0.1:9/hook"})[0] == 201
    log = home / "daemon-under-test.log"
    set_connections(pg_server, pg_url, False)
    try:
        for line in ("cluster: tick failed", "scheduler round failed"):
            eventually_blocking(lambda line=line: line in log.read_text(), timeout=30)
        assert call(pg_daemon, "POST", "/api/sessions", {})[0] == 503  # something to flush
        stop_process(pg_daemon.proc)
    finally:
        set_connections(pg_server, pg_url, True)
    assert pg_daemon.proc.returncode == 0
    text = log.read_text()
    assert "cannot connect to PostgreSQL" in text and "Traceback" not in text, text[-3000:]


def test_the_first_write_after_a_server_restart_is_not_a_503(home: Path) -> None:
    # PostgreSQL restarted under a running daemon (pg_ctl restart, a failover): the writer's
    # connection is dead, which it finds out at its next BEGIN. That write was answered 503
    # although nothing of it could have committed; it is now tried once on a new connection.
    # (Reads already were.) A server of its own: restarting the shared one ends other tests'.
    server = PgServer.start()
    try:
        if server.proc is None:
            pytest.skip("an existing server (LLMGINE_TEST_DATABASE_URL) is not restarted by the tests")
        d = start_daemon(home, env={"DATABASE_URL": server.new_database()})
        try:
            status, session = call(d, "POST", "/api/sessions", {})
            assert status == 201, session
            sid = session["session_id"]
            assert call(d, "POST", "/api/engines", {"engine_type": "DummyEngine", "session_id": sid})[0] == 201
            server.restart()
            status, event = call(d, "POST", f"/api/sessions/{sid}/events", {"event_type": "AfterRestart"})
            assert status == 201, event
            server.restart()
            body = {"command_type": "DummyEngineCommand", "parameters": {"prompt": "hi"}}
            status, cmd = call(d, "POST", f"/api/sessions/{sid}/commands?wait=10", body)
            assert status in (200, 201, 202), cmd
            page = call(d, "GET", f"/api/sessions/{sid}/events")[1]
            assert [e["event_id"] for e in page["events"] if e["event_type"] == "AfterRestart"] == [event["event_id"]]
        finally:
            stop_process(d.proc)
        assert d.proc.returncode == 0
        # The LISTEN connection's loss is one line: libpq's first, not its hint after "\n\t".
        lost = [line for line in (home / "daemon-under-test.log").read_text().splitlines() if "LISTEN" in line]
        assert lost and all("\\n" not in line for line in lost), lost
    finally:
        server.stop()


class _CommitCutter:
    """A TCP proxy in front of PostgreSQL that, once, lets through the COMMIT of the connection
    that sent ``marker`` and then ends that connection when the server answers it: the reply
    never reaches the daemon, as when the network or the server goes at that moment."""

    def __init__(self, target: tuple[str, int], marker: bytes) -> None:
        self.target, self.marker, self.cut = target, marker, threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            state = {"marked": False, "committing": False}
            threading.Thread(target=self._up, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, state), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, state: dict[str, bool]) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if not self.cut.is_set():
                    state["marked"] = state["marked"] or self.marker in data
                    state["committing"] = state["marked"] and b"COMMIT\x00" in data
                server.sendall(data)
        server.close()

    def _down(self, server: socket.socket, client: socket.socket, state: dict[str, bool]) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if state["committing"] and not self.cut.is_set():
                    self.cut.set()
                    break
                client.sendall(data)
        for sock in (client, server):  # shutdown, not only close: the other thread is in recv
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.sock.close()


def test_a_connection_lost_during_commit_asks_the_server_whether_it_committed(
    home: Path, pg_server: PgServer, pg_url: str
) -> None:
    # The COMMIT reached the server and committed; its answer was lost with the connection. The
    # write was answered 503, so a client tried again and had it twice. The daemon now asks the
    # server on a new connection (txid_status) and answers what happened: 201, stored once.
    parts = urlsplit(pg_url)
    proxy = _CommitCutter((parts.hostname or "127.0.0.1", parts.port or 5432), b"CutMyCommit")
    try:
        url = pg_url.replace(f"@{parts.hostname}:{parts.port}/", f"@127.0.0.1:{proxy.port}/")
        d = start_daemon(home, env={"DATABASE_URL": url})
        try:
            sid = call(d, "POST", "/api/sessions", {})[1]["session_id"]
            status, event = call(d, "POST", f"/api/sessions/{sid}/events", {"event_type": "CutMyCommit"})
            assert proxy.cut.is_set()
            assert status == 201, event
            page = call(d, "GET", f"/api/sessions/{sid}/events")[1]
            assert [e["event_id"] for e in page["events"] if e["event_type"] == "CutMyCommit"] == [event["event_id"]]
            assert call(d, "POST", f"/api/sessions/{sid}/events", {"event_type": "Next"})[0] == 201
        finally:
            stop_process(d.proc)
        assert "the transaction was committed" in (home / "daemon-under-test.log").read_text()
    finally:
        proxy.close()


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (PostgreSQL's backends are the postmaster's children, each in
    a session of its own: a process group signal does not reach them)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(entry.name))
    return [pid, *(p for kid in kids for p in _process_tree(kid))]


def test_a_write_to_a_server_that_stopped_answering_is_a_503_not_a_hang(home: Path) -> None:
    # A server that stops answering without closing its connections (frozen, its disk hung, a
    # network that drops packets): its kernel still takes the bytes, so nothing fails. The
    # writer waited for the COMMIT's answer for ever: no answer to that write nor to any later
    # one, nor a read on the connection, nor a stop. Past busy_timeout + 15 s without an answer
    # the connection is cut: 503, and the daemon stops when told.
    server = PgServer.start()
    frozen: list[int] = []
    try:
        if server.proc is None:
            pytest.skip("an existing server (LLMGINE_TEST_DATABASE_URL) is not stopped by the tests")
        url = server.new_database()
        # The watchdog asks a new connection whether the server still runs the statement
        # before it cuts: with the URL's 2 s connect timeout (not 10) that asking gives up sooner.
        quick = url + ("&" if "?" in url else "?") + "connect_timeout=2"
        d = start_daemon(home, env={"DATABASE_URL": quick, "LLMGINE_DB_BUSY_TIMEOUT": "1"})
        try:
            status, session = call(d, "POST", "/api/sessions", {})
            assert status == 201, session
            frozen = _process_tree(server.proc.pid)
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            conn = _UnixHTTP(d.socket_url.removeprefix("unix://"))
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(90)  # no answer at all (before): a TimeoutError, not a hung test
            try:
                body = json.dumps({"event_type": "X"})
                path = f"/api/sessions/{session['session_id']}/events"
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                status, answer = resp.status, json.loads(resp.read())
            finally:
                conn.close()
            assert status == 503 and answer["error"]["code"] == "STORAGE_BUSY", answer
            # A read too (it waited for ever on its connection), and a stop: the daemon exits.
            status, answer = call(d, "GET", f"/api/sessions/{session['session_id']}")
            assert status == 503, answer
            d.proc.send_signal(signal.SIGTERM)
            assert d.proc.wait(timeout=120) == 0
        finally:
            for pid in frozen:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGCONT)
            stop_process(d.proc)
        log = (home / "daemon-under-test.log").read_text()
        assert "the database has not answered for" in log and "Traceback" not in log, log[-3000:]
        # The server answers again: so does a new daemon, with what was stored before.
        d = start_daemon(home, env={"DATABASE_URL": url})
        try:
            assert call(d, "GET", f"/api/sessions/{session['session_id']}")[0] == 200
        finally:
            stop_process(d.proc)
    finally:
        server.stop()
