"""The start-up checks of SQLite's write-ahead log (``<database>-wal``), before the daemon
writes anything: SQLite itself never says that it left committed transactions of the log out.

The log's format (sqlite.org/fileformat.html, "WAL file format"): a 32-byte header (magic,
version, page size, checkpoint sequence, two salts, a checksum of the header), then frames of
a 24-byte header (page number; the database's size in pages for the last frame of a
transaction, its "commit frame", else 0; the two salts; a checksum) and one page. The checksums
are cumulative: each frame's covers the frames before it. When SQLite opens the database after
a crash it reads the frames from the start and stops at the first one whose salts differ from
the header's or whose checksum is wrong; the transactions after that point are dropped, without
a word, and the next write goes over them.

- A damaged header (``check_header``): SQLite takes the file for an empty log.
- A damaged frame in the middle (``check_frames``): SQLite stops there and drops every later
  transaction too. Where it stopped is its own recovery's answer, read rather than recomputed
  (the checksums are verified once, in C, by the recovery SQLite runs at open anyway; a Python
  pass over a large log would cost seconds): ``mxFrame`` of the wal-index header in
  ``<database>-shm`` (sqlite.org/walformat.html, "The WAL-Index Header"), after a read-only
  connection opened the database. Then the frame headers after that point are read: commit
  frames with the current salts there are transactions SQLite left out.

  One such commit frame is what a crash can leave: the last transaction, cut short (``kill -9``
  between the two writes of its last frame; a power loss before its fsync), never
  acknowledged. Two or more are damage: with ``synchronous = full`` a transaction's frames are
  written only after the previous transaction's COMMIT was fsynced, so the first of them had
  committed (and was acknowledged) before the log was damaged. With ``normal`` several
  transactions may be unsynced and a power loss may leave exactly that, which that setting
  accepts; and the telemetry database (logs and spans) is best effort: for those the log is
  copied aside, a warning logged, and the daemon starts.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import struct
import time
from pathlib import Path

from llmgine_daemon.store.errors import StorageError

log = logging.getLogger("llmgine.store")

WAL_MAGIC = {0x377F0682: "<", 0x377F0683: ">"}  # the byte order of the WAL's checksums
WAL_HEADER = 32
FRAME_HEADER = 24
# The wal-index header (in <database>-shm, native byte order), written twice one after the
# other: iVersion, unused, iChange, isInit, bigEndCksum, szPage, mxFrame, nPage.
INDEX_HEADER = struct.Struct("=IIIBBHII")
INDEX_VERSION = 3007000
REMEDY = (
    "Nothing was changed: copy the database's files somewhere safe, then restore from a backup;"
    " or, to keep the transactions before the damage and lose the rest, open it once with"
    " `sqlite3 {db} 'PRAGMA wal_checkpoint'`"
)


def wal_path(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def check_header(path: Path) -> bytes | None:
    """Refuse a log whose header is damaged; the header, or None when there is no log (or
    an empty one: reset, or cut before its first frame)."""
    wal = wal_path(path)
    try:
        with open(wal, "rb") as fh:
            header = fh.read(WAL_HEADER)
    except FileNotFoundError:
        return None
    if len(header) < WAL_HEADER:
        return None
    order = WAL_MAGIC.get(struct.unpack(">I", header[:4])[0])
    valid = order is not None
    if order is not None:
        words = struct.unpack(order + "6I", header[:24])
        s0 = s1 = 0
        for i in range(0, 6, 2):
            s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
            s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
        valid = (s0, s1) == struct.unpack(">2I", header[24:32])
    if not valid:
        raise StorageError(
            f"{wal}: not a valid write-ahead log (its header is damaged); SQLite would start without"
            " the writes it holds. Nothing was changed: restore the database from a backup, or move"
            " the file away to start without them"
        )
    return header


def open_checked(path: Path, synchronous: str, *, best_effort: bool = False) -> sqlite3.Connection | None:
    """Both checks (see the module docstring); ``best_effort``: the database of logs and spans,
    whose damaged log is reported and kept aside but never stops the daemon. Returns the read-only connection that ran
    SQLite's recovery; None when there is no log. Close it BEFORE this process opens another
    connection to the database: reading ``-shm`` here closes a descriptor of that file, and
    closing any descriptor of a file ends every POSIX lock the process holds on it, the
    connection's lock on the wal-index included. A connection opened beside it shared that
    unlocked index for the daemon's life, and the next other process to open the database (a
    person's ``sqlite3``, a backup) took itself for the only one: it truncated and rebuilt the
    index under the daemon (SIGBUS in the daemon, or the daemon's writes read from a wrong
    index). Once it is closed, the store's first connection takes the locks afresh (and
    recovers the log a second time, which is cheap)."""
    header = check_header(path)
    if header is None:
        return None
    started = time.perf_counter()
    # A URI of the path escaped (as_uri): a '#', '?' or '%' in it would name another file.
    uri = f"{Path(path).resolve().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a read: SQLite recovers the log
        dropped = _dropped_commits(path, header)
    except BaseException:
        conn.close()  # read-only: it never checkpoints nor removes the log
        raise
    log.debug("write-ahead log checked in %.1f ms", (time.perf_counter() - started) * 1000)
    if dropped is None or len(dropped[1]) < 2:
        return conn
    mx, commits = dropped
    wal = wal_path(path)
    what = (
        f"{wal}: damaged in the middle: SQLite reads it only up to frame {mx} and would drop"
        f" {len(commits)} committed transactions after it (commit frames {commits[0]}..{commits[-1]})"
    )
    if synchronous.upper() in ("FULL", "EXTRA") and not best_effort:
        conn.close()
        raise StorageError(f"{what}. {REMEDY.format(db=path)}")
    kept = wal.with_name(f"{wal.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    shutil.copy2(wal, kept)
    why = (
        "logs and spans are kept best effort"
        if best_effort
        else f"with database.synchronous = {synchronous.lower()} a power loss can leave that"
    )
    log.warning("%s; %s, so the daemon starts without them (the log as it was: %s)", what, why, kept)
    return conn


def _index_header(path: Path) -> bytes | None:
    try:
        with open(path.with_name(path.name + "-shm"), "rb") as fh:
            return fh.read(96)  # the wal-index header, twice
    except OSError as exc:
        log.warning("write-ahead log not checked: %s", exc)
        return None


def _dropped_commits(path: Path, header: bytes) -> tuple[int, list[int]] | None:
    """(SQLite's mxFrame, the commit frames with the current salts after it); None when the
    wal-index header cannot be read as documented (the check is then skipped, with a log)."""
    index = _index_header(path)
    if index is None:
        return None
    first, second = index[:48], index[48:96]
    if len(index) < 96 or first != second:
        log.warning("write-ahead log not checked: its index header is not as documented (%s)", index.hex())
        return None
    version, _, _, init, _, page_size, mx_frame, _ = INDEX_HEADER.unpack(first[: INDEX_HEADER.size])
    (wal_page,) = struct.unpack(">I", header[8:12])
    salts = header[16:24]
    # szPage is set from the last commit frame read: 0 when there was none (mxFrame 0).
    page_ok = page_size == (wal_page & 0xFF00) | (wal_page >> 16) or (page_size == 0 and mx_frame == 0)
    if version != INDEX_VERSION or not init or first[32:40] != salts or not page_ok:
        log.warning("write-ahead log not checked: its index header is not as documented (%s)", index.hex())
        return None
    frame = FRAME_HEADER + wal_page
    commits: list[int] = []
    with open(wal_path(path), "rb") as fh:
        fh.seek(0, 2)
        frames = (fh.tell() - WAL_HEADER) // frame
        for n in range(mx_frame + 1, frames + 1):
            fh.seek(WAL_HEADER + (n - 1) * frame)
            head = fh.read(FRAME_HEADER)
            if head[8:16] == salts and head[4:8] != b"\0\0\0\0":
                commits.append(n)
    if commits and _index_header(path) != index:
        # Another process (a person's sqlite3) wrote while we looked: those frames are its new
        # transactions, read by SQLite, not dropped ones.
        return mx_frame, []
    return mx_frame, commits
