"""Without cgroups (a daemon not run as root), a session token's stdio MCP servers start as
before, capped per process only, and the log says so once."""

from __future__ import annotations

import logging
import os

import pytest
from llmgine_daemon.mcp.cgroups import ServerCgroups


async def test_without_cgroups_servers_get_none_and_the_log_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # cgroups are made by a root daemon only
    cgroups = ServerCgroups(512 * 2**20, 32)
    with caplog.at_level(logging.INFO, logger="llmgine.mcp"):
        assert await cgroups.make("a@1", "s1") == []
        assert await cgroups.make("b@1", "s1") == []
    said = [r for r in caplog.records if "no cgroups here" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert "per process only" in said[0].getMessage()
    await cgroups.close()
