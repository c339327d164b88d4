"""kill -9 the real daemon while clients make every kind of write, then restart it.

Concurrent clients (over the Unix socket) create and close sessions, purge them, fork them,
make and delete engines, register and remove tools, command handlers and MCP servers, mint
session tokens, create and revoke API keys, make, pause, resume and delete schedules and
webhooks, submit and cancel commands and batches, publish events and log records, set and
delete secrets,
recording every acknowledgement (2xx). A write
whose answer the kill took is "unknown" and not checked. After each restart:

- every acknowledged write is there, in the state its last acknowledged write left it (a
  revoked key, or a token of an ended session, is refused over TCP; a purged session is gone);
- no schedule fired a due time twice (some fire every second, some skip what they missed
  while the daemon was down, some run it once);
- nothing is left half-done: no schedule, webhook, token or MCP server of a purged session,
  no active schedule of an ended one, nothing still queued or executing once the queue
  settled, every session's kept counts equal its rows;
- every listing answers (no 500), and health is ``healthy``.

In the end every acknowledged event (of a session not purged) has reached a live webhook
receiver at least once, whatever deliveries the kills cut short or left leased.

Half of the kills come while the daemon stops (SIGTERM, then SIGKILL within 0.3 s: a
`llmgine daemon stop` cut short).

``LLMGINE_CRASH_ROUNDS`` (default 2) and ``LLMGINE_CRASH_SEED`` as in test_bus_crash.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from llmgine_daemon.store.migrations import SESSION_COUNTS_RECOUNT

from tests.dbtools import open_home_db
from tests.e2e.test_bus_crash import integrity_ok, unix_session, wait_ready
from tests.e2e.test_hooks_restart import ENV as HOOK_ENV
from tests.e2e.test_hooks_restart import Receiver
from tests.e2e.test_llmgined import free_port, run_daemon
from tests.eventually import eventually, eventually_blocking

pytestmark = pytest.mark.e2e

DUMMY = {"command_type": "DummyEngineCommand"}
TOOL = "def ping(x: int = 1) -> int:\n    return x\n"
HANDLER = "def handle(command):\n    return {'ok': True}\n"
GONE = "gone"
# The checks present many credentials, refused ones included: no rate limit in their way.
ENV = {
    "LLMGINE_RATE_LIMIT_UNAUTHENTICATED": "1000000",
    "LLMGINE_RATE_LIMIT_AUTHENTICATED": "1000000",
    **HOOK_ENV,  # a delivery leased by a killed daemon is sent again 7 s later
}


@dataclass
class Known:
    """What the clients were told committed: object -> its last acknowledged state."""

    sessions: dict[str, str] = field(default_factory=dict)  # active | closed | gone
    engines: dict[str, tuple[str, bool]] = field(default_factory=dict)  # engine_id -> (session_id, deleted)
    tools: dict[tuple[str, str], bool] = field(default_factory=dict)
    handlers: dict[tuple[str, str], bool] = field(default_factory=dict)  # (sid, command_type)
    mcp: dict[tuple[str, str], bool] = field(default_factory=dict)
    keys: dict[str, tuple[str, bool]] = field(default_factory=dict)  # key_id -> (key, revoked)
    tokens: dict[str, str] = field(default_factory=dict)  # token -> session_id
    schedules: dict[str, str] = field(default_factory=dict)  # id -> active | paused | GONE
    webhooks: dict[str, bool] = field(default_factory=dict)
    batches: dict[str, str] = field(default_factory=dict)  # batch_id -> session_id
    events: dict[str, str] = field(default_factory=dict)  # event_id -> session_id
    cancelled: dict[str, str] = field(default_factory=dict)  # command_id -> session_id
    secrets: dict[str, bool] = field(default_factory=dict)  # name -> set (a file, not the database)
    logs: set[int] = field(default_factory=set)  # ids of log records written by clients
    purging: set[str] = field(default_factory=set)  # sessions whose purge had no answer
    unknown: set[Any] = field(default_factory=set)  # objects whose last write has no answer
    log: list[Any] = field(default_factory=list)  # (client, method, path, status, answer): for failures


async def call(http: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with http.request(method, path, json=body) as resp:
        text = await resp.text()
        assert resp.status < 500, f"{method} {path}: {resp.status} {text[:500]}"
        return resp.status, (await resp.json()) if text and resp.content_type == "application/json" else None


class Client:
    def __init__(self, n: int, http: aiohttp.ClientSession, known: Known, rng: random.Random) -> None:
        self.n, self.http, self.known, self.rng = n, http, known, rng
        self.mine: list[str] = []  # this client's sessions (no other client writes to them)

    def active(self) -> list[str]:
        return [s for s in self.mine if self.known.sessions.get(s) == "active" and s not in self.known.unknown]

    async def write(self, obj: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send a write; until its answer the object's state is unknown."""
        self.known.unknown.add(obj)
        status, answer = await call(self.http, method, path, body)
        self.known.log.append((self.n, method, path, status, str(answer)[:300]))
        if status < 300:  # a refusal tells nothing of an earlier write that had no answer
            self.known.unknown.discard(obj)
        return status, answer

    async def toggle(self, kept: dict[Any, bool], key: Any, path: str, body: Any, item: str) -> None:
        """Register the thing ``key`` (POST ``path``) if ``kept`` says it is not there, else
        remove it (DELETE ``item``); ``kept`` follows what was answered."""
        if kept.get(key):
            status, _ = await self.write(key, "DELETE", item)
            if status in (200, 204):
                kept[key] = False
        else:
            status, _ = await self.write(key, "POST", path, body)
            if status == 201:
                kept[key] = True

    async def step(self) -> None:
        k, rng = self.known, self.rng
        live = self.active()
        if len(live) < 2:
            status, s = await self.write(("session", "new"), "POST", "/api/sessions", {})
            if status == 201:
                k.sessions[s["session_id"]] = "active"
                self.mine.append(s["session_id"])
            return
        sid = rng.choice(live)
        what = rng.randrange(18)
        if what == 0:  # end a session
            status, _ = await self.write(sid, "DELETE", f"/api/sessions/{sid}")
            if status == 200:
                k.sessions[sid] = "closed"
        elif what == 1:  # purge one
            k.purging.add(sid)
            status, _ = await self.write(sid, "DELETE", f"/api/sessions/{sid}?purge=true")
            if status == 204:
                k.sessions[sid] = GONE
                k.purging.discard(sid)
        elif what == 2:
            status, e = await self.write(
                ("engine", sid), "POST", "/api/engines", {"engine_type": "DummyEngine", "session_id": sid}
            )
            if status == 201:
                k.engines[e["engine_id"]] = (sid, False)
        elif what == 3:
            mine = [e for e, (s, deleted) in k.engines.items() if s == sid and not deleted and e not in k.unknown]
            if mine:
                eid = rng.choice(mine)
                status, _ = await self.write(eid, "DELETE", f"/api/engines/{eid}")
                if status in (200, 204):
                    k.engines[eid] = (sid, True)
        elif what == 4:  # a tool: registered, or removed
            tools = f"/api/sessions/{sid}/tools"
            await self.toggle(k.tools, (sid, "ping"), tools, {"name": "ping", "function_code": TOOL}, f"{tools}/ping")
        elif what == 5:  # a command handler
            base = f"/api/sessions/{sid}/handlers"
            body = {"command_type": "Ping", "handler_function": HANDLER}
            await self.toggle(k.handlers, (sid, "Ping"), f"{base}/commands", body, f"{base}/commands/Ping")
        elif what == 6:  # an MCP server (one that never answers: registered all the same)
            base = f"/api/sessions/{sid}/mcp-servers"
            body = {"name": "down", "url": "http://127.0.0.1:9/mcp"}
            await self.toggle(k.mcp, (sid, "down"), base, body, f"{base}/down")
        elif what == 7:
            status, t = await self.write(("token", sid), "POST", f"/api/sessions/{sid}/token")
            if status == 201:
                k.tokens[t["session_token"]] = sid
        elif what == 8:  # an API key: created, or one revoked
            mine = [i for i, (_, revoked) in k.keys.items() if not revoked and i not in k.unknown]
            if mine and rng.random() < 0.5:
                kid = rng.choice(mine)
                status, _ = await self.write(kid, "DELETE", f"/api/auth/keys/{kid}")
                if status == 200:
                    k.keys[kid] = (k.keys[kid][0], True)
            else:
                status, key = await self.write(("key", self.n), "POST", "/api/auth/keys", {"name": f"c{self.n}"})
                if status == 201:
                    k.keys[key["key_id"]] = (key["key"], False)
        elif what == 9:  # a schedule: made, paused, resumed, deleted
            mine = [i for i, st in k.schedules.items() if st != GONE and i not in k.unknown]
            if mine and rng.random() < 0.6:
                sch = rng.choice(mine)
                verb = rng.choice(("pause", "resume", "delete"))
                if verb == "delete":
                    status, _ = await self.write(sch, "DELETE", f"/api/schedules/{sch}")
                    if status in (200, 204):
                        k.schedules[sch] = GONE
                else:
                    status, _ = await self.write(sch, "POST", f"/api/schedules/{sch}/{verb}")
                    if status == 200:
                        k.schedules[sch] = "paused" if verb == "pause" else "active"
            else:
                if not any(s == sid and not gone for s, gone in k.engines.values()):
                    # A schedule's command type needs its handler in the session (404 without).
                    status, e = await self.write(
                        ("engine", sid), "POST", "/api/engines", {"engine_type": "DummyEngine", "session_id": sid}
                    )
                    if status == 201:
                        k.engines[e["engine_id"]] = (sid, False)
                body = {
                    "session_id": sid,
                    "command": {**DUMMY, "parameters": {"prompt": "s"}},
                    "every": rng.choice((1, 3600)),
                    "missed": rng.choice(("skip", "run_once")),
                }
                status, sch = await self.write(("schedule", sid), "POST", "/api/schedules", body)
                if status == 201:
                    k.schedules[sch["schedule_id"]] = "active"
        elif what == 10:  # a webhook: made or deleted
            mine = [i for i, there in k.webhooks.items() if there and i not in k.unknown]
            if mine and rng.random() < 0.4:
                wid = rng.choice(mine)
                status, _ = await self.write(wid, "DELETE", f"/api/webhooks/{wid}")
                if status in (200, 204):
                    k.webhooks[wid] = False
            else:
                url = f"http://127.0.0.1:9/hook/{rng.getrandbits(32)}"
                status, hook = await self.write(
                    ("webhook", sid), "POST", "/api/webhooks", {"url": url, "session_id": sid}
                )
                if status == 201:
                    k.webhooks[hook["webhook_id"]] = True
        elif what == 11:
            status, fork = await self.write(("fork", sid), "POST", f"/api/sessions/{sid}/fork", {})
            if status == 201:
                k.sessions[fork["session"]["session_id"]] = "active"
                self.mine.append(fork["session"]["session_id"])
        elif what == 12:
            commands = [{**DUMMY, "parameters": {"prompt": f"b{i}"}} for i in range(rng.randrange(1, 20))]
            status, batch = await self.write(
                ("batch", sid), "POST", f"/api/sessions/{sid}/commands/batch", {"commands": commands}
            )
            if status == 202:
                k.batches[batch["batch_id"]] = sid
        elif what == 14:  # a secret: set, or deleted
            name = f"CRASH_{self.n}"
            if k.secrets.get(name):
                status, _ = await self.write(name, "DELETE", f"/api/secrets/{name}")
                if status in (200, 204):
                    k.secrets[name] = False
            else:
                status, _ = await self.write(name, "PUT", f"/api/secrets/{name}", {"value": f"v{rng.random()}"})
                if status == 200:
                    k.secrets[name] = True
        elif what == 15:  # a log record (the telemetry database)
            body = {"message": f"crash {self.n}", "level": "info", "session_id": sid}
            status, record = await self.write(("log", sid), "POST", "/api/observability/logs", body)
            if status == 201:
                k.logs.add(record["id"])
        elif what == 13:  # a command that blocks its session, one queued behind it; one cancelled
            path = f"/api/sessions/{sid}/commands"
            slow = {**DUMMY, "parameters": {"prompt": "slow", "delay_ms": 600_000}}
            ids = []
            for body in (slow, DUMMY):
                status, command = await self.write(("command", sid), "POST", path, body)
                if status == 202:
                    ids.append(command["command_id"])
            if ids:
                cid = rng.choice(ids)
                status, command = await self.write(cid, "POST", f"{path}/{cid}/cancel")
                if status == 200 and command["status"] == "cancelled":
                    k.cancelled[cid] = sid
        else:
            status, event = await self.write(("event", sid), "POST", f"/api/sessions/{sid}/events", {"event_type": "W"})
            if status == 201:
                k.events[event["event_id"]] = sid

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.step()
            except (TimeoutError, aiohttp.ClientError, ValueError):
                return  # the daemon is gone: this write's answer never came


async def load_then_kill(home: Path, proc: Any, clients: list[Client], known: Known, rng: random.Random) -> None:
    await wait_ready(home, proc)
    async with unix_session(home) as http:
        for c in clients:
            c.http = http
        stop = asyncio.Event()
        tasks = [asyncio.create_task(c.run(stop)) for c in clients]
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        if rng.random() < 0.5:  # killed while it stops (`llmgine daemon stop`: SIGTERM)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(rng.uniform(0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        stop.set()
        await asyncio.gather(*tasks)


async def tcp_status(port: int, path: str, credential: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {credential}"}) as resp,
    ):
        assert resp.status < 500, await resp.text()
        return resp.status


async def check(home: Path, proc: Any, port: int, known: Known) -> None:
    await wait_ready(home, proc)
    k = known
    async with unix_session(home) as http:
        # A purge the kill cut short (the session ended, some of its rows gone) is done again.
        for sid in list(k.purging):
            async with http.delete(f"/api/sessions/{sid}?purge=true") as resp:
                assert resp.status in (204, 404), await resp.text()
            k.sessions[sid] = GONE
            k.unknown.discard(sid)
            k.purging.discard(sid)
        for sid, state in k.sessions.items():
            if sid in k.unknown:
                continue
            status, s = await call(http, "GET", f"/api/sessions/{sid}")
            if state == GONE:
                assert status == 404, (sid, s)
            else:
                assert status == 200 and s["status"] == state, (sid, state, s, [x for x in k.log if sid in str(x)])

        def session_of(sid: str) -> str | None:
            return None if sid in k.unknown else k.sessions.get(sid)

        for eid, (sid, deleted) in k.engines.items():
            if eid in k.unknown or session_of(sid) is None:
                continue
            status, e = await call(http, "GET", f"/api/engines/{eid}")
            if deleted or session_of(sid) == GONE:
                assert status == 404 or e["status"] == "stopped", (eid, e)
            else:
                want = "initialized" if session_of(sid) == "active" else "stopped"
                assert status == 200 and e["status"] == want, (eid, want, e)
        for table, path in ((k.tools, "/api/sessions/{}/tools/{}"), (k.mcp, "/api/sessions/{}/mcp-servers/{}")):
            for (sid, name), there in table.items():
                if (sid, name) in k.unknown or session_of(sid) != "active":
                    continue
                status, body = await call(http, "GET", path.format(sid, name))
                assert status == (200 if there else 404), (path, sid, name, there, body)
        for (sid, ctype), there in k.handlers.items():
            if (sid, ctype) in k.unknown or session_of(sid) != "active":
                continue
            _, page = await call(http, "GET", f"/api/sessions/{sid}/handlers?kind=command")
            types = {h["type"] for h in page["handlers"] if h["scope"] == "session"}
            assert (ctype in types) == there, (sid, ctype, there, page)
        for sch, state in k.schedules.items():
            if sch in k.unknown:
                continue
            status, body = await call(http, "GET", f"/api/schedules/{sch}")
            sid = body["session_id"] if status == 200 else None
            if state == GONE:
                assert status == 404, (sch, body)
            elif status == 404:  # its session was purged
                assert sid is None
            else:
                _, session = await call(http, "GET", f"/api/sessions/{sid}")
                want = state if session["status"] == "active" else "done"
                assert body["status"] == want, (sch, want, body)
        for wid, there in k.webhooks.items():
            if wid in k.unknown:
                continue
            status, body = await call(http, "GET", f"/api/webhooks/{wid}")
            assert status in ((200, 404) if there else (404,)), (wid, there, body)
        for bid, sid in k.batches.items():
            if session_of(sid) in ("active", "closed"):
                status, body = await call(http, "GET", f"/api/sessions/{sid}/batches/{bid}")
                assert status == 200, (bid, body)
        _, listed = await call(http, "GET", "/api/secrets")
        there = {s["name"] for s in listed["secrets"]}
        assert {n for n, v in k.secrets.items() if n not in k.unknown and (n in there) != v} == set(), there
        for cid, sid in k.cancelled.items():
            if session_of(sid) in ("active", "closed") and cid not in k.unknown:
                status, body = await call(http, "GET", f"/api/sessions/{sid}/commands/{cid}")
                assert status == 200 and body["status"] == "cancelled", (cid, body)
        for event_id, sid in k.events.items():
            if session_of(sid) in ("active", "closed"):
                status, body = await call(http, "GET", f"/api/sessions/{sid}/events/{event_id}")
                assert status == 200, (event_id, body, [x for x in k.log if sid in str(x)])
        # Listings and the state machines: nothing answers 500; the queue drains.
        for path in (
            "/api/sessions?limit=1000",
            "/api/engines?limit=1000",
            "/api/schedules?limit=1000",
            "/api/webhooks?limit=1000",
            "/api/auth/keys",
            "/api/handlers",
            "/api/mcp-servers",
            "/api/commands?limit=1000",
            "/api/status",
            "/api/usage",
        ):
            status, body = await call(http, "GET", path)
            assert status == 200, (path, body)

        async def settled() -> bool:
            _, page = await call(http, "GET", "/api/commands?status=queued&limit=1")
            _, running = await call(http, "GET", "/api/commands?status=executing&limit=1000")
            for c in running["commands"]:  # a slow one (10 minutes) the queue started again
                await call(http, "POST", f"/api/sessions/{c['session_id']}/commands/{c['command_id']}/cancel")
            return page["total"] == 0 and running["total"] == 0

        await eventually(settled, timeout=60, message="no command queued or executing")
        _, health = await call(http, "GET", "/api/health")
        assert health["status"] == "healthy", health
    # Credentials, over TCP: acknowledged keys work, revoked ones stay refused; tokens of
    # sessions that ended are refused.
    for kid, (key, revoked) in k.keys.items():
        if kid not in k.unknown:
            assert await tcp_status(port, "/api/status", key) == (401 if revoked else 200), (kid, revoked)
    for token, sid in k.tokens.items():
        state = k.sessions.get(sid)
        if sid not in k.unknown and state is not None:
            want = 200 if state == "active" else 401
            assert await tcp_status(port, f"/api/sessions/{sid}", token) == want, (sid, state)
    with open_home_db(home, telemetry=True) as db:
        stored = {r[0] for r in db.execute("SELECT id FROM logs WHERE source = 'client'")}
        assert k.logs <= stored, sorted(k.logs - stored)
    # Half-done work: rows of purged sessions, active schedules of ended ones.
    with open_home_db(home) as db:
        orphans = {
            table: db.execute(
                f"SELECT COUNT(*) FROM {table} t WHERE t.{col} IS NOT NULL AND t.{col} != ''"
                f" AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.session_id = t.{col})"
            ).fetchone()[0]
            for table, col in (
                ("schedules", "session_id"),
                ("webhooks", "session_id"),
                ("session_tokens", "session_id"),
                ("mcp_servers", "scope"),
                ("engines", "session_id"),
                ("tools", "session_id"),
                ("handlers", "session_id"),
                ("commands", "session_id"),
                ("events", "session_id"),
            )
        }
        assert not any(orphans.values()), orphans
        (ended,) = db.execute(
            "SELECT COUNT(*) FROM schedules c JOIN sessions s ON s.session_id = c.session_id"
            " WHERE s.status != 'active' AND c.status != 'done'"
        ).fetchone()
        assert ended == 0
        # A schedule fires each due time at most once, across the kills too.
        fired = Counter(
            (m["schedule_id"], m["schedule_due"])
            for (text,) in db.execute("SELECT metadata FROM commands WHERE metadata LIKE '%schedule_due%'")
            for m in [json.loads(text)]
        )
        assert [f for f, n in fired.items() if n > 1] == []
        # The counts kept per session (triggers, and the inserts' own updates) equal the rows.
        recount = SESSION_COUNTS_RECOUNT.format(sid="s.session_id")
        rows = db.execute(
            f"SELECT s.session_id, c.commands, c.events, c.engines, c.tools, c.handlers, {recount}"
            " FROM sessions s JOIN session_counts c ON c.session_id = s.session_id"
        ).fetchall()
        assert rows and [r for r in rows if tuple(r[1:6]) != tuple(r[6:])] == []


@pytest.mark.timeout(600)
def test_kill_9_during_every_kind_of_write(home):
    rounds = int(os.environ.get("LLMGINE_CRASH_ROUNDS", "2"))
    seed = os.environ.get("LLMGINE_CRASH_SEED", str(random.randrange(1 << 30)))
    print(f"LLMGINE_CRASH_SEED={seed}")
    rng = random.Random(seed)
    known = Known()
    clients = [Client(n, None, known, random.Random(rng.random())) for n in range(6)]  # type: ignore[arg-type]
    port = free_port()
    receiver = Receiver()
    receiver.status = 200
    proc = run_daemon(home, "--port", str(port), env=ENV)
    try:
        asyncio.run(hook_every_event(home, proc, receiver.url))
        for _ in range(rounds):
            asyncio.run(load_then_kill(home, proc, clients, known, rng))
            integrity_ok(home)
            proc = run_daemon(home, "--port", str(port), env=ENV)
            asyncio.run(check(home, proc, port, known))

        def delivered() -> set[str]:  # at least once, the kills (and leases left) notwithstanding
            with receiver.lock:
                got = {b["data"]["event_id"] for b in receiver.bodies}
            kept = {
                e
                for e, sid in known.events.items()
                if known.sessions.get(sid) in ("active", "closed") and sid not in known.unknown
            }
            return kept - got

        try:
            eventually_blocking(lambda: not delivered(), timeout=90, message="every acknowledged event delivered")
        except AssertionError:
            missing = delivered()
            with open_home_db(home) as db:
                rows = db.execute(
                    "SELECT d.event_seq, d.status, d.attempts, d.next_attempt_at, d.lease_until, e.event_id"
                    " FROM webhook_deliveries d LEFT JOIN events e ON e.seq = d.event_seq"
                ).fetchall()
                cursor = db.execute("SELECT * FROM webhook_cursor").fetchall()
                seqs = dict(db.execute("SELECT event_id, seq FROM events WHERE event_type = 'W'").fetchall())
            mine = [r for r in rows if r[5] in missing]
            raise AssertionError((len(missing), sorted(seqs.get(m) for m in missing)[:20], mine[:20], cursor)) from None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        receiver.shutdown()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def hook_every_event(home: Path, proc: Any, url: str) -> None:
    await wait_ready(home, proc)
    async with unix_session(home) as http:
        status, body = await call(http, "POST", "/api/webhooks", {"url": url, "events": ["W"]})
        assert status == 201, body
