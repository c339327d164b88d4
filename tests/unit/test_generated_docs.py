"""completions/ and README's configuration table are generated; they must not go stale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from llmgine_daemon.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[2]


def test_generated_files_are_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_readme_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    for s in SETTINGS:
        assert f"| `{s.key}` | `{s.env}` |" in readme, s.key
