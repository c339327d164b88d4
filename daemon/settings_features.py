"""The settings of the features built on the bus for scripts, operators and agents: MCP tool
servers, webhooks and schedules, command retries, tool approvals and prices (README:
Configuration). Part of the settings table (settings_table.py adds them to ``SETTINGS``).

Only the standard library: the CLI imports it through ``settings.py``.
"""

from __future__ import annotations

from llmgine_daemon.settings_parsers import (
    Setting,
    days,
    json_object,
    parse_bool,
    parse_list,
    positive,
    positive_float,
    prices,
)

FEATURE_SETTINGS: tuple[Setting, ...] = (
    # -- MCP tool servers (bus/mcp_servers.py) --
    Setting(
        "mcp.allowed_hosts",
        "LLMGINE_MCP_ALLOWED_HOSTS",
        parse_list,
        ["127.0.0.0/8", "::1", "localhost"],
        "where MCP servers (mcp add --url) may be reached: IP networks/addresses, and host names a "
        'URL may use (a name\'s addresses must be in the networks too; "*" allows any host)',
    ),
    Setting(
        "mcp.session_token_allowed_hosts",
        "LLMGINE_MCP_SESSION_TOKEN_ALLOWED_HOSTS",
        parse_list,
        [],
        "where a session token's MCP servers (its session's, --url) may be reached, as "
        "mcp.allowed_hosts is read (which they do not use); none by default: loopback holds the "
        "machine's own services, local MCP servers without authentication among them",
    ),
    Setting(
        "mcp.session_token_stdio",
        "LLMGINE_MCP_SESSION_TOKEN_STDIO",
        parse_bool,
        False,
        "let session tokens register stdio MCP servers (sandboxed, no extra mounts) in their "
        "session; trusted servers always need an API key or the socket owner",
    ),
    Setting(
        "mcp.session_token_cpu_seconds",
        "LLMGINE_MCP_SESSION_TOKEN_CPU_SECONDS",
        positive,
        3600,
        "CPU-seconds a session token's stdio MCP server may use in one run (RLIMIT_CPU: past "
        "it the process is killed, then restarted after the backoff); such servers also run at "
        "the lowest CPU priority (SCHED_IDLE, nice 19), so a spinning one never slows the "
        "daemon or other work (0 = no limit)",
    ),
    Setting(
        "mcp.session_token_memory_mb",
        "LLMGINE_MCP_SESSION_TOKEN_MEMORY_MB",
        positive,
        1024,
        "memory, in MiB, a session's token stdio MCP servers may use together, with every "
        "process they start (a memory cgroup per session, no swap: past it the kernel kills "
        "one, and its last_error says so); needs cgroups (a daemon run as root), else only the "
        "per-process address-space limit of sandbox.memory_mb applies (0 = no cgroup memory limit)",
    ),
    Setting(
        "mcp.session_token_max_processes",
        "LLMGINE_MCP_SESSION_TOKEN_MAX_PROCESSES",
        positive,
        128,
        "processes (and threads) a session's token stdio MCP servers may run at once together, "
        "theirs and the sandbox's included (a pids cgroup per session; without cgroups only "
        "sandbox.max_processes as RLIMIT_NPROC applies; 0 = no cgroup limit)",
    ),
    Setting(
        "mcp.call_timeout",
        "LLMGINE_MCP_CALL_TIMEOUT",
        positive_float,
        60.0,
        "seconds an MCP tool call may take (a server's own timeout wins)",
    ),
    Setting(
        "mcp.start_timeout",
        "LLMGINE_MCP_START_TIMEOUT",
        positive_float,
        15.0,
        "seconds a registration waits for a new server's first connection before it answers",
    ),
    # -- webhooks and schedules (bus/webhooks.py, bus/schedules.py) --
    Setting(
        "webhooks.allowed_hosts",
        "LLMGINE_WEBHOOK_ALLOWED_HOSTS",
        parse_list,
        ["127.0.0.0/8", "::1", "localhost"],
        "where webhooks may call: IP networks/addresses, and host names a URL may use (a name's "
        'addresses must be in the networks too; "*" allows any host)',
    ),
    Setting(
        "webhooks.session_token_allowed_hosts",
        "LLMGINE_WEBHOOK_SESSION_TOKEN_ALLOWED_HOSTS",
        parse_list,
        [],
        "where a session token's webhooks may call, as webhooks.allowed_hosts is read (which they "
        "do not use); none by default: loopback holds the machine's own services",
    ),
    Setting(
        "webhooks.timeout", "LLMGINE_WEBHOOK_TIMEOUT", positive_float, 10.0, "seconds one delivery attempt may take"
    ),
    Setting(
        "webhooks.retry_for",
        "LLMGINE_WEBHOOK_RETRY_FOR",
        positive_float,
        86400.0,
        "seconds a delivery is retried (exponential backoff) before it is marked failed",
    ),
    Setting(
        "webhooks.retry_base",
        "LLMGINE_WEBHOOK_RETRY_BASE",
        positive_float,
        1.0,
        "seconds before the first retry, doubled for each next one",
    ),
    Setting(
        "webhooks.retry_cap", "LLMGINE_WEBHOOK_RETRY_CAP", positive_float, 600.0, "longest wait between two attempts"
    ),
    Setting("webhooks.keep_days", "LLMGINE_WEBHOOK_KEEP_DAYS", days, 7.0, "days an ended delivery is kept"),
    Setting("webhooks.max_per_session", "LLMGINE_WEBHOOK_MAX_PER_SESSION", positive, 20, "webhooks per session"),
    Setting("webhooks.max_total", "LLMGINE_WEBHOOK_MAX_TOTAL", positive, 200, "webhooks in all"),
    Setting("schedules.max_per_session", "LLMGINE_SCHEDULE_MAX_PER_SESSION", positive, 50, "schedules per session"),
    Setting("schedules.max_total", "LLMGINE_SCHEDULE_MAX_TOTAL", positive, 1000, "schedules in all"),
    Setting(
        "commands.retry_defaults",
        "LLMGINE_RETRY_DEFAULTS",
        json_object,
        {},
        "retry policy per command type (an engine's or a handler's) for commands that give none: "
        '{"SinglePassEngineCommand": {"retries": 3, "backoff": {"type": "exponential", "base": 1, '
        '"cap": 60}, "retry_on": ["PROVIDER_RATE_LIMITED"]}}' + " (README: Retries)",
    ),
    Setting(
        "tools.require_approval",
        "LLMGINE_TOOLS_REQUIRE_APPROVAL",
        parse_bool,
        False,
        "a ToolChat engine asks a person before every tool call (else: tools registered with "
        "requires_approval, engines configured with require_approval)",
    ),
    Setting(
        "tools.approval_timeout",
        "LLMGINE_APPROVAL_TIMEOUT",
        positive_float,
        600.0,
        "seconds an approval request waits for a decision; then it counts as denied (expired)",
    ),
    Setting(
        "usage.prices",
        "LLMGINE_PRICES",
        prices,
        {},
        "model prices, USD per million tokens, added to and overriding the built-in table "
        "(docs/agents.md): model = [input, output, cached_input] (JSON object in the environment)",
    ),
)
