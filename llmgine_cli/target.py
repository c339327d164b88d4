"""Where the daemon is: ``unix:///path`` or ``http://host:port``, by the CLI's rules.

First match wins:
  1. the ``url`` argument (the CLI's ``--url``)
  2. ``LLMGINE_URL``
  3. the default: ``server.socket`` from the local settings, else ``<runtime dir>/llmgined.sock``
     (or the configured TCP address when the config says ``server.no_socket``)
Only the default may be auto-started by the CLI; an explicit URL names someone else's daemon.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from llmgine_cli.errors import InvalidURL

DEFAULT_TCP_PORT = 8000


@dataclass(frozen=True)
class Target:
    """A parsed daemon address."""

    url: str
    socket_path: str | None = None
    host: str | None = None
    port: int | None = None
    # Found by default resolution (no --url, no LLMGINE_URL): the CLI may auto-start it.
    is_default: bool = False
    # The local config's API key, used only for the default TCP target (same user, same file).
    config_api_key: str | None = None
    # The key file llmgined writes for the local CLI (read at each request, so a daemon
    # auto-started after this target was resolved is reachable too). Only set for the local
    # daemon's own address: the key is never offered to a daemon named by --url.
    local_key_file: str | None = None

    @property
    def is_unix(self) -> bool:
        return self.socket_path is not None


def parse_url(url: str, *, is_default: bool = False) -> Target:
    text = url.strip()
    if text.startswith("unix://"):
        path = text[len("unix://"):]
        if not path.startswith("/"):
            raise InvalidURL(f"invalid URL {url!r}: use unix:///absolute/path")
        return Target(f"unix://{path}", socket_path=path, is_default=is_default)
    if text.startswith("/"):  # a bare socket path is unambiguous; accept it
        return Target(f"unix://{text}", socket_path=text, is_default=is_default)
    parts = urllib.parse.urlsplit(text)
    if parts.scheme != "http" or not parts.hostname:
        raise InvalidURL(f"invalid URL {url!r}: use unix:///path or http://host:port")
    try:
        port = parts.port or DEFAULT_TCP_PORT
    except ValueError:
        raise InvalidURL(f"invalid URL {url!r}: bad port") from None
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    return Target(f"http://{shown}:{port}", host=host, port=port, is_default=is_default)


def default_target(env: Mapping[str, str] | None = None) -> Target:
    """The daemon this user gets without --url: what a bare `llmgined` would listen on."""
    from llmgine_daemon.settings import ConfigError, get_paths, load_settings

    env = os.environ if env is None else env
    try:
        settings = load_settings(env=env)
    except ConfigError:
        # A broken config must not stop `llmgine config set` from fixing it, nor hide the
        # daemon's own error message (auto-start shows it).
        return Target(f"unix://{get_paths(env).socket}", socket_path=str(get_paths(env).socket),
                      is_default=True)
    path = settings.socket_path
    if path is not None:
        return Target(f"unix://{path}", socket_path=str(path), is_default=True)
    host = connect_host(settings.host)
    target = parse_url(f"http://{host}:{settings.port}", is_default=True)
    return Target(target.url, host=target.host, port=target.port, is_default=True,
                  config_api_key=settings["security.api_key_secret"],
                  local_key_file=str(settings.paths.local_key))


def connect_host(bind_host: str) -> str:
    """Where to connect to reach a daemon bound to ``bind_host`` (wildcards mean loopback)."""
    if bind_host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if bind_host == "::":
        return "[::1]"
    return f"[{bind_host}]" if ":" in bind_host else bind_host


def resolve_target(url: str | None = None, env: Mapping[str, str] | None = None) -> Target:
    env = os.environ if env is None else env
    if url:
        return parse_url(url)
    if env.get("LLMGINE_URL"):
        return parse_url(env["LLMGINE_URL"])
    return default_target(env)


