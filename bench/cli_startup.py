"""How much slower is a CLI call than starting Python at all?

Measures, in the same run, the median wall time of
  `llmgine session list -o json`  (a full request/response against a running daemon)
  `python -c pass`                (the interpreter's own start-up)
and prints both and their ratio. The daemon runs in a temporary LLMGINE_HOME and is stopped
at the end. Usage: python bench/cli_startup.py [--runs N]
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


def llmgine_command() -> list[str]:
    # The installed console script is what users run; fall back to the module.
    script = Path(sys.executable).with_name("llmgine")
    return [str(script)] if script.exists() else [sys.executable, "-m", "llmgine_cli"]


def median_seconds(argv: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="lgb", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMGINE_", "API_"))}
    env.update(LLMGINE_HOME=home, LLMGINE_NO_AUTOSTART="1")
    cli = llmgine_command()
    try:
        subprocess.run([*cli, "daemon", "start", "-q"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([*cli, "session", "create", "-q"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        # Warm the page cache so neither side pays for the first read of its files.
        median_seconds([*cli, "session", "list", "-o", "json"], env, 2)
        median_seconds([sys.executable, "-c", "pass"], env, 2)

        baseline = median_seconds([sys.executable, "-c", "pass"], env, args.runs)
        measured = median_seconds([*cli, "session", "list", "-o", "json"], env, args.runs)
    finally:
        subprocess.run([*cli, "daemon", "stop"], check=False, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(home, ignore_errors=True)

    print(f"python -c pass                 median {baseline * 1000:7.1f} ms")
    print(f"llmgine session list -o json   median {measured * 1000:7.1f} ms")
    print(f"ratio                          {measured / baseline:7.2f}x  ({args.runs} runs each)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
