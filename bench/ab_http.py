"""A/B tool for the request path (bench/wrk_http.py is the benchmark): the daemon's CPU time per
request, two or more source trees of the daemon alternated round by round under the same wrk
loads.

    python bench/ab_http.py main=/tmp/ab-main branch=/tmp/ab-branch [--rounds 4] [--seconds 3]

Each ``NAME=DIR`` is a directory holding an ``llmgine_daemon`` package (a copy of a tree's
``daemon/``, or a symlink to one), put first on the daemon's PYTHONPATH. Every daemon is started
as wrk_http.py starts it (TCP, rate limits 0, 64 sessions with a DummyEngine each) and all run
at once; each round runs every load against every tree in turn, the order of the trees swapped
every other round. Printed: per load and tree, CPU µs per request of each round (all threads,
from /proc) and the median, requests per second beside it. CPU per request is the column to
read on a shared machine: other load cuts the rates far more than it moves it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from wrk_http import Api, Round, free_port, scripts, wait_port  # noqa: E402

LOADS = ("get", "events", "commands", "batch")


class Daemon:
    def __init__(self, name: str, tree: str) -> None:
        self.name, self.tree = name, tree
        self.home = Path(tempfile.mkdtemp(prefix="lgab", dir="/tmp"))
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMGINE_", "API_"))}
        env.update(
            LLMGINE_HOME=str(self.home),
            LLMGINE_RATE_LIMIT_AUTHENTICATED="0",
            LLMGINE_RATE_LIMIT_UNAUTHENTICATED="0",
            LLMGINE_RATE_LIMIT_WEBSOCKET="0",
            PYTHONPATH=tree,
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmgine_daemon", "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def prepare(self) -> None:
        wait_port(self.port, self.proc)
        from llmgine_daemon.settings import get_paths, read_local_key

        paths = get_paths({"LLMGINE_HOME": str(self.home)})
        deadline = time.monotonic() + 20
        while (key := read_local_key(paths)) is None:
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name}: the daemon wrote no local key")
            time.sleep(0.05)
        self.api = Api(self.port, key)
        sessions = [self.api.call("POST", "/api/sessions", {})["session_id"] for _ in range(64)]
        for sid in sessions:
            self.api.call("POST", "/api/engines", {"engine_type": "DummyEngine", "session_id": sid})
        self.sessions = sessions
        self.url = f"http://127.0.0.1:{self.port}"
        self.scripts = scripts(key, sessions)
        self.round = Round(self.proc.pid)

    def run(self, load: str, seconds: float, connections: int, batch: int) -> tuple[float, float]:
        if load == "batch":
            from wrk_http import cpu_seconds

            body = {
                "commands": [
                    {"command_type": "DummyEngineCommand", "parameters": {"prompt": str(i)}} for i in range(batch)
                ]
            }
            before = cpu_seconds(self.proc.pid)
            started = time.perf_counter()
            self.api.call("POST", f"/api/sessions/{self.sessions[1]}/commands/batch?wait=300", body)
            elapsed = time.perf_counter() - started
            return batch / elapsed, (cpu_seconds(self.proc.pid) - before) / batch * 1e6
        return self.round.run(self.url, seconds, connections, self.scripts[load])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", help="NAME=DIR, DIR holding an llmgine_daemon package")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--batch", type=int, default=10000)
    parser.add_argument("--loads", default="get,events,commands", help=f"comma-separated, of {', '.join(LOADS)}")
    opts = parser.parse_args()
    loads = [name for name in opts.loads.split(",") if name]
    daemons = [Daemon(*spec.split("=", 1)) for spec in opts.trees]
    try:
        for daemon in daemons:
            daemon.prepare()
        cpu: dict[tuple[str, str], list[float]] = {}
        rates: dict[tuple[str, str], list[float]] = {}
        for i in range(opts.rounds):
            order = daemons if i % 2 == 0 else daemons[::-1]
            for load in loads:
                for daemon in order:
                    rate, per = daemon.run(load, opts.seconds, opts.connections, opts.batch)
                    cpu.setdefault((load, daemon.name), []).append(per)
                    rates.setdefault((load, daemon.name), []).append(rate)
        load_avg = os.getloadavg()[0]
        print(f"{opts.rounds} rounds of {opts.seconds:g}s, wrk -c{opts.connections}; load average {load_avg:.1f}")
        for load in loads:
            for daemon in daemons:
                key = (load, daemon.name)
                per = " ".join(f"{v:.0f}" for v in cpu[key])
                print(
                    f"{load:<9} {daemon.name:<10} CPU us/request {statistics.median(cpu[key]):>6.0f}  [{per}]"
                    f"  req/s {statistics.median(rates[key]):>7.0f}"
                    f"  [{' '.join(f'{v:.0f}' for v in rates[key])}]"
                )
    finally:
        for daemon in daemons:
            daemon.stop()


if __name__ == "__main__":
    main()
