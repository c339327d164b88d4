"""Fixtures of the unit tests: a real ``Store`` in a temp dir, and a ``Bus`` over one; no app,
no HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from llmgine_daemon.bus.core import Bus
from llmgine_daemon.store.db import Store


@pytest.fixture
async def store(home: Path) -> AsyncIterator[Store]:
    s = Store(home / "data" / "t.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def bus(home: Path) -> AsyncIterator[Bus]:
    store = Store(home / "data" / "bus.db")
    await store.open()
    bus = Bus(store)
    await bus.start()
    try:
        yield bus
    finally:
        await bus.stop()
        await store.close()
