"""kill -9 the real daemon, then restart it.

- One command executing and others queued: the executing one is interrupted, the queued ones
  run, the engine is back.
- Rounds under load: concurrent clients create sessions, submit commands, run engines with an
  Idempotency-Key (sent again after the restart: the stored command, never a second) and publish events
  over the Unix socket, recording every acknowledgement (2xx); SIGKILL at a random moment.
  After each restart every acknowledged item is there, ``PRAGMA integrity_check`` is ok, what
  was executing is interrupted, what was queued runs, and no command has two results.
  ``LLMGINE_CRASH_ROUNDS`` (default 2) sets the number of rounds.
  Across all the rounds a real ``llmgine event tail --all --since all -o jsonl`` keeps running:
  it reconnects after every restart and resumes after the last seq it printed, so in the end
  its output is every seq of the events table exactly once, in order.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests import clitools
from tests.clitools import cli_env, default_signals, full_env
from tests.dbtools import open_home_db
from tests.e2e.test_llmgined import free_port, run_daemon, wait_for_http
from tests.eventually import eventually

pytestmark = pytest.mark.e2e


def call(port: int, method: str, path: str, body: Any = None, *, home: Any) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    # Over TCP: the key llmgined wrote for the local CLI (docs/security.md).
    key = (home / "config" / "local.key").read_text().strip()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def session_with_dummy(port: int, home: Any) -> tuple[str, Any]:
    """A new session with a DummyEngine: (its id, the engine)."""
    _, session = call(port, "POST", "/api/sessions", {}, home=home)
    sid = session["session_id"]
    _, engine = call(port, "POST", "/api/engines", {"engine_type": "DummyEngine", "session_id": sid}, home=home)
    return sid, engine


def test_kill_9_then_restart(home):
    port = free_port()
    proc = run_daemon(home, "--port", str(port))
    try:
        wait_for_http(port, proc)
        sid, engine = session_with_dummy(port, home)
        cmd = {"command_type": "DummyEngineCommand"}
        status, running = call(
            port,
            "POST",
            f"/api/sessions/{sid}/commands",
            {**cmd, "parameters": {"prompt": "r", "delay_ms": 600_000}},
            home=home,
        )
        assert status == 202 and running["status"] == "executing"
        queued = [
            call(port, "POST", f"/api/sessions/{sid}/commands", {**cmd, "parameters": {"prompt": f"q{i}"}}, home=home)[
                1
            ]
            for i in range(3)
        ]
        assert [q["status"] for q in queued] == ["queued"] * 3
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    proc = run_daemon(home, "--port", str(port))
    try:
        wait_for_http(port, proc)
        _, record = call(port, "GET", f"/api/sessions/{sid}/commands/{running['command_id']}", home=home)
        assert record["status"] == "interrupted"
        for q in queued:
            _, record = call(port, "GET", f"/api/sessions/{sid}/commands/{q['command_id']}?wait=30", home=home)
            assert record["status"] == "completed", record
        status, engine_now = call(port, "GET", f"/api/engines/{engine['engine_id']}", home=home)
        assert status == 200 and engine_now["status"] == "initialized"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- rounds under load ------------------------------------------------------------------------

DUMMY = {"command_type": "DummyEngineCommand"}


@dataclass
class Acked:
    """Everything a client was told had committed."""

    sessions: set[str] = field(default_factory=set)
    events: dict[str, int] = field(default_factory=dict)  # event_id -> seq
    commands: set[str] = field(default_factory=set)
    blockers: set[str] = field(default_factory=set)  # executing when the daemon was killed
    # Engine executes with an Idempotency-Key: (path, body) -> the command id answered, or None
    # for one sent without an answer (the daemon died): stored or not, a retry must say which.
    idempotent: dict[tuple[str, str], str | None] = field(default_factory=dict)
    engines: dict[str, str] = field(default_factory=dict)  # session -> its engine


def unix_session(home: Path) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        base_url="http://llmgine",
        connector=aiohttp.UnixConnector(path=str(home / "run" / "llmgined.sock")),
        timeout=aiohttp.ClientTimeout(total=30),
    )


async def wait_ready(home: Path, proc: Any) -> None:
    async def answers() -> bool:
        assert proc.poll() is None, proc.stderr.read()
        try:
            async with unix_session(home) as http, http.get("/api/health") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    # A start on a loaded machine (PostgreSQL: a database to migrate) can take many seconds.
    await eventually(answers, timeout=60, interval=0.05, message="the daemon answering on its socket")


async def post(http: aiohttp.ClientSession, path: str, body: Any) -> tuple[int, Any]:
    async with http.post(path, json=body) as resp:
        return resp.status, await resp.json()


async def load_then_kill(home: Path, proc: Any, sids: list[str], acked: Acked, rng: random.Random) -> None:
    await wait_ready(home, proc)
    async with unix_session(home) as http:
        # A session whose command blocks: executing at the kill, two more queued behind it.
        status, blocker_sid = await post(http, "/api/sessions", {})
        blocker_sid = blocker_sid["session_id"]
        await post(http, "/api/engines", {"engine_type": "DummyEngine", "session_id": blocker_sid})
        status, running = await post(
            http,
            f"/api/sessions/{blocker_sid}/commands",
            {**DUMMY, "parameters": {"prompt": "block", "delay_ms": 600_000}},
        )
        assert status == 202 and running["status"] == "executing"
        acked.blockers.add(running["command_id"])
        acked.commands.add(running["command_id"])
        for i in range(2):
            status, queued = await post(
                http, f"/api/sessions/{blocker_sid}/commands", {**DUMMY, "parameters": {"prompt": f"behind {i}"}}
            )
            assert status == 202
            acked.commands.add(queued["command_id"])

        stop = False

        async def client(n: int) -> None:
            local = random.Random(rng.random())
            while not stop:
                sid = local.choice(sids)
                what = local.random()
                try:
                    if what < 0.45:
                        status, body = await post(
                            http,
                            f"/api/sessions/{sid}/commands",
                            {**DUMMY, "parameters": {"prompt": f"c{n}", "delay_ms": local.choice((0, 0, 5))}},
                        )
                        if status == 202:
                            acked.commands.add(body["command_id"])
                    elif what < 0.55:
                        key = f"k{local.getrandbits(64):016x}"
                        path = f"/api/engines/{acked.engines[sid]}/execute"
                        acked.idempotent[(path, key)] = None
                        async with http.post(path, json={"prompt": key}, headers={"Idempotency-Key": key}) as resp:
                            status, body = resp.status, await resp.json()
                        if status in (200, 202):
                            acked.idempotent[(path, key)] = body["command_id"]
                            acked.commands.add(body["command_id"])
                        else:
                            del acked.idempotent[(path, key)]
                    elif what < 0.95:
                        status, body = await post(
                            http, f"/api/sessions/{sid}/events", {"event_type": "Crash", "data": {"n": n}}
                        )
                        if status == 201:
                            acked.events[body["event_id"]] = body["seq"]
                    else:
                        status, body = await post(http, "/api/sessions", {})
                        if status == 201:
                            acked.sessions.add(body["session_id"])
                except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError):
                    return  # the daemon is gone: this request was never acknowledged

        tasks = [asyncio.create_task(client(n)) for n in range(8)]
        await asyncio.sleep(rng.uniform(0.3, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        stop = True
        await asyncio.gather(*tasks)


async def check_after_restart(home: Path, proc: Any, acked: Acked) -> None:
    await wait_ready(home, proc)
    with open_home_db(home) as db:
        assert acked.sessions <= {r[0] for r in db.execute("SELECT session_id FROM sessions")}
        stored = dict(db.execute("SELECT event_id, seq FROM events WHERE event_type = 'Crash'").fetchall())
        missing = {e for e in acked.events if e not in stored}
        assert not missing, f"{len(missing)} acknowledged events lost"
        assert all(stored[e] == seq for e, seq in acked.events.items())
        known = {r[0] for r in db.execute("SELECT command_id FROM commands")}
        assert acked.commands <= known, f"{len(acked.commands - known)} acknowledged commands lost"
        # An Idempotency-Key sent again after the kill answers the command stored for it (the
        # acknowledged one, or the one stored before the answer was lost), never a second run.
        async with unix_session(home) as http:
            for (path, key), answered in list(acked.idempotent.items()):
                ids = []
                for _ in range(2):
                    async with http.post(path, json={"prompt": key}, headers={"Idempotency-Key": key}) as resp:
                        assert resp.status in (200, 202), await resp.text()
                        ids.append((await resp.json())["command_id"])
                assert ids[0] == ids[1] and answered in (None, ids[0]), (key, answered, ids)
                acked.idempotent[(path, key)] = ids[0]
                acked.commands.add(ids[0])
            for (_, key), cid in acked.idempotent.items():
                like = f"%{key}%"  # the prompt, in this command's parameters only
                rows = db.execute("SELECT command_id FROM commands WHERE parameters LIKE ?", (like,)).fetchall()
                assert [r[0] for r in rows] == [cid], (key, rows)
        # Whatever was executing at the kill is interrupted; everything queued runs to the end.
        async with unix_session(home) as http:
            for _ in range(600):
                left = db.execute("SELECT COUNT(*) FROM commands WHERE status IN ('queued', 'executing')").fetchone()[0]
                if left == 0:
                    break
                await asyncio.sleep(0.05)
            assert left == 0
            async with http.get("/api/health") as resp:
                assert resp.status == 200
        statuses = dict(db.execute("SELECT command_id, status FROM commands").fetchall())
        assert {statuses[c] for c in acked.blockers} == {"interrupted"}
        assert set(statuses.values()) <= {"completed", "interrupted"}
        results = Counter(
            json.loads(data)["command_id"]
            for (data,) in db.execute("SELECT data FROM events WHERE event_type = 'CommandResult'")
        )
        assert [c for c, n in results.items() if n > 1] == []


def integrity_ok(home: Path) -> None:
    """SQLite's own check of the file (PostgreSQL's server survives a daemon's kill -9 intact)."""
    if clitools.BACKEND_ENV:
        return
    db = sqlite3.connect(home / "data" / "llmgine.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


class Tail:
    """A running `llmgine event tail --all --since all -o jsonl`, its lines read by a thread."""

    def __init__(self, home: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmgine_cli", "event", "tail", "--all", "--since", "all", "-o", "jsonl"],
            env=full_env(cli_env(home)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
            preexec_fn=default_signals,
        )
        self.seqs: list[int] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.seqs.append(json.loads(line)["seq"])

    def catch_up(self, home: Path, timeout: float = 30) -> list[int]:
        """Wait until the tail has printed the last seq of the store; return the store's seqs."""
        with open_home_db(home) as db:
            expected = [r[0] for r in db.execute("SELECT seq FROM events ORDER BY seq")]
        deadline = time.monotonic() + timeout
        while (not self.seqs or self.seqs[-1] < expected[-1]) and time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            time.sleep(0.05)
        return expected

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C: exit 130, as every wait
        try:
            code = self.proc.wait(15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(5)
        return code, self.proc.stderr.read() if self.proc.stderr else ""


def test_kill_9_rounds_under_load(home):
    rounds = int(os.environ.get("LLMGINE_CRASH_ROUNDS", "2"))
    rng = random.Random(os.environ.get("LLMGINE_CRASH_SEED"))
    acked = Acked()
    sids: list[str] = []

    async def setup(proc: Any) -> None:
        await wait_ready(home, proc)
        async with unix_session(home) as http:
            for _ in range(6):
                _, session = await post(http, "/api/sessions", {})
                sid = session["session_id"]
                _, engine = await post(http, "/api/engines", {"engine_type": "DummyEngine", "session_id": sid})
                acked.engines[sid] = engine["engine_id"]
                sids.append(sid)
                acked.sessions.add(sid)

    proc = run_daemon(home)
    tail: Tail | None = None
    try:
        asyncio.run(setup(proc))
        tail = Tail(home)
        tail.catch_up(home)  # connected (and caught up) before the first kill
        for _ in range(rounds):
            asyncio.run(load_then_kill(home, proc, sids, acked, rng))
            integrity_ok(home)
            proc = run_daemon(home)
            asyncio.run(check_after_restart(home, proc, acked))
            # Reconnected and resumed before the next kill, so every round tests a resume.
            expected = tail.catch_up(home)
            assert tail.seqs == expected
        code, stderr = tail.stop()
        assert code == 130, stderr
        assert "Traceback" not in stderr, stderr
        assert stderr.count("reconnected to") >= rounds, stderr
        assert tail.seqs == expected  # every seq of the store once, in order, no gap
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        integrity_ok(home)
    finally:
        if tail is not None and tail.proc.poll() is None:
            tail.proc.kill()
            tail.proc.wait()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def refused(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    """What a daemon that must refuse to start printed; a daemon that ran is stopped first."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"the second daemon did not refuse to start: {err[-2000:]}") from None
    assert proc.returncode == 1, err
    return err


@pytest.mark.sqlite_only(reason="one SQLite file; daemons sharing a PostgreSQL database are nodes (test_multinode)")
def test_a_second_daemon_on_the_same_sqlite_file_is_refused(home):
    # The pidfile names the daemon at the home's default socket only: a second daemon on
    # another socket, or of another home whose database.url is this file, started beside the
    # first and recovered its commands (the running one marked interrupted, the queued one run
    # by both). The database's own lock refuses it before it touches anything.
    port = free_port()
    proc = run_daemon(home, "--port", str(port))
    try:
        wait_for_http(port, proc)
        sid, _ = session_with_dummy(port, home)
        path = f"/api/sessions/{sid}/commands"
        _, running = call(port, "POST", path, {**DUMMY, "parameters": {"prompt": "r", "delay_ms": 600_000}}, home=home)
        _, queued = call(port, "POST", path, {**DUMMY, "parameters": {"prompt": "q"}}, home=home)
        assert (running["status"], queued["status"]) == ("executing", "queued")
        other_home = home / "other"
        for second in (
            run_daemon(home, "--socket", str(home / "b.sock")),
            run_daemon(other_home, env={"DATABASE_URL": f"sqlite:///{home}/data/llmgine.db"}),
        ):
            err = refused(second)
            assert "in use by another llmgined" in err and f"pid {proc.pid}" in err, err
            assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        for command, status in ((running, "executing"), (queued, "queued")):
            _, record = call(port, "GET", f"{path}/{command['command_id']}", home=home)
            assert record["status"] == status
    finally:
        proc.kill()
        proc.wait()
    # The lock went with the process (kill -9): the next daemon opens the file and recovers.
    proc = run_daemon(home, "--port", str(port))
    try:
        wait_for_http(port, proc)
        _, record = call(port, "GET", f"{path}/{running['command_id']}", home=home)
        assert record["status"] == "interrupted"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


@pytest.mark.sqlite_only(reason="SQLite's write-ahead log")
def test_a_damaged_write_ahead_log_is_refused_not_discarded(home):
    # SQLite takes a log whose header is damaged for an empty one: the daemon started without
    # the acknowledged writes still in it (not yet copied into the database) and wrote over it.
    port = free_port()
    proc = run_daemon(home, "--port", str(port))
    try:
        wait_for_http(port, proc)
        made = {call(port, "POST", "/api/sessions", {}, home=home)[1]["session_id"] for _ in range(20)}
    finally:
        proc.kill()
        proc.wait()
    wal = home / "data" / "llmgine.db-wal"
    whole = wal.read_bytes()
    assert len(whole) > 32
    damaged = whole[:16] + bytes(b ^ 0xFF for b in whole[16:24]) + whole[24:]  # the salts
    wal.write_bytes(damaged)
    proc = run_daemon(home, "--port", str(port))
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert "llmgine.db-wal: not a valid write-ahead log" in err and "Traceback" not in err, err
    assert wal.read_bytes() == damaged  # left as it was, for a person to look at
    wal.write_bytes(whole)  # repaired: every acknowledged session is there
    proc = run_daemon(home, "--port", str(port))
    try:
        wait_for_http(port, proc)
        with open_home_db(home) as db:
            assert made <= {r[0] for r in db.execute("SELECT session_id FROM sessions")}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
