"""The database files as the API sees them: ``llmgine db stats|vacuum`` and the background
retention pruner (the work itself is in store/maintenance.py)."""

from __future__ import annotations

from llmgine_daemon.protocol import DbStats, StorageInfo, VacuumResult
from llmgine_daemon.store import maintenance
from llmgine_daemon.store.db import Store
from llmgine_daemon.store.maintenance import Retention


class Database:
    def __init__(self, main: Store, telemetry: Store, retention: Retention) -> None:
        self.main = main
        self.telemetry = telemetry  # logs and spans (store/telemetry.py)
        self.retention = retention

    def info(self) -> StorageInfo:
        """For GET /api/status: the backend, where the database is (a PostgreSQL URL without
        its password), and its size (both SQLite files together)."""
        return StorageInfo(
            backend=self.main.backend,
            path=self.main.describe(),
            size_bytes=self.main.size_bytes() + self.telemetry.size_bytes(),
        )

    async def stats(self) -> DbStats:
        return await maintenance.stats(self.main, self.telemetry, self.retention.describe())

    async def vacuum(self) -> VacuumResult:
        return await maintenance.vacuum(self.main, self.telemetry)
