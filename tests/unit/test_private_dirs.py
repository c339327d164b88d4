"""ensure_private_dir: only directories the daemon creates are made private; an existing one is
checked, never changed, and refused when others could replace files in it."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest
from llmgine_daemon.settings import ConfigError, ensure_private_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_creates_every_missing_level_0700(home: Path):
    target = home / "a" / "b" / "c"
    os.chmod(home, 0o755)
    assert ensure_private_dir(target) == target
    for path in (home / "a", home / "a" / "b", target):
        assert mode(path) == 0o700, path
    assert mode(home) == 0o755  # existed: left alone


@pytest.mark.parametrize("existing", [0o700, 0o755, 0o750, 0o1777, 0o1770])
def test_an_acceptable_existing_directory_is_not_changed(home: Path, existing: int):
    shared = home / "shared"
    shared.mkdir()
    os.chmod(shared, existing)
    ensure_private_dir(shared)
    assert mode(shared) == existing


@pytest.mark.parametrize("existing", [0o777, 0o770, 0o757, 0o722])
def test_a_directory_others_can_write_is_refused_and_not_changed(home: Path, existing: int):
    shared = home / "shared"
    shared.mkdir()
    os.chmod(shared, existing)
    with pytest.raises(ConfigError) as err:
        ensure_private_dir(shared)
    message = str(err.value)
    assert "\n" not in message and str(shared) in message
    assert "writable by others" in message and f"{existing:04o}" in message
    assert mode(shared) == existing
    # A missing directory below it is not created either.
    with pytest.raises(ConfigError):
        ensure_private_dir(shared / "sub")
    assert mode(shared) == existing


def test_the_system_temp_dir_is_accepted_unchanged():
    tmp = Path(tempfile.gettempdir())
    before = mode(tmp)
    if not before & stat.S_ISVTX:
        pytest.skip(f"{tmp} is not sticky here")
    ensure_private_dir(tmp)
    assert mode(tmp) == before


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a directory to another user")
def test_a_directory_of_another_user_is_refused(home: Path):
    theirs = home / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        ensure_private_dir(theirs)
    assert mode(theirs) == 0o700


def test_a_file_is_not_a_directory(home: Path):
    (home / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        ensure_private_dir(home / "file")
