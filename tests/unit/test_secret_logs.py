"""tests/secret_logs.py: the test that logs a secret fails, and only that one."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.secret_logs import CATCHER, find_secrets, masked

ROOT = Path(__file__).resolve().parents[2]


def test_known_values_and_credential_shapes_are_found():
    assert find_secrets("key s3cr3t-marker here") == ["s3cr3t-marker"]
    assert find_secrets("lgk_0123456789ab_AbCdEfGhIjKl")
    assert find_secrets("Authorization: Bearer abcdefgh1234")
    assert find_secrets("GET /api/events/stream?token=abcdefgh1234")
    assert find_secrets("subprotocol llmgine.bearer.abcdefgh1234")
    # What the daemon's redaction leaves is not a secret.
    assert not find_secrets("Authorization: Bearer ********")
    assert not find_secrets("lgk_0123456789ab (key id)")
    assert "AbCdEfGhIjKl" not in masked("lgk_0123456789ab_AbCdEfGhIjKl")


def test_the_catcher_is_installed_and_sees_tracebacks():
    log = logging.getLogger("llmgine.test.secret_logs")
    try:
        raise RuntimeError("s3cr3t-marker")
    except RuntimeError:
        log.exception("failed")  # the secret is only in the traceback
    found = CATCHER.take()  # taken here, so this test itself does not fail
    assert [secret for _, secret in found] == ["s3cr3t-marker"]


def test_only_the_test_that_logged_a_secret_fails(tmp_path: Path):
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent("""
        import logging
        log = logging.getLogger("llmgine.inner")

        def test_clean():
            log.warning("nothing to see")

        def test_leaks():
            log.warning("Authorization: Bearer lgk_0123456789ab_AbCdEfGhIjKl")

        def test_clean_after():
            log.warning("nothing to see either")
    """)
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.secret_logs",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "-p",
            "no:logging",
            "-o",
            "addopts=",
            "-rA",
            "-q",
            str(tmp_path / "test_inner.py"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        # Only the plugin under test: loading every installed one (hypothesis, schemathesis...)
        # took most of this test's time.
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    # "FAILED path::test_leaks - reason": with CI set, pytest prints the reason in full.
    outcomes = {
        line.split("::", 1)[1].split(" - ", 1)[0].strip(): line.split()[0]
        for line in out.splitlines()
        if line.startswith(("PASSED", "FAILED")) and "::test_" in line
    }
    assert outcomes == {"test_clean": "PASSED", "test_leaks": "FAILED", "test_clean_after": "PASSED"}, out
    assert "1 failed, 2 passed" in out, out
    assert "secrets in the log during call" in out, out
    assert "AbCdEfGhIjKl" not in out, out  # the report does not print the secret
