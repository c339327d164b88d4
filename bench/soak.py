"""A memory soak against a real ``llmgined`` over TCP: is the daemon's RSS flat under a steady
mix of work, or does it keep growing?

    python bench/soak.py --minutes 20                 # RSS every 30 s, a table at the end
    python bench/soak.py --minutes 5 --probe          # also Python object counts by type

The daemon runs as a child process on a fresh home (SQLite, rate limits 0, one sandbox worker)
while this process drives, with ``--clients`` loops each: create a session and a DummyEngine,
run commands (``?wait``), publish events, read the session, its events and commands back,
connect to its event stream (WebSocket or SSE, alternately) and read what comes, then close the
session. Every ``--interval`` seconds the daemon's RSS (``/proc/PID/status``) is sampled with the
operations done so far. ``--probe`` starts the daemon through a wrapper that, on SIGUSR1, writes
``gc.get_objects()`` counts by type, ``sys.getallocatedblocks()`` and glibc's ``mallinfo2`` to a
file in the home: the lines that grow with the work are what is kept per operation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.clitools import free_port, stop_process  # noqa: E402 - the repository's own helpers

KEY = "soak-key-0123456789abcdef0123456789"

# The wrapper the daemon runs under with --probe: a SIGUSR1 handler that dumps counts.
PROBE = r"""
import collections, ctypes, gc, json, os, signal, sqlite3, sys
from llmgine_daemon.server import main

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
lib = ctypes.CDLL("libsqlite3.so.0")  # the one the sqlite3 module links (ldd _sqlite3*.so)
lib.sqlite3_memory_used.restype = ctypes.c_int64

def cache_used(conn):
    # pysqlite_Connection starts with PyObject_HEAD, then the sqlite3* handle.
    db = ctypes.c_void_p.from_address(id(conn) + 16)
    cur, hi = ctypes.c_int(), ctypes.c_int()
    lib.sqlite3_db_status(db, 1, ctypes.byref(cur), ctypes.byref(hi), 0)  # SQLITE_DBSTATUS_CACHE_USED
    return cur.value

def dump(signum, frame):
    gc.unfreeze()  # the daemon froze what start-up made (server.tune_gc): count it too
    gc.collect()
    objs = gc.get_objects()
    gc.freeze()
    counts = collections.Counter(type(o).__qualname__ for o in objs)
    conns = [o for o in objs if type(o) is sqlite3.Connection]
    mi = libc.mallinfo2()
    out = {"types": dict(counts.most_common(600)), "blocks": sys.getallocatedblocks(),
           "malloc": {n: getattr(mi, n) for n, _ in MallInfo2._fields_},
           "sqlite_memory": lib.sqlite3_memory_used(),
           "sqlite_caches": sorted(cache_used(c) for c in conns)}
    path = os.path.join(os.environ["LLMGINE_HOME"], "probe.json")
    with open(path + ".tmp", "w") as f:
        json.dump(out, f)
    os.replace(path + ".tmp", path)

signal.signal(signal.SIGUSR1, dump)
sys.exit(main(sys.argv[1:]))
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Soak:
    def __init__(self, base: str, args: argparse.Namespace) -> None:
        self.base = base
        self.args = args
        self.ops: dict[str, int] = {"sessions": 0, "commands": 0, "events": 0, "gets": 0, "streams": 0, "errors": 0}
        self.stop = False

    async def client_loop(self, http: aiohttp.ClientSession, n: int) -> None:
        turn = 0
        while not self.stop:
            turn += 1
            try:
                await self.one_session(http, use_ws=(turn + n) % 2 == 0)
            except (TimeoutError, aiohttp.ClientError, KeyError, ValueError) as exc:
                self.ops["errors"] += 1
                if self.ops["errors"] < 10:
                    print(f"client {n}: {type(exc).__name__}: {exc}", file=sys.stderr)
                await asyncio.sleep(0.5)

    async def call(self, http: aiohttp.ClientSession, method: str, path: str, body: object = None) -> dict:
        async with http.request(method, self.base + path, json=body) as r:
            data = await r.json(content_type=None)
            if r.status >= 400:
                raise ValueError(f"{method} {path}: {r.status} {data}")
            if method == "GET":
                self.ops["gets"] += 1
            return data  # type: ignore[no-any-return]

    async def one_session(self, http: aiohttp.ClientSession, use_ws: bool) -> None:
        a = self.args
        sid = (await self.call(http, "POST", "/api/sessions", {"name": "soak", "metadata": {"k": "v" * 50}}))[
            "session_id"
        ]
        self.ops["sessions"] += 1
        await self.call(http, "POST", "/api/engines", {"engine_type": "DummyEngine", "session_id": sid})
        stream = asyncio.create_task(self.stream(http, sid, use_ws))
        for i in range(a.commands):
            await self.call(
                http,
                "POST",
                f"/api/sessions/{sid}/commands?wait=30",
                {"command_type": "DummyEngineCommand", "parameters": {"prompt": f"p{i}"}},
            )
            self.ops["commands"] += 1
        for i in range(a.events):
            await self.call(
                http,
                "POST",
                f"/api/sessions/{sid}/events",
                {"event_type": f"soak.e{i % 7}", "data": {"i": i, "x": "y" * 100}},
            )
            self.ops["events"] += 1
        await self.call(http, "GET", f"/api/sessions/{sid}")
        await self.call(http, "GET", f"/api/sessions/{sid}/events?limit=50")
        await self.call(http, "GET", f"/api/sessions/{sid}/commands")
        await self.call(http, "GET", "/api/sessions?limit=20")
        await self.call(http, "GET", "/api/status")
        await stream
        await self.call(http, "DELETE", f"/api/sessions/{sid}")

    async def stream(self, http: aiohttp.ClientSession, sid: str, use_ws: bool) -> None:
        path = f"/api/sessions/{sid}/events/stream"
        want = self.args.events // 2
        got = 0
        if use_ws:
            async with http.ws_connect(self.base.replace("http", "ws", 1) + path) as ws:
                while got < want:
                    msg = await asyncio.wait_for(ws.receive(), 30)
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    got += 1
        else:
            async with http.get(self.base + path, headers={"Accept": "text/event-stream"}) as r:
                async for line in r.content:
                    if line.startswith(b"data:"):
                        got += 1
                        if got >= want:
                            break
        self.ops["streams"] += 1


async def drive(args: argparse.Namespace, base: str, pid: int, home: Path) -> list[dict]:
    soak = Soak(base, args)
    headers = {"Authorization": f"Bearer {KEY}"}
    samples: list[dict] = []
    start = time.monotonic()
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=60)) as http:
        tasks = [asyncio.create_task(soak.client_loop(http, n)) for n in range(args.clients)]
        end = start + args.minutes * 60
        while True:
            now = time.monotonic()
            sample = {"t": round(now - start), "rss_kib": rss_kib(pid), **soak.ops}
            if args.probe:
                sample["probe"] = await probe(pid, home)
            samples.append(sample)
            print(json.dumps({k: v for k, v in sample.items() if k != "probe"}), flush=True)
            if now >= end:
                break
            await asyncio.sleep(min(args.interval, end - now))
        soak.stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
    return samples


async def probe(pid: int, home: Path) -> dict:
    path = home / "probe.json"
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    for _ in range(200):
        if path.exists():
            return json.loads(path.read_text())  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    return {}


def report(samples: list[dict], top: int) -> None:
    first, last = samples[0], samples[-1]
    print("\n  t (s)   RSS (MiB)  sessions  commands    events")
    for s in samples:
        print(f"{s['t']:7d} {s['rss_kib'] / 1024:11.1f} {s['sessions']:9d} {s['commands']:9d} {s['events']:9d}")
    if len(samples) > 2:
        mid = samples[len(samples) // 2]
        for a, b, label in ((first, mid, "first half"), (mid, last, "second half")):
            dt = max(1, b["t"] - a["t"])
            rss, sessions = (b["rss_kib"] - a["rss_kib"]) / dt, (b["sessions"] - a["sessions"]) / dt
            print(f"{label}: {rss:+.2f} KiB/s, {sessions:.1f} sessions/s")
    if "probe" in last and "probe" in samples[1 if len(samples) > 1 else 0]:
        a, b = samples[1]["probe"], last["probe"]
        print(f"allocated blocks: {a['blocks']} -> {b['blocks']}")
        if "sqlite_memory" in b:
            print(f"SQLite heap: {a['sqlite_memory']} -> {b['sqlite_memory']} bytes; page caches: {b['sqlite_caches']}")
        ma, mb = a["malloc"], b["malloc"]
        print(f"malloc in use: {ma['uordblks']} -> {mb['uordblks']} bytes, arenas {ma['arena']} -> {mb['arena']}")
        growth = {t: b["types"].get(t, 0) - a["types"].get(t, 0) for t in set(a["types"]) | set(b["types"])}
        for t, d in sorted(growth.items(), key=lambda kv: -kv[1])[:top]:
            print(f"  {t:40s} {a['types'].get(t, 0):8d} -> {b['types'].get(t, 0):8d} ({d:+d})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--interval", type=float, default=30)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--commands", type=int, default=10, help="commands per session")
    ap.add_argument("--events", type=int, default=20, help="events per session")
    ap.add_argument("--probe", action="store_true", help="Python object counts by type (see the docstring)")
    ap.add_argument("--json", type=Path, help="write the samples here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmgine-soak-") as tmp:
        home = Path(tmp)
        port = free_port()
        env = {
            **os.environ,
            "LLMGINE_HOME": str(home),
            "API_PORT": str(port),
            "API_KEY_SECRET": KEY,
            "API_WORKERS": "1",
            "LLMGINE_RATE_LIMIT_UNAUTHENTICATED": "0",
            "LLMGINE_RATE_LIMIT_AUTHENTICATED": "0",
            "LLMGINE_RATE_LIMIT_WEBSOCKET": "0",
            "LLMGINE_MAX_SESSIONS": "0",
            "LOG_LEVEL": "warning",
        }
        argv = (
            [sys.executable, "-c", PROBE]
            if args.probe
            else [sys.executable, "-c", "import sys; from llmgine_daemon.server import main; sys.exit(main([]))"]
        )
        with open(home / "daemon.log", "wb") as log:
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        print((home / "daemon.log").read_text(), file=sys.stderr)
                        return 1
                    time.sleep(0.1)
            samples = asyncio.run(drive(args, base, proc.pid, home))
        finally:
            stop_process(proc)  # type: ignore[arg-type]
        if args.json:
            args.json.write_text(json.dumps(samples))
        report(samples, top=25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
