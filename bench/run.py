"""Every benchmark of issue 10 in one run, printed as one table of ratios against baselines
measured in the same run, with the targets and pass/fail.

    python bench/run.py [--quick] [--seconds 2] [--rounds 3] [--clients 64] [--batch 10000]

Figures and baselines (see bench/README.md for the method and the latest results):
- CLI: `session list -o json`, `command run -o json`, `event publish -q` median wall times vs
  `python -c pass` of the same interpreter in a clean venv (bench/cli_startup.py).
- Commands completed/s (DummyEngine, no delay, 64 clients, ?wait, durable) and events
  published/s vs requests/s of a trivial route (GET /bench/noop, mounted in the bench's own app
  instance, same middlewares, same daemon and socket), interleaved rounds (bench/bench_bus.py).
  Under each, what bounds it: the same requests without bus or storage (echo routes), and the
  bus alone in-process; together they give the figure's ceiling.
- A batch of N commands over HTTP vs an in-memory bus dispatching the same handler (no HTTP, no
  storage: the issue's baseline); under it the durable bus in-process, the batch's ceiling.
- Fan-out (100 WebSocket subscribers at 1,000 events/s, every event to every subscriber,
  p50/p99 publish -> receipt) vs the same with 1 subscriber (bench/bench_streams.py).
- Memory: the daemon's RSS idle, with 1,000 sessions, after the load, with 100 subscribers
  connected, vs a bare aiohttp app with one route.

Load generator: a lean asyncio HTTP/1.1 client over the Unix socket (bench_bus.Conn, one
keep-alive connection per client) in this process; the daemon is a child process. Rate limits
do not apply on the Unix socket (rate_limits.unix_socket is off by default), so they cannot
distort the figures. LLMGINE_DB_SYNCHRONOUS=normal measures without an fsync per commit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_bus  # noqa: E402
import cli_startup  # noqa: E402


@dataclass
class Row:
    figure: str
    measured: str
    baseline: str
    ratio: str
    target: str = ""
    ok: bool | None = None


# -- memory ---------------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def serve_bare(sock: str) -> None:
    """The memory baseline: aiohttp with one trivial route, nothing of llmgine."""
    from aiohttp import web

    asyncio.run(bench_bus.serve_app(web.Application(), sock))


async def settle(sock: str, requests: int = 50) -> None:
    """A few requests first, so idle RSS includes what the first request loads."""
    conn = await bench_bus.connect(sock)
    for _ in range(requests):
        await conn.request(bench_bus.build("GET", "/bench/noop"))
    assert conn.transport is not None
    conn.transport.close()


async def sessions_phase(sock: str, pid: int, n: int, clients: int = 32) -> float:
    """Create ``n`` sessions and measure the daemon's RSS."""
    import json

    conns = [await bench_bus.connect(sock) for _ in range(clients)]
    raw = bench_bus.build("POST", "/api/sessions", {})
    ids: list[str] = []

    async def create(conn: bench_bus.Conn, count: int) -> None:
        for _ in range(count):
            status, body = await conn.request(raw)
            assert status == 201, body[:200]
            ids.append(json.loads(body)["session_id"])

    await asyncio.gather(*(create(c, n // clients + (i < n % clients)) for i, c in enumerate(conns)))
    rss = rss_mib(pid)
    for conn in conns:
        assert conn.transport is not None
        conn.transport.close()
    return rss


# -- the run --------------------------------------------------------------------------------


def cli_rows(runs: int) -> list[Row]:
    """The three calls scripts make in loops, against `python -c pass` in a clean venv."""
    baseline, measured = cli_startup.measure(runs)
    rows = []
    for name, seconds in measured.items():
        ratio = seconds / baseline
        rows.append(
            Row(
                f"CLI `{name}` (median wall)",
                f"{seconds * 1000:.0f} ms",
                f"`python -c pass` (clean venv) {baseline * 1000:.0f} ms",
                f"{ratio:.1f}x",
                f"<= {cli_startup.TARGET:g}x",
                ratio <= cli_startup.TARGET,
            )
        )
    return rows


def daemon_rows(args: argparse.Namespace, root: Path) -> tuple[list[Row], dict[str, list[float]]]:
    rows: list[Row] = []
    bare = bench_bus.start_child([__file__, "--serve-bare", str(root / "bare.sock")])
    try:
        asyncio.run(settle(str(root / "bare.sock")))
        bare_rss = rss_mib(bare.pid)
    finally:
        bench_bus.stop_child(bare)

    sock = str(root / "d.sock")
    child = bench_bus.start_child([bench_bus.__file__, "--serve", sock, str(root / "http")])
    try:
        asyncio.run(settle(sock))
        idle = rss_mib(child.pid)
        with_sessions = asyncio.run(sessions_phase(sock, child.pid, 1000))
        http = asyncio.run(bench_bus.http_phase(sock, args.clients, args.seconds, args.batch, args.rounds, child.pid))
        after_load = rss_mib(child.pid)
    finally:
        bench_bus.stop_child(child)
    inproc = asyncio.run(
        bench_bus.inprocess_phase(str(root / "inproc"), args.clients, args.seconds, args.batch, args.rounds)
    )

    med = statistics.median
    noop = http["noop"]
    # Under each throughput figure, not targets but what bounds it, against the same noop route:
    # the same requests answered without the bus or storage (the echo routes: body read,
    # decoded and validated, a record of the same shape encoded), and the bus alone (no HTTP,
    # same store, same durability). A request costs both, and the daemon is bound by its CPU
    # (one event loop; the GIL), so its figure is at most noop / (echo + bus) counted in CPU
    # time per request - CPU time, not rates: the in-process phase runs at another moment, and
    # a neighbour's load on the machine changes rates but not CPU time.
    for key, label, target in (
        ("commands", "commands completed/s (HTTP, ?wait)", 0.40),
        ("events", "events published/s (HTTP)", 0.60),
    ):
        ratio = med(h / n for h, n in zip(http[key], noop, strict=True))
        rows.append(
            Row(
                label,
                f"{med(http[key]):,.0f}/s",
                f"noop route {med(noop):,.0f}/s",
                f"{ratio:.0%}",
                f">= {target:.0%}",
                ratio >= target,
            )
        )
        echo = med(h / n for h, n in zip(http[f"echo_{key}"], noop, strict=True))
        rows.append(
            Row(
                "  same requests, no bus or storage (echo)",
                f"{med(http[f'echo_{key}']):,.0f}/s",
                f"noop route {med(noop):,.0f}/s",
                f"{echo:.0%}",
            )
        )
        cpu_noop, cpu_echo, cpu_bus = (med(http["cpu_noop"]), med(http[f"cpu_echo_{key}"]), med(inproc[f"cpu_{key}"]))
        rows.append(
            Row(
                f"  {key}, in-process bus (no HTTP): CPU/op",
                f"{cpu_bus * 1e6:,.0f} us",
                f"noop route {cpu_noop * 1e6:,.0f} us",
                f"{cpu_noop / cpu_bus:.0%}",
                f"ceiling {cpu_noop / (cpu_echo + cpu_bus):.0%}",
            )
        )
    # The batch's baseline is the issue's: an in-memory bus dispatching the same handler, no
    # HTTP and no storage. Under it, the durable bus in-process (same store, no HTTP): the
    # most an HTTP batch can do, since it does all of that work too.
    memory, durable, batch_http = med(inproc["memory_batch"]), med(inproc["batch"]), med(http["batch"])
    ratio = batch_http / memory
    rows.append(
        Row(
            f"batch of {args.batch:,} commands (HTTP)",
            f"{batch_http:,.0f}/s",
            f"in-memory bus {memory:,.0f}/s",
            f"{ratio:.0%}",
            ">= 50%",
            ratio >= 0.5,
        )
    )
    rows.append(
        Row(
            "  same, durable bus in-process (no HTTP)",
            f"{durable:,.0f}/s",
            f"in-memory bus {memory:,.0f}/s",
            f"{durable / memory:.0%}",
            f"ceiling {durable / memory:.0%} (HTTP: {batch_http / durable:.0%} of it)",
        )
    )
    for label, value in (
        ("daemon RSS idle", idle),
        ("daemon RSS, 1,000 sessions", with_sessions),
        ("daemon RSS after the load above", after_load),
    ):
        rows.append(Row(label, f"{value:.0f} MiB", f"bare aiohttp app {bare_rss:.0f} MiB", f"{value / bare_rss:.1f}x"))
    return rows, {"noop": noop, "bare_rss": [bare_rss], **{f"inproc_{k}": v for k, v in inproc.items()}}


def fanout_rows(args: argparse.Namespace, bare_rss: float) -> tuple[list[Row], list[Row]]:
    """(fan-out rows, [daemon RSS with 100 subscribers]): bench_streams.py in a child process."""
    import bench_streams

    return bench_streams.run_rows(Row, quick=args.quick, bare_rss=bare_rss)


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    sync = os.environ.get("LLMGINE_DB_SYNCHRONOUS", "full")
    print(
        f"llmgine benchmarks: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs,"
        f" {platform.system()} {platform.release()}, Python {platform.python_version()},"
        f" load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(
        f"durable (synchronous={sync}); {args.clients} clients; lean asyncio HTTP/1.1 load generator over the"
        f" Unix socket (no rate limits there); median of {args.rounds} interleaved rounds of {args.seconds:g} s"
    )
    print()
    headers = ("figure", "measured", "baseline (same run)", "ratio", "target", "result")
    table = [headers] + [
        (r.figure, r.measured, r.baseline, r.ratio, r.target, "" if r.ok is None else ("PASS" if r.ok else "FAIL"))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (a smoke run)")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--cli-runs", type=int, default=15)
    parser.add_argument("--serve-bare", metavar="SOCKET", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return 0
    if args.quick:
        args.seconds, args.rounds, args.batch, args.cli_runs = 1.0, 1, 2000, 5

    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="lgb", dir="/tmp"))
    try:
        rows = cli_rows(args.cli_runs)
        daemon, extra = daemon_rows(args, root)
        fanout, memory = fanout_rows(args, extra["bare_rss"][0])
        throughput = 6  # commands and events, three rows each; then batch (two) and memory
        rows += daemon[:throughput] + fanout + daemon[throughput:] + memory
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print_table(rows, args)
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0 if all(r.ok is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
