"""A throwaway PostgreSQL server for the tests, and a fresh database per test.

Each pytest process (each xdist worker) starts, on first use, its own server: Debian's
binaries (``initdb`` and ``postgres`` from ``pg_ctl``'s folder: on the PATH, or the newest
/usr/lib/postgresql/*/bin), a data folder under a private temp dir (in memory where the machine
allows: tests/scratch.py), TCP on 127.0.0.1 at a free port and a Unix socket in that temp dir.
It is stopped, and its folder removed, when the session ends. As root, the server runs as the
``postgres`` user (it refuses to run as root).

The server is our direct child (not daemonized by ``pg_ctl start``) with a parent-death
signal, so a worker that is killed takes its server with it; it runs in its own session, so a
Ctrl-C at the terminal reaches pytest, which stops it in order. Durability settings are off
(fsync, synchronous_commit): the tests kill daemons, never the machine.

With ``LLMGINE_TEST_DATABASE_URL`` set (a role allowed to CREATE DATABASE), that server is
used instead and nothing is started; every database made on it is dropped at the end.

Databases: ``new_database()`` makes one with ``CREATE DATABASE ... TEMPLATE`` of a template
made once per process and migrated (``migrate``: the llmgine schema, main and telemetry), which
is much faster than migrating each (and copied file by file, ``STRATEGY FILE_COPY``, rather
than through the WAL: the cheaper of the two for a small database); ``new_database(empty=True)``
makes an empty one. URLs carry a password (host connections use scram-sha-256): the tests that
check a password is never printed have one.

Fixtures (registered in tests/conftest.py): ``pg_server`` (the server, session scope),
``pg_url`` (a fresh database's URL; dropped after the test), ``make_pg_url`` (``make_pg_url()``
another fresh database, as many as a test needs).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import glob
import hashlib
import hmac
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from tests.scratch import scratch_dir

ENV_URL = "LLMGINE_TEST_DATABASE_URL"
USER = "llmgine_test"
PASSWORD = "pg-test-secret-4b1d"  # noqa: S105 - a throwaway server's; the tests grep for it
PR_SET_PDEATHSIG = 1
# PBKDF2 rounds of the test role's password (PostgreSQL's own default is 4096). Every connection
# runs them on both sides, and the suite makes tens of thousands (about ten per app): at 4096
# they were a tenth of the CPU of a test on PostgreSQL. The password is still checked the same.
SCRAM_ITERATIONS = 16
# Server settings over the tests' (durability off): the benchmarks turn it back on
# (bench/pg_cluster.py --durable) to measure what a deployment pays.
DURABILITY: dict[str, str] = {}


def pg_bindir() -> Path:
    """The folder of the PostgreSQL server binaries, or a clear failure."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    raise RuntimeError("PostgreSQL is not installed (no pg_ctl): apt-get install postgresql, or set " + ENV_URL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> dict[str, Any]:
    """Popen keywords that drop root to the postgres user (no-op when not root)."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


def _die_with_parent() -> None:
    """preexec_fn: SIGQUIT (immediate shutdown) to the server when this process dies; SIGINT
    back to its default. Runs after the uid change, which would otherwise clear it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGQUIT, 0, 0, 0)


def scram_verifier(password: str, iterations: int = SCRAM_ITERATIONS) -> str:
    """The password as PostgreSQL stores it for scram-sha-256 (RFC 5802/7677), hashed here with
    ``iterations`` rounds; initdb and ALTER ROLE store a string of this form as it is."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    salt_b64, stored_b64, server_b64 = (base64.b64encode(raw).decode() for raw in (salt, stored_key, server_key))
    return f"SCRAM-SHA-256${iterations}:{salt_b64}${stored_b64}:{server_b64}"


def with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(dbname), parts.query, parts.fragment))


class PgServer:
    """A PostgreSQL server to make test databases on (see the module docstring)."""

    def __init__(self, admin_url: str, *, tmp: Path | None = None, proc: subprocess.Popen[bytes] | None = None):
        self.admin_url = admin_url
        self.tmp = tmp
        self.proc = proc
        self.prefix = f"lgt_{uuid.uuid4().hex[:10]}"
        self._count = 0
        self._template: str | None = None
        self._strategy = ""  # " STRATEGY FILE_COPY" on PostgreSQL 15 and later
        self._made: set[str] = set()
        self._lock = threading.Lock()
        # fn(url), run once on the template: the llmgine schema (main and telemetry).
        self.prepare_template: Callable[[str], None] | None = migrate
        self._spawn_again: Callable[[], subprocess.Popen[bytes]] | None = None  # restart()

    # -- start and stop -------------------------------------------------------------------

    @classmethod
    def start(cls) -> PgServer:
        existing = os.environ.get(ENV_URL)
        if existing:
            return cls(existing)
        bindir = pg_bindir()
        # On a disk when durability is measured (fsync costs nothing in memory).
        tmp = Path(tempfile.mkdtemp(prefix="lgpg", dir="/tmp")) if DURABILITY else scratch_dir("lgpg")
        try:
            run_as = _run_as()
            if run_as:
                shutil.chown(tmp, "postgres", "postgres")
            pwfile = tmp / "pw"
            pwfile.write_text(scram_verifier(PASSWORD) + "\n")
            if run_as:
                shutil.chown(pwfile, "postgres", "postgres")
            data = tmp / "data"
            subprocess.run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    USER,
                    f"--pwfile={pwfile}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                    "--no-instructions",
                ],
                cwd=tmp,
                check=True,
                capture_output=True,
                stdin=subprocess.DEVNULL,
                **run_as,
            )
            pwfile.unlink()
            for _ in range(5):
                port = _free_port()
                proc = cls._spawn(bindir, data, tmp, port, run_as)
                url = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/postgres"
                if cls._wait_ready(proc, url, tmp):
                    server = cls(url, tmp=tmp, proc=proc)
                    server._spawn_again = lambda bindir=bindir, data=data, port=port, run_as=run_as: cls._spawn(
                        bindir, data, tmp, port, run_as
                    )
                    return server
            raise RuntimeError("the test PostgreSQL server did not start: " + (tmp / "server.log").read_text()[-2000:])
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @staticmethod
    def _spawn(bindir: Path, data: Path, tmp: Path, port: int, run_as: dict[str, Any]) -> subprocess.Popen[bytes]:
        settings = {
            "port": str(port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(tmp),
            "max_connections": "300",
            "shared_buffers": "32MB",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
            # A small WAL (in memory, see tests/scratch.py): checkpoints cost nothing here.
            "min_wal_size": "32MB",
            "max_wal_size": "64MB",
            **DURABILITY,
        }
        args = [str(bindir / "postgres"), "-D", str(data)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        with open(tmp / "server.log", "ab") as log:
            if run_as:
                shutil.chown(tmp / "server.log", "postgres", "postgres")
            return subprocess.Popen(
                args,
                cwd=tmp,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                **run_as,
            )

    @staticmethod
    def _wait_ready(proc: subprocess.Popen[bytes], url: str, tmp: Path) -> bool:
        """True once the server takes connections; False if it exited (port taken)."""
        import psycopg

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                psycopg.connect(url, connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        proc.kill()
        proc.wait()
        raise RuntimeError("the test PostgreSQL server did not accept connections: " + (tmp / "server.log").read_text())

    def restart(self) -> None:
        """Stop the server (a fast shutdown: every connection is ended) and start it again on
        the same port and data, as an operator's ``pg_ctl restart`` does. Only a server started
        here (not LLMGINE_TEST_DATABASE_URL's)."""
        if self.proc is None or self._spawn_again is None or self.tmp is None:
            raise RuntimeError("only a server the tests started can be restarted")
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)
        self.proc = self._spawn_again()
        if not self._wait_ready(self.proc, self.admin_url, self.tmp):
            raise RuntimeError(
                "the test PostgreSQL server did not start again: " + (self.tmp / "server.log").read_text()[-2000:]
            )

    def stop(self) -> None:
        """Drop what was made on a shared server; stop ours and remove its folder."""
        if self.proc is None:
            with contextlib.suppress(Exception):
                for name in sorted(self._made) + ([self._template] if self._template else []):
                    self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self._made.clear()
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- databases ------------------------------------------------------------------------

    def _admin(self, sql: str) -> int:
        """Run ``sql`` on the server's maintenance database; the server's version number."""
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]  # names made here, quoted
            return conn.info.server_version

    def template(self) -> str:
        with self._lock:
            if self._template is None:
                name = f"{self.prefix}_tmpl"
                if self._admin(f'CREATE DATABASE "{name}"') >= 150000:
                    self._strategy = " STRATEGY FILE_COPY"
                if self.prepare_template is not None:
                    self.prepare_template(with_database(self.admin_url, name))
                self._template = name
            return self._template

    def new_database(self, *, empty: bool = False, icu_locale: str | None = None) -> str:
        """The URL of a new database: a copy of the template, or ``empty``; with ``icu_locale``
        (``en-US``) an empty one whose text sorts by that ICU collation, as a server set up with
        a locale (the postgres Docker image's en_US.utf8) does, not by the test server's C."""
        template = None if empty or icu_locale else self.template()
        with self._lock:
            self._count += 1
            name = f"{self.prefix}_{self._count}"
            self._made.add(name)
        if icu_locale:
            icu = f"LOCALE_PROVIDER icu ICU_LOCALE '{icu_locale}' LOCALE 'C'"
            self._admin(f'CREATE DATABASE "{name}" TEMPLATE template0 {icu}')
        else:
            self._admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"{self._strategy}' if template else ""))
        return with_database(self.admin_url, name)

    def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        with self._lock:
            self._made.discard(name)


def migrate(url: str) -> None:
    """Apply the llmgine schema (as llmgined does at start-up) to the database at ``url``."""
    from llmgine_daemon.store import pg_schema
    from llmgine_daemon.store.postgres import connect

    conn = connect(url, autocommit=False)
    try:
        for telemetry in (False, True):
            pg_schema.apply(conn, telemetry=telemetry)
            conn.commit()
    finally:
        conn.close()


_server: PgServer | None = None


def server() -> PgServer:
    """This process's server, started on first use and stopped at exit at the latest."""
    global _server
    if _server is None:
        _server = PgServer.start()
        atexit.register(_server.stop)
    return _server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    srv = server()
    yield srv
    srv.stop()


@pytest.fixture
def make_pg_url(pg_server: PgServer) -> Iterator[Callable[..., str]]:
    """``make_pg_url(empty=False)``: a fresh database's URL; all are dropped after the test."""
    made: list[str] = []

    def make(*, empty: bool = False) -> str:
        made.append(pg_server.new_database(empty=empty))
        return made[-1]

    yield make
    for url in made:
        pg_server.drop_database(url)


@pytest.fixture
def pg_url(make_pg_url: Callable[..., str]) -> str:
    return make_pg_url()
