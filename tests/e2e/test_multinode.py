"""Several real ``llmgined`` processes on one PostgreSQL database: one bus.

Each node has its own home (socket, pid file, local key) and port, and the same
``DATABASE_URL``; a client may talk to any of them. What is checked: a session made on one node
is read, listed and ended on another; an Idempotency-Key gives one command whichever node is
asked; the commands of one session never overlap and keep priority order whichever node they
were submitted to; events published on two nodes at once reach a subscriber of each node in
one order, with no gap and no duplicate; a resume with ``since=`` on another node; a node
killed with SIGKILL: its sessions are taken over after the lease timeout (2 s here), what was
executing is interrupted, what was queued runs on a survivor; a cancel on one node of a
command running on another.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.test_llmgined import free_port, run_daemon, wait_for_http
from tests.eventually import eventually_blocking

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
    pytest.mark.own_database(reason="its nodes share a PostgreSQL database of their own"),
]

LEASE_TIMEOUT = "2"
# Low enough to reach in a test, high enough for every other test of a cluster (a fresh
# database each).
MAX_SESSIONS = 30
CMD = "DummyEngineCommand"


class Node:
    def __init__(self, home: Path, port: int, proc: subprocess.Popen[str], pg_url: str) -> None:
        self.home, self.port, self.proc, self.pg_url = home, port, proc, pg_url
        self.key = (home / "config" / "local.key").read_text().strip()
        self.base = f"http://127.0.0.1:{port}"

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        status, data = self.request(method, path, body, headers)
        assert 200 <= status < 300, (status, data)
        return data

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        req = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.key}", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def submit(self, sid: str, prompt: str, delay_ms: int = 0, priority: str = "normal", **kw: Any) -> Any:
        body = {"command_type": CMD, "parameters": {"prompt": prompt, "delay_ms": delay_ms}}
        body["metadata"] = {"priority": priority}
        return self.call("POST", f"/api/sessions/{sid}/commands", body, **kw)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def start_on_a_free_port(home: Path, env: dict[str, str], tries: int = 3) -> tuple[int, subprocess.Popen[str]]:
    """A node on a port that was free: another test's daemon may bind it between the choice and
    this node's start (this one then exits: wait_for_http sees that), so it is tried again on
    another port."""
    for attempt in range(tries):
        port = free_port()
        proc = run_daemon(home, "--port", str(port), env=env)
        try:
            wait_for_http(port, proc, timeout=60)
        except AssertionError:
            if proc.poll() is None or attempt == tries - 1:
                raise
            continue
        return port, proc
    raise AssertionError("unreachable")


@contextlib.contextmanager
def three_nodes(pg_url: str, base: Path, **extra: str) -> Iterator[list[Node]]:
    """Three nodes on the database of ``pg_url``, homes under ``base`` (the third for failover);
    ``extra``: more environment for each."""
    nodes: list[Node] = []
    env = {"DATABASE_URL": pg_url, "LLMGINE_LEASE_TIMEOUT": LEASE_TIMEOUT, "LLMGINE_MAX_SESSIONS": str(MAX_SESSIONS)}
    env.update(extra)
    procs: list[tuple[Path, int, subprocess.Popen[str]]] = []
    try:
        for i in range(3):
            home = base / f"node{i}"
            home.mkdir()
            procs.append((home, *start_on_a_free_port(home, env)))
        for home, port, proc in procs:
            nodes.append(Node(home, port, proc, pg_url))
        yield nodes
    finally:
        for _, _, proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, _, proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def cluster(pg_url: str, tmp_path: Path) -> Iterator[list[Node]]:
    """Three nodes of a test's own, on a fresh database: for a test that kills a node or
    counts what the cluster holds."""
    with three_nodes(pg_url, tmp_path) as nodes:
        yield nodes


@pytest.fixture(scope="module")
def shared(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    """Three nodes the module's tests share (each works in sessions of its own, and leaves every
    node running): starting three daemons is most of such a test's time. Those tests are one
    xdist group, so one worker runs them in a row with one cluster."""
    url = pg_server.new_database()
    try:
        with three_nodes(url, tmp_path_factory.mktemp("cluster")) as nodes:
            yield nodes
    finally:
        pg_server.drop_database(url)


SHARED = pytest.mark.xdist_group("tests/e2e/test_multinode.py::shared")


def session_with_engine(node: Node) -> str:
    sid = node.call("POST", "/api/sessions", {})["session_id"]
    node.call("POST", "/api/engines", {"engine_type": "DummyEngine", "session_id": sid})
    return sid


def session_events(node: Node, sid: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        page = node.call("GET", f"/api/sessions/{sid}/events?limit=500&after={after}")
        out.extend(page["events"])
        if len(page["events"]) < 500:
            return out
        after = page["events"][-1]["seq"]


@SHARED
def test_status_lists_every_node(shared):
    a, b, c = shared
    status = eventually_blocking(
        lambda: (s := a.call("GET", "/api/status"))["cluster"] and len(s["cluster"]["nodes"]) == 3 and s,
        timeout=30,
    )
    info = status["cluster"]
    assert info["backend"] == "postgresql" and info["lease_timeout"] == float(LEASE_TIMEOUT)
    ids = {n["node_id"] for n in info["nodes"]}
    assert info["node_id"] in ids
    assert b.call("GET", "/api/status")["cluster"]["node_id"] in ids
    assert len({a.call("GET", "/api/status")["cluster"]["node_id"], info["node_id"]}) == 1


@SHARED
def test_session_made_on_one_node_is_read_listed_and_ended_on_another(shared):
    a, b, _ = shared
    sid = a.call("POST", "/api/sessions", {"name": "shared"})["session_id"]
    assert b.call("GET", f"/api/sessions/{sid}")["name"] == "shared"
    assert sid in {s["session_id"] for s in b.call("GET", "/api/sessions?limit=100")["sessions"]}
    b.call("DELETE", f"/api/sessions/{sid}")
    assert a.call("GET", f"/api/sessions/{sid}")["status"] == "closed"


@SHARED
def test_idempotency_key_gives_one_command_across_nodes(shared):
    a, b, _ = shared
    sid = session_with_engine(a)
    headers = {"Idempotency-Key": "multi-node-1"}
    first = a.submit(sid, "once", headers=headers)
    status, second = b.request(
        "POST",
        f"/api/sessions/{sid}/commands",
        {"command_type": CMD, "parameters": {"prompt": "once", "delay_ms": 0}, "metadata": {"priority": "normal"}},
        headers,
    )
    assert status in (200, 201, 202) and second["command_id"] == first["command_id"]
    listed = a.call("GET", f"/api/sessions/{sid}/commands?limit=100")
    assert listed["total"] == 1


@SHARED
def test_commands_of_a_session_never_overlap_and_keep_priority_order(shared):
    a, b, _ = shared
    sid = session_with_engine(a)
    # A long first command holds the session while the others queue up on both nodes.
    blocker = a.submit(sid, "blocker", delay_ms=1500)
    priorities = ["low", "normal", "high", "low", "high", "normal", "low", "high"]
    submitted = []
    for i, prio in enumerate(priorities):
        node = (a, b)[i % 2]
        submitted.append(node.submit(sid, f"c{i}", delay_ms=200, priority=prio))
    ids = [blocker["command_id"]] + [c["command_id"] for c in submitted]
    # ?wait on the node that did not run them follows them in the store.
    for i, cmd in enumerate(submitted):
        node = (b, a)[i % 2]
        eventually_blocking(
            lambda node=node, cmd=cmd: (
                node.call("GET", f"/api/sessions/{sid}/commands/{cmd['command_id']}?wait=5")["status"] == "completed"
            ),
            timeout=60,
        )
    events = [e for e in session_events(b, sid) if e["event_type"] in ("CommandStarted", "CommandResult")]
    # Started/Result pairs never interleave: one command at a time.
    running = None
    order = []
    for e in events:
        cid = e["data"]["command_id"]
        if e["event_type"] == "CommandStarted":
            assert running is None, f"{cid} started while {running} ran"
            running = cid
            order.append(cid)
        else:
            assert running == cid
            running = None
    assert sorted(order) == sorted(ids) and order[0] == ids[0]
    rank = {"high": 0, "normal": 1, "low": 2}
    ranks_in_order = [rank[priorities[ids.index(cid) - 1]] for cid in order[1:]]
    assert ranks_in_order == sorted(ranks_in_order), ranks_in_order
    # Within a priority, first queued first run.
    for level in rank:
        same = [cid for cid in order[1:] if priorities[ids.index(cid) - 1] == level]
        assert same == [cid for cid in ids[1:] if priorities[ids.index(cid) - 1] == level]


async def _collect(node: Node, sid: str, until: int, out: list[int], ready: asyncio.Event) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {node.key}"}) as http:
        async with http.ws_connect(f"{node.base}/api/sessions/{sid}/events/stream?event_type=Tick") as ws:
            async for msg in ws:
                frame = json.loads(msg.data)
                if frame["type"] == "hello":
                    ready.set()
                elif frame["type"] == "event":
                    out.append(frame["event"]["seq"])
                    if len(out) >= until:
                        return


@SHARED
async def test_events_from_two_nodes_reach_both_in_one_order(shared):
    a, b, _ = shared
    sid = await asyncio.to_thread(a.call, "POST", "/api/sessions", {})
    sid = sid["session_id"]
    per_node = 60
    seen: dict[str, list[int]] = {"a": [], "b": []}
    readies = [asyncio.Event(), asyncio.Event()]
    tasks = [
        asyncio.create_task(_collect(node, sid, 2 * per_node, seen[name], ready))
        for (name, node), ready in zip((("a", a), ("b", b)), readies, strict=True)
    ]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)

    failures: list[Any] = []

    def publish(node: Node, tag: str) -> None:
        for i in range(per_node):
            status, body = node.request(
                "POST", f"/api/sessions/{sid}/events", {"event_type": "Tick", "data": {"n": i, "from": tag}}
            )
            if status != 201:
                failures.append((status, body))

    threads = [threading.Thread(target=publish, args=(n, t)) for n, t in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        await asyncio.to_thread(t.join)
    assert not failures
    stored = [e["seq"] for e in await asyncio.to_thread(session_events, a, sid) if e["event_type"] == "Tick"]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    except TimeoutError:
        missing = {name: sorted(set(stored) - set(got)) for name, got in seen.items()}
        raise AssertionError(f"not delivered: {missing}; stored {stored[0]}..{stored[-1]}") from None
    assert len(stored) == 2 * per_node
    assert seen["a"] == stored and seen["b"] == stored  # one order, no gap, no duplicate
    # A resume on the other node from the middle gives the rest, in the same order.
    mid = stored[per_node - 1]
    page = await asyncio.to_thread(b.call, "GET", f"/api/sessions/{sid}/events?after={mid}&limit=500")
    assert [e["seq"] for e in page["events"] if e["event_type"] == "Tick"] == stored[per_node:]
    resumed: list[int] = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {b.key}"}) as http:
        url = f"{b.base}/api/sessions/{sid}/events/stream?event_type=Tick&since={mid}"
        async with http.ws_connect(url) as ws:
            async for msg in ws:
                frame = json.loads(msg.data)
                if frame["type"] == "event":
                    resumed.append(frame["event"]["seq"])
                elif frame["type"] == "live":
                    break
    assert resumed == stored[per_node:]


@SHARED
async def test_a_session_ended_on_one_node_ends_its_streams_on_another(shared):
    """Its SessionEnded reached node b's subscriber, but only the node that ended a session
    ended its streams: b's stayed open for ever (`event tail` of that session never exited)."""
    a, b, _ = shared
    sid = (await asyncio.to_thread(a.call, "POST", "/api/sessions", {}))["session_id"]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {b.key}"}) as http:
        async with http.ws_connect(f"{b.base}/api/sessions/{sid}/events/stream") as ws:
            assert json.loads((await ws.receive(timeout=30)).data)["type"] == "hello"
            sse = await http.get(f"{b.base}/api/sessions/{sid}/events/stream", headers={"Accept": "text/event-stream"})
            assert b"stream.hello" in await sse.content.readuntil(b"\n\n")
            await asyncio.to_thread(a.call, "DELETE", f"/api/sessions/{sid}")
            frames = await asyncio.wait_for(_until_closed(ws), 30)  # a liveness bound: it never closed
            assert [f["event"]["event_type"] for f in frames if f["type"] == "event"][-1] == "SessionEnded"
            assert ws.close_code == 1000
            rest = await asyncio.wait_for(sse.content.read(), 30)
            assert b"event: SessionEnded" in rest and b'"code":1000' in rest, rest


async def _until_closed(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    return [json.loads(msg.data) async for msg in ws]


@SHARED
def test_cancel_on_one_node_reaches_a_command_running_on_another(shared):
    a, b, _ = shared
    sid = session_with_engine(a)
    running = a.submit(sid, "long", delay_ms=600_000)
    cid = running["command_id"]
    eventually_blocking(
        lambda: b.call("GET", f"/api/sessions/{sid}/commands/{cid}")["status"] == "executing", timeout=30
    )
    cancelled = b.call("POST", f"/api/sessions/{sid}/commands/{cid}/cancel")
    assert cancelled["status"] == "cancelled"
    assert a.call("GET", f"/api/sessions/{sid}/commands/{cid}")["status"] == "cancelled"


def test_kill_9_of_a_node_hands_its_sessions_to_the_survivors(cluster):
    a, b, c = cluster
    sid = session_with_engine(a)
    running = a.submit(sid, "long", delay_ms=600_000)
    cid = running["command_id"]
    # The command runs on whichever node took the session's lease: find it by its status.
    eventually_blocking(
        lambda: a.call("GET", f"/api/sessions/{sid}/commands/{cid}")["status"] == "executing", timeout=30
    )
    queued = [(b, c)[i % 2].submit(sid, f"q{i}") for i in range(3)]
    holder = _lease_holder(a, sid)
    victim = next(n for n in cluster if _node_id(n) == holder)
    survivors = [n for n in cluster if n is not victim]
    victim.kill()
    s = survivors[0]
    eventually_blocking(
        lambda: s.call("GET", f"/api/sessions/{sid}/commands/{cid}")["status"] == "interrupted", timeout=60
    )
    for q in queued:
        eventually_blocking(
            lambda q=q: s.call("GET", f"/api/sessions/{sid}/commands/{q['command_id']}")["status"] == "completed",
            timeout=60,
        )
    after = survivors[1].submit(sid, "after")
    done = survivors[1].call("GET", f"/api/sessions/{sid}/commands/{after['command_id']}?wait=30")
    assert done["status"] == "completed"
    nodes = eventually_blocking(
        lambda: (n := s.call("GET", "/api/status")["cluster"]["nodes"]) and len(n) == 2 and n, timeout=30
    )
    assert holder not in {n["node_id"] for n in nodes}


def test_a_restart_takes_its_own_sessions_back_at_once_but_a_copied_home_takes_nothing(pg_url, tmp_path):
    """A daemon restarted in its home takes over what it held at once, not after the lease
    timeout (ten minutes here); a copy of its home, node file included, started beside it
    while it lives takes nothing from it."""
    env = {"DATABASE_URL": pg_url, "LLMGINE_LEASE_TIMEOUT": "600"}

    def start(home: Path, port: int) -> Node:
        proc = run_daemon(home, "--port", str(port), env=env)
        wait_for_http(port, proc, timeout=60)
        return Node(home, port, proc, pg_url)

    (tmp_path / "a").mkdir()
    a = start(tmp_path / "a", free_port())
    copy: Node | None = None
    try:
        sid = session_with_engine(a)
        cid = a.submit(sid, "long", delay_ms=600_000)["command_id"]
        status = f"/api/sessions/{sid}/commands/{cid}"
        eventually_blocking(lambda: a.call("GET", status)["status"] == "executing", timeout=30)
        (tmp_path / "copy" / "state").mkdir(parents=True)
        (tmp_path / "copy" / "state" / "cluster-node").write_bytes((a.home / "state" / "cluster-node").read_bytes())
        copy = start(tmp_path / "copy", free_port())  # its start and first tick are behind it
        assert _lease_holder(a, sid) == _node_id(a)
        assert copy.call("GET", status)["status"] == "executing"
        a.kill()
        a = start(a.home, a.port)
        record = eventually_blocking(lambda: (r := a.call("GET", status))["status"] != "executing" and r, timeout=20)
        assert record["status"] == "interrupted"
    finally:
        for node in (a, copy):
            if node is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
                node.proc.wait(timeout=30)


def _node_id(node: Node) -> str:
    return str(node.call("GET", "/api/status")["cluster"]["node_id"])


def _lease_holder(node: Node, sid: str) -> str:
    """The node holding the session's lease, read in the database itself."""
    import psycopg

    with psycopg.connect(node.pg_url) as conn:
        row = conn.execute("SELECT node_id FROM session_leases WHERE session_id = %s", (sid,)).fetchone()
    assert row is not None
    return str(row[0])


@SHARED
def test_tool_registered_on_one_node_runs_on_another(shared):
    a, b, _ = shared
    sid = a.call("POST", "/api/sessions", {})["session_id"]
    code = "def double(n: int):\n    return {'twice': n * 2}\n"
    a.call("POST", f"/api/sessions/{sid}/tools", {"name": "double", "function_code": code})
    result = b.call("POST", f"/api/sessions/{sid}/tools/double/execute", {"arguments": {"n": 21}})
    assert result["result"] == {"twice": 42}


@SHARED
def test_ending_a_session_on_one_node_cancels_its_command_running_on_another(shared):
    a, b, _ = shared
    sid = session_with_engine(a)
    cid = a.submit(sid, "long", delay_ms=600_000)["command_id"]
    holder = eventually_blocking(lambda: _executing_on(a, sid, cid), timeout=30)
    other = next(n for n in (a, b) if _node_id(n) != holder)
    other.call("DELETE", f"/api/sessions/{sid}")
    done = eventually_blocking(
        lambda: (c := a.call("GET", f"/api/sessions/{sid}/commands/{cid}"))["status"] != "executing" and c,
        timeout=30,
    )
    assert done["status"] == "cancelled" and done["error"]["message"] == "session ended"


def _executing_on(node: Node, sid: str, cid: str) -> str | None:
    if node.call("GET", f"/api/sessions/{sid}/commands/{cid}")["status"] != "executing":
        return None
    return _lease_holder(node, sid)


def test_the_session_limit_holds_for_the_cluster(cluster):
    """At the limit, one slot is freed and every node (several threads each) races to take it:
    exactly one creation succeeds per round, whichever node's writer gets there first."""
    a = cluster[0]
    made = [a.call("POST", "/api/sessions", {})["session_id"] for _ in range(MAX_SESSIONS)]
    assert a.request("POST", "/api/sessions", {})[0] == 409
    for _ in range(8):
        a.call("DELETE", f"/api/sessions/{made.pop()}")
        barrier = threading.Barrier(3 * len(cluster))
        results: list[tuple[int, Any]] = []

        def create(node: Node, barrier: threading.Barrier = barrier, results: list[Any] = results) -> None:
            barrier.wait()
            results.append(node.request("POST", "/api/sessions", {}))

        threads = [threading.Thread(target=create, args=(n,)) for n in cluster for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(code for code, _ in results)
        assert codes == [201] + [409] * (len(codes) - 1), codes
        made.append(next(body["session_id"] for code, body in results if code == 201))


@SHARED
def test_keys_and_tokens_are_the_same_on_every_node(shared):
    """A key made on one node works on another at once; revoked there, it stops working on the
    other within a second or so (each node re-reads keys and tokens: bus/auth.py); a session
    token likewise ends with its session whichever node ends it. Each node's own local key
    survived the others' starts."""
    a, b, c = shared
    for node in (a, b, c):
        assert node.request("GET", "/api/status")[0] == 200  # every local key still valid
    made = a.call("POST", "/api/auth/keys", {"name": "ci"})
    key = {"Authorization": f"Bearer {made['key']}"}
    assert b.request("GET", "/api/sessions", headers=key)[0] == 200
    a.call("DELETE", f"/api/auth/keys/{made['key_id']}")
    eventually_blocking(lambda: b.request("GET", "/api/sessions", headers=key)[0] == 401, timeout=10)
    session = b.call("POST", "/api/sessions", {})
    token = {"Authorization": f"Bearer {session['session_token']}"}
    assert c.request("GET", f"/api/sessions/{session['session_id']}", headers=token)[0] == 200
    a.call("DELETE", f"/api/sessions/{session['session_id']}")
    eventually_blocking(
        lambda: c.request("GET", f"/api/sessions/{session['session_id']}", headers=token)[0] == 401, timeout=10
    )
