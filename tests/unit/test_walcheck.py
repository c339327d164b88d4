"""store/walcheck.py on real SQLite files (the e2e cases, with daemons, are in
tests/e2e/test_wal_damage.py)."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from llmgine_daemon.store import walcheck

# A process that writes, then dies without closing (kill -9 as far as the files go).
WRITER = """
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA wal_autocheckpoint=0")
c.execute("CREATE TABLE IF NOT EXISTS t(x)")
if sys.argv[2] == "checkpoint":
    c.execute("INSERT INTO t VALUES (1)")
    c.execute("PRAGMA wal_checkpoint(PASSIVE)")
c.execute("PRAGMA cache_size=2")
c.execute("BEGIN")
for _ in range(50):
    c.execute("INSERT INTO t VALUES (?)", (os.urandom(3000),))
os._exit(0)
"""


def die_writing(db: Path, how: str) -> None:
    subprocess.run([sys.executable, "-c", WRITER, str(db), how], check=True)


def test_a_log_with_no_committed_frame_is_checked_without_a_warning(tmp_path: Path, caplog) -> None:
    # A crash in the first transaction after the log was reset (a full disk makes that common):
    # SQLite's index then says mxFrame 0 and a page size of 0, which was taken for an index
    # "not as documented", and the check skipped with a warning.
    db = tmp_path / "x.db"
    die_writing(db, "checkpoint")
    die_writing(db, "first")  # the log is reset by this transaction's first frame, then dies
    assert os.path.getsize(str(db) + "-wal") > 32
    with caplog.at_level(logging.WARNING, logger="llmgine.store"):
        conn = walcheck.open_checked(db, "FULL")
    assert conn is not None
    conn.close()
    assert not [r for r in caplog.records if "not checked" in r.getMessage()]
    assert sqlite3.connect(db).execute("SELECT count(*) FROM t").fetchone() == (1,)
