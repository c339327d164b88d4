"""Where the daemon is: ``unix:///path`` or ``http://host:port``, by the CLI's rules.

First match wins:
  1. the ``url`` argument (the CLI's ``--url``)
  2. ``LLMGINE_URL`` (the CLI's ``--context`` drops it, and sets LLMGINE_CONTEXT)
  3. a named context (contexts.py): LLMGINE_CONTEXT, or the one `llmgine context use` chose
  4. the default: ``server.socket`` from the local settings, else ``<runtime dir>/llmgined.sock``
     (or the configured TCP address when the config says ``server.no_socket``)
Only the default may be auto-started by the CLI; an explicit URL names someone else's daemon.
"""

from __future__ import annotations

import os
import urllib.parse

from llmgine_cli.errors import InvalidURL

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_TCP_PORT = 8000
APP_NAME = "llmgine"  # llmgine_daemon.settings.APP_NAME (a test checks they agree)


class Target:
    """A parsed daemon address (immutable; a plain class, not a dataclass: this module is on
    every CLI call's path, and a frozen dataclass costs a millisecond to define)."""

    __slots__ = ("url", "socket_path", "host", "port", "is_default", "config_api_key", "local_key_file")
    _FIELDS = __slots__

    url: str
    socket_path: str | None
    host: str | None
    port: int | None
    # Found by default resolution (no --url, no LLMGINE_URL): the CLI may auto-start it.
    is_default: bool
    # The local config's API key, used only for the default TCP target (same user, same file).
    config_api_key: str | None
    # The key file llmgined writes for the local CLI (read at each request, so a daemon
    # auto-started after this target was resolved is reachable too). Only set for the local
    # daemon's own address: the key is never offered to a daemon named by --url.
    local_key_file: str | None

    def __init__(
        self,
        url: str,
        socket_path: str | None = None,
        host: str | None = None,
        port: int | None = None,
        is_default: bool = False,
        config_api_key: str | None = None,
        local_key_file: str | None = None,
    ) -> None:
        values = (url, socket_path, host, port, is_default, config_api_key, local_key_file)
        for name, value in zip(self._FIELDS, values, strict=True):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Target is immutable: cannot set {name}")

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._FIELDS)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Target) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._FIELDS)
        return f"Target({shown})"

    def replace(self, **changes: object) -> Target:
        values = {name: getattr(self, name) for name in self._FIELDS}
        values.update(changes)
        return Target(**values)  # type: ignore[arg-type]

    @property
    def is_unix(self) -> bool:
        return self.socket_path is not None


def parse_url(url: str, *, is_default: bool = False) -> Target:
    text = url.strip()
    if text.startswith("unix://"):
        path = text[len("unix://") :]
        if not path.startswith("/"):
            raise InvalidURL(f"invalid URL {url!r}: use unix:///absolute/path")
        return Target(f"unix://{path}", socket_path=path, is_default=is_default)
    if text.startswith("/"):  # a bare socket path is unambiguous; accept it
        return Target(f"unix://{text}", socket_path=text, is_default=is_default)
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError as exc:  # "http://[::1": Invalid IPv6 URL
        raise InvalidURL(f"invalid URL {url!r}: {exc}") from None
    if parts.scheme != "http" or not parts.hostname:
        raise InvalidURL(f"invalid URL {url!r}: use unix:///path or http://host:port")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        # Each was dropped without a word: a path prefix (a proxy's /llmgine) is not served.
        raise InvalidURL(f"invalid URL {url!r}: only http://host:port (no path, query or user)")
    try:
        port = parts.port or DEFAULT_TCP_PORT
    except ValueError:
        raise InvalidURL(f"invalid URL {url!r}: bad port") from None
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    return Target(f"http://{shown}:{port}", host=host, port=port, is_default=is_default)


# Settings that can move the daemon off <runtime dir>/llmgined.sock.
_ADDRESS_VARIABLES = ("LLMGINE_CONFIG", "LLMGINE_SOCKET", "LLMGINE_NO_SOCKET")


def _home_socket(env: Mapping[str, str]) -> str | None:
    """The default socket under LLMGINE_HOME, when nothing else can decide it (no config
    file, none of _ADDRESS_VARIABLES); else None and the settings decide.

    The same answer as ``load_settings(env).socket_path`` (tests/unit/test_cli_wire_and_target.py
    compares them) without importing the settings module, which costs a sixth of a call.
    """
    home = env.get("LLMGINE_HOME")
    if not home or any(env.get(name) for name in _ADDRESS_VARIABLES):
        return None
    root = os.path.expanduser(home)
    if not root.startswith("/"):
        root = os.path.join(os.getcwd(), root)
    if root.startswith("//"):
        return None  # pathlib keeps a leading "//": let it spell the path
    # What Path(root).absolute() gives: empty and "." parts dropped, ".." kept.
    root = "/" + "/".join(part for part in root.split("/") if part not in ("", "."))
    if os.path.lexists(f"{root}/config/config.toml"):
        return None
    return f"{root.rstrip('/')}/run/llmgined.sock"


def _platform_socket(env: Mapping[str, str]) -> str | None:
    """The default socket by the platform's rules (XDG on Linux), found the way
    ``llmgine_daemon.settings.get_paths`` finds it (platformdirs), when nothing else can
    decide it (no LLMGINE_HOME, no config file, none of _ADDRESS_VARIABLES); else None and
    the settings decide. Saves importing the settings (and tomllib) on every call;
    tests/unit/test_cli_wire_and_target.py compares the two.
    """
    if env is not os.environ:
        return None  # platformdirs reads os.environ itself
    if env.get("LLMGINE_HOME") or any(env.get(name) for name in _ADDRESS_VARIABLES):
        return None
    import warnings

    import platformdirs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as get_paths: an unset XDG_RUNTIME_DIR is fine
        runtime = platformdirs.user_runtime_dir(APP_NAME)
        config_dir = platformdirs.user_config_dir(APP_NAME)
    if os.path.lexists(os.path.join(config_dir, "config.toml")):
        return None
    parent = os.path.dirname(runtime.rstrip("/"))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK) or "//" in runtime.lstrip("/"):
        return None  # get_paths falls back to a temp dir here: let it
    return f"{runtime.rstrip('/')}/llmgined.sock"


def default_target(env: Mapping[str, str] | None = None) -> Target:
    """The daemon this user gets without --url: what a bare `llmgined` would listen on."""
    env = os.environ if env is None else env
    fast = _home_socket(env) or _platform_socket(env)
    if fast is not None:
        return Target(f"unix://{fast}", socket_path=fast, is_default=True)
    from llmgine_daemon.settings import ConfigError, get_paths, load_settings

    try:
        settings = load_settings(env=env)
    except ConfigError:
        # A broken config must not stop `llmgine config set` from fixing it, nor hide the
        # daemon's own error message (auto-start shows it).
        return Target(f"unix://{get_paths(env).socket}", socket_path=str(get_paths(env).socket), is_default=True)
    path = settings.socket_path
    if path is not None:
        return Target(f"unix://{path}", socket_path=str(path), is_default=True)
    host = connect_host(settings.host)
    target = parse_url(f"http://{host}:{settings.port}", is_default=True)
    return Target(
        target.url,
        host=target.host,
        port=target.port,
        is_default=True,
        config_api_key=settings["security.api_key_secret"],
        local_key_file=str(settings.paths.local_key),
    )


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
    from llmgine_cli.contexts import context_target

    return context_target(env) or default_target(env)
