"""`llmgine completion` and its dynamic values; `llmgine daemon install|uninstall`."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmgine_cli.completion import script
from tests.clitools import Daemon, cli_env, full_env, invoke, short_home

ROOT = Path(__file__).resolve().parents[2]
FILES = {"bash": "llmgine.bash", "zsh": "_llmgine", "fish": "llmgine.fish"}


@pytest.mark.parametrize("shell", sorted(FILES))
def test_completion_prints_the_committed_script(shell: str, tmp_path: Path) -> None:
    result = invoke(["completion", shell], cli_env(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == script(shell) == (ROOT / "completions" / FILES[shell]).read_text()
    assert "_LLMGINE_COMPLETE" in result.stdout


def complete(words: str, env: dict[str, str | None]) -> tuple[list[str], str, float]:
    """What bash would offer after ``words`` (the CLI as a real process)."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "llmgine_cli"],
        capture_output=True,
        text=True,
        timeout=30,
        env=full_env({**env, "_LLMGINE_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}),
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split(), proc.stderr, time.monotonic() - started


def test_ids_complete_from_the_running_daemon(daemon: Daemon, cli) -> None:  # type: ignore[no-untyped-def]
    sid = cli("session", "create", "-q", "--name", "completing").stdout.strip()
    eid = cli("engine", "create", "DummyEngine", "-S", sid, "-q").stdout.strip()
    cli("event", "publish", "CompletionProbe", "-S", sid)
    offered, _, _ = complete("llmgine session get ", daemon.env)
    assert sid in offered
    offered, _, _ = complete(f"llmgine session get {sid[:6]}", daemon.env)
    assert sid in offered and all(o.startswith(sid[:6]) for o in offered)
    offered, _, _ = complete("llmgine session get complet", daemon.env)  # names complete too
    assert offered == ["completing"]
    offered, _, _ = complete("llmgine engine get ", daemon.env)
    assert eid in offered
    offered, _, _ = complete("llmgine event list --type Compl", {**daemon.env, "LLMGINE_SESSION": sid})
    assert offered == ["CompletionProbe"]
    offered, _, _ = complete("llmgine engine create ", daemon.env)
    assert "DummyEngine" in offered


def test_a_sessions_things_complete_whatever_names_the_session(daemon: Daemon, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Completing runs no option callback: -S and LLMGINE_SESSION reached the API as typed, and
    # with a session's name, short id or prefix (every command takes them) nothing completed.
    sid = cli("session", "create", "-q", "--name", "completing-by-name").stdout.strip()
    (tmp_path / "t.py").write_text("def completable_tool(x: int) -> int:\n    return x\n")
    assert cli("tool", "register", str(tmp_path / "t.py"), "-S", sid, "-q").exit_code == 0
    cli("event", "publish", "NamedProbe", "-S", sid)
    for ref in ("completing-by-name", sid[-8:], sid[:13], sid):
        offered, _, _ = complete("llmgine tool exec ", {**daemon.env, "LLMGINE_SESSION": ref})
        assert offered == ["completable_tool"], ref
        offered, _, _ = complete(f"llmgine tool get -S {ref} compl", daemon.env)
        assert offered == ["completable_tool"], ref
        offered, _, _ = complete(f"llmgine event list -S {ref} --type Named", daemon.env)
        assert offered == ["NamedProbe"], ref


def test_completion_is_silent_without_a_daemon() -> None:
    home = short_home()
    try:
        env = cli_env(home, LLMGINE_NO_AUTOSTART=None)  # even with auto-start allowed
        offered, stderr, _ = complete("llmgine session get ", env)
        assert offered == [] and stderr == ""
        assert not list(home.rglob("*.sock")) and not list(home.rglob("*.pid"))  # nothing started
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_install_dry_run_writes_nothing(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "lg", HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    result = invoke(["daemon", "install", "--dry-run", "--platform", "linux"], env)
    assert result.exit_code == 0, result.stderr
    assert "[Service]" in result.stdout and "ExecStart=" in result.stdout
    assert f"Environment=LLMGINE_HOME={tmp_path / 'lg'}" in result.stdout
    assert str(tmp_path / "xdg" / "systemd" / "user" / "llmgined.service") in result.stderr
    assert not (tmp_path / "xdg").exists()


def test_install_and_uninstall_systemd(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "lg", HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    unit = tmp_path / "xdg" / "systemd" / "user" / "llmgined.service"
    result = invoke(["daemon", "install", "--platform", "linux"], env)
    assert result.exit_code == 0, result.stderr
    text = unit.read_text()
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert os.access(exec_start.split("=", 1)[1].split()[0], os.X_OK)
    assert "systemctl --user enable --now llmgined" in result.stderr
    assert invoke(["daemon", "install", "--platform", "linux"], env).exit_code == 0  # idempotent
    result = invoke(["daemon", "uninstall", "--platform", "linux"], env)
    assert result.exit_code == 0 and not unit.exists()
    assert "systemctl --user disable --now llmgined" in result.stderr
    result = invoke(["daemon", "uninstall", "--platform", "linux"], env)
    assert result.exit_code == 0 and "no service installed" in result.stderr


def test_install_launchd(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "lg", HOME=str(tmp_path))
    result = invoke(["daemon", "install", "--platform", "darwin"], env)
    assert result.exit_code == 0, result.stderr
    plist = tmp_path / "Library" / "LaunchAgents" / "dev.llmgine.llmgined.plist"
    agent = plistlib.loads(plist.read_bytes())
    assert agent["Label"] == "dev.llmgine.llmgined" and agent["RunAtLoad"] is True
    assert agent["EnvironmentVariables"] == {"LLMGINE_HOME": str(tmp_path / "lg")}
    assert "launchctl bootstrap" in result.stderr
