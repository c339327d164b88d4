"""Runs last (directories are collected in name order): every log line the whole suite
produced, at DEBUG, is searched for credentials. Tests use recognisable secrets; minted keys
and tokens have a recognisable shape."""

from __future__ import annotations

import logging
import re

from tests.conftest import LOG_CAPTURE

# Secrets the tests configure (API_KEY_SECRET values and the like).
KNOWN = ("s3cr3t-marker", "s3cret-key", "do-not-show", "test-secret-key")
SHAPES = (
    re.compile(r"lg[ks]_[0-9a-f]{12}_[A-Za-z0-9_\-]{8,}"),  # a minted key or token, whole
    re.compile(r"(?i)bearer\s+(?!\*{8}|realm|\[redacted\])[^\s,'\"]{8,}"),
    re.compile(r"[?&]token=(?!\*{8})[^&\s'\"]{8,}"),
    re.compile(r"llmgine\.bearer\.(?!\*{8})\S{8,}"),
)


def test_no_secret_in_any_log_line():
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = LOG_CAPTURE.read_text(encoding="utf-8") if LOG_CAPTURE.exists() else ""
    found = [s for s in KNOWN if s in text]
    found += [m.group(0)[:24] + "..." for p in SHAPES for m in p.finditer(text)]
    assert not found, f"secrets in the logs: {found[:5]}"
