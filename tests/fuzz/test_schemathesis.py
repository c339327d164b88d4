"""Fuzz the live daemon against its own /openapi.json with schemathesis.

Every default check runs (server errors, status codes, content types, response schemas and
headers, negative data rejected, positive data accepted, missing/ignored auth, unsupported
methods, use after free, ...), over TCP with a key. The number of examples is bounded to keep
CI around a minute; set LLMGINE_FUZZ_EXAMPLES / LLMGINE_FUZZ_SEED to fuzz harder or
differently. A failure prints schemathesis' report, with a curl line to reproduce it.

Not drawn: a repeated query parameter (tests/fuzz/hooks.py: the daemon reads its last value,
as FastAPI does, which schemathesis does not expect).

Left out, as operations (not as failures): POST /api/shutdown (it would end the run) and the
live streams (an answer that never ends; tests/streams covers them).

Workers: one. With several, hypothesis parses lambda sources in parallel threads and CPython
3.11 can fail that with "AST constructor recursion depth mismatch" (gh-106905), which is an
error of the tool, not of the API.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clitools import Daemon, cleanup_home, free_port, short_home, start_daemon, stop_process

pytestmark = pytest.mark.e2e

KEY = "fuzz-secret-key"
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[Daemon]:
    home = short_home()
    try:
        env = {
            "API_KEY_SECRET": KEY,
            # Thousands of requests in a minute from one key: rate limits would answer 429.
            "LLMGINE_RATE_LIMIT_AUTHENTICATED": "0",
            "LLMGINE_RATE_LIMIT_UNAUTHENTICATED": "0",
            "LOG_LEVEL": "warning",
        }
        d = start_daemon(home, "--no-socket", port=free_port(), env=env)
        yield d
        stop_process(d.proc)
    finally:
        cleanup_home(home)


@pytest.mark.timeout(400)
def test_schemathesis_finds_nothing(fuzzed: Daemon, tmp_path: Path) -> None:
    examples = os.environ.get("LLMGINE_FUZZ_EXAMPLES", "8")
    seed = os.environ.get("LLMGINE_FUZZ_SEED", "20240101")
    argv = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG),
        "run",
        f"{fuzzed.tcp_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {KEY}",
        "--max-examples",
        examples,
        "--seed",
        seed,
        "--workers",
        "1",
        "--exclude-path-regex",
        r"(/stream$|^/api/shutdown$)",
        "--generation-database",
        "none",
        "--no-color",
        "--request-timeout",
        "20",
    ]
    root = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks",  # (this directory's hooks.py)
        "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
    }
    proc = subprocess.run(
        argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=380, check=False, stdin=subprocess.DEVNULL
    )
    log = (fuzzed.home / "daemon-under-test.log").read_text(errors="replace")
    assert proc.returncode == 0, proc.stdout[-20000:] + proc.stderr[-5000:] + "\n--- daemon log ---\n" + log[-5000:]
    # Our error middleware logs "unhandled error" for every 500; there must be none.
    assert "unhandled error" not in log, log[-5000:]
