"""llmgined on PostgreSQL when the network between them fails: the server unreachable at a stop,
a path that died without a word (TCP keepalives). Real daemons, a real server, real sockets."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.clitools import start_daemon, stop_process
from tests.e2e.test_postgres import call
from tests.eventually import eventually_blocking
from tests.pgproxy import Blackhole
from tests.postgres import PgServer

pytestmark = [pytest.mark.e2e, pytest.mark.own_database(reason="makes its own PostgreSQL databases")]


@pytest.fixture
def home(cli_home: Path) -> Path:
    return cli_home


def _through(url: str, host: str, port: int) -> str:
    parts = urlsplit(url)
    return url.replace(f"@{parts.hostname}:{parts.port}/", f"@{host}:{port}/")


def test_connections_have_tcp_keepalives(pg_url: str) -> None:
    """libpq's keepalive settings (store/pg_connect.py KEEPALIVES) on the socket itself; a URL
    that sets its own keeps it."""
    from llmgine_daemon.store.pg_connect import KEEPALIVES, connect

    if not urlsplit(pg_url).hostname:
        pytest.skip("a server on a Unix socket (LLMGINE_TEST_DATABASE_URL): no TCP, no keepalives")

    def options(url: str) -> tuple[int, int, int, int, int]:
        with connect(url) as conn:
            sock = socket.socket(fileno=conn.fileno())
            try:
                return (
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
                )
            finally:
                sock.detach()  # the connection's, not ours to close

    expected = tuple(
        KEEPALIVES[k] for k in ("keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count")
    ) + (KEEPALIVES["tcp_user_timeout"],)
    assert options(pg_url) == expected
    assert options(pg_url + "?keepalives_idle=77")[1] == 77


def test_a_stop_with_the_server_unreachable_is_prompt_and_acknowledges_nothing(home: Path, pg_url: str) -> None:
    # The server's host gone (packets dropped: the connections made go silent, a new one waits
    # its whole connect_timeout): a stop took the watchdog's busy_timeout + 15 s for the writes
    # on their way, then 10 s of connect_timeout per write still queued, the telemetry flush
    # and the lease give-back (49 s with three writes). Now the store gives up a few seconds
    # into the stop, and each waiting write is answered 503: nothing that did not commit is
    # acknowledged.
    parts = urlsplit(pg_url)
    proxy = Blackhole((parts.hostname or "127.0.0.1", parts.port or 5432))
    try:
        d = start_daemon(home, env={"DATABASE_URL": _through(pg_url, "127.0.0.1", proxy.port)})
        try:
            sid = call(d, "POST", "/api/sessions", {})[1]["session_id"]
            proxy.go_dark()
            answers: list[Any] = []

            def write(n: int) -> None:
                with contextlib.suppress(OSError):  # (the answer is all this test looks at)
                    answers.append(call(d, "POST", f"/api/sessions/{sid}/events", {"event_type": f"Lost{n}"}))

            writers = [threading.Thread(target=write, args=(n,)) for n in range(3)]
            for t in writers:
                t.start()
            # A write transaction on its way to the server (the writes queue behind it).
            eventually_blocking(lambda: b"BEGIN" in proxy.dark.swallowed, timeout=30)
            d.proc.send_signal(signal.SIGTERM)
            assert d.proc.wait(timeout=25) == 0  # 49 s before
            for t in writers:
                t.join(10)
        finally:
            stop_process(d.proc)
        # Every answer is "try again" (a request that came after the stop began may have found
        # the socket closed: no answer at all).
        assert answers and all(status == 503 for status, _ in answers), answers
        log = (home / "daemon-under-test.log").read_text()
        assert "the daemon is stopping: not tried again" in log and "Traceback" not in log, log[-3000:]
    finally:
        proxy.close()
    # None of them is stored.
    d = start_daemon(home, env={"DATABASE_URL": pg_url})
    try:
        status, page = call(d, "GET", f"/api/sessions/{sid}/events")
        assert status == 200 and not [e for e in page["events"] if e["event_type"].startswith("Lost")]
    finally:
        stop_process(d.proc)


def _ns(pid: int, *argv: str) -> None:
    subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", *argv], check=True, capture_output=True)


@pytest.mark.skipif(
    not (shutil.which("unshare") and shutil.which("nsenter") and shutil.which("ip")), reason="no util-linux/iproute2"
)
def test_a_dead_network_path_is_noticed_by_keepalives(home: Path, pg_server: PgServer, pg_url: str) -> None:
    # The daemon in a network namespace of its own, whose only way to the server is a proxy in
    # that namespace (tests/pgproxy.py); `ip link set lo down` there kills the path without a
    # word. The cluster's LISTEN connection, idle, waited for notifications for ever (nothing
    # is sent on it, so nothing ever failed): other nodes' events reached this one only by its
    # tick. With TCP keepalives it fails within about 25 s and is made again.
    if pg_server.tmp is None:
        pytest.skip("an existing server (LLMGINE_TEST_DATABASE_URL) has no Unix socket here")
    port = urlsplit(pg_url).port
    proxy = subprocess.Popen(
        [
            "unshare",
            "-n",
            "sh",
            "-c",
            f'ip link set lo up && exec "{sys.executable}" -m tests.pgproxy "$0"',
            str(pg_server.tmp / f".s.PGSQL.{port}"),
        ],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert proxy.stdout is not None
        inside = int(proxy.stdout.readline())
        wrap = ("nsenter", f"--net=/proc/{proxy.pid}/ns/net")
        d = start_daemon(home, env={"DATABASE_URL": _through(pg_url, "127.0.0.1", inside)}, wrap=wrap)
        try:
            assert call(d, "POST", "/api/sessions", {})[0] == 201
            log = home / "daemon-under-test.log"
            assert "LISTEN connection lost" not in log.read_text()
            _ns(proxy.pid, "ip", "link", "set", "lo", "down")
            eventually_blocking(lambda: "cluster: LISTEN connection lost" in log.read_text(), timeout=90)
            d.proc.send_signal(signal.SIGTERM)
            assert d.proc.wait(timeout=60) == 0
        finally:
            stop_process(d.proc)
        assert "Traceback" not in log.read_text()
    finally:
        proxy.kill()
        proxy.wait()


def test_a_stop_with_the_server_reachable_lets_a_write_waiting_on_a_lock_commit(home: Path, pg_url: str) -> None:
    # Another node's transaction holds the cluster's first lock (event_head: every write
    # transaction takes it, store/pg_cluster.py LOCK_FIRST) for a few seconds: this node's
    # writes wait for it, as they may for any lock up to busy_timeout. A stop began meanwhile
    # cut the waiting statement after STOP_STALL_S (2 s) although the server answered: the
    # write failed with 503 instead of committing. Only a server that does not answer is given
    # up sooner at a stop.
    import psycopg

    d = start_daemon(home, env={"DATABASE_URL": pg_url, "LLMGINE_DB_BUSY_TIMEOUT": "30"})
    try:
        sid = call(d, "POST", "/api/sessions", {})[1]["session_id"]
        with psycopg.connect(pg_url) as other:
            other.execute("SELECT seq FROM event_head WHERE id = 1 FOR UPDATE")
            answers: list[Any] = []
            writer = threading.Thread(
                target=lambda: answers.append(call(d, "POST", f"/api/sessions/{sid}/events", {"event_type": "Kept"}))
            )
            writer.start()
            # The daemon's write transaction waits for the lock.
            eventually_blocking(
                lambda: (
                    other.execute(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid <> pg_backend_pid()"
                    ).fetchone()[0]  # type: ignore[index]
                    > 0
                ),
                timeout=30,
            )
            d.proc.send_signal(signal.SIGTERM)
            # Longer than STOP_STALL_S plus a watchdog look: the stop's own limit for a server
            # that does not answer.
            writer.join(5)
            other.commit()
        writer.join(30)
        assert d.proc.wait(timeout=60) == 0
    finally:
        stop_process(d.proc)
    assert answers and answers[0][0] == 201, answers
    d = start_daemon(home, env={"DATABASE_URL": pg_url})
    try:
        status, page = call(d, "GET", f"/api/sessions/{sid}/events")
        assert status == 200 and [e for e in page["events"] if e["event_type"] == "Kept"], page
    finally:
        stop_process(d.proc)
