"""write_private: the one way the daemon writes a private file (local key, pidfile, config)."""

from __future__ import annotations

import os
import stat

from llmgine_daemon.settings import write_private


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_file_is_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        target = tmp_path / "new" / "dir" / "key"
        write_private(target, "secret\n")
    finally:
        os.umask(old)
    assert target.read_text() == "secret\n"
    assert mode(target) == 0o600
    assert mode(target.parent) == 0o700
    assert os.listdir(target.parent) == ["key"]  # no .tmp left behind


def test_replaces_an_existing_file_and_its_mode(tmp_path):
    target = tmp_path / "config.toml"
    target.write_text("old")
    os.chmod(target, 0o644)
    before = os.stat(target).st_ino
    write_private(target, b"new = 1\n")
    assert target.read_bytes() == b"new = 1\n"
    assert mode(target) == 0o600
    assert os.stat(target).st_ino != before  # replaced by rename, never rewritten in place


def test_the_data_and_the_rename_reach_the_disk(tmp_path, monkeypatch):
    # An acknowledged `secret set` must survive a power loss as a committed write does: the
    # data was never fsynced, nor the directory entry the rename made.
    target = tmp_path / "secrets.json"
    synced: list[tuple[bool, int | None]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        is_dir = stat.S_ISDIR(st.st_mode)
        synced.append((is_dir, None if is_dir else st.st_size))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_private(target, '{"A": 1}')
    # The file's whole data before the rename (its .tmp), then the directory after it.
    assert synced == [(False, len('{"A": 1}')), (True, None)]
    assert target.read_text() == '{"A": 1}'
