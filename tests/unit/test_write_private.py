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


def _killed_mid_write(target) -> str:
    """A real write_private of ``target`` in a child process, SIGKILLed while it writes: the
    name of the temporary file it left (a copy of what it was writing: secrets, a key)."""
    import signal
    import subprocess
    import sys
    import time

    code = "import sys, pathlib\nfrom llmgine_daemon.paths import write_private\n"
    code += "write_private(pathlib.Path(sys.argv[1]), b'x' * (1 << 30))\n"
    child = subprocess.Popen([sys.executable, "-c", code, str(target)])
    try:
        deadline = time.monotonic() + 60
        while not (left := [n for n in os.listdir(target.parent) if n.endswith(".tmp")]):
            assert child.poll() is None and time.monotonic() < deadline, "the writer never started"
            time.sleep(0.01)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    [name] = left
    return name


def test_what_a_killed_writer_left_goes_with_the_next_write(tmp_path):
    # A `kill -9` in the middle of `secret set` left `.secrets.json.XXXXXXXX.tmp`, a copy of
    # the secrets, for ever: nothing ever removed it (only config.toml's, by `config set`).
    target = tmp_path / "secrets.json"
    target.write_text("{}")
    left = _killed_mid_write(target)
    assert left.startswith(".secrets.json.") and (tmp_path / left).exists()
    write_private(target, '{"A": 1}')
    assert os.listdir(tmp_path) == ["secrets.json"] and target.read_text() == '{"A": 1}'


def test_only_stale_temporary_files_of_that_file_are_removed(tmp_path):
    import fcntl

    from llmgine_daemon.settings import clear_stale_temps

    target = tmp_path / "secrets.json"
    kept = {
        ".secrets.json.abc.tmp": "not mkstemp's eight letters",
        "secrets.json.tmp": "no leading dot",
        ".secrets.json.ABCDEFGH.tmp": "upper case: not mkstemp's",
        ".local.key.abcdefgh.tmp": "another file's",
        ".secrets.json.abcdefgh.tmp.bak": "another suffix",
        "elsewhere": "a symlink's target",
    }
    for name, text in kept.items():
        (tmp_path / name).write_text(text)
    os.symlink(tmp_path / "elsewhere", tmp_path / ".secrets.json.symlink_.tmp")
    kept[".secrets.json.symlink_.tmp"] = ""
    (tmp_path / ".secrets.json.stale_01.tmp").write_text("left by a writer killed mid-write")
    busy = tmp_path / ".secrets.json.writing_.tmp"
    busy.write_text("a writer is at it (it holds the lock)")
    kept[busy.name] = ""
    with open(busy, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert clear_stale_temps(target) == 1
    assert sorted(os.listdir(tmp_path)) == sorted(kept)
    assert (tmp_path / "elsewhere").read_text() == "a symlink's target"


def test_contexts_json_is_written_as_every_private_file(tmp_path, monkeypatch):
    # contexts.json (the contexts' API keys) had a writer of its own: `contexts.json.<pid>.tmp`
    # (left for ever by a kill), and the directory was never fsynced after the rename.
    from llmgine_cli.contexts import save

    env = {"LLMGINE_HOME": str(tmp_path)}
    config = tmp_path / "config"
    config.mkdir(mode=0o700)
    (config / "contexts.json.999999999.tmp").write_text('{"contexts": {"old": {"api_key": "k"}}}')
    (config / f"contexts.json.{os.getpid()}.tmp").write_text("a live process's: kept")
    synced: list[bool] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = save(env, {"contexts": {}, "current": None})
    assert synced == [False, True]
    assert sorted(os.listdir(config)) == ["contexts.json", f"contexts.json.{os.getpid()}.tmp"]
    assert mode(path) == 0o600
