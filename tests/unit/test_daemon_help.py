"""`llmgined --help` reads at 80 columns: the description and every setting's meaning wrap
at the terminal's width (they were one line each, 250 characters wide, the settings' keys,
variables and meanings in columns that a terminal then folded into one another)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from llmgine_daemon.settings import SETTINGS


@pytest.mark.parametrize("columns", [80, 60])
def test_llmgined_help_fits_the_terminal(columns):
    env = {**os.environ, "COLUMNS": str(columns)}
    shown = subprocess.run(
        [sys.executable, "-m", "llmgine_daemon", "--help"], env=env, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    too_wide = [line for line in shown.stdout.splitlines() if len(line) > columns]
    assert not too_wide, too_wide
    words = shown.stdout.split()
    for setting in SETTINGS:  # every setting is still there, its key and its variable
        assert setting.key in words and setting.env in words, setting.key
    assert "`llmgine daemon start` runs it in the background." in " ".join(words)
