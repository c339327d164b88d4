"""What the daemon adds to an LLM call: time to first delta and total, per engine call, against
calling the same (fake) provider directly, in one run.

    python bench/bench_engines.py [--calls 50] [--words 40]

- The fake provider (tests/fakes/provider.py, OpenAI wire format, streamed, 4 characters per
  chunk) runs in its own process; it echoes the prompt, so every call streams the same answer.
- Direct: this process calls it with the daemon's own provider client (OpenAIProvider), one
  call after another: time to the first text delta, and to the end of the stream.
- Daemon: a real ``llmgined`` child on a Unix socket with a SinglePassEngine pointed at the
  fake. Total = POST /api/engines/{id}/execute?wait=30 until the finished record arrives (the
  answer stored in memory, every delta recorded as an event). Time to first delta = the
  engine's own ``first_delta_ms`` (handler start -> first delta) plus the time the command
  took to reach the handler (client total - engine latency_ms - finishing), i.e. as seen from
  the client's POST; a live stream (SSE) would observe it directly once it exists.
Medians and p90 over ``--calls`` sequential calls after 5 warm-up calls each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llmgine_daemon.engines.providers import ChatRequest, ProviderConfig, TextDelta  # noqa: E402
from llmgine_daemon.engines.providers.openai import OpenAIProvider  # noqa: E402

WARMUP = 5


def q(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def direct(base_url: str, prompt: str, calls: int) -> tuple[list[float], list[float]]:
    ttfd, total = [], []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http:
        provider = OpenAIProvider(ProviderConfig("openai", "openai", base_url, api_key="test-key"), http)
        for n in range(calls + WARMUP):
            t0 = time.perf_counter()
            first = None
            async for item in provider.stream(ChatRequest("bench", [{"role": "user", "content": prompt}])):
                if first is None and isinstance(item, TextDelta):
                    first = time.perf_counter() - t0
            if n >= WARMUP:
                ttfd.append((first or 0) * 1000)
                total.append((time.perf_counter() - t0) * 1000)
    return ttfd, total


async def via_daemon(sock: str, prompt: str, calls: int) -> tuple[list[float], list[float], int]:
    ttfd, total = [], []
    deltas = 0
    conn = aiohttp.UnixConnector(path=sock)
    async with aiohttp.ClientSession(base_url="http://llmgine", connector=conn) as http:
        sid = (await (await http.post("/api/sessions", json={})).json())["session_id"]
        resp = await http.post(
            "/api/engines",
            json={
                "engine_type": "SinglePassEngine",
                "session_id": sid,
                "model_name": "openai/bench",
                # Two messages: every call sends the same request size (no growing history).
                "configuration": {"memory_max_messages": 2},
            },
        )
        engine_id = (await resp.json())["engine_id"]
        for n in range(calls + WARMUP):
            t0 = time.perf_counter()
            resp = await http.post(f"/api/engines/{engine_id}/execute", params={"wait": "30"}, json={"prompt": prompt})
            record = await resp.json()
            elapsed = (time.perf_counter() - t0) * 1000
            assert record["status"] == "completed", record
            result = record["result"]
            if n >= WARMUP:
                total.append(elapsed)
                # Before the handler started + the handler's own time to first delta.
                queued = max(0.0, elapsed - result["latency_ms"] - finishing_ms(record))
                ttfd.append(queued + result["first_delta_ms"])
        events = await (
            await http.get(f"/api/sessions/{sid}/events", params={"event_type": "EngineResponseDelta", "limit": 1})
        ).json()
        deltas = events["total"]
    return ttfd, total, deltas


def finishing_ms(record: dict) -> float:
    """Handler end -> record finished: recorded by the runner as duration - latency."""
    return max(0.0, (record.get("duration_ms") or 0) - record["result"]["latency_ms"])


def start_fake() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.provider"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def start_daemon(home: str, base_url: str) -> tuple[subprocess.Popen[bytes], str]:
    sock = os.path.join(home, "d.sock")
    env = {
        **os.environ,
        "LLMGINE_HOME": home,
        "OPENAI_BASE_URL": base_url,
        "OPENAI_API_KEY": "test-key",
        "LOG_LEVEL": "warning",
    }
    llmgined = shutil.which("llmgined", path=os.path.dirname(sys.executable)) or "llmgined"
    proc = subprocess.Popen([llmgined, "--socket", sock], env=env)
    for _ in range(500):
        if os.path.exists(sock):
            return proc, sock
        time.sleep(0.02)
    proc.kill()
    raise SystemExit("llmgined did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--words", type=int, default=40)
    args = parser.parse_args()
    prompt = " ".join(f"word{i}" for i in range(args.words))
    home = tempfile.mkdtemp(prefix="lgbench", dir="/tmp")
    fake, base_url = start_fake()
    daemon = None
    try:
        d_ttfd, d_total = asyncio.run(direct(base_url, prompt, args.calls))
        daemon, sock = start_daemon(home, base_url)
        e_ttfd, e_total, deltas = asyncio.run(via_daemon(sock, prompt, args.calls))
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(10)
        fake.terminate()
        fake.wait(10)
        shutil.rmtree(home, ignore_errors=True)
    chunks = len(f"echo: {prompt}") // 4 + 1
    print(
        f"engine call, {args.calls} sequential calls, answer of {chunks} streamed chunks "
        f"({deltas // (args.calls + WARMUP)} EngineResponseDelta events per call)"
    )
    print(f"{'':24}{'median ms':>12}{'p90 ms':>10}")
    rows = [
        ("direct  first delta", d_ttfd),
        ("daemon  first delta", e_ttfd),
        ("direct  total", d_total),
        ("daemon  total", e_total),
    ]
    for name, values in rows:
        print(f"{name:<24}{statistics.median(values):>12.2f}{q(values, 0.9):>10.2f}")
    for label, a, b in (("first delta", d_ttfd, e_ttfd), ("total", d_total, e_total)):
        added = statistics.median(b) - statistics.median(a)
        print(f"daemon adds {added:.2f} ms to {label} (x{statistics.median(b) / statistics.median(a):.2f})")


if __name__ == "__main__":
    main()
