"""SQLite storage: one writer with group commit (``db.Store``), migrations, telemetry and
retention. Imports only ``protocol`` and ``aio``; see docs/architecture.md."""
