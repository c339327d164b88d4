"""Several nodes on one PostgreSQL database: cross-node fan-out latency, and commands/s with one
and with two nodes, each against its baseline in the same run.

    python bench/pg_cluster.py [--rate 1000] [--seconds 5] [--clients 32] [--url postgresql://...]

Real ``llmgined`` processes (this checkout), each with its own home, talked to over its Unix
socket (no rate limits there, as bench/README.md's other figures). Without ``--url`` (or
LLMGINE_TEST_DATABASE_URL) a throwaway PostgreSQL server is started as the tests do
(tests/postgres.py); every database is new.

- **Fan-out**: two nodes A and B; one WebSocket subscriber on each, on the same session; events
  published on A at ``--rate`` per second for ``--seconds`` (paced, not awaited in turn).
  Latency = receipt time - the publisher's clock when it sent the request (one machine, one
  clock); it includes the HTTP request, the durable commit and, for B, the NOTIFY and the
  read from the store. The subscriber on A is the baseline: same events, same run, no hop
  between nodes. Target (issue 16): B's p99 under 50 ms at 1,000 events/s.
- **Commands/s**: ``--clients`` clients, each with its own session and DummyEngine (no delay),
  ``POST .../commands?wait=30`` in a loop for ``--seconds``, counting ``completed`` answers:
  on one SQLite node (the baseline), on one PostgreSQL node, and on two PostgreSQL nodes
  (clients spread over both).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Node:
    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        home.mkdir(parents=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmgine_daemon"],
            env={**os.environ, "LLMGINE_HOME": str(home), "LOG_LEVEL": "warning", **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.socket: Path | None = None

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llmgined exited: {self.proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            found = list(self.home.rglob("llmgined.sock"))
            if found:
                self.socket = found[0]
                try:
                    self.get("/api/health")
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("llmgined did not start")

    def get(self, path: str) -> Any:
        import http.client
        import socket as _socket

        class Conn(http.client.HTTPConnection):
            def connect(self_inner) -> None:  # noqa: N805
                sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
                sock.connect(str(self.socket))
                self_inner.sock = sock

        conn = Conn("localhost", timeout=10)
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())

    def session(self) -> aiohttp.ClientSession:
        assert self.socket is not None
        return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(self.socket)))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(tmp: Path, name: str, env: dict[str, str]) -> Node:
    node = Node(tmp / name, {"LLMGINE_MAX_SESSIONS": "0", **env})
    node.wait_ready()
    return node


# -- fan-out --------------------------------------------------------------------------------


async def _subscribe(
    node: Node, sid: str, n: int, got: list[float], ready: asyncio.Event, arrived: dict[int, dict[str, float]]
) -> None:
    async with node.session() as http:
        async with http.ws_connect(f"http://localhost/api/sessions/{sid}/events/stream?event_type=Tick") as ws:
            async for msg in ws:
                frame = json.loads(msg.data)
                if frame["type"] == "hello":
                    ready.set()
                elif frame["type"] == "event":
                    got.append(time.time() - frame["event"]["data"]["t"])
                    arrived.setdefault(frame["event"]["seq"], {})[node.home.name] = time.time()
                    if len(got) >= n:
                        return


async def fanout(a: Node, b: Node, rate: int, seconds: float) -> dict[str, list[float]]:
    async with a.session() as http:
        async with http.post("http://localhost/api/sessions", json={}) as resp:
            sid = (await resp.json())["session_id"]
        n = int(rate * seconds)
        lat: dict[str, list[float]] = {"same node (A)": [], "other node (B)": []}
        readies = [asyncio.Event(), asyncio.Event()]
        arrived: dict[int, dict[str, float]] = {}
        subs = [
            asyncio.create_task(_subscribe(node, sid, n, got, ready, arrived))
            for node, got, ready in zip((a, b), lat.values(), readies, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)
        url = f"http://localhost/api/sessions/{sid}/events"
        pending: set[asyncio.Task[Any]] = set()

        async def publish(i: int) -> None:
            async with http.post(url, json={"event_type": "Tick", "data": {"i": i, "t": time.time()}}) as resp:
                await resp.read()

        start_t = time.monotonic()
        for i in range(n):
            delay = start_t + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(publish(i))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*list(pending))
        await asyncio.wait_for(asyncio.gather(*subs), 60)
    # The hop alone: when B's subscriber had an event minus when A's had it.
    lat["hop B - A"] = [t[b.home.name] - t[a.home.name] for t in arrived.values() if len(t) == 2]
    return lat


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


# -- commands/s -----------------------------------------------------------------------------


async def commands_per_second(nodes: list[Node], clients: int, seconds: float) -> float:
    sessions = [n.session() for n in nodes]
    try:
        sids = []
        for i in range(clients):
            http = sessions[i % len(nodes)]
            async with http.post("http://localhost/api/sessions", json={}) as resp:
                sid = (await resp.json())["session_id"]
            async with http.post(
                "http://localhost/api/engines", json={"engine_type": "DummyEngine", "session_id": sid}
            ) as resp:
                await resp.read()
            sids.append(sid)
        done = 0
        stop_at = time.monotonic() + seconds
        body = {"command_type": "DummyEngineCommand", "parameters": {"prompt": "hi"}}

        async def client(i: int) -> None:
            nonlocal done
            k = 0
            while time.monotonic() < stop_at:
                # Two nodes: each client's requests alternate between them.
                http = sessions[(i + k) % len(nodes)]
                k += 1
                async with http.post(f"http://localhost/api/sessions/{sids[i]}/commands?wait=30", json=body) as resp:
                    data = await resp.json()
                if data.get("status") == "completed":
                    done += 1

        t0 = time.monotonic()
        await asyncio.gather(*(client(i) for i in range(clients)))
        return done / (time.monotonic() - t0)
    finally:
        for s in sessions:
            await s.close()


# -- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--url", default=os.environ.get("LLMGINE_TEST_DATABASE_URL"))
    args = parser.parse_args()

    from tests.postgres import PgServer

    server = PgServer(args.url) if args.url else PgServer.start()
    tmp = Path(tempfile.mkdtemp(prefix="lgbench"))
    nodes: list[Node] = []
    try:
        url = server.new_database(empty=True)
        pg = {"DATABASE_URL": url}
        a, b = start(tmp, "a", pg), start(tmp, "b", pg)
        nodes += [a, b]
        lat = asyncio.run(fanout(a, b, args.rate, args.seconds))
        print(f"fan-out, {args.rate} events/s for {args.seconds:g} s, one subscriber per node")
        print(f"  {'subscriber':<16} {'events':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for name, values in lat.items():
            print(
                f"  {name:<16} {len(values):>7} {pct(values, 0.5):>8.1f} {pct(values, 0.99):>8.1f}"
                f" {max(values) * 1000:>8.1f}"
            )
        p99 = pct(lat["other node (B)"], 0.99)
        hop = pct(lat["hop B - A"], 0.99)
        print(
            f"  cross-node p99 {p99:.1f} ms: {'PASS' if p99 < 50 else 'FAIL'} (target < 50 ms);"
            f" the hop alone (B - A): p99 {hop:.1f} ms"
        )
        for n in nodes:
            n.stop()
        nodes.clear()

        rows = []
        lite = start(tmp, "sqlite", {})
        nodes.append(lite)
        rows.append(
            ("SQLite, one node (baseline)", asyncio.run(commands_per_second([lite], args.clients, args.seconds)))
        )
        lite.stop()
        nodes.clear()
        url2 = server.new_database(empty=True)
        one = start(tmp, "pg1", {"DATABASE_URL": url2})
        nodes.append(one)
        rows.append(("PostgreSQL, one node", asyncio.run(commands_per_second([one], args.clients, args.seconds))))
        two = start(tmp, "pg2", {"DATABASE_URL": url2})
        nodes.append(two)
        rows.append(("PostgreSQL, two nodes", asyncio.run(commands_per_second([one, two], args.clients, args.seconds))))
        base = rows[0][1]
        print(f"\ncommands/s, {args.clients} clients, DummyEngine, ?wait=30, {args.seconds:g} s")
        for name, rate in rows:
            print(f"  {name:<30} {rate:>8.0f}/s  {rate / base:>5.2f}x baseline")
    finally:
        for n in nodes:
            n.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        server.stop()  # ours: stopped and removed; a given one: our databases dropped


if __name__ == "__main__":
    main()
