"""HTTP throughput of a real llmgined against a bare aiohttp route, with wrk as the load
generator (a C program: it outruns one Python process, which the report shows).

    python bench/wrk_http.py [--seconds 4] [--rounds 3] [--connections 32] [--batch 10000]
                             [--only get_session,publish_event,run_command,batch]

Both servers are separate processes started the same way (this interpreter, TCP on loopback):
- baseline: a bare aiohttp app answering ``GET /`` with a small JSON body, run by this
  interpreter from a clean virtualenv made for the run (aiohttp alone, the same version);
- the daemon: ``python -m llmgine_daemon --port P`` with its default settings (tracing and
  metrics on, ``synchronous=full``) except rate limits set to 0, authenticated with the local
  key over TCP.

Figures (wrk: 1 thread, ``--connections``, ``--seconds`` per round, rounds interleaved with the
baseline, medians), each as measured / baseline / ratio / target (issue #18):
- ``GET /api/sessions/{id}`` (bearer);
- ``POST /api/sessions/{id}/events`` over 64 sessions, round-robin;
- ``POST /api/sessions/{id}/commands?wait=30`` (DummyEngine) over 64 sessions;
- a batch of ``--batch`` commands with ``?wait``: commands per second against the baseline's
  requests per second (one request, timed, median of the rounds).
The load generator's own ceiling is measured in the same run: wrk with the same Lua script
against a third process that answers with canned bytes (no HTTP framework). It must be at least
3x the daemon's best request rate for the ratios to mean anything; the report says whether it
is. (The bare route is no ceiling: it is a Python server too, and wrk outruns it.)
Needs wrk (Debian package ``wrk``; .ci/run installs it).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"get_session": 0.45, "publish_event": 0.35, "run_command": 0.20, "batch": 0.40}
LABELS = {
    "get_session": "GET /api/sessions/{id}",
    "publish_event": "POST .../events (64 sessions)",
    "run_command": "POST .../commands?wait (64 sessions)",
    "batch": "batch of N commands ?wait, commands/s",
}
BARE = """
import sys
from aiohttp import web
async def root(request):
    return web.json_response({"status": "ok", "n": 1})
app = web.Application()
app.router.add_get("/", root)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""
# The load generator's own ceiling: canned answers, no HTTP parsing beyond counting request
# heads, no framework (wrk with the same kind of Lua script as the daemon's rounds).
CANNED = """
import asyncio, sys
ANSWER = (b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: 11\\r\\n\\r\\n"
          b'{"ok":true}')
class Canned(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.tail = transport, b""
    def data_received(self, data):
        data = self.tail + data
        n = data.count(b"\\r\\n\\r\\n")
        self.tail = data[data.rfind(b"\\r\\n\\r\\n") + 4:] if n else data
        if n:
            self.transport.write(ANSWER * n)
async def main():
    server = await asyncio.get_running_loop().create_server(Canned, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""
ROTATE = """
local bodies = {%(bodies)s}
local paths = {%(paths)s}
local i = 0
request = function()
  i = i %% #paths + 1
  return wrk.format("%(method)s", paths[i], {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer %(key)s"}, bodies[i])
end
"""


def clean_python(where: Path) -> str:
    """``python`` of a fresh virtualenv of this interpreter holding aiohttp alone (the version
    this one has): the baselines run from it, so nothing of the project's environment (its
    site-packages, an editable install's import hook) is in them."""
    import aiohttp

    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    python = str(where / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"aiohttp=={aiohttp.__version__}"],
        check=True,
    )
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not start")


class Api:
    def __init__(self, port: int, key: str) -> None:
        self.port, self.key = port, key

    def call(self, method: str, path: str, body: object = None, timeout: float = 600) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
            conn.request(method, path, json.dumps(body) if body is not None else None, headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status >= 300:
                raise SystemExit(f"{method} {path}: {resp.status} {data[:300]!r}")
            return json.loads(data) if data else {}
        finally:
            conn.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (from /proc)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Round:
    """One wrk round against one server: requests per second, and the server's CPU time per
    request (which other load on the machine inflates far less than it cuts throughput)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def run(self, url: str, seconds: float, connections: int, script: str | None = None) -> tuple[float, float]:
        before = cpu_seconds(self.pid)
        rate, total = wrk(url, seconds, connections, script)
        return rate, (cpu_seconds(self.pid) - before) / max(1, total) * 1e6


def wrk(url: str, seconds: float, connections: int, script: str | None = None) -> tuple[float, int]:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", url]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        if script:
            fh.write(script)
            args[1:1] = ["-s", fh.name]
    try:
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(fh.name)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} error responses:\n{out}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return rate, total


def lua_list(items: list[str]) -> str:
    return ", ".join(json.dumps(item) for item in items)


EVENT = '{"event_type":"Bench","data":{"n":1}}'
COMMAND = '{"command_type":"DummyEngineCommand","parameters":{"prompt":"x"}}'


def scripts(key: str, sessions: list[str]) -> dict[str, str]:
    """The wrk scripts of the loads: one session's GET, then events and commands over all."""

    def rotate(method: str, paths: list[str], body: str | None = None) -> str:
        """``method`` to each of ``paths`` in turn (with ``body``), as ``key``'s bearer."""
        bodies = lua_list([body] * len(paths)) if body is not None else ""
        return ROTATE % {"method": method, "key": key, "paths": lua_list(paths), "bodies": bodies}

    return {
        "get": rotate("GET", [f"/api/sessions/{sessions[0]}"]),
        "events": rotate("POST", [f"/api/sessions/{s}/events" for s in sessions], EVENT),
        "commands": rotate("POST", [f"/api/sessions/{s}/commands?wait=30" for s in sessions], COMMAND),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--batch", type=int, default=10000)
    parser.add_argument(
        "--only", default=",".join(TARGETS), help="figures to measure, comma-separated (default: all of them)"
    )
    opts = parser.parse_args()
    only = [name for name in opts.only.split(",") if name]
    if not only or set(only) - set(TARGETS):
        raise SystemExit(f"--only: a comma-separated list of {', '.join(TARGETS)}")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    home = Path(tempfile.mkdtemp(prefix="lgw", dir="/tmp"))
    baseline_python = clean_python(home / "venv")
    bare_port, daemon_port, canned_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMGINE_", "API_"))}
    env.update(
        LLMGINE_HOME=str(home),
        LLMGINE_RATE_LIMIT_AUTHENTICATED="0",
        LLMGINE_RATE_LIMIT_UNAUTHENTICATED="0",
        LLMGINE_RATE_LIMIT_WEBSOCKET="0",
    )
    procs = [
        subprocess.Popen(
            [baseline_python, "-c", BARE, str(bare_port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        ),
        subprocess.Popen(
            [baseline_python, "-c", CANNED, str(canned_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "llmgine_daemon", "--port", str(daemon_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:
        wait_port(bare_port, procs[0])
        wait_port(canned_port, procs[1])
        wait_port(daemon_port, procs[2])
        from llmgine_daemon.settings import get_paths, read_local_key

        paths = get_paths({"LLMGINE_HOME": str(home)})
        deadline = time.monotonic() + 20
        while (key := read_local_key(paths)) is None:  # written once the daemon is up
            if time.monotonic() > deadline:
                raise SystemExit("the daemon wrote no local key")
            time.sleep(0.05)
        api = Api(daemon_port, key)
        sessions = [api.call("POST", "/api/sessions", {})["session_id"] for _ in range(64)]
        for sid in sessions:
            api.call("POST", "/api/engines", {"engine_type": "DummyEngine", "session_id": sid})
        base = f"http://127.0.0.1:{daemon_port}"
        loads = scripts(key, sessions)
        get_one, events, commands = loads["get"], loads["events"], loads["commands"]
        runs: dict[str, list[float]] = {k: [] for k in ("bare", *only)}
        cpu: dict[str, list[float]] = {k: [] for k in ("bare", *only) if k != "batch"}
        bare_round, daemon_round = Round(procs[0].pid), Round(procs[2].pid)
        ceiling: list[float] = []

        def measure(name: str, rnd: Round, url: str, script: str | None = None) -> None:
            rate, per_request = rnd.run(url, opts.seconds, opts.connections, script)
            runs[name].append(rate)
            cpu[name].append(per_request)

        batch = [{"command_type": "DummyEngineCommand", "parameters": {"prompt": str(i)}} for i in range(opts.batch)]
        for _ in range(opts.rounds):
            measure("bare", bare_round, f"http://127.0.0.1:{bare_port}/")
            ceiling.append(wrk(f"http://127.0.0.1:{canned_port}", opts.seconds, opts.connections, get_one)[0])
            for name, script in (("get_session", get_one), ("publish_event", events), ("run_command", commands)):
                if name in only:
                    measure(name, daemon_round, base, script)
            if "batch" in only:
                started = time.perf_counter()
                api.call("POST", f"/api/sessions/{sessions[0]}/commands/batch?wait=300", {"commands": batch})
                runs["batch"].append(opts.batch / (time.perf_counter() - started))
        report(runs, cpu, opts, statistics.median(ceiling))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(home, ignore_errors=True)


def report(runs: dict[str, list[float]], cpu: dict[str, list[float]], opts: argparse.Namespace, ceiling: float) -> None:
    bare = statistics.median(runs["bare"])
    print(
        f"wrk -t1 -c{opts.connections} -d{opts.seconds:g}s, {opts.rounds} interleaved rounds, "
        f"medians; {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    print(f"{'figure':<40} {'measured':>9} {'baseline':>9} {'ratio':>6} {'target':>7}")
    best = 0.0
    for name, target in TARGETS.items():
        if name not in runs:
            continue
        value = statistics.median(runs[name])
        if name != "batch":  # commands per second of one request, not a request rate
            best = max(best, value)
        ratio = value / bare
        label = LABELS[name].replace("N", str(opts.batch)) if name == "batch" else LABELS[name]
        print(
            f"{label:<40} {value:>9.0f} {bare:>9.0f} {ratio:>6.2f} {target:>6.2f} "
            f"{'PASS' if ratio >= target else 'FAIL'}"
        )
    # The same comparison by CPU time per request: a busy machine (other processes on the same
    # cores) cuts throughput a lot more than it inflates CPU per request, so this column is the
    # steadier one when the machine is not quiet. ratio = baseline / measured.
    bare_cpu = statistics.median(cpu["bare"])
    print(f"\n{'CPU time per request (all threads)':<40} {'µs':>9} {'baseline':>9} {'ratio':>6} {'target':>7}")
    for name in cpu:
        if name == "bare":
            continue
        value = statistics.median(cpu[name])
        ratio = bare_cpu / value if value else 0.0
        print(
            f"{LABELS[name]:<40} {value:>9.0f} {bare_cpu:>9.0f} {ratio:>6.2f} {TARGETS[name]:>6.2f} "
            f"{'PASS' if ratio >= TARGETS[name] else 'FAIL'}"
        )
    print(
        f"load generator: {ceiling:.0f} req/s with the same Lua script against canned answers = "
        f"{ceiling / max(best, 1.0):.1f}x the daemon's best request rate "
        f"({'enough' if ceiling >= 3 * best else 'NOT enough: ratios are bounded by wrk'}); "
        f"the bare route: {bare:.0f} req/s"
    )


if __name__ == "__main__":
    main()
