"""The daemon's request path in one process, without the kernel: CPU per request of the Python
side alone, for A/B runs of changes to it (bench/wrk_http.py is the benchmark).

    python bench/inproc_http.py [--requests 20000] [--connections 32] [--loads get,events,...]

The real app (``create_app``, started by an ``AppRunner`` with the daemon's server options, a
SQLite database in a temp dir, default settings but rate limits 0) is fed HTTP/1.1 requests as
bytes through in-memory transports: ``--connections`` keep-alive connections each send their
next request as soon as the previous response is written, as wrk does. A bare aiohttp route
runs the same way (``bare``); ``health`` is ``GET /api/health`` with the key, the edge around a
handler that reads nothing. Printed per load: CPU µs per request of the whole process
(``time.process_time``: the event loop and the store's threads; the median of the rounds and
the lowest, which other load on the machine can only raise), and of the loop's thread alone.
Without sockets there is no syscall and no load generator: the figures are the parsing,
routing, middlewares, handler, storage and response writing that a request costs (still
moved by other load on a shared machine: alternate the trees, ``--ab``). Run it with ``PYTHONPATH=DIR`` to measure
another tree's ``llmgine_daemon``, or alternate trees round by round, each in a child process:

    python bench/inproc_http.py --ab main=/tmp/main branch=/tmp/branch --rounds 20 --requests 2000

(each DIR holds an ``llmgine_daemon`` package: a copy of a tree's ``daemon/`` or a symlink).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from aiohttp import web

LOADS = ("bare", "health", "get", "events", "fastevents", "commands", "fastcommands")


class Transport(asyncio.Transport):
    """An in-memory connection: what the server writes is scanned for complete responses."""

    def __init__(self, on_response: Any) -> None:
        super().__init__()
        self.on_response = on_response
        self.buffer = b""
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.buffer += bytes(data)
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].lower()
            marker = head.find(b"content-length:")
            length = (
                int(head[marker + 15 : head.find(b"\r\n", marker) if head.find(b"\r\n", marker) > 0 else None])
                if marker >= 0
                else 0
            )
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            response, self.buffer = self.buffer[:end], self.buffer[end:]
            self.on_response(response)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: Any = None, low: Any = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def request_bytes(method: str, path: str, key: str | None, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1:8080"]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    if body or method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def drive(server: Any, requests: list[bytes], total: int, connections: int) -> tuple[float, float, list[bytes]]:
    """Send ``total`` requests (cycling through ``requests``) over ``connections``; returns the
    process and thread CPU seconds it took, and a few responses to check."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    state = {"sent": 0, "answered": 0}
    seen: list[bytes] = []

    def make(i: int) -> tuple[Any, Transport]:
        protocol = server()

        def on_response(response: bytes) -> None:
            state["answered"] += 1
            if len(seen) < 3 or not response.startswith((b"HTTP/1.1 200", b"HTTP/1.1 201")):
                seen.append(response)
            if state["answered"] >= total:
                if not done.done():
                    done.set_result(None)
                return
            if state["sent"] < total:
                n = state["sent"]
                state["sent"] += 1
                loop.call_soon(protocol.data_received, requests[n % len(requests)])

        transport = Transport(on_response)
        protocol.connection_made(transport)
        return protocol, transport

    pairs = [make(i) for i in range(connections)]
    p0, t0 = time.process_time(), time.thread_time()
    for protocol, _ in pairs:
        n = state["sent"]
        state["sent"] += 1
        protocol.data_received(requests[n % len(requests)])
    await done
    p1, t1 = time.process_time(), time.thread_time()
    for protocol, transport in pairs:
        transport.closing = True
        protocol.connection_lost(None)
    await asyncio.sleep(0.05)
    return p1 - p0, t1 - t0, seen


async def call(server: Any, method: str, path: str, key: str, body: Any = None) -> dict[str, Any]:
    raw = json.dumps(body).encode() if body is not None else b""
    _, _, seen = await drive(server, [request_bytes(method, path, key, raw)], 1, 1)
    head, _, payload = seen[0].partition(b"\r\n\r\n")
    if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.1 201")):
        raise SystemExit(f"{method} {path}: {seen[0][:400]!r}")
    return json.loads(payload) if payload else {}


async def main_async(opts: argparse.Namespace) -> None:
    from llmgine_daemon.api.fastlane import fast_laned
    from llmgine_daemon.api.limits import runner_kwargs
    from llmgine_daemon.app import create_app
    from llmgine_daemon.server import tune_gc
    from llmgine_daemon.settings import get_paths, load_settings, read_local_key

    home = tempfile.mkdtemp(prefix="lgin", dir="/tmp")
    env = {
        # Settings from this environment reach the app (ENABLE_TRACING=0, LLMGINE_DB_...).
        **{k: v for k, v in os.environ.items() if k.startswith(("LLMGINE_", "ENABLE_", "DATABASE_"))},
        "LLMGINE_HOME": home,
        "LLMGINE_RATE_LIMIT_AUTHENTICATED": "0",
        "LLMGINE_RATE_LIMIT_UNAUTHENTICATED": "0",
        "LLMGINE_RATE_LIMIT_WEBSOCKET": "0",
    }
    settings = load_settings(env=env)
    runner = web.AppRunner(create_app(settings), handle_signals=False, **runner_kwargs(settings))
    await runner.setup()

    async def root(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "n": 1})

    bare_app = web.Application()
    bare_app.router.add_get("/", root)
    bare_runner = web.AppRunner(bare_app, access_log=None)
    await bare_runner.setup()
    try:
        key = read_local_key(get_paths(env))
        assert key, "no local key"
        server = runner.server
        sessions = [(await call(server, "POST", "/api/sessions", key, {}))["session_id"] for _ in range(64)]
        for sid in sessions:
            await call(server, "POST", "/api/engines", key, {"engine_type": "DummyEngine", "session_id": sid})
        event = b'{"event_type":"Bench","data":{"n":1}}'
        command = b'{"command_type":"DummyEngineCommand","parameters":{"prompt":"x"}}'
        loads = {
            "bare": (bare_runner.server, [request_bytes("GET", "/", None)]),
            # The whole edge (request id, span, guard with the bearer key, envelope, metrics) around
            # a handler that reads nothing: the edge's cost apart from any route's own work.
            "health": (server, [request_bytes("GET", "/api/health", key)]),
            "get": (server, [request_bytes("GET", f"/api/sessions/{sessions[0]}", key)]),
            "events": (server, [request_bytes("POST", f"/api/sessions/{s}/events", key, event) for s in sessions]),
            # The same requests through the fast lane, as the daemon's TCP listeners serve them.
            "fastevents": (
                fast_laned(server, runner.app),
                [request_bytes("POST", f"/api/sessions/{s}/events", key, event) for s in sessions],
            ),
            "commands": (
                server,
                [request_bytes("POST", f"/api/sessions/{s}/commands?wait=30", key, command) for s in sessions],
            ),
            "fastcommands": (
                fast_laned(server, runner.app),
                [request_bytes("POST", f"/api/sessions/{s}/commands?wait=30", key, command) for s in sessions],
            ),
        }
        wanted = [name for name in opts.loads.split(",") if name]
        tune_gc()
        if opts.serve:
            await serve_rounds(loads, opts.connections)
            return
        if opts.profile:
            await profile(loads[opts.profile], opts)
            return
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in wanted}
        for _ in range(opts.rounds):
            for name in wanted:
                srv, reqs = loads[name]
                process, thread, seen = await drive(srv, reqs, opts.requests, opts.connections)
                bad = [r for r in seen if not r.startswith((b"HTTP/1.1 200", b"HTTP/1.1 201"))]
                if bad:
                    raise SystemExit(f"{name}: {bad[0][:400]!r}")
                results[name].append((process / opts.requests * 1e6, thread / opts.requests * 1e6))
                gc.collect()
        print(f"{opts.rounds} rounds x {opts.requests} requests over {opts.connections} connections (in memory)")
        print(f"{'load':<10}{'CPU us/request':>16}{'lowest':>8}{'loop thread':>13}   rounds")
        for name, runs in results.items():
            process = statistics.median(p for p, _ in runs)
            lowest = min(p for p, _ in runs)
            thread = statistics.median(t for _, t in runs)
            each = " ".join(f"{p:.0f}" for p, _ in runs)
            print(f"{name:<10}{process:>16.1f}{lowest:>8.1f}{thread:>13.1f}   [{each}]")
    finally:
        await runner.cleanup()
        await bare_runner.cleanup()
        shutil.rmtree(home, ignore_errors=True)


async def profile(load: tuple[Any, list[bytes]], opts: argparse.Namespace) -> None:
    """One warm-up round, then one under cProfile: Python function calls per request (a count:
    the same on a busy machine) and the functions with the most time of their own."""
    import cProfile
    import pstats

    srv, reqs = load
    await drive(srv, reqs, opts.requests, opts.connections)
    profiler = cProfile.Profile()
    profiler.enable()
    await drive(srv, reqs, opts.requests, opts.connections)
    profiler.disable()
    if os.environ.get("PROFILE_DUMP"):
        profiler.dump_stats(os.environ["PROFILE_DUMP"])
    stats = pstats.Stats(profiler)
    calls = sum(nc for _, nc, _, _, _ in stats.stats.values())  # type: ignore[attr-defined]
    print(f"{opts.profile}: {calls / opts.requests:.1f} Python function calls per request")
    print_layers(stats, opts.requests)
    stats.sort_stats("tottime").print_stats(30)


def layer_of(filename: str, name: str) -> str:
    """Which part of the process a profiled function belongs to: the daemon's package by its
    subpackage (api, bus, observability...), aiohttp, asyncio, or C (sqlite3, msgspec, socket)."""
    if filename == "~":
        return "C: " + name.split(" of ")[-1].strip("<>'").split("'")[0] if " of " in name else "C: builtins"
    for marker, label in (("/llmgine_daemon/", "daemon"), ("/daemon/", "daemon")):
        if marker in filename:
            rest = filename.split(marker, 1)[1]
            return f"{label}/{rest.split('/')[0]}" if "/" in rest else f"{label}/{rest}"
    for lib in ("aiohttp", "asyncio", "multidict", "yarl", "aiosqlite", "msgspec"):
        if f"/{lib}/" in filename:
            return lib
    return "other"


def print_layers(stats: Any, requests: int) -> None:
    """The profile's own time (tottime) summed by layer, in µs per request (under cProfile,
    whose overhead inflates Python calls more than C ones: compare shares between runs)."""
    layers: dict[str, float] = {}
    for (filename, _, name), (_, _, tottime, _, _) in stats.stats.items():
        layer = layer_of(filename, name)
        layers[layer] = layers.get(layer, 0.0) + tottime
    total = sum(layers.values())
    for layer, spent in sorted(layers.items(), key=lambda kv: -kv[1]):
        if spent / total >= 0.005:
            print(f"  {layer:<40}{spent / requests * 1e6:8.1f} µs  {spent / total:6.1%}")


async def serve_rounds(loads: dict[str, tuple[Any, list[bytes]]], connections: int) -> None:
    """Child of an ``--ab`` run: reads "LOAD N" lines, answers with that round's CPU µs per
    request (process, loop thread)."""
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).split():
        name, count = line[0], int(line[1])
        srv, reqs = loads[name]
        process, thread, seen = await drive(srv, reqs, count, connections)
        bad = [r for r in seen if not r.startswith((b"HTTP/1.1 200", b"HTTP/1.1 201"))]
        if bad:
            raise SystemExit(f"{name}: {bad[0][:400]!r}")
        print(f"{process / count * 1e6:.2f} {thread / count * 1e6:.2f}", flush=True)


def ab(opts: argparse.Namespace) -> None:
    """Trees alternated in short rounds, each in its own child process (all alive at once), so
    that whatever else loads the machine falls on all of them alike."""
    children = {}
    for spec in opts.ab:
        name, tree = spec.split("=", 1)
        env = {**os.environ, "PYTHONPATH": tree}
        args = [sys.executable, __file__, "--serve", "--connections", str(opts.connections)]
        children[name] = subprocess.Popen(args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for name, child in children.items():
            if child.stdout is None or child.stdout.readline().strip() != "ready":
                raise SystemExit(f"{name} did not start")
        wanted = [name for name in opts.loads.split(",") if name]
        results: dict[tuple[str, str], list[float]] = {}
        order = list(children)
        for i in range(opts.rounds):
            for load in wanted:
                for name in order if i % 2 == 0 else order[::-1]:
                    child = children[name]
                    assert child.stdin is not None and child.stdout is not None
                    child.stdin.write(f"{load} {opts.requests}\n")
                    child.stdin.flush()
                    process = float(child.stdout.readline().split()[0])
                    results.setdefault((load, name), []).append(process)
        print(f"{opts.rounds} alternations x {opts.requests} requests, {opts.connections} connections (in memory)")
        print(f"{'load':<10}{'tree':<10}{'median':>8}{'lowest':>8}{'vs ' + order[0]:>10}")
        for load in wanted:
            base = statistics.median(results[(load, order[0])])
            for name in order:
                runs = results[(load, name)]
                med = statistics.median(runs)
                print(f"{load:<10}{name:<10}{med:>8.1f}{min(runs):>8.1f}{med / base - 1:>+10.1%}")
    finally:
        for child in children.values():
            if child.stdin is not None:
                child.stdin.close()
            child.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loads", default=",".join(LOADS))
    parser.add_argument("--ab", nargs="+", metavar="NAME=DIR", help="alternate trees (see above)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", choices=LOADS, help="profile one load (cProfile) instead")
    opts = parser.parse_args()
    if opts.ab:
        ab(opts)
        return
    asyncio.run(main_async(opts))
    os._exit(0)  # the store's threads are closed; do not wait for stray executors


if __name__ == "__main__":
    main()
