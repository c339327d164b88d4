"""The settings table: every setting's dotted key, environment variable, parser, default and
help text (``SETTINGS``), and the parsers the values go through. ``settings.py`` resolves them
(defaults < config file < environment < flags); README's configuration table is generated from
this one (scripts/generate_docs.py).

Only the standard library: the CLI imports it through ``settings.py``.
"""

from __future__ import annotations

from llmgine_daemon.settings_features import FEATURE_SETTINGS
from llmgine_daemon.settings_parsers import SOURCES as SOURCES
from llmgine_daemon.settings_parsers import Setting as Setting
from llmgine_daemon.settings_parsers import (
    choice,
    env_name,
    fraction,
    log_level,
    milliseconds,
    origins,
    parse_bool,
    parse_list,
    parse_str,
    port,
    positive,
    positive_float,
    retention_days,
    uid_range,
    url,
)

# -- the settings table ------------------------------------------------------------------


# LLM providers: model names "openai/...", "anthropic/...", "ollama/..." pick one. Keys are
# read from the environment (or the config file); they never reach the database or a log.
PROVIDERS = ("openai", "anthropic", "ollama")
_PROVIDER_DEFAULTS = {
    # name: (base_url, key env var, base_url env var, timeout)
    "openai": ("https://api.openai.com/v1", "OPENAI_API_KEY", "OPENAI_BASE_URL", 60.0),
    # As the providers' SDKs define them: OpenAI's base URL includes /v1, Anthropic's does not
    # (engines/providers/urls.py; the other form works, with a warning at start-up).
    "anthropic": ("https://api.anthropic.com", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", 60.0),
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
            url,
            base_url,
            f"{name} API base URL (any server speaking its wire format; "
            + ("without /v1, as in the Anthropic SDK" if name == "anthropic" else "with /v1, as in the OpenAI SDK")
            + ")",
        ),
        Setting(
            f"providers.{name}.api_key",
            key_env,
            parse_str,
            None,
            f"{name} API key (prefer the environment variable over the config file)",
            secret=True,
        ),
        Setting(
            f"providers.{name}.api_key_env",
            f"LLMGINE_{upper}_API_KEY_ENV",
            env_name,
            key_env,
            f"environment variable the {name} API key is read from",
        ),
        Setting(
            f"providers.{name}.timeout",
            f"LLMGINE_{upper}_TIMEOUT",
            positive_float,
            timeout,
            f"seconds to wait for {name} to start answering, and between streamed chunks",
        ),
        Setting(
            f"providers.{name}.max_retries",
            f"LLMGINE_{upper}_MAX_RETRIES",
            positive,
            2,
            f"retries of a {name} call after 429/5xx/connection errors (backoff, Retry-After)",
        ),
    )


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "server.host",
        "API_HOST",
        parse_str,
        None,
        "TCP address to listen on; setting it (or server.port) enables TCP (default host 127.0.0.1)",
    ),
    Setting(
        "server.port", "API_PORT", port, None, "TCP port; setting it (or server.host) enables TCP (default port 8000)"
    ),
    Setting(
        "server.workers", "API_WORKERS", positive, 0, "sandbox worker processes for user code (0 = number of CPUs)"
    ),
    Setting(
        "server.socket",
        "LLMGINE_SOCKET",
        parse_str,
        None,
        "Unix socket path (default: llmgined.sock in the runtime directory)",
    ),
    Setting("server.no_socket", "LLMGINE_NO_SOCKET", parse_bool, False, "do not listen on the Unix socket (TCP only)"),
    Setting(
        "server.fast_lane",
        "LLMGINE_FAST_LANE",
        parse_bool,
        True,
        "over TCP, answer plain event publishes and command submissions without aiohttp's request "
        "objects (same checks, less CPU)",
    ),
    Setting(
        "server.shutdown_timeout",
        "LLMGINE_SHUTDOWN_TIMEOUT",
        positive,
        10,
        "seconds in-flight requests get to finish on shutdown",
    ),
    Setting(
        "server.max_body_size",
        "LLMGINE_MAX_BODY_SIZE",
        positive,
        1024 * 1024,
        "largest accepted request body, in bytes",
    ),
    Setting(
        "server.max_header_size",
        "LLMGINE_MAX_HEADER_SIZE",
        positive,
        8190,
        "longest accepted request line or header field, in bytes (a whole request head: 8 times this)",
    ),
    Setting(
        "server.max_ws_message_size",
        "LLMGINE_MAX_WS_MESSAGE_SIZE",
        positive,
        1024 * 1024,
        "largest accepted WebSocket message, in bytes (larger: closed with 1009)",
    ),
    Setting(
        "server.read_timeout",
        "LLMGINE_READ_TIMEOUT",
        positive_float,
        30.0,
        "seconds a client gets to send a request's headers and body (slow clients are "
        "dropped); idle keep-alive connections close after it too",
    ),
    Setting(
        "database.url",
        "DATABASE_URL",
        parse_str,
        None,
        "where the bus is stored: sqlite:///PATH (default: llmgine.db in the data directory) or "
        "postgresql://USER[:PASSWORD]@HOST:PORT/DB (needs the postgres extra; README 'PostgreSQL')",
    ),
    Setting(
        "database.synchronous",
        "LLMGINE_DB_SYNCHRONOUS",
        choice("normal", "full"),
        "full",
        "SQLite synchronous mode: full also survives power loss; normal survives a crash",
    ),
    Setting(
        "database.busy_timeout",
        "LLMGINE_DB_BUSY_TIMEOUT",
        positive_float,
        5.0,
        "seconds a write waits in all (from when it is queued) for a database locked by "
        "another process before 503 STORAGE_BUSY",
    ),
    Setting(
        "database.event_retention_days",
        "LLMGINE_EVENT_RETENTION_DAYS",
        retention_days,
        0,
        "days events are kept; older ones are pruned in the background (0 = keep all)",
    ),
    Setting(
        "database.event_retention_rows",
        "LLMGINE_EVENT_RETENTION_ROWS",
        positive,
        0,
        "events kept; the oldest beyond it are pruned in the background (0 = no limit)",
    ),
    Setting(
        "database.retention_interval",
        "LLMGINE_RETENTION_INTERVAL",
        positive_float,
        60.0,
        "seconds between background retention passes (events, logs, spans)",
    ),
    Setting(
        "cluster.lease_timeout",
        "LLMGINE_LEASE_TIMEOUT",
        positive_float,
        15.0,
        "several daemons on one PostgreSQL database: seconds after which the sessions of a node "
        "that stopped renewing its leases (it died, or is cut off) are taken over by another",
    ),
    Setting("logging.level", "LOG_LEVEL", log_level, "info", "log level (warn and fatal are taken too)"),
    Setting(
        "logging.file",
        "LOG_FILE",
        parse_str,
        None,
        "log file (default: stderr; `llmgine daemon start` sends stderr to its log file)",
    ),
    Setting(
        "security.api_key_secret",
        "API_KEY_SECRET",
        parse_str,
        None,
        "API key accepted over TCP as `Authorization: Bearer KEY`",
        secret=True,
    ),
    Setting(
        "security.cors_origins",
        "CORS_ORIGINS",
        origins,
        [],
        "browser origins allowed to call the API (comma-separated in the environment)",
    ),
    Setting(
        "sandbox.deadline",
        "LLMGINE_SANDBOX_DEADLINE",
        positive_float,
        30.0,
        "seconds a tool or handler call may run before its worker is killed (a tool's "
        "timeout or a command's metadata.timeout overrides it)",
    ),
    Setting(
        "sandbox.isolation",
        "LLMGINE_SANDBOX_ISOLATION",
        choice("auto", "bubblewrap", "namespaces", "none"),
        "auto",
        "auto or bubblewrap: user code runs in a bubblewrap sandbox (its own filesystem "
        "view, namespaces, an unprivileged uid), and is refused with 503 "
        "SANDBOX_UNAVAILABLE where bubblewrap cannot run; none: no isolation, rlimits only "
        "(warned at every start); namespaces: old name of bubblewrap",
    ),
    Setting(
        "sandbox.user",
        "LLMGINE_SANDBOX_USER",
        parse_str,
        "nobody",
        "user (name or uid) sandbox workers run as when the daemon runs as root",
    ),
    Setting(
        "sandbox.uids",
        "LLMGINE_SANDBOX_UIDS",
        uid_range,
        "1879048192-1879052287",
        "uids (FIRST-LAST) a daemon run as root gives its sandbox workers, one each, so that "
        "the kernel's per-user counts (message queues, signals, epoll watches, processes) "
        "are a worker's own; uids of this machine's users or processes are skipped; none: "
        "every worker runs as sandbox.user",
    ),
    Setting(
        "sandbox.group",
        "LLMGINE_SANDBOX_GROUP",
        parse_str,
        None,
        "group (name or gid) of sandbox workers when the daemon runs as root (default: sandbox.user's own group)",
    ),
    Setting(
        "sandbox.max_timeout",
        "LLMGINE_SANDBOX_MAX_TIMEOUT",
        positive_float,
        300.0,
        "the longest timeout, in seconds, a tool or handler may ask for (at most 3600)",
    ),
    Setting(
        "sandbox.session_share",
        "LLMGINE_SANDBOX_SESSION_SHARE",
        positive,
        0,
        "user-code calls one session may run at once; its others wait (0 = half the workers, at least 1)",
    ),
    Setting(
        "sandbox.tmp_mb",
        "LLMGINE_SANDBOX_TMP_MB",
        positive,
        64,
        "size of each sandbox worker's private /tmp, in MiB (wiped after every call)",
    ),
    Setting(
        "sandbox.memory_mb",
        "LLMGINE_SANDBOX_MEMORY_MB",
        positive,
        1024,
        "memory one call may use, in MiB, counting every process it starts (a memory "
        "cgroup as root, else the sandbox's process tree is watched; plus an address space "
        "limit per process)",
    ),
    Setting(
        "sandbox.max_processes",
        "LLMGINE_SANDBOX_MAX_PROCESSES",
        positive,
        32,
        "processes one call may start (pids cgroup as root, else RLIMIT_NPROC)",
    ),
    Setting(
        "sandbox.open_files", "LLMGINE_SANDBOX_OPEN_FILES", positive, 256, "open file descriptors per sandbox process"
    ),
    Setting(
        "sandbox.file_size_mb",
        "LLMGINE_SANDBOX_FILE_SIZE_MB",
        positive,
        64,
        "largest file user code may write, in MiB",
    ),
    Setting(
        "sandbox.max_output",
        "LLMGINE_SANDBOX_MAX_OUTPUT",
        positive,
        65536,
        "characters of print() output kept per call (the rest is dropped); also the cap on a "
        'failed call\'s error.details (bytes of JSON, cut ones marked "truncated")',
    ),
    Setting(
        "sandbox.max_result",
        "LLMGINE_SANDBOX_MAX_RESULT",
        positive,
        1024 * 1024,
        "largest result (JSON bytes) a call may return",
    ),
    Setting(
        "sandbox.max_depth",
        "LLMGINE_SANDBOX_MAX_DEPTH",
        positive,
        8,
        "how deep user code may nest bus.execute/call_tool/publish->handler chains",
    ),
    Setting(
        "security.allowed_hosts",
        "LLMGINE_ALLOWED_HOSTS",
        parse_list,
        [],
        "extra Host names accepted over TCP besides localhost, loopback addresses and the "
        'bound address (DNS-rebinding guard; "*" turns the check off)',
    ),
    Setting(
        "security.rate_limits.unauthenticated",
        "LLMGINE_RATE_LIMIT_UNAUTHENTICATED",
        positive,
        100,
        "requests per minute per IP without a valid credential (0 = no limit)",
    ),
    Setting(
        "security.rate_limits.authenticated",
        "LLMGINE_RATE_LIMIT_AUTHENTICATED",
        positive,
        1000,
        "requests per minute per API key, or per session for session tokens "
        "(all tokens of a session share one bucket) (0 = no limit)",
    ),
    Setting(
        "security.rate_limits.websocket",
        "LLMGINE_RATE_LIMIT_WEBSOCKET",
        positive,
        10,
        "WebSocket connections per minute per IP and credential (per session for session "
        "tokens, all its tokens together) (0 = no limit)",
    ),
    Setting(
        "security.rate_limits.unix_socket",
        "LLMGINE_RATE_LIMIT_UNIX_SOCKET",
        parse_bool,
        False,
        "also limit Unix socket clients (keyed by uid, at the authenticated rate)",
    ),
    Setting(
        "security.limits.max_sessions",
        "LLMGINE_MAX_SESSIONS",
        positive,
        1000,
        "most active sessions at once (0 = no limit)",
    ),
    Setting(
        "security.limits.max_engines_per_session",
        "LLMGINE_MAX_ENGINES_PER_SESSION",
        positive,
        32,
        "most running engines in one session (0 = no limit)",
    ),
    Setting(
        "security.limits.max_tools_per_session",
        "LLMGINE_MAX_TOOLS_PER_SESSION",
        positive,
        100,
        "most tools registered in one session (0 = no limit)",
    ),
    Setting(
        "security.limits.max_handlers_per_session",
        "LLMGINE_MAX_HANDLERS_PER_SESSION",
        positive,
        100,
        "most command and event handlers registered in one session (0 = no limit)",
    ),
    Setting(
        "security.limits.max_pending_commands_per_session",
        "LLMGINE_MAX_PENDING_COMMANDS_PER_SESSION",
        positive,
        1000,
        "most unfinished commands (queued, blocked, waiting for approval, executing) in one "
        "session, a batch counting one per 100 of its commands: each is kept in memory until it "
        "ends, up to a request body's worth (0 = no limit)",
    ),
    Setting(
        "security.limits.max_pending_bytes_per_session",
        "LLMGINE_MAX_PENDING_BYTES_PER_SESSION",
        positive,
        64 * 1024 * 1024,
        "most bytes of parameters and metadata (as JSON) of the unfinished commands one session "
        "keeps in a daemon's memory (queued or running there): each takes several times its "
        "size as Python objects (0 = no limit)",
    ),
    Setting(
        "security.limits.max_event_bytes_per_session",
        "LLMGINE_MAX_EVENT_BYTES_PER_SESSION",
        positive,
        1024**3,
        "most bytes of events (their data and metadata, as stored JSON) one session may keep; "
        "an event published past it by a client or by user code is refused (409 LIMIT_REACHED), "
        "the bus's own records of what happens in the session are kept, and once it is reached new "
        "commands, batches and tool calls in the session are refused; deleting events (the "
        "session, retention) frees their bytes (0 = no limit)",
    ),
    Setting(
        "security.limits.max_engine_memory_per_session",
        "LLMGINE_MAX_ENGINE_MEMORY_PER_SESSION",
        positive,
        64 * 1024 * 1024,
        "most characters of LLM engines' conversation rows one session keeps, those trimmed or "
        "reset but kept for forks included: past it a turn deletes the oldest of those, then "
        "trims its engine's memory (0 = no limit)",
    ),
    Setting(
        "security.limits.max_websockets",
        "LLMGINE_MAX_WEBSOCKETS",
        positive,
        100,
        "most open WebSocket connections and event streams (SSE) at once (0 = no limit)",
    ),
    # -- hardening (security issue #15) --
    Setting(
        "sandbox.session_token_registration",
        "LLMGINE_SANDBOX_SESSION_TOKEN_REGISTRATION",
        parse_bool,
        False,
        "let session tokens register code (tools and handlers) in their session; API keys "
        "and the socket owner always may, session tokens may still call existing tools",
    ),
    Setting(
        "security.limits.max_tokens_per_session",
        "LLMGINE_MAX_TOKENS_PER_SESSION",
        positive,
        10,
        "most live session tokens one session may have, the one from its creation included "
        "(POST /api/sessions/{id}/token past it: 409 LIMIT_REACHED; tokens end with their "
        "session; 0 = no limit)",
    ),
    Setting(
        "security.limits.max_websockets_per_credential",
        "LLMGINE_MAX_WEBSOCKETS_PER_CREDENTIAL",
        positive,
        16,
        "most open WebSocket connections and event streams (SSE) per API key (or "
        "API_KEY_SECRET), and per session for "
        "session tokens (all its tokens together); the socket owner has only "
        "security.limits.max_websockets (0 = no limit)",
    ),
    Setting(
        "security.limits.session_log_records",
        "LLMGINE_SESSION_LOG_RECORDS",
        positive,
        1000,
        "most bus.log records one session's user code writes a minute, all its calls together "
        "(the rest are dropped and counted in one record; 0 = no limit)",
    ),
    Setting(
        "security.limits.session_log_rows",
        "LLMGINE_SESSION_LOG_ROWS",
        positive,
        10_000,
        "most log records of one session kept in the database: its oldest go first, so a "
        "session pushes out only its own (0 = no limit but observability.log_retention_rows)",
    ),
    Setting(
        "security.limits.session_span_rows",
        "LLMGINE_SESSION_SPAN_ROWS",
        positive,
        10_000,
        "most trace spans of one session kept in the database: its oldest go first, so a "
        "session pushes out only its own (0 = no limit but observability.trace_retention_spans)",
    ),
    Setting("observability.enable_metrics", "ENABLE_METRICS", parse_bool, True, "collect metrics and serve /metrics"),
    Setting("observability.enable_tracing", "ENABLE_TRACING", parse_bool, True, "record traces"),
    Setting(
        "observability.trace_sample_rate",
        "LLMGINE_TRACE_SAMPLE_RATE",
        fraction,
        0.01,
        "share of traces whose spans are stored (0 to 1, or 1%), decided from the trace id at its "
        "root; a client traceparent with the sampled flag is always stored; every trace id still "
        "reaches logs, events and responses (docs/observability.md, Sampling)",
    ),
    Setting(
        "observability.slow_span_ms",
        "LLMGINE_SLOW_SPAN_MS",
        milliseconds,
        250.0,
        "a span that took longer than this many milliseconds is stored even in an unsampled "
        "trace, as is every failed span (0 = failed spans only)",
    ),
    Setting(
        "logging.format",
        "LOG_FORMAT",
        choice("auto", "json", "text"),
        "auto",
        "log line format: json (one object per line), text, or auto (json in logging.file, text on stderr)",
    ),
    Setting(
        "logging.max_bytes",
        "LOG_MAX_BYTES",
        positive,
        10 * 2**20,
        "rotate logging.file at this size, in bytes (0 = never)",
    ),
    Setting("logging.backup_count", "LOG_BACKUP_COUNT", positive, 3, "rotated log files kept"),
    Setting(
        "observability.log_retention_rows",
        "LLMGINE_LOG_RETENTION_ROWS",
        positive,
        100_000,
        "log records kept in the database for `llmgine logs` (0 = no limit)",
    ),
    Setting(
        "observability.log_retention_days",
        "LLMGINE_LOG_RETENTION_DAYS",
        retention_days,
        7,
        "days log records are kept in the database (0 = no limit)",
    ),
    Setting(
        "observability.trace_retention_spans",
        "LLMGINE_TRACE_RETENTION_SPANS",
        positive,
        100_000,
        "spans kept in the database (0 = no limit)",
    ),
    Setting(
        "observability.trace_retention_days",
        "LLMGINE_TRACE_RETENTION_DAYS",
        retention_days,
        7,
        "days spans are kept in the database (0 = no limit)",
    ),
    Setting(
        "observability.otlp_endpoint",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        parse_str,
        None,
        "also export spans over OTLP/HTTP to this collector (needs the otel extra)",
    ),
    Setting(
        "providers.default",
        "LLMGINE_DEFAULT_PROVIDER",
        choice(*PROVIDERS),
        "openai",
        "provider for a bare model name such as gpt-4 (claude-* names go to anthropic)",
    ),
    Setting(
        "providers.default_model",
        "LLMGINE_DEFAULT_MODEL",
        parse_str,
        "openai/gpt-4o-mini",
        "model of an engine created without model_name, and of `llmgine ask`/`chat`",
    ),
    *(setting for name in PROVIDERS for setting in _provider_settings(name)),
    *FEATURE_SETTINGS,
)

BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
BY_ENV: dict[str, Setting] = {s.env: s for s in SETTINGS}
