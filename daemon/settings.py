"""Settings: defaults < config file (TOML, or YAML) < environment < llmgined flags.

Every setting has one dotted key (its place in the TOML file), one environment variable and,
for some, a flag. ``load_settings`` returns the resolved values together with where each came
from, so ``GET /api/config`` and ``llmgine config show`` can say why a value is what it is.

This module imports only the standard library and platformdirs: the CLI uses it to find the
default socket and to edit the config file without starting the daemon. Where files live
(``Paths``, ``get_paths``) and the private-directory checks are in ``paths.py``, imported
from here too.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from llmgine_daemon.paths import APP_NAME as APP_NAME
from llmgine_daemon.paths import ConfigError as ConfigError
from llmgine_daemon.paths import Paths as Paths
from llmgine_daemon.paths import check_dir_safe as check_dir_safe
from llmgine_daemon.paths import clear_stale_temps as clear_stale_temps
from llmgine_daemon.paths import dir_locked as dir_locked
from llmgine_daemon.paths import ensure_private_dir as ensure_private_dir
from llmgine_daemon.paths import get_paths as get_paths
from llmgine_daemon.paths import pidfile_owner as pidfile_owner
from llmgine_daemon.paths import write_private as write_private
from llmgine_daemon.settings_table import BY_ENV as BY_ENV
from llmgine_daemon.settings_table import BY_KEY as BY_KEY
from llmgine_daemon.settings_table import PROVIDERS as PROVIDERS
from llmgine_daemon.settings_table import SETTINGS as SETTINGS
from llmgine_daemon.settings_table import SOURCES as SOURCES
from llmgine_daemon.settings_table import Setting as Setting

T = TypeVar("T")


# -- resolution --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """``security.limits.*``, typed (0 means no limit)."""

    max_sessions: int
    max_engines_per_session: int
    max_tools_per_session: int
    max_handlers_per_session: int
    max_pending_commands_per_session: int
    max_pending_bytes_per_session: int
    max_event_bytes_per_session: int
    max_engine_memory_per_session: int
    max_tokens_per_session: int
    max_websockets: int
    max_websockets_per_credential: int
    session_log_records: int
    session_log_rows: int
    session_span_rows: int


class _Typed(Generic[T]):
    """One setting read as the type its name promises: ``settings.read_timeout`` is a float
    where ``settings["server.read_timeout"]`` is Any. Reads the current value every time."""

    def __init__(self, key: str, cast: Callable[[Any], T]) -> None:
        self.key = key
        self.cast = cast

    def __get__(self, settings: Settings, owner: type | None = None) -> T:
        return self.cast(settings.values[self.key])


@dataclass
class Settings:
    values: dict[str, Any]
    sources: dict[str, str]
    paths: Paths
    config_file: Path

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    # Typed views of the names read on every request (not dataclass fields: no annotation).
    read_timeout = _Typed("server.read_timeout", float)
    max_ws_message_size = _Typed("server.max_ws_message_size", int)
    rate_limit_unix_socket = _Typed("security.rate_limits.unix_socket", bool)
    session_token_registration = _Typed("sandbox.session_token_registration", bool)

    @property
    def limits(self) -> Limits:
        return Limits(**{name: int(self.values[f"security.limits.{name}"]) for name in Limits.__dataclass_fields__})

    # Convenience views used across the daemon.
    @property
    def tcp_enabled(self) -> bool:
        return self.values["server.host"] is not None or self.values["server.port"] is not None

    @property
    def host(self) -> str:
        return self.values["server.host"] or "127.0.0.1"

    @property
    def port(self) -> int:
        port = self.values["server.port"]
        return 8000 if port is None else port

    @property
    def socket_path(self) -> Path | None:
        if self.values["server.no_socket"]:
            return None
        configured = self.values["server.socket"]
        return Path(configured).expanduser().absolute() if configured else self.paths.socket

    @property
    def database_path(self) -> Path:
        return database_path(self.values["database.url"], self.paths)

    @property
    def postgres_url(self) -> str | None:
        """The PostgreSQL URL when database.url names one (store/postgres.py), else None."""
        url = self.values["database.url"]
        return url if url is not None and is_postgres_url(url) else None

    @property
    def workers(self) -> int:
        return self.values["server.workers"] or (os.cpu_count() or 1)

    def redacted(self, key: str) -> Any:
        value = self.values[key]
        if BY_KEY[key].secret and value:
            return "********"
        if (key == "database.url" or key.endswith(".base_url")) and value:
            return redact_url(value)  # a PostgreSQL URL, or a provider's proxy, may carry a password
        return value


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(url: str) -> bool:
    return url.startswith(POSTGRES_SCHEMES)


# A ``password=`` parameter: in a URL's query (up to the next ``&``) or in a libpq
# keyword/value string (a word, or a quoted value with ``\'`` escapes).
_PASSWORD_PARAM = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&]*)", re.I)


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``********``, for messages: the one in
    the URL's user part and a ``password=`` parameter (of the query, or of a libpq
    keyword/value string given where a URL belongs)."""
    head, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if sep and at and ":" in userinfo:
        url = f"{head}://{userinfo.split(':', 1)[0]}:********@{hostpart}"
    return _PASSWORD_PARAM.sub(r"\1********", url)


def _check_postgres_url(url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ConfigError(f"database.url {redact_url(url)!r}: the port is not a number") from None
    if not parts.path.strip("/"):
        raise ConfigError(f"database.url {redact_url(url)!r}: needs a database name (postgresql://USER@HOST:PORT/DB)")


def database_path(url: str | None, paths: Paths) -> Path:
    """The SQLite file: database.url's (sqlite:///PATH), or the default one (also with a
    PostgreSQL URL: nothing of the bus is kept there then)."""
    if url is None:
        return paths.database
    if is_postgres_url(url):
        _check_postgres_url(url)
        return paths.database
    prefix = "sqlite:///"
    if "://" not in url and "=" in url:
        raise ConfigError(
            f"database.url {redact_url(url)!r}: a libpq keyword/value string; give a URL,"
            " postgresql://USER@HOST:PORT/DB (the password in it, in PGPASSWORD or in ~/.pgpass)"
        )
    if not url.startswith(prefix):
        scheme = url.split(":", 1)[0] if ":" in url else url
        raise ConfigError(
            f"database.url {redact_url(url)!r}: the {scheme!r} backend is not supported"
            " (use sqlite:///PATH or postgresql://USER@HOST:PORT/DB)"
        )
    rest = url[len(prefix) :]
    if not rest or rest == ":memory:":
        raise ConfigError(f"database.url {redact_url(url)!r}: needs a file path (sqlite:///PATH)")
    return Path(rest).expanduser().absolute()


# Other names a config file may give a setting: ``[storage] url`` (the name deployments of the
# API use for the database) is ``database.url``.
ALIASES = {"storage.url": "database.url"}


def is_yaml(path: Path) -> bool:
    """A ``.yaml``/``.yml`` config file is read as YAML (the API's own ``config/api.yaml``, with
    the same sections and keys as the TOML file); any other name as TOML."""
    return path.suffix.lower() in (".yaml", ".yml")


def _parse_toml(path: Path, raw: bytes) -> dict[str, Any]:
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _parse_yaml(path: Path, raw: bytes) -> dict[str, Any]:
    import yaml  # only for a YAML file: the CLI's start-up reads none

    try:
        doc = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
        reason = f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark and problem else str(exc)
        raise ConfigError(f"{path}: not valid YAML: {' '.join(reason.split())}") from None
    if doc is None:  # an empty file, or only comments
        return {}
    if not isinstance(doc, dict) or not all(isinstance(k, str) for k in doc):
        raise ConfigError(f"{path}: a YAML config file must be a mapping of sections (server:, logging:, ...)")
    return doc


def _parse(path: Path, raw: bytes) -> dict[str, Any]:
    """The config file's text as a document, in the format its name says (``is_yaml``)."""
    return _parse_yaml(path, raw) if is_yaml(path) else _parse_toml(path, raw)


def read_config_file(path: Path) -> dict[str, Any]:
    """The config file as a flat {dotted key: raw value} dict; missing file = empty."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    doc = _parse(path, raw)
    flat: dict[str, Any] = {}

    def is_table(key: str) -> bool:
        return any(k.startswith(key + ".") for k in (*BY_KEY, *ALIASES))

    def walk(prefix: str, table: dict[str, Any]) -> None:
        for name, value in table.items():
            key = ALIASES.get(f"{prefix}{name}", f"{prefix}{name}")
            if value is None and (key in BY_KEY or is_table(key)):
                continue  # YAML's empty value (`file:`, a bare `server:`): left at its default
            if isinstance(value, dict) and key not in BY_KEY:
                if not is_table(key):
                    raise ConfigError(f"{path}: unknown table [{key}]")
                walk(key + ".", value)
            elif key not in BY_KEY and is_table(key):
                raise ConfigError(f"{path}: {key} is a table ([{key}]), not a value")
            else:
                flat[key] = value

    walk("", doc)
    return flat


def _apply(setting: Setting, raw: Any, where: str) -> Any:
    try:
        return setting.parse(raw)
    except ValueError as exc:
        shown = "<secret>" if setting.secret else repr(raw)  # never echo a secret
        raise ConfigError(f"{where}: {setting.key} = {shown}: {exc}") from None


def _keys_from_named_env(values: dict[str, Any], sources: dict[str, str], env: Mapping[str, str]) -> None:
    """``providers.X.api_key_env`` names another variable to read the key from."""
    for name in PROVIDERS:
        var = values[f"providers.{name}.api_key_env"]
        key = f"providers.{name}.api_key"
        if var != BY_KEY[key].env and env.get(var):
            values[key] = env[var]
            sources[key] = "env"


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOUBLE_QUOTED_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def _env_file_value(text: str) -> str | None:
    """One value of an env file: 'single quoted' (as is), "double quoted" (\\n, \\", \\\\
    escapes) or bare (a `` #`` starts a comment); None when a quote is not closed."""
    if text[:1] == "'":
        end = text.find("'", 1)
        return text[1:end] if end > 0 else None
    if text[:1] == '"':
        out, i = [], 1
        while i < len(text):
            char = text[i]
            if char == '"':
                return "".join(out)
            if char == "\\" and i + 1 < len(text):
                i += 1
                out.append(_DOUBLE_QUOTED_ESCAPES.get(text[i], "\\" + text[i]))
            else:
                out.append(char)
            i += 1
        return None
    comment = text.find(" #")
    return (text if comment < 0 else text[:comment]).strip()


def read_env_file(path: str | Path) -> dict[str, str]:
    """The variables of a dotenv file (``llmgined --env-file .env``, as uvicorn's): ``NAME=value``
    lines, ``export`` allowed before the name, ``#`` comments and blank lines skipped. A line
    that is none of these is a ConfigError naming the file and the line. Its variables set
    what the config file does (API_KEY_SECRET, HOST, LLMGINE_CONFIG itself): a file others
    could write is refused as the config file is (``check_config_file_mode``)."""
    path = Path(path).expanduser()
    check_config_file_mode(path, "env file")
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: env file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    variables: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, rest = line.removeprefix("export ").partition("=")
        name = name.strip()
        value = _env_file_value(rest.strip()) if equals else None
        if not _ENV_NAME.fullmatch(name) or value is None:
            # Never echo the line: it may hold a key.
            raise ConfigError(f"{path}:{number}: expected NAME=value (a name of letters, digits and _)")
        variables[name] = value
    return variables


def load_settings(
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve every setting. Raises ConfigError with a one-line message on bad input."""
    env = os.environ if env is None else env
    paths = get_paths(env)
    explicit_file = config_file is not None or bool(env.get("LLMGINE_CONFIG"))
    file_path = Path(config_file or env.get("LLMGINE_CONFIG") or paths.config_file).expanduser()
    if explicit_file and not file_path.exists():
        raise ConfigError(f"{file_path}: config file not found")
    values: dict[str, Any] = {s.key: s.default for s in SETTINGS}
    sources: dict[str, str] = {s.key: "default" for s in SETTINGS}

    # The CLI too (it reads where the daemon is, and its secret): not a file another user wrote.
    check_config_file_mode(file_path)
    for key, raw in read_config_file(file_path).items():
        setting = BY_KEY.get(key)
        if setting is None:
            raise ConfigError(f"{file_path}: unknown key {key!r}")
        values[key] = _apply(setting, raw, str(file_path))
        sources[key] = "file"
    for setting in SETTINGS:
        if setting.env in env and env[setting.env] != "":
            values[setting.key] = _apply(setting, env[setting.env], f"environment {setting.env}")
            sources[setting.key] = "env"
    for key, raw in (flags or {}).items():
        if raw is None:
            continue
        values[key] = _apply(BY_KEY[key], raw, "command line")
        sources[key] = "flag"

    _keys_from_named_env(values, sources, env)
    settings = Settings(values, sources, paths, file_path)
    settings.database_path  # noqa: B018 - validates the URL early, with its own message
    return settings


def check_config_file_mode(path: Path, what: str = "config file") -> None:
    """Refuse a config file (or an env file, ``what``) another user could have written: it
    decides who may connect.

    Like ssh with authorized_keys: a group- or world-writable file (or one owned by someone
    else) is a ConfigError, never silently trusted.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if st.st_uid not in (os.getuid(), 0):
        raise ConfigError(f"{path}: {what} is owned by uid {st.st_uid}, not by you")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise ConfigError(f"{path}: {what} is writable by others (mode {mode:04o}); run `chmod 600 {path}`")


def read_local_key(paths: Paths) -> str | None:
    """The key llmgined minted for the local CLI, if this user can read it (TCP only)."""
    try:
        text = paths.local_key.read_text("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


# -- editing the file (llmgine config set/unset) -----------------------------------------


def parse_cli_value(key: str, text: str) -> Any:
    setting = BY_KEY.get(key)
    if setting is None:
        raise ConfigError(f"unknown key {key!r} (see `llmgine config show --local`)")
    return _apply(setting, text, "value")


def write_config_value(path: Path, key: str, value: Any | None) -> bool:
    """Set (or, with value None, remove) one key, keeping every other key and table, in the
    file's own format (TOML, or YAML for a ``.yaml``/``.yml`` name: it was refused). False when
    there was nothing to remove (the file is left as it was). Comments are not carried over:
    a file that had any is first copied to ``<name>.bak`` (``commented_backup``)."""
    if key not in BY_KEY:
        raise ConfigError(f"unknown key {key!r}")
    with dir_locked(path.parent):  # two `config set` at once: each keeps the other's key
        # (What a writer killed mid-write left, write_private's temporary file, goes with the
        # write: clear_stale_temps.)
        return _edit_config(path, key, value)


def has_comments(raw: bytes) -> bool:
    """Whether a TOML or YAML text may have a comment: a ``#`` that starts a line or follows a
    space (``"http://host/#part"`` is none). Quotes are not followed: a ``#`` after a space in
    a string counts too, which costs a needless copy, never a comment lost without one."""
    return re.search(rb"(?:^|[ \t])#", raw, re.MULTILINE) is not None


def commented_backup(path: Path) -> Path:
    """Where ``write_config_value`` keeps the file as it was when it held comments."""
    return path.with_name(path.name + ".bak")


def _dump(path: Path, doc: dict[str, Any]) -> str:
    if is_yaml(path):
        import yaml

        return str(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, allow_unicode=True))
    import tomli_w

    return tomli_w.dumps(doc)


def _edit_config(path: Path, key: str, value: Any | None) -> bool:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raw = b""
    doc = _parse(path, raw)  # (an empty file is {} in both formats)
    *tables, name = key.split(".")
    node = doc
    chain = []
    for table in tables:
        chain.append((node, table))
        if not isinstance(node.get(table), dict):  # YAML's empty section (`server:`) is None
            node[table] = {}
        node = node[table]
    if value is None:
        if name not in node:
            return False
        node.pop(name)
        for parent, table in reversed(chain):
            if parent.get(table) == {}:
                del parent[table]
    else:
        node[name] = value
    if has_comments(raw):  # the parsers drop them
        write_private(commented_backup(path), raw)
    write_private(path, _dump(path, doc))
    return True


def describe(width: int = 100) -> str:
    """The settings reference, for --help texts, in lines of at most ``width`` characters:
    each setting's key and variable on a line, its meaning wrapped and indented under it (one
    line per setting held keys, variables and meanings in columns 250 characters wide)."""
    import textwrap

    width = max(width, 40)
    lines: list[str] = []
    for s in SETTINGS:
        heading = f"  {s.key}  {s.env}"
        lines += [heading] if len(heading) <= width else [f"  {s.key}", f"      {s.env}"]
        lines += textwrap.wrap(s.help, width, initial_indent=" " * 6, subsequent_indent=" " * 6, break_on_hyphens=False)
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - handy for docs
    sys.stdout.write(describe() + "\n")
