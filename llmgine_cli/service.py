"""`llmgine daemon install | uninstall`: run llmgined as a user service.

Linux: a systemd user unit, ``$XDG_CONFIG_HOME/systemd/user/llmgined.service`` (default
``~/.config``). macOS: a launchd agent, ``~/Library/LaunchAgents/dev.llmgine.llmgined.plist``.
The service runs ``llmgined`` in the foreground (the service manager is its supervisor) with
the environment that picks this installation's files: ``LLMGINE_HOME`` / ``LLMGINE_CONFIG``
when they are set now. Nothing is enabled or started: the commands to do that are printed.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

UNIT_NAME = "llmgined.service"
AGENT_LABEL = "dev.llmgine.llmgined"
# Variables that choose which files the daemon uses: carried into the service as they are now.
CARRIED = ("LLMGINE_HOME", "LLMGINE_CONFIG")


@dataclass(frozen=True)
class Service:
    kind: str  # systemd | launchd
    path: Path
    text: str
    enable: list[str]  # the commands that turn it on
    disable: list[str]  # ... and off


def daemon_command() -> list[str]:
    """How to run llmgined: the console script next to this Python, else ``python -m``."""
    script = Path(sys.executable).with_name("llmgined")
    if script.exists():
        return [str(script)]
    found = shutil.which("llmgined")
    return [found] if found else [sys.executable, "-m", "llmgine_daemon"]


def _carried(env: Mapping[str, str]) -> dict[str, str]:
    return {name: str(Path(env[name]).expanduser().absolute()) for name in CARRIED if env.get(name)}


def _systemd_quote(arg: str) -> str:
    return (
        arg
        if arg and all(c.isalnum() or c in "/._-=:@+" for c in arg)
        else '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    )


def systemd(env: Mapping[str, str]) -> Service:
    config_home = Path(env.get("XDG_CONFIG_HOME") or Path(env.get("HOME", "~")) / ".config").expanduser()
    path = config_home / "systemd" / "user" / UNIT_NAME
    lines = [
        "# Written by `llmgine daemon install`; remove with `llmgine daemon uninstall`.",
        "[Unit]",
        "Description=llmgined: the LLMGine message bus daemon",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={' '.join(_systemd_quote(a) for a in daemon_command())}",
        *(f"Environment={_systemd_quote(f'{k}={v}')}" for k, v in _carried(env).items()),
        # SIGTERM is a graceful shutdown (in-flight requests finish, storage is flushed).
        "KillSignal=SIGTERM",
        "TimeoutStopSec=30",
        "Restart=on-failure",
        "RestartSec=2",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ]
    return Service(
        "systemd",
        path,
        "\n".join(lines),
        enable=[
            "systemctl --user daemon-reload",
            "systemctl --user enable --now llmgined",
            'loginctl enable-linger "$USER"   # optional: keep it running after logout',
        ],
        disable=["systemctl --user disable --now llmgined", "systemctl --user daemon-reload"],
    )


def launchd(env: Mapping[str, str]) -> Service:
    home = Path(env.get("HOME", "~")).expanduser()
    path = home / "Library" / "LaunchAgents" / f"{AGENT_LABEL}.plist"
    logs = home / "Library" / "Logs" / "llmgined.log"
    agent = {
        "Label": AGENT_LABEL,
        "ProgramArguments": daemon_command(),
        "EnvironmentVariables": _carried(env),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "StandardOutPath": str(logs),
        "StandardErrorPath": str(logs),
    }
    text = plistlib.dumps(agent, sort_keys=False).decode()
    return Service(
        "launchd",
        path,
        text,
        enable=[f"launchctl bootstrap gui/$(id -u) {path}"],
        disable=[f"launchctl bootout gui/$(id -u)/{AGENT_LABEL}"],
    )


def for_platform(env: Mapping[str, str] | None = None, platform: str | None = None) -> Service:
    env = os.environ if env is None else env
    return launchd(env) if (platform or sys.platform) == "darwin" else systemd(env)


def install(service: Service) -> None:
    service.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = service.path.with_name(service.path.name + ".tmp")
    tmp.write_text(service.text, encoding="utf-8")
    os.chmod(tmp, 0o644)
    os.replace(tmp, service.path)


def uninstall(service: Service) -> bool:
    try:
        service.path.unlink()
    except FileNotFoundError:
        return False
    return True
