"""Sandbox cost and fairness: tool-call round trip through the worker pool, against another
revision of the project measured in the same run, and one session's latency while another
saturates its share.

    python bench/sandbox_calls.py                      # this tree only
    python bench/sandbox_calls.py --baseline-ref REF   # and REF (e.g. the commit before the
                                                       # bubblewrap sandbox), interleaved

This tree and the baseline (REF checked out in a temporary git worktree) are each installed
into a clean virtualenv of this interpreter; the two are run alternately, ``--rounds`` times
each, and the medians compared.

Figures, each as measured / baseline / ratio / target:
- round trip: ``pool.run`` of the spec's ``get_weather`` (fork per call, frames, the result),
  sequential, median over ``--calls`` calls; target: within 1.5x of the baseline;
- fairness: session B's trivial call, median, while session A keeps four spinning calls
  queued on a two-worker pool (A's share: one worker), against B's idle median from the same
  run; target: within 2x.
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
from pathlib import Path

CODE = '''
async def get_weather(location: str):
    """Get weather information for a location"""
    return {"location": location, "temperature_c": 21, "conditions": "sunny"}
'''
SPIN = "def spin():\n    while True:\n        pass\n"
HELLO = "def hello():\n    return 'hi'\n"


async def _timed(pool, ctx_factory, code: str, fn: str, args: dict) -> float:
    t0 = time.perf_counter()
    outcome = await pool.run("tool", code, fn, args, context=ctx_factory())
    if not outcome.ok:
        raise SystemExit(f"call failed: {outcome.error}")
    return (time.perf_counter() - t0) * 1000


async def measure(calls: int, fairness: bool) -> dict[str, float]:
    from llmgine_daemon.sandbox.pool import CallContext, SandboxLimits, SandboxPool

    pool = SandboxPool(2, SandboxLimits(deadline=60))
    await pool.start()
    await pool.wait_ready()
    try:

        def ctx(session: str = "a") -> CallContext:
            return CallContext(session, "tool", "f")

        for _ in range(20):  # warm up
            await _timed(pool, ctx, CODE, "get_weather", {"location": "Melbourne"})
        trips = [await _timed(pool, ctx, CODE, "get_weather", {"location": "Melbourne"}) for _ in range(calls)]
        out = {
            "round_trip_ms": statistics.median(trips),
            "round_trip_p99_ms": sorted(trips)[int(len(trips) * 0.99) - 1],
        }
        if fairness:
            idle = [await _timed(pool, lambda: ctx("b"), HELLO, "hello", {}) for _ in range(100)]
            spinners = [
                asyncio.ensure_future(pool.run("tool", SPIN, "spin", {}, context=ctx("a"), deadline=30))
                for _ in range(4)
            ]
            await asyncio.sleep(0.5)
            busy = [await _timed(pool, lambda: ctx("b"), HELLO, "hello", {}) for _ in range(100)]
            for task in spinners:
                task.cancel()
            await asyncio.gather(*spinners, return_exceptions=True)
            out["b_idle_ms"] = statistics.median(idle)
            out["b_while_a_spins_ms"] = statistics.median(busy)
        out["isolation"] = pool.info()["isolation"]  # type: ignore[assignment]
        return out
    finally:
        await pool.stop()


def _clean_venv(tree: Path, venv: Path) -> str:
    """A clean virtualenv of this interpreter (no site-packages of its own beyond what ``tree``
    needs) with ``tree`` installed; its python."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", str(tree)], check=True, capture_output=True)
    return python


def _baseline_tree(ref: str, root: Path) -> Path:
    """A worktree of ``ref``."""
    tree = root / "tree"
    repo = Path(__file__).resolve().parent.parent
    subprocess.run(
        ["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), ref], check=True, capture_output=True
    )
    return tree


def _run(python: str, script: Path, calls: int, fairness: bool, cwd: Path) -> dict:
    args = [python, str(script), "--json", "--calls", str(calls)]
    if not fairness:
        args.append("--no-fairness")
    out = subprocess.run(args, check=True, capture_output=True, text=True, cwd=cwd)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-ref", help="git revision to compare against")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-fairness", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.json:
        print(json.dumps(asyncio.run(measure(opts.calls, not opts.no_fairness))))
        return
    here = Path(__file__).resolve()
    root = Path(tempfile.mkdtemp(prefix="lgbench"))
    try:
        # Both sides: this interpreter, each in a clean virtualenv of its own, run alternately.
        our_python = _clean_venv(here.parent.parent, root / "venv-ours")
        baseline = None
        if opts.baseline_ref:
            tree = _baseline_tree(opts.baseline_ref, root)
            baseline = (_clean_venv(tree, root / "venv-baseline"), tree)
        ours: list[dict] = []
        theirs: list[dict] = []
        for _ in range(opts.rounds):
            ours.append(_run(our_python, here, opts.calls, True, root))
            if baseline is not None:
                theirs.append(_run(baseline[0], here, opts.calls, False, baseline[1]))
        med = {k: statistics.median(r[k] for r in ours) for k in ours[0] if k != "isolation"}
        print(
            f"isolation: {ours[0]['isolation']}"
            + (f" (baseline {opts.baseline_ref}: {theirs[0]['isolation']})" if theirs else "")
        )
        print(f"{'figure':<44} {'measured':>9} {'baseline':>9} {'ratio':>6}  target")
        if theirs:
            base = statistics.median(r["round_trip_ms"] for r in theirs)
            print(
                f"{'tool-call round trip, median (ms)':<44} {med['round_trip_ms']:>9.2f} "
                f"{base:>9.2f} {med['round_trip_ms'] / base:>6.2f}  <= 1.5"
            )
        else:
            print(f"{'tool-call round trip, median (ms)':<44} {med['round_trip_ms']:>9.2f}")
        print(
            f"{'B while A saturates its share, median (ms)':<44} "
            f"{med['b_while_a_spins_ms']:>9.2f} {med['b_idle_ms']:>9.2f} "
            f"{med['b_while_a_spins_ms'] / med['b_idle_ms']:>6.2f}  <= 2.0  (baseline: B idle)"
        )
    finally:
        if opts.baseline_ref:
            subprocess.run(
                ["git", "-C", str(here.parent.parent), "worktree", "remove", "--force", str(root / "tree")],
                capture_output=True,
            )
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    os.environ.pop("PYTHONPATH", None)
    main()
