"""Settings: defaults < config file (TOML) < environment < llmgined flags.

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
from llmgine_daemon.paths import ensure_private_dir as ensure_private_dir
from llmgine_daemon.paths import get_paths as get_paths
from llmgine_daemon.paths import write_private as write_private

T = TypeVar("T")


# -- the settings table ------------------------------------------------------------------

SOURCES = ("default", "file", "env", "flag")


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected a boolean (true/false)")


def _parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError("expected an integer")


def _parse_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError("expected a string")


def _parse_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ValueError("expected a list of strings (or a comma-separated string)")


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _parse_str(value)
        if text.lower() not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return text.lower()

    return parse


def _port(value: Any) -> int:
    number = _parse_int(value)
    if not 0 <= number <= 65535:
        raise ValueError("expected a port number from 0 to 65535")
    return number


def _positive(value: Any) -> int:
    number = _parse_int(value)
    if number < 0:
        raise ValueError("expected a non-negative integer")
    return number


def _positive_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number of seconds")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError("expected a number of seconds") from None
    if not number > 0 or number == float("inf"):
        raise ValueError("expected a positive number of seconds")
    return number


def _fraction(value: Any) -> float:
    """A share between 0 and 1 (``0.01``), or a percentage (``1%``)."""
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, bool):
        raise ValueError("expected a number between 0 and 1")
    scale = 1.0
    if isinstance(text, str) and text.endswith("%"):
        text, scale = text[:-1].strip(), 0.01
    try:
        number = float(text) * scale
    except (TypeError, ValueError):
        raise ValueError("expected a number between 0 and 1, or a percentage such as 1%") from None
    if not 0.0 <= number <= 1.0:
        raise ValueError("expected a number between 0 and 1, or a percentage such as 1%")
    return number


def _milliseconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number of milliseconds")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError("expected a number of milliseconds") from None
    if not 0.0 <= number < float("inf"):
        raise ValueError("expected a non-negative number of milliseconds")
    return number


def _url(value: Any) -> str:
    text = _parse_str(value).strip()
    if not text.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return text.rstrip("/")


def _env_name(value: Any) -> str:
    text = _parse_str(value).strip()
    if not text or not all(c.isalnum() or c == "_" for c in text):
        raise ValueError("expected an environment variable name")
    return text


@dataclass(frozen=True)
class Setting:
    key: str
    env: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    secret: bool = False


# LLM providers: model names "openai/...", "anthropic/...", "ollama/..." pick one. Keys are
# read from the environment (or the config file); they never reach the database or a log.
PROVIDERS = ("openai", "anthropic", "ollama")
_PROVIDER_DEFAULTS = {
    # name: (base_url, key env var, base_url env var, timeout)
    "openai": ("https://api.openai.com/v1", "OPENAI_API_KEY", "OPENAI_BASE_URL", 60.0),
    "anthropic": ("https://api.anthropic.com/v1", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", 60.0),
    # A local model may need minutes to load into memory on the first call.
    "ollama": ("http://127.0.0.1:11434/v1", "OLLAMA_API_KEY", "LLMGINE_OLLAMA_BASE_URL", 300.0),
}


def _provider_settings(name: str) -> tuple[Setting, ...]:
    base_url, key_env, url_env, timeout = _PROVIDER_DEFAULTS[name]
    upper = name.upper()
    return (
        Setting(
            f"providers.{name}.base_url",
            url_env,
            _url,
            base_url,
            f"{name} API base URL (any server speaking its wire format)",
        ),
        Setting(
            f"providers.{name}.api_key",
            key_env,
            _parse_str,
            None,
            f"{name} API key (prefer the environment variable over the config file)",
            secret=True,
        ),
        Setting(
            f"providers.{name}.api_key_env",
            f"LLMGINE_{upper}_API_KEY_ENV",
            _env_name,
            key_env,
            f"environment variable the {name} API key is read from",
        ),
        Setting(
            f"providers.{name}.timeout",
            f"LLMGINE_{upper}_TIMEOUT",
            _positive_float,
            timeout,
            f"seconds to wait for {name} to start answering, and between streamed chunks",
        ),
        Setting(
            f"providers.{name}.max_retries",
            f"LLMGINE_{upper}_MAX_RETRIES",
            _positive,
            2,
            f"retries of a {name} call after 429/5xx/connection errors (backoff, Retry-After)",
        ),
    )


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "server.host",
        "API_HOST",
        _parse_str,
        None,
        "TCP address to listen on; setting it (or server.port) enables TCP (default host 127.0.0.1)",
    ),
    Setting(
        "server.port", "API_PORT", _port, None, "TCP port; setting it (or server.host) enables TCP (default port 8000)"
    ),
    Setting(
        "server.workers", "API_WORKERS", _positive, 0, "sandbox worker processes for user code (0 = number of CPUs)"
    ),
    Setting(
        "server.socket",
        "LLMGINE_SOCKET",
        _parse_str,
        None,
        "Unix socket path (default: llmgined.sock in the runtime directory)",
    ),
    Setting("server.no_socket", "LLMGINE_NO_SOCKET", _parse_bool, False, "do not listen on the Unix socket (TCP only)"),
    Setting(
        "server.shutdown_timeout",
        "LLMGINE_SHUTDOWN_TIMEOUT",
        _positive,
        10,
        "seconds in-flight requests get to finish on shutdown",
    ),
    Setting(
        "server.max_body_size",
        "LLMGINE_MAX_BODY_SIZE",
        _positive,
        1024 * 1024,
        "largest accepted request body, in bytes",
    ),
    Setting(
        "server.max_header_size",
        "LLMGINE_MAX_HEADER_SIZE",
        _positive,
        8190,
        "longest accepted request line or header field, in bytes",
    ),
    Setting(
        "server.max_ws_message_size",
        "LLMGINE_MAX_WS_MESSAGE_SIZE",
        _positive,
        1024 * 1024,
        "largest accepted WebSocket message, in bytes (larger: closed with 1009)",
    ),
    Setting(
        "server.read_timeout",
        "LLMGINE_READ_TIMEOUT",
        _positive_float,
        30.0,
        "seconds a client gets to send a request's headers and body (slow clients are "
        "dropped); idle keep-alive connections close after it too",
    ),
    Setting(
        "database.url", "DATABASE_URL", _parse_str, None, "sqlite:///PATH (default: llmgine.db in the data directory)"
    ),
    Setting(
        "database.synchronous",
        "LLMGINE_DB_SYNCHRONOUS",
        _choice("normal", "full"),
        "full",
        "SQLite synchronous mode: full also survives power loss; normal survives a crash",
    ),
    Setting(
        "database.busy_timeout",
        "LLMGINE_DB_BUSY_TIMEOUT",
        _positive_float,
        5.0,
        "seconds a write waits in all (from when it is queued) for a database locked by "
        "another process before 503 STORAGE_BUSY",
    ),
    Setting(
        "database.event_retention_days",
        "LLMGINE_EVENT_RETENTION_DAYS",
        _positive,
        0,
        "days events are kept; older ones are pruned in the background (0 = keep all)",
    ),
    Setting(
        "database.event_retention_rows",
        "LLMGINE_EVENT_RETENTION_ROWS",
        _positive,
        0,
        "events kept; the oldest beyond it are pruned in the background (0 = no limit)",
    ),
    Setting(
        "database.retention_interval",
        "LLMGINE_RETENTION_INTERVAL",
        _positive_float,
        60.0,
        "seconds between background retention passes (events, logs, spans)",
    ),
    Setting(
        "logging.level", "LOG_LEVEL", _choice("debug", "info", "warning", "error", "critical"), "info", "log level"
    ),
    Setting(
        "logging.file",
        "LOG_FILE",
        _parse_str,
        None,
        "log file (default: stderr; `llmgine daemon start` sends stderr to its log file)",
    ),
    Setting(
        "security.api_key_secret",
        "API_KEY_SECRET",
        _parse_str,
        None,
        "API key accepted over TCP as `Authorization: Bearer KEY`",
        secret=True,
    ),
    Setting(
        "security.cors_origins",
        "CORS_ORIGINS",
        _parse_list,
        [],
        "browser origins allowed to call the API (comma-separated in the environment)",
    ),
    Setting(
        "sandbox.deadline",
        "LLMGINE_SANDBOX_DEADLINE",
        _positive_float,
        30.0,
        "seconds a tool or handler call may run before its worker is killed (a tool's "
        "timeout or a command's metadata.timeout overrides it)",
    ),
    Setting(
        "sandbox.isolation",
        "LLMGINE_SANDBOX_ISOLATION",
        _choice("auto", "bubblewrap", "namespaces", "none"),
        "auto",
        "auto or bubblewrap: user code runs in a bubblewrap sandbox (its own filesystem "
        "view, namespaces, an unprivileged uid), and is refused with 503 "
        "SANDBOX_UNAVAILABLE where bubblewrap cannot run; none: no isolation, rlimits only "
        "(warned at every start); namespaces: old name of bubblewrap",
    ),
    Setting(
        "sandbox.user",
        "LLMGINE_SANDBOX_USER",
        _parse_str,
        "nobody",
        "user (name or uid) sandbox workers run as when the daemon runs as root",
    ),
    Setting(
        "sandbox.group",
        "LLMGINE_SANDBOX_GROUP",
        _parse_str,
        None,
        "group (name or gid) of sandbox workers when the daemon runs as root (default: sandbox.user's own group)",
    ),
    Setting(
        "sandbox.max_timeout",
        "LLMGINE_SANDBOX_MAX_TIMEOUT",
        _positive_float,
        300.0,
        "the longest timeout, in seconds, a tool or handler may ask for (at most 3600)",
    ),
    Setting(
        "sandbox.session_share",
        "LLMGINE_SANDBOX_SESSION_SHARE",
        _positive,
        0,
        "user-code calls one session may run at once; its others wait (0 = half the workers, at least 1)",
    ),
    Setting(
        "sandbox.tmp_mb",
        "LLMGINE_SANDBOX_TMP_MB",
        _positive,
        64,
        "size of each sandbox worker's private /tmp, in MiB (wiped after every call)",
    ),
    Setting(
        "sandbox.memory_mb",
        "LLMGINE_SANDBOX_MEMORY_MB",
        _positive,
        1024,
        "memory one call may use, in MiB, counting every process it starts (a memory "
        "cgroup as root, else the sandbox's process tree is watched; plus an address space "
        "limit per process)",
    ),
    Setting(
        "sandbox.max_processes",
        "LLMGINE_SANDBOX_MAX_PROCESSES",
        _positive,
        32,
        "processes one call may start (pids cgroup as root, else RLIMIT_NPROC)",
    ),
    Setting(
        "sandbox.open_files", "LLMGINE_SANDBOX_OPEN_FILES", _positive, 256, "open file descriptors per sandbox process"
    ),
    Setting(
        "sandbox.file_size_mb",
        "LLMGINE_SANDBOX_FILE_SIZE_MB",
        _positive,
        64,
        "largest file user code may write, in MiB",
    ),
    Setting(
        "sandbox.max_output",
        "LLMGINE_SANDBOX_MAX_OUTPUT",
        _positive,
        65536,
        "characters of print() output kept per call (the rest is dropped)",
    ),
    Setting(
        "sandbox.max_result",
        "LLMGINE_SANDBOX_MAX_RESULT",
        _positive,
        1024 * 1024,
        "largest result (JSON bytes) a call may return",
    ),
    Setting(
        "sandbox.max_depth",
        "LLMGINE_SANDBOX_MAX_DEPTH",
        _positive,
        8,
        "how deep user code may nest bus.execute/call_tool/publish->handler chains",
    ),
    Setting(
        "security.allowed_hosts",
        "LLMGINE_ALLOWED_HOSTS",
        _parse_list,
        [],
        "extra Host names accepted over TCP besides localhost, loopback addresses and the "
        'bound address (DNS-rebinding guard; "*" turns the check off)',
    ),
    Setting(
        "security.rate_limits.unauthenticated",
        "LLMGINE_RATE_LIMIT_UNAUTHENTICATED",
        _positive,
        100,
        "requests per minute per IP without a valid credential (0 = no limit)",
    ),
    Setting(
        "security.rate_limits.authenticated",
        "LLMGINE_RATE_LIMIT_AUTHENTICATED",
        _positive,
        1000,
        "requests per minute per API key, or per session for session tokens "
        "(all tokens of a session share one bucket) (0 = no limit)",
    ),
    Setting(
        "security.rate_limits.websocket",
        "LLMGINE_RATE_LIMIT_WEBSOCKET",
        _positive,
        10,
        "WebSocket connections per minute per IP (0 = no limit)",
    ),
    Setting(
        "security.rate_limits.unix_socket",
        "LLMGINE_RATE_LIMIT_UNIX_SOCKET",
        _parse_bool,
        False,
        "also limit Unix socket clients (keyed by uid, at the authenticated rate)",
    ),
    Setting(
        "security.limits.max_sessions",
        "LLMGINE_MAX_SESSIONS",
        _positive,
        1000,
        "most active sessions at once (0 = no limit)",
    ),
    Setting(
        "security.limits.max_engines_per_session",
        "LLMGINE_MAX_ENGINES_PER_SESSION",
        _positive,
        32,
        "most running engines in one session (0 = no limit)",
    ),
    Setting(
        "security.limits.max_tools_per_session",
        "LLMGINE_MAX_TOOLS_PER_SESSION",
        _positive,
        100,
        "most tools registered in one session (0 = no limit)",
    ),
    Setting(
        "security.limits.max_websockets",
        "LLMGINE_MAX_WEBSOCKETS",
        _positive,
        100,
        "most open WebSocket connections and event streams (SSE) at once (0 = no limit)",
    ),
    # -- hardening (security issue #15) --
    Setting(
        "sandbox.session_token_registration",
        "LLMGINE_SANDBOX_SESSION_TOKEN_REGISTRATION",
        _parse_bool,
        False,
        "let session tokens register code (tools and handlers) in their session; API keys "
        "and the socket owner always may, session tokens may still call existing tools",
    ),
    Setting(
        "security.limits.max_tokens_per_session",
        "LLMGINE_MAX_TOKENS_PER_SESSION",
        _positive,
        10,
        "most live session tokens one session may have, the one from its creation included "
        "(POST /api/sessions/{id}/token past it: 409 LIMIT_REACHED; tokens end with their "
        "session; 0 = no limit)",
    ),
    Setting(
        "security.limits.max_websockets_per_credential",
        "LLMGINE_MAX_WEBSOCKETS_PER_CREDENTIAL",
        _positive,
        16,
        "most open WebSocket connections and event streams (SSE) per API key (or "
        "API_KEY_SECRET), and per session for "
        "session tokens (all its tokens together); the socket owner has only "
        "security.limits.max_websockets (0 = no limit)",
    ),
    Setting("observability.enable_metrics", "ENABLE_METRICS", _parse_bool, True, "collect metrics and serve /metrics"),
    Setting("observability.enable_tracing", "ENABLE_TRACING", _parse_bool, True, "record traces"),
    Setting(
        "observability.trace_sample_rate",
        "LLMGINE_TRACE_SAMPLE_RATE",
        _fraction,
        0.01,
        "share of traces whose spans are stored (0 to 1, or 1%), decided from the trace id at its "
        "root; a client traceparent with the sampled flag is always stored; every trace id still "
        "reaches logs, events and responses (docs/observability.md, Sampling)",
    ),
    Setting(
        "observability.slow_span_ms",
        "LLMGINE_SLOW_SPAN_MS",
        _milliseconds,
        250.0,
        "a span that took longer than this many milliseconds is stored even in an unsampled "
        "trace, as is every failed span (0 = failed spans only)",
    ),
    Setting(
        "logging.format",
        "LOG_FORMAT",
        _choice("auto", "json", "text"),
        "auto",
        "log line format: json (one object per line), text, or auto (json in logging.file, text on stderr)",
    ),
    Setting(
        "logging.max_bytes",
        "LOG_MAX_BYTES",
        _positive,
        10 * 2**20,
        "rotate logging.file at this size, in bytes (0 = never)",
    ),
    Setting("logging.backup_count", "LOG_BACKUP_COUNT", _positive, 3, "rotated log files kept"),
    Setting(
        "observability.log_retention_rows",
        "LLMGINE_LOG_RETENTION_ROWS",
        _positive,
        100_000,
        "log records kept in the database for `llmgine logs` (0 = no limit)",
    ),
    Setting(
        "observability.log_retention_days",
        "LLMGINE_LOG_RETENTION_DAYS",
        _positive,
        7,
        "days log records are kept in the database (0 = no limit)",
    ),
    Setting(
        "observability.trace_retention_spans",
        "LLMGINE_TRACE_RETENTION_SPANS",
        _positive,
        100_000,
        "spans kept in the database (0 = no limit)",
    ),
    Setting(
        "observability.trace_retention_days",
        "LLMGINE_TRACE_RETENTION_DAYS",
        _positive,
        7,
        "days spans are kept in the database (0 = no limit)",
    ),
    Setting(
        "observability.otlp_endpoint",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        _parse_str,
        None,
        "also export spans over OTLP/HTTP to this collector (needs the otel extra)",
    ),
    Setting(
        "providers.default",
        "LLMGINE_DEFAULT_PROVIDER",
        _choice(*PROVIDERS),
        "openai",
        "provider for a bare model name such as gpt-4 (claude-* names go to anthropic)",
    ),
    Setting(
        "providers.default_model",
        "LLMGINE_DEFAULT_MODEL",
        _parse_str,
        "openai/gpt-4o-mini",
        "model of an engine created without model_name, and of `llmgine ask`/`chat`",
    ),
    *(setting for name in PROVIDERS for setting in _provider_settings(name)),
)

BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
BY_ENV: dict[str, Setting] = {s.env: s for s in SETTINGS}


# -- resolution --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """``security.limits.*``, typed (0 means no limit)."""

    max_sessions: int
    max_engines_per_session: int
    max_tools_per_session: int
    max_tokens_per_session: int
    max_websockets: int
    max_websockets_per_credential: int


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
    def workers(self) -> int:
        return self.values["server.workers"] or (os.cpu_count() or 1)

    def redacted(self, key: str) -> Any:
        value = self.values[key]
        if BY_KEY[key].secret and value:
            return "********"
        return value


def database_path(url: str | None, paths: Paths) -> Path:
    if url is None:
        return paths.database
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        scheme = url.split(":", 1)[0] if ":" in url else url
        raise ConfigError(f"database.url {url!r}: the {scheme!r} backend is not supported yet (use sqlite:///PATH)")
    rest = url[len(prefix) :]
    if not rest or rest == ":memory:":
        raise ConfigError(f"database.url {url!r}: needs a file path (sqlite:///PATH)")
    return Path(rest).expanduser().absolute()


def read_config_file(path: Path) -> dict[str, Any]:
    """The config file as a flat {dotted key: raw value} dict; missing file = empty."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    flat: dict[str, Any] = {}

    def walk(prefix: str, table: dict[str, Any]) -> None:
        for name, value in table.items():
            key = f"{prefix}{name}"
            if isinstance(value, dict) and key not in BY_KEY:
                if not any(k.startswith(key + ".") for k in BY_KEY):
                    raise ConfigError(f"{path}: unknown table [{key}]")
                walk(key + ".", value)
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


def check_config_file_mode(path: Path) -> None:
    """Refuse a config file another user could have written: it decides who may connect.

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
        raise ConfigError(f"{path}: config file is owned by uid {st.st_uid}, not by you")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise ConfigError(f"{path}: config file is writable by others (mode {mode:04o}); run `chmod 600 {path}`")


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


def write_config_value(path: Path, key: str, value: Any | None) -> None:
    """Set (or, with value None, remove) one key, keeping every other key and table."""
    import tomli_w

    if key not in BY_KEY:
        raise ConfigError(f"unknown key {key!r}")
    try:
        doc = tomllib.loads(path.read_text("utf-8")) if path.exists() else {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    *tables, name = key.split(".")
    node = doc
    chain = []
    for table in tables:
        chain.append((node, table))
        node = node.setdefault(table, {})
    if value is None:
        node.pop(name, None)
        for parent, table in reversed(chain):
            if parent.get(table) == {}:
                del parent[table]
    else:
        node[name] = value
    write_private(path, tomli_w.dumps(doc))


def describe() -> str:
    """The settings reference, for --help texts."""
    width = max(len(s.key) for s in SETTINGS)
    return "\n".join(f"  {s.key:<{width}}  {s.env:<24} {s.help}" for s in SETTINGS)


if __name__ == "__main__":  # pragma: no cover - handy for docs
    sys.stdout.write(describe() + "\n")
