"""The telemetry flusher while its database cannot take the flush (a PostgreSQL outage, a damaged
file): said once when flushes start failing and once when they work again. It printed a bare
line on stdout every half second for as long as the outage lasted."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from llmgine_daemon.observability.core import FLUSH_INTERVAL, Observability
from llmgine_daemon.settings import load_settings
from llmgine_daemon.store.db import Store
from llmgine_daemon.store.telemetry import telemetry_path

from tests.eventually import eventually


def dropped_logs(obs: Observability) -> float:
    for metric, rows in obs.registry.collect():
        if metric.name == "telemetry_dropped_total":
            return sum(value for labels, value in rows if labels.get("kind") == "log")
    return 0.0


async def test_failing_flushes_are_said_once_then_their_end(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(env={"LLMGINE_HOME": str(home)})
    store = Store(settings.database_path)
    telemetry = Store(telemetry_path(settings.database_path), telemetry=True)
    await store.open()
    await telemetry.open()
    obs = Observability(settings, store, telemetry)
    await obs.start()
    app_log = logging.getLogger("llmgine.test")
    try:
        # The logs table gone: every flush of a buffered record fails, as against a database
        # that cannot be reached.
        await telemetry.write(lambda c: c.execute("ALTER TABLE logs RENAME TO logs_away"))
        with caplog.at_level(logging.INFO, logger="llmgine"):
            for _ in range(6):  # several flushes' worth, each with a record to write
                app_log.warning("a record to flush")
                await asyncio.sleep(FLUSH_INTERVAL)

            def said(words: str) -> list[logging.LogRecord]:
                return [r for r in caplog.records if words in r.getMessage()]

            await eventually(lambda: said("telemetry flush failed"), timeout=10)
            assert len(said("telemetry flush failed")) == 1, [r.getMessage() for r in caplog.records]
            assert not said("flushes again")
            await telemetry.write(lambda c: c.execute("ALTER TABLE logs_away RENAME TO logs"))
            app_log.warning("one more record")
            again = await eventually(lambda: said("telemetry flushes again"), timeout=10)
            assert "failed in" in again[0].getMessage()
            assert len(said("telemetry flush failed")) == 1
    finally:
        await obs.stop()
        await telemetry.close()
        await store.close()
