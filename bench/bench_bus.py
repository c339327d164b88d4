"""Bus throughput: commands and events per second over HTTP, against two baselines measured in
the same run.

    python bench/bench_bus.py [--seconds 3] [--clients 64] [--batch 10000]

- The daemon app (create_app, durable: database.synchronous as configured, default "full")
  runs in a child process on a Unix socket, with one extra trivial route (GET /bench/noop that
  returns "ok") going through the same middlewares: that route's requests/s is the HTTP
  baseline.
- The load generator is a lean asyncio client in this process (raw HTTP/1.1 keep-alive over
  the Unix socket, one connection per client, no HTTP library); the socket has no rate limits.
- "in-process" is the same work through the Bus API with no HTTP (same store, same durability),
  run after the daemon child has exited so the two never share the CPU.

Commands: one session with one DummyEngine (no delay) per client; each client POSTs
DummyEngineCommand with ?wait=30 and counts only 200 + "completed" (commands completed end to
end). Events: each client POSTs to its own session. Batch: one POST of N commands with
?wait, vs the same N commands through the in-process bus.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PASSED_ENV = ("LLMGINE_DB", "ENABLE_TRACING", "ENABLE_METRICS")


def bench_env(home: str) -> dict[str, str]:
    """The daemon's environment: its own home, plus LLMGINE_DB_* (e.g. synchronous=normal) and
    ENABLE_TRACING/ENABLE_METRICS (to measure what observability costs)."""
    # The active-session cap (security.limits.max_sessions) is a capacity guard, not what is
    # measured: run.py holds 1,000 sessions open for its memory figure on top of the clients'.
    return {
        "LLMGINE_HOME": home,
        "LLMGINE_MAX_SESSIONS": "100000",
        **{k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV)},
    }


# -- the daemon child -----------------------------------------------------------------------


async def serve_app(app: Any, sock: str, *, echo: bool = False) -> None:
    """Serve ``app`` plus the trivial route (GET /bench/noop answers "ok") on a Unix socket,
    say "ready", and stop when stdin closes. ``echo``: and add_echo_routes."""
    from aiohttp import web

    async def noop(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/bench/noop", noop)
    if echo:
        add_echo_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.UnixSite(runner, sock).start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


def add_echo_routes(app: Any) -> None:
    """POST /bench/echo/{session_id}/events|commands: the HTTP part of a publish or a submit and
    nothing else - the same body read, decoded and validated, a record of the same shape encoded
    and answered - with no bus and no storage. What a request costs beyond the noop route before
    the bus does anything: with the in-process figures, the ceiling of the HTTP figures."""
    from llmgine_daemon.api.util import json_response, read_json
    from llmgine_daemon.bus.codec import new_id
    from llmgine_daemon.protocol import Command, CommandCreate, Event, EventCreate, now_iso

    async def event(request: Any) -> Any:
        body = await read_json(request, EventCreate)
        return json_response(
            Event(
                event_id=new_id(),
                seq=1,
                session_id=request.match_info["session_id"],
                event_type=body.event_type,
                data=body.data,
                metadata=body.metadata,
                timestamp=now_iso(),
                source="api",
                trace_id=new_id(),
            ),
            status=201,
        )

    async def command(request: Any) -> Any:
        body = await read_json(request, CommandCreate)
        now = now_iso()
        return json_response(
            Command(
                command_id=new_id(),
                status="completed",
                created_at=now,
                session_id=request.match_info["session_id"],
                command_type=body.command_type,
                parameters=body.parameters,
                metadata=body.metadata,
                started_at=now,
                finished_at=now,
                duration_ms=0.1,
                trace_id=new_id(),
                result={
                    "response": "Dummy response to: hello world",
                    "engine_id": new_id(),
                    "model_name": None,
                    "temperature": 0.7,
                    "prompt_sha256": "0123456789abcdef",
                    "usage": {"prompt_tokens": 2, "completion_tokens": 5},
                },
            )
        )

    app.router.add_post("/bench/echo/{session_id}/events", event)
    app.router.add_post("/bench/echo/{session_id}/commands", command)


def serve(sock: str, home: str) -> None:
    from llmgine_daemon.app import create_app
    from llmgine_daemon.settings import load_settings

    async def main() -> None:
        await serve_app(create_app(load_settings(env=bench_env(home))), sock, echo=True)

    profile = os.environ.get("BENCH_PROFILE")
    if profile:  # BENCH_PROFILE=out.prof: cProfile the daemon child (inspect with pstats)
        import cProfile

        cProfile.runctx("asyncio.run(main())", globals(), {"main": main, "asyncio": asyncio}, profile)
    else:
        asyncio.run(main())


# -- a lean HTTP/1.1 client over a Unix socket ---------------------------------------------


class Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        i = head.find(b"content-length:")
        length = int(head[i + 15 : head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None]) if i >= 0 else 0
        total = end + 4 + length
        if len(self.buf) < total:
            return
        status = int(self.buf[9:12])
        body = bytes(self.buf[end + 4 : total])
        del self.buf[:total]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((status, body))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(raw)
        return await self.waiter


def build(method: str, path: str, body: Any = None) -> bytes:
    payload = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: llmgine\r\nContent-Length: {len(payload)}\r\n"
    if body is not None:
        head += "Content-Type: application/json\r\n"
    return head.encode() + b"\r\n" + payload


async def connect(sock: str) -> Conn:
    _, conn = await asyncio.get_running_loop().create_unix_connection(Conn, sock)
    return conn


async def call(conn: Conn, method: str, path: str, body: Any = None) -> Any:
    status, payload = await conn.request(build(method, path, body))
    assert status < 300, (status, payload[:300])
    return json.loads(payload)


async def load(conns: list[Conn], requests: list[bytes], seconds: float, ok: bytes | None) -> float:
    """Each connection sends its request in a loop; returns successful requests per second."""
    return (await load_with_cpu(conns, requests, seconds, ok, None))[0]


async def load_with_cpu(
    conns: list[Conn],
    requests: list[bytes],
    seconds: float,
    ok: bytes | None,
    cpu: Callable[[], float] | None,
) -> tuple[float, float]:
    """``load``, plus the CPU seconds per successful request that ``cpu()`` (a CPU-time clock,
    e.g. the daemon's) counted over the same window (0.0 without one)."""
    stop = False
    counts = [0] * len(conns)

    async def client(i: int) -> None:
        conn, raw = conns[i], requests[i]
        while not stop:
            status, body = await conn.request(raw)
            if status < 300 and (ok is None or ok in body):
                counts[i] += 1

    tasks = [asyncio.create_task(client(i)) for i in range(len(conns))]
    await asyncio.sleep(min(0.5, seconds / 4))  # warm up
    start_count, t0, c0 = sum(counts), time.perf_counter(), cpu() if cpu else 0.0
    await asyncio.sleep(seconds)
    done, elapsed, used = sum(counts) - start_count, time.perf_counter() - t0, (cpu() - c0) if cpu else 0.0
    stop = True
    await asyncio.gather(*tasks)
    return done / elapsed, used / max(done, 1)


TICK = os.sysconf("SC_CLK_TCK")


def stat_cpu(path: str) -> float:
    """User + system CPU seconds from a /proc ``stat`` file: a process's (all its threads) or
    one thread's (``/proc/PID/task/TID/stat``). CPU time rather than wall time: another
    tenant's load on the machine (steal time) does not count in it."""
    with open(path) as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def process_cpu(pid: int) -> float:
    return stat_cpu(f"/proc/{pid}/stat")


Loads = dict[str, tuple[list[bytes], bytes | None]]


async def prepare_loads(sock: str, clients: int) -> tuple[list[Conn], list[str], Loads]:
    """One connection per client, each with its own session and DummyEngine, and the requests
    of each load (noop, commands, events) with what a good answer contains."""
    conns = [await connect(sock) for _ in range(clients)]
    sids = []
    for conn in conns:
        sid = (await call(conn, "POST", "/api/sessions", {}))["session_id"]
        await call(conn, "POST", "/api/engines", {"engine_type": "DummyEngine", "session_id": sid})
        sids.append(sid)
    loads: Loads = {
        "noop": ([build("GET", "/bench/noop")] * clients, None),
        "commands": (
            [
                build(
                    "POST",
                    f"/api/sessions/{sid}/commands?wait=30",
                    {"command_type": "DummyEngineCommand", "parameters": {"prompt": "hello world"}},
                )
                for sid in sids
            ],
            b'"status":"completed"',
        ),
        "events": (
            [
                build("POST", f"/api/sessions/{sid}/events", {"event_type": "BenchTick", "data": {"n": 1}})
                for sid in sids
            ],
            None,
        ),
        # The same two requests without the bus (add_echo_routes).
        "echo_commands": (
            [
                build(
                    "POST",
                    f"/bench/echo/{sid}/commands?wait=30",
                    {"command_type": "DummyEngineCommand", "parameters": {"prompt": "hello world"}},
                )
                for sid in sids
            ],
            b'"status":"completed"',
        ),
        "echo_events": (
            [build("POST", f"/bench/echo/{sid}/events", {"event_type": "BenchTick", "data": {"n": 1}}) for sid in sids],
            None,
        ),
    }
    return conns, sids, loads


def start_child(args: list[str]) -> subprocess.Popen[str]:
    """A benchmark child process (``--serve``), once it has said it is ready."""
    child = subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def stop_child(child: subprocess.Popen[str]) -> None:
    """Closing its stdin is how a ``--serve`` child is told to stop."""
    assert child.stdin is not None
    child.stdin.close()
    child.wait(timeout=120)


async def http_phase(
    sock: str,
    clients: int,
    seconds: float,
    batch: int,
    rounds: int,
    pid: int,
) -> dict[str, list[float]]:
    """Figures are measured in interleaved rounds (noop, commands, events, noop, ...) so a
    change of machine load hits all of them alike; "cpu_<load>": the daemon's (``pid``) CPU
    seconds per request."""
    conns, sids, work = await prepare_loads(sock, clients)
    out: dict[str, list[float]] = {key: [] for key in (*work, *(f"cpu_{k}" for k in work), "batch")}
    for _ in range(rounds):
        for key, (requests, ok) in work.items():
            rate, cpu = await load_with_cpu(conns, requests, seconds, ok, lambda: process_cpu(pid))
            out[key].append(rate)
            out[f"cpu_{key}"].append(cpu)
    body = {
        "commands": [{"command_type": "DummyEngineCommand", "parameters": {"prompt": f"p{i}"}} for i in range(batch)]
    }
    t0 = time.perf_counter()
    result = await call(conns[0], "POST", f"/api/sessions/{sids[0]}/commands/batch?wait=300", body)
    elapsed = time.perf_counter() - t0
    assert all(c["status"] == "completed" for c in result["commands"])
    out["batch"].append(batch / elapsed)
    for conn in conns:
        assert conn.transport is not None
        conn.transport.close()
    return out


# -- the same work in-process ----------------------------------------------------------------


async def inprocess_phase(home: str, clients: int, seconds: float, batch: int, rounds: int) -> dict[str, list[float]]:
    from llmgine_daemon.bus.commands import validate
    from llmgine_daemon.bus.core import Bus
    from llmgine_daemon.engines import ENGINE_TYPES
    from llmgine_daemon.observability.core import Observability
    from llmgine_daemon.protocol import CommandCreate
    from llmgine_daemon.settings import load_settings
    from llmgine_daemon.store.db import Store
    from llmgine_daemon.store.telemetry import telemetry_path

    memory = await memory_dispatch(batch)  # first: nothing else of the daemon running yet
    settings = load_settings(env=bench_env(home))
    store = Store(settings.database_path, synchronous=settings["database.synchronous"])
    await store.open()
    # Observability as the daemon has it (spans, metrics, telemetry flushes): the bus's work
    # includes them there too.
    telemetry = Store(
        telemetry_path(settings.database_path), synchronous=settings["database.synchronous"], telemetry=True
    )
    await telemetry.open()
    obs = Observability(settings, store, telemetry)
    await obs.start()
    bus = Bus(store, engine_types=ENGINE_TYPES)
    await bus.start()
    sids = []
    for _ in range(clients):
        sid = (await bus.sessions.create(None, {})).session_id
        await bus.engines.create("DummyEngine", sid, None, {})
        sids.append(sid)
    spec = validate(CommandCreate("DummyEngineCommand", {"prompt": "hello world"}))

    async def rate(op: Any) -> tuple[float, float]:
        """(operations per second, CPU seconds of this process per operation)."""
        stop = False
        counts = [0] * clients

        async def worker(i: int) -> None:
            while not stop:
                await op(sids[i])
                counts[i] += 1

        tasks = [asyncio.create_task(worker(i)) for i in range(clients)]
        await asyncio.sleep(min(0.5, seconds / 4))
        start_count, t0, c0 = sum(counts), time.perf_counter(), time.process_time()
        await asyncio.sleep(seconds)
        done, elapsed, used = sum(counts) - start_count, time.perf_counter() - t0, time.process_time() - c0
        stop = True
        await asyncio.gather(*tasks)
        return done / elapsed, used / max(done, 1)

    async def command(sid: str) -> None:
        rec, _ = await bus.commands.submit(sid, spec)
        await bus.commands.wait([rec], 30)
        assert rec.status == "completed"

    async def event(sid: str) -> None:
        await bus.events.publish(sid, "BenchTick", {"n": 1}, {})

    out: dict[str, list[float]] = {key: [] for key in ("commands", "events", "cpu_commands", "cpu_events", "batch")}
    out["memory_batch"] = [memory]
    for _ in range(rounds):
        for key, op in (("commands", command), ("events", event)):
            per_second, cpu = await rate(op)
            out[key].append(per_second)
            out[f"cpu_{key}"].append(cpu)
    specs = [validate(CommandCreate("DummyEngineCommand", {"prompt": f"p{i}"})) for i in range(batch)]
    t0 = time.perf_counter()
    result, _ = await bus.commands.submit_batch(sids[0], specs, "parallel", False)
    await bus.commands.wait(result.commands, 300)
    out["batch"].append(batch / (time.perf_counter() - t0))
    await bus.stop()
    await obs.stop()
    await telemetry.close()
    await store.close()
    return out


class _MemoryExecution:
    """What ``current()`` gives a handler, for ``memory_dispatch``: what it emits is recorded
    by ``record(event_type, data, metadata, source)``."""

    def __init__(self, command: Any, record: Callable[..., None]) -> None:
        self.command = command
        self._record = record

    def emit(
        self,
        event_type: str,
        data: dict[str, Any] | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        source: str = "handler",
    ) -> None:
        self._record(event_type, data or {}, metadata or {}, source)


async def memory_dispatch(n: int) -> float:
    """Commands per second of an in-memory bus - LLMGine's own, in spirit - dispatching the
    same handler (DummyEngine's) for ``n`` commands: a command record made, its handler
    looked up and run with an execution context, CommandStarted, what the handler emits and
    CommandResult recorded in a list. No HTTP, no storage, no tracing: the issue's batch
    baseline ("the in-process bus dispatching the same handler without HTTP or storage")."""
    from llmgine_daemon.bus.codec import new_id
    from llmgine_daemon.bus.commands import CURRENT
    from llmgine_daemon.bus.handler_registry import HandlerRegistry
    from llmgine_daemon.engines.dummy import DummyEngine
    from llmgine_daemon.protocol import Command, Engine, Event, now_iso

    sid = new_id()
    engine = DummyEngine(
        Engine(
            engine_id=new_id(),
            engine_type="DummyEngine",
            model_name=None,
            status="initialized",
            session_id=sid,
            created_at=now_iso(),
            configuration={},
            command_type="DummyEngineCommand",
        ),
        None,
    )
    handlers = HandlerRegistry()
    handlers.register("DummyEngineCommand", engine.handle, session_id=sid)
    log: list[Any] = []

    def record(event_type: str, data: dict[str, Any], metadata: dict[str, Any], source: str = "bus") -> None:
        log.append(
            Event(
                event_id=new_id(),
                seq=len(log) + 1,
                session_id=sid,
                event_type=event_type,
                data=data,
                metadata=metadata,
                timestamp=now_iso(),
                source=source,
            )
        )

    t0 = time.perf_counter()
    for i in range(n):
        command = Command(
            command_id=new_id(),
            status="queued",
            created_at=now_iso(),
            session_id=sid,
            command_type="DummyEngineCommand",
            parameters={"prompt": f"p{i}"},
            metadata={},
        )
        handler = handlers.require(sid, command.command_type).handler
        record("CommandStarted", {"command_id": command.command_id, "command_type": command.command_type}, {})
        token = CURRENT.set(_MemoryExecution(command, record))  # type: ignore[arg-type]
        try:
            result = await handler(command)
        finally:
            CURRENT.reset(token)
        command.status, command.result = "completed", result
        record("CommandResult", {"command_id": command.command_id, "status": "completed", "result": result}, {})
    elapsed = time.perf_counter() - t0
    assert len(log) == 4 * n
    return n / elapsed


# -- driver ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--serve", nargs=2, metavar=("SOCKET", "HOME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return

    root = Path(tempfile.mkdtemp(prefix="lgb", dir="/tmp"))
    try:
        sock = str(root / "d.sock")
        child = start_child([__file__, "--serve", sock, str(root / "http")])
        try:
            http = asyncio.run(http_phase(sock, args.clients, args.seconds, args.batch, args.rounds, child.pid))
        finally:
            stop_child(child)
        inproc = asyncio.run(inprocess_phase(str(root / "inproc"), args.clients, args.seconds, args.batch, args.rounds))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    report(args, http, inproc)


def report(args: argparse.Namespace, http: dict[str, list[float]], inproc: dict[str, list[float]]) -> None:
    med = statistics.median
    noop = http["noop"]
    print(
        f"llmgine bus benchmark: {args.clients} clients over a Unix socket, median of {args.rounds} interleaved"
        f" rounds of {args.seconds:g} s, durable (synchronous={os.environ.get('LLMGINE_DB_SYNCHRONOUS', 'full')}),"
        f" {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    print("load generator: lean asyncio HTTP/1.1 client in its own process (keep-alive, one connection per client)")
    print()
    print(f"{'figure':<36}{'per second':>12}{'vs noop route':>15}{'vs in-process':>15}")
    print(f"{'trivial route GET /bench/noop':<36}{med(noop):>12,.0f}{1.0:>15.0%}")
    for key, label in (("commands", "commands completed (HTTP, ?wait)"), ("events", "events published (HTTP)")):
        # Ratios against the noop route are taken per round (same machine load), then the median.
        vs_noop = med(h / n for h, n in zip(http[key], noop, strict=True))
        print(f"{label:<36}{med(http[key]):>12,.0f}{vs_noop:>15.0%}{med(http[key]) / med(inproc[key]):>15.0%}")
        echo = http[f"echo_{key}"]
        print(
            f"{'  same, no bus or storage (echo)':<36}{med(echo):>12,.0f}"
            f"{med(h / n for h, n in zip(echo, noop, strict=True)):>15.0%}"
        )
        print(f"{'  same, bus in-process (no HTTP)':<36}{med(inproc[key]):>12,.0f}")
    label = f"batch of {args.batch} (HTTP, parallel)"
    print(f"{label:<36}{med(http['batch']):>12,.0f}{'':>15}{med(http['batch']) / med(inproc['batch']):>15.0%}")
    print(f"{'  same, bus in-process (no HTTP)':<36}{med(inproc['batch']):>12,.0f}")
    print(
        f"{'  in-memory bus (no HTTP, no storage)':<36}{med(inproc['memory_batch']):>12,.0f}"
        f"{'':>15}{med(http['batch']) / med(inproc['memory_batch']):>15.0%}"
    )


if __name__ == "__main__":
    main()
