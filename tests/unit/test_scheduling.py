"""The suite's grouping holds: tests of one ``xdist_group`` reach one worker (tests/scheduling.py).

pytest-xdist marks a grouped test by a suffix of its node id on the worker that collected it;
a pytest that ignores that suffix (9.2 with xdist 3.8: pyproject.toml pins below it) makes
``--dist loadgroup`` deal grouped tests one by one, and every shared module fixture is then
built again on each worker, silently. Checked by a small run of its own, with the pytest and
xdist this suite runs on, however the suite itself is run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

GROUPED = """
import os

import pytest


@pytest.mark.xdist_group("together")
@pytest.mark.parametrize("i", range(6))
def test_grouped(i, request):
    with open(os.environ["SCHEDULING_OUT"], "a") as out:
        out.write(f"{os.environ['PYTEST_XDIST_WORKER']} {request.node.nodeid}\\n")
"""


def test_grouped_tests_reach_one_worker_and_carry_their_group(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    out = tmp_path / "out.txt"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            "2",
            "--dist",
            "loadgroup",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
        ],
        cwd=tmp_path,
        env={**_env(), "SCHEDULING_OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = [line.split(" ", 1) for line in out.read_text().splitlines()]
    assert len(runs) == 6
    assert len({worker for worker, _ in runs}) == 1, runs  # one worker took the whole group
    assert all(nodeid.endswith("@together") for _, nodeid in runs), runs


def _env() -> dict[str, str]:
    """This environment without what would make the inner run part of the outer one."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "XDIST_"))}
