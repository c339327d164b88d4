"""The CLI's own files (contexts.json, config.toml) say which daemon gets this user's requests
and secrets: it neither writes them where another user could replace them nor reads ones
another user may have written, as llmgined refuses both (docs/security.md, Files)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.clitools import cli_env, invoke


def test_no_private_file_is_written_in_a_directory_others_can_write(tmp_path: Path) -> None:
    """`context add` (and `config set`) created their directory 0700 inside whatever
    LLMGINE_HOME named, one others may write without the sticky bit included: they could then
    rename it away and put their own contexts.json (another daemon's URL) in its place."""
    home = tmp_path / "shared"
    home.mkdir()
    home.chmod(0o777)  # others may write, no sticky bit
    added = invoke(["context", "add", "x", "--url", "http://127.0.0.1:9"], cli_env(home))
    assert added.exit_code == 1, added.stdout
    assert "writable by others" in added.stderr and str(home) in added.stderr, added.stderr
    setting = invoke(["config", "set", "server.port", "9000"], cli_env(home))
    assert setting.exit_code == 1 and "writable by others" in setting.stderr, setting.stderr
    assert list(home.iterdir()) == []


def test_a_contexts_or_config_file_others_may_write_is_refused(tmp_path: Path) -> None:
    """The CLI followed a contexts.json (and read a config.toml) that others may write, or that
    another user owns: a file planted there sent the user's next `llmgine secret set ...` to a
    daemon of the planter's choosing. Refused with the fix, as llmgined refuses config.toml."""
    home = tmp_path / "home"
    env = cli_env(home)
    assert invoke(["context", "add", "x", "--url", "http://127.0.0.1:9"], env).exit_code == 0
    contexts = home / "config" / "contexts.json"
    os.chmod(contexts, 0o666)
    listed = invoke(["context", "ls"], env)
    assert listed.exit_code == 1 and f"{contexts}: contexts file is writable by others" in listed.stderr, listed.stderr
    os.chmod(contexts, 0o600)
    assert invoke(["context", "ls"], env).exit_code == 0
    config = home / "config" / "config.toml"
    config.write_text("[server]\nport = 9001\n")
    os.chmod(config, 0o666)
    shown = invoke(["config", "show", "--local"], env)
    assert shown.exit_code == 1 and f"{config}: config file is writable by others" in shown.stderr, shown.stderr
