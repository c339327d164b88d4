"""tests/bytecode.py's kept cache: bytecode the suite's processes run, so only a directory of
this user's that no one else can write is used."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from tests.bytecode import _kept_cache


@pytest.fixture
def tmpdir_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path / f"llmgine-pyc-{os.getuid()}"


def test_made_private_and_used_again(tmpdir_is: Path) -> None:
    assert _kept_cache() == str(tmpdir_is)
    assert stat.S_IMODE(tmpdir_is.stat().st_mode) == 0o700
    (tmpdir_is / "kept").write_text("")
    assert _kept_cache() == str(tmpdir_is) and (tmpdir_is / "kept").exists()


def test_a_directory_others_can_write_is_not_used(tmpdir_is: Path) -> None:
    tmpdir_is.mkdir()
    tmpdir_is.chmod(0o777)
    assert _kept_cache() is None
    tmpdir_is.chmod(0o720)
    assert _kept_cache() is None


def test_a_link_or_a_file_is_not_used(tmpdir_is: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    tmpdir_is.symlink_to(elsewhere)
    assert _kept_cache() is None
    tmpdir_is.unlink()
    tmpdir_is.write_text("")
    assert _kept_cache() is None
