"""What a `kill -9` in the middle of writing a private file left is gone when llmgined starts.

write_private writes `.<name>.XXXXXXXX.tmp` and renames it into place; a writer killed before
the rename left that file: a whole or partial copy of the secrets (secrets.json) or of the
local CLI key (local.key), which nothing removed. The daemon removes its own files' stale ones
when it starts (a write under way holds a lock on its file and is left alone: it is tested in
tests/unit/test_write_private.py), and never a file of another naming.
"""

from __future__ import annotations

import os

import pytest
from llmgine_daemon.settings import get_paths

from tests.clitools import cleanup_home, short_home, start_daemon, stop_process

pytestmark = pytest.mark.sqlite_only(reason="files in the config directory; storage plays no part")


def test_the_daemon_removes_its_private_files_stale_temporaries_at_start():
    home = short_home()
    try:
        paths = get_paths({"LLMGINE_HOME": str(home)})
        config = paths.config_dir
        config.mkdir(parents=True, mode=0o700)
        left = [f".secrets.json.{'kill9_ab'}.tmp", f".{paths.local_key.name}.kill9_cd.tmp"]
        assert paths.local_key.parent == config
        for name in left:
            (config / name).write_text('{"OPENAI_API_KEY": {"value": "sk-copy"}}')
        others = [".secrets.json.mine.tmp", "secrets.json.tmp", ".secrets.json.kill9_ab.tmp.swp"]
        for name in others:
            (config / name).write_text("not ours to remove")
        daemon = start_daemon(home)
        try:
            present = set(os.listdir(config))
            assert not present & set(left), present
            assert set(others) <= present and paths.local_key.exists()
        finally:
            stop_process(daemon.proc)
    finally:
        cleanup_home(home)
