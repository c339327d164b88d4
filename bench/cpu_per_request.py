"""Requests per second and the daemon's CPU per request, for the noop route, commands and events.

    python bench/cpu_per_request.py [--rounds 3] [--seconds 3]

A tool for A/B runs while optimising (run.py is the benchmark): the same daemon child and load
as bench_bus.py (64 clients over the Unix socket, one session with a DummyEngine each), the
three loads interleaved round by round, and for each the CPU time the daemon's main thread
(the event loop) and the whole process used, read from /proc. "loop busy" near 100% means the
event loop is the bottleneck; lower means requests were waiting on something else (commits).
Environment variables reach the daemon as for bench_bus.py (LLMGINE_DB_*, ENABLE_TRACING...).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_bus  # noqa: E402


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(main thread, whole process) CPU seconds of ``pid``."""
    return bench_bus.stat_cpu(f"/proc/{pid}/task/{pid}/stat"), bench_bus.process_cpu(pid)


async def measure(sock: str, pid: int, rounds: int, seconds: float, clients: int) -> None:
    conns, _, loads = await bench_bus.prepare_loads(sock, clients)
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in loads}
    for _ in range(rounds):
        for name, (requests, ok) in loads.items():
            main0, total0 = cpu_seconds(pid)
            t0 = time.perf_counter()
            rate = await bench_bus.load(conns, requests, seconds, ok)
            elapsed = time.perf_counter() - t0
            main1, total1 = cpu_seconds(pid)
            results[name].append((rate, (main1 - main0) / elapsed, (total1 - total0) / elapsed))
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    med = statistics.median
    noop_rate = med(r for r, _, _ in results["noop"])
    noop_cpu = med(m / r for r, m, _ in results["noop"])
    print(
        f"{'load':<10}{'per second':>11}{'vs noop':>9}{'loop busy':>11}{'process':>9}"
        f"{'loop us/request':>17}{'vs noop (CPU)':>15}"
    )
    for name, runs in results.items():
        rate = med(r for r, _, _ in runs)
        busy = med(m for _, m, _ in runs)
        process = med(t for _, _, t in runs)
        per = med(m / r for r, m, _ in runs)
        print(
            f"{name:<10}{rate:>11,.0f}{rate / noop_rate:>9.0%}{busy:>11.0%}{process:>9.0%}"
            f"{per * 1e6:>17,.0f}{noop_cpu / per:>15.0%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lgcpu") as root:
        sock = os.path.join(root, "d.sock")
        child = bench_bus.start_child([bench_bus.__file__, "--serve", sock, os.path.join(root, "h")])
        try:
            asyncio.run(measure(sock, child.pid, args.rounds, args.seconds, args.clients))
        finally:
            bench_bus.stop_child(child)


if __name__ == "__main__":
    main()
