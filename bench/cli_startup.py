"""How much slower is a CLI call than starting Python at all?

Measures, in the same run and interleaved (one run of each per round, so a busy moment on
the machine hits every figure alike), the median wall time of the three calls shell scripts
make in loops, against a running daemon:

  llmgine session list -o json
  llmgine command run DummyEngineCommand -S SID -p prompt=x -o json
  llmgine event publish BenchEvent -S SID -q

and of the baseline, ``python -c pass`` run by the same interpreter as the CLI's, in a clean
virtualenv (made with ``python -m venv`` in a temporary folder: no site-packages, no .pth
files). It prints measured / baseline / ratio / target for each. The daemon runs in a
temporary LLMGINE_HOME and is stopped at the end. Both sides run with bytecode caching on
(PYTHONDONTWRITEBYTECODE is dropped), as an installed package does.

An editable install (``pip install -e``) adds its import hook to every start of that venv's
python (about 1x of the baseline here: it imports pathlib, re, urllib.parse, ...); a regular
install does not, so it measures lower.

Usage: python bench/cli_startup.py [--runs N]   (with the python of the venv llmgine is in)
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

TARGET = 6.0  # issue #19: at most 6x `python -c pass`


def llmgine_command() -> list[str]:
    # The installed console script is what users run; fall back to the module.
    script = Path(sys.executable).with_name("llmgine")
    return [str(script)] if script.exists() else [sys.executable, "-m", "llmgine_cli"]


def clean_python(where: str) -> str:
    """``python`` of a fresh venv of this interpreter (venv uses the base interpreter)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", where], check=True)
    python = Path(where) / "bin" / "python"
    return str(python)


def once(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start


class NotMeasured(Exception):
    """The run cannot be measured here (the message says why)."""


def measure(runs: int, *, xdg: bool = False) -> tuple[float, dict[str, float]]:
    """(baseline median, {command: median}) in seconds, interleaved runs."""
    home = tempfile.mkdtemp(prefix="lgb", dir="/tmp")
    venv_dir = tempfile.mkdtemp(prefix="lgbvenv")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMGINE_", "API_"))}
    env.update(LLMGINE_NO_AUTOSTART="1")
    if xdg:
        for name in ("RUNTIME", "CONFIG", "DATA", "STATE"):
            path = Path(home) / name.lower()
            path.mkdir(mode=0o700)
            env[f"XDG_{name}_{'DIR' if name == 'RUNTIME' else 'HOME'}"] = str(path)
    else:
        env["LLMGINE_HOME"] = home
    # As installed for a user: modules run from cached bytecode (the warm-up runs write it for
    # an editable install). With PYTHONDONTWRITEBYTECODE set, every call would compile the
    # package's sources again, which measures the compiler, not the CLI.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    cli = llmgine_command()
    try:
        if xdg:
            # The platform's rules may refuse a runtime dir under /tmp and fall back to a
            # shared one (/tmp/llmgine-UID): never start a daemon there.
            probe = "from llmgine_daemon.settings import get_paths; print(get_paths().socket)"
            socket_path = subprocess.run(
                [sys.executable, "-c", probe], env=env, check=True, capture_output=True, text=True
            ).stdout.strip()
            if not socket_path.startswith(home):
                raise NotMeasured(
                    f"--xdg: the platform's rules put the socket at {socket_path}, outside this run's "
                    "folders (XDG_RUNTIME_DIR refused); not measured"
                )
        python = clean_python(venv_dir)
        subprocess.run([*cli, "daemon", "start", "-q"], env=env, check=True, stdout=subprocess.DEVNULL)
        sid = subprocess.run(
            [*cli, "session", "create", "-q"], env=env, check=True, capture_output=True, text=True
        ).stdout.strip()
        subprocess.run(
            [*cli, "engine", "create", "DummyEngine", "-S", sid, "-q"], env=env, check=True, stdout=subprocess.DEVNULL
        )
        baseline_argv = [python, "-c", "pass"]
        cases = {
            "session list -o json": [*cli, "session", "list", "-o", "json"],
            "command run ... -o json": [
                *cli,
                "command",
                "run",
                "DummyEngineCommand",
                "-S",
                sid,
                "-p",
                "prompt=x",
                "-o",
                "json",
            ],
            "event publish -q": [*cli, "event", "publish", "BenchEvent", "-S", sid, "-q"],
        }
        everything = {"": baseline_argv, **cases}
        times: dict[str, list[float]] = {name: [] for name in everything}
        for argv in everything.values():  # warm the page cache: nobody pays for a first read
            once(argv, env)
            once(argv, env)
        for _ in range(runs):
            for name, argv in everything.items():
                times[name].append(once(argv, env))
    finally:
        subprocess.run(
            [*cli, "daemon", "stop"], check=False, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(venv_dir, ignore_errors=True)
    return statistics.median(times[""]), {name: statistics.median(times[name]) for name in cases}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--xdg",
        action="store_true",
        help="place the daemon with XDG_* directories instead of LLMGINE_HOME (as most users run: "
        "the CLI then finds the default socket by the platform's rules)",
    )
    args = parser.parse_args()
    try:
        baseline, measured = measure(args.runs, xdg=args.xdg)
    except NotMeasured as exc:
        print(exc)
        return 1
    where = "XDG_* directories" if args.xdg else "LLMGINE_HOME"
    print(f"{sys.version.split()[0]} ({sys.executable}); {args.runs} interleaved runs, medians; daemon in {where}")
    print(f"{'command':<28} {'measured':>10} {'baseline':>28} {'ratio':>7} {'target':>7}")
    for name, seconds in measured.items():
        ratio = seconds / baseline
        mark = "ok" if ratio <= TARGET else "MISSED"
        print(
            f"{name:<28} {seconds * 1000:8.1f}ms  python -c pass {baseline * 1000:6.1f}ms {ratio:6.1f}x "
            f"{'<= ' + format(TARGET, 'g') + 'x':>7} {mark}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
