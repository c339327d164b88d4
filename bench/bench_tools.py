"""Tool execution: round trip through the daemon vs calling the same function in-process.

    python bench/bench_tools.py [--calls 300] [--concurrency 8]

One run, printed as ratios against the in-process baseline measured in the same run:
- in-process: ``await get_weather(...)`` directly (what LLMGine's ToolManager does)
- sandbox pool: ``pool.run`` (fork-per-call worker, pipes, no HTTP, no store)
- HTTP: ``POST /api/sessions/{id}/tools/get_weather/execute`` over the daemon's Unix socket
  (argument validation, sandbox, ToolExecuted event committed), sequential and concurrent
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from llmgine_daemon.app import create_app
from llmgine_daemon.sandbox.pool import CallContext
from llmgine_daemon.settings import load_settings

CODE = '''
async def get_weather(location: str):
    """Get weather information for a location"""
    return {"location": location, "temperature_c": 21, "conditions": "sunny"}
'''


async def get_weather(location: str) -> dict:
    return {"location": location, "temperature_c": 21, "conditions": "sunny"}


def line(label: str, total: float, calls: int, base_per_call: float) -> None:
    per = total / calls
    print(
        f"{label:<34} {per * 1e6:>10.1f} us/call {calls / total:>10.0f} calls/s"
        f"   x{per / base_per_call:>9.0f} the in-process time"
    )


async def main(calls: int, concurrency: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="lgb", dir="/tmp"))
    try:
        settings = load_settings(env={"LLMGINE_HOME": str(home)})
        app = create_app(settings)
        runner = web.AppRunner(app)
        await runner.setup()
        sock = home / "b.sock"
        await web.UnixSite(runner, str(sock)).start()
        from llmgine_daemon.api.keys import BUS

        bus = app[BUS]
        assert bus.sandbox is not None
        await bus.sandbox.wait_ready()
        async with aiohttp.ClientSession(
            base_url="http://llmgine", connector=aiohttp.UnixConnector(path=str(sock))
        ) as http:
            sid = (await (await http.post("/api/sessions", json={})).json())["session_id"]
            resp = await http.post(f"/api/sessions/{sid}/tools", json={"name": "get_weather", "function_code": CODE})
            assert resp.status == 201, await resp.text()
            url = f"/api/sessions/{sid}/tools/get_weather/execute"
            body = {"arguments": {"location": "Melbourne"}}

            n_base = calls * 100
            t0 = time.perf_counter()
            for _ in range(n_base):
                await get_weather("Melbourne")
            base = (time.perf_counter() - t0) / n_base

            for _ in range(10):  # warm up
                await (await http.post(url, json=body)).read()

            t0 = time.perf_counter()
            for _ in range(calls):
                await bus.sandbox.run(
                    "tool",
                    CODE,
                    "get_weather",
                    {"location": "Melbourne"},
                    context=CallContext(sid, "tool", "get_weather"),
                )
            pool_total = time.perf_counter() - t0

            latencies = []
            t0 = time.perf_counter()
            for _ in range(calls):
                t1 = time.perf_counter()
                out = await (await http.post(url, json=body)).json()
                latencies.append(time.perf_counter() - t1)
                assert out["error"] is None, out
            http_total = time.perf_counter() - t0

            async def client(n: int) -> None:
                for _ in range(n):
                    await (await http.post(url, json=body)).read()

            t0 = time.perf_counter()
            await asyncio.gather(*(client(calls // concurrency) for _ in range(concurrency)))
            conc_total = time.perf_counter() - t0
            conc_calls = (calls // concurrency) * concurrency

        info = bus.sandbox.info()
        print(
            f"sandbox: {info['workers']} workers, isolation {info['isolation']} "
            f"{'+'.join(info['namespaces'])}, process cap {info['process_cap']}"
        )
        print(
            f"{'in-process await get_weather()':<34} {base * 1e6:>10.2f} us/call {1 / base:>10.0f} calls/s   (baseline)"
        )
        line("sandbox pool.run (no HTTP)", pool_total, calls, base)
        line("HTTP execute, sequential", http_total, calls, base)
        line(f"HTTP execute, {concurrency} concurrent", conc_total, conc_calls, base)
        lat = sorted(latencies)
        print(
            f"HTTP round trip: p50 {statistics.median(lat) * 1000:.2f} ms, "
            f"p99 {lat[int(len(lat) * 0.99) - 1] * 1000:.2f} ms"
        )
        await runner.cleanup()
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.concurrency))
