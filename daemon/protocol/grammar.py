"""The identifier and type grammar: one definition, as annotated msgspec types.

The request models (bus.py, system.py, usercode.py) use these types, so a request is checked
when it is decoded and the OpenAPI document shows the same rule (``msgspec.json.schema``
reads pattern and length off the annotation). The daemon's own checks (path identifiers in
api/limits.py, types published by user code in the bus) use the compiled patterns below, never
a copy of their own.

Identifiers (``Id``): what a path segment or an ``*_id`` query parameter may be. The daemon
makes UUIDs (sessions, commands, events, engines, handlers) and 12 hex digits (API keys), but
the spec leaves ids opaque strings, so the rule only keeps out what must never reach SQL or a
path: 1 to 128 of ``A-Z a-z 0-9 _ . : -``, not starting with ``. : -``, and no ``..``. A
leading ``_`` is allowed everywhere (query parameters included): command and event types
may start with one, and a handler's type is named in its DELETE path.

Only msgspec and the standard library may be imported here (see the package docstring).
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

# -- the patterns (JSON Schema / Python ``re`` syntax: both read them the same way) ---------

MAX_ID = 128
ID_PATTERN = r"^(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9._:\-]{0,127}$"
# Command and event types: a letter or "_" first, then letters, digits and _ . : -
MAX_TYPE = 128
TYPE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,127}$"
TYPE_RULE = "must start with a letter or _ and contain only letters, digits and _ . : - (at most 128)"
# A filter on event types: an exact type, or any start of one (TYPE_PREFIX) followed by "*".
TYPE_PREFIX_PATTERN = r"^[A-Za-z0-9_.:\-]{0,127}$"
EVENT_TYPE_FILTER_PATTERN = r"^([A-Za-z_][A-Za-z0-9_.:\-]{0,127}|[A-Za-z0-9_.:\-]{0,127}\*)$"
# The event list's filter (GET /api/sessions/{id}/events?event_type=): free text, since user
# code may publish any type of 1 to 128 characters (bus/usercode_bridge.py) and the list must
# find every type there is; an exact type, or a prefix followed by "*" (streams take the same,
# bus/stream_filter.py). No NUL: PostgreSQL stores none, so no type has one.
EVENT_LIST_TYPE_PATTERN = r"^([^*\x00]{1,128}|[^*\x00]{0,128}\*)$"
EVENT_LIST_TYPE_RULE = "must be 1 to 128 characters (no NUL), with * only at the end (a prefix: Command*)"
# What an event handler is registered for (bus/usercode_handlers.py checks printable too): no
# spaces, as user code may publish any type, or "*" (every event). A command handler's type is
# a TypeName: the only types a command (POST .../commands, bus.execute) can have.
EVENT_HANDLER_TYPE_PATTERN = r"^\S{1,128}$"
# A handler type in a DELETE path: "*" or an identifier.
HANDLER_PATH_TYPE_PATTERN = r"^(\*|(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9._:\-]{0,127})$"
# Tools are Python functions: a Python identifier (not a keyword: the bus checks that).
MAX_TOOL_NAME = 64
TOOL_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
TRACE_ID_PATTERN = r"^[0-9a-fA-F]{32}$"
# Python source sent to the sandbox (tools, handlers): not blank, at most 256 KiB.
MAX_CODE = 256 * 1024
CODE_PATTERN = r"\S"
# A timeout in seconds. Its maximum is each daemon's sandbox.max_timeout: the document
# takes the daemon's value (api/openapi.py replaces the default below), the bus checks it.
DEFAULT_MAX_TIMEOUT = 3600.0
MAX_TIMEOUT_SETTING = "sandbox.max_timeout"
# API keys (api/auth.py)
MAX_KEY_NAME = 100
MAX_KEY_LIFETIME = 10 * 366 * 86400

ID_RE = re.compile(ID_PATTERN)
TYPE_RE = re.compile(TYPE_PATTERN)
TOOL_NAME_RE = re.compile(TOOL_NAME_PATTERN)
TYPE_PREFIX_RE = re.compile(TYPE_PREFIX_PATTERN)
EVENT_LIST_TYPE_RE = re.compile(EVENT_LIST_TYPE_PATTERN)


def valid_id(value: str) -> bool:
    return ID_RE.match(value) is not None


# -- the types ------------------------------------------------------------------------------

Id = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, max_length=MAX_ID)]
TypeName = Annotated[
    str, msgspec.Meta(pattern=TYPE_PATTERN, max_length=MAX_TYPE, description="a command or event type")
]
CommandHandlerType = Annotated[
    str, msgspec.Meta(pattern=TYPE_PATTERN, max_length=MAX_TYPE, description="the type of the commands it handles")
]
EventHandlerType = Annotated[
    str, msgspec.Meta(pattern=EVENT_HANDLER_TYPE_PATTERN, description="an event type, or * (every event)")
]
ToolName = Annotated[str, msgspec.Meta(pattern=TOOL_NAME_PATTERN, max_length=MAX_TOOL_NAME)]
SourceCode = Annotated[str, msgspec.Meta(pattern=CODE_PATTERN, max_length=MAX_CODE, description="Python source")]
# The bound of a timeout is the daemon's setting: checked by the bus, shown by the document.
Timeout = Annotated[
    float,
    msgspec.Meta(
        gt=0,
        description="seconds; at most the daemon's sandbox.max_timeout",
        extra_json_schema={"maximum": DEFAULT_MAX_TIMEOUT, "x-llmgine-maximum": MAX_TIMEOUT_SETTING},
    ),
]
# Documented only: the store keeps any integer the decoder accepts.
# Enforced (not only documented): an integer past 64 bits reached the INSERT and was a 500.
HandlerPriority = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1, description="lower runs first")]
LogMessage = Annotated[str, msgspec.Meta(min_length=1)]
KeyName = Annotated[str, msgspec.Meta(max_length=MAX_KEY_NAME)]
# A session's name, created or forked (a fork named for its origin may be longer: "NAME (fork...)").
# Not empty nor only whitespace: such a name could not be told from none in a listing, and
# `-S NAME` could not find it (the CLI refuses it too: commands/sessions.py).
MAX_SESSION_NAME = 256
SESSION_NAME_PATTERN = r"^\s*\S"
SESSION_NAME_RULE = f"must not be empty or only whitespace (at most {MAX_SESSION_NAME} characters)"
SessionName = Annotated[str, msgspec.Meta(pattern=SESSION_NAME_PATTERN, max_length=MAX_SESSION_NAME)]
KeyLifetime = Annotated[int, msgspec.Meta(ge=1, le=MAX_KEY_LIFETIME, description="seconds")]
# A time, as every answer writes it (protocol.now_iso / to_iso: UTC, microseconds, Z), and as
# a FastAPI model's datetime field is described (generated clients parse it). In a request
# (ApiKeyCreate.expires_at) api/auth.py checks it: parse_iso takes a naive time as UTC.
Timestamp = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})]
# Secrets the daemon keeps (daemon/secrets.py): environment-variable names; one line of text.
SECRET_NAME_PATTERN = r"^[A-Z_][A-Z0-9_]{0,63}$"
MAX_SECRET = 16 * 1024
SECRET_VALUE_PATTERN = r"^[^\x00-\x1f\x7f]+$"
SecretName = Annotated[str, msgspec.Meta(pattern=SECRET_NAME_PATTERN, max_length=64)]
# Webhooks (protocol/hooks.py) and MCP servers (protocol/mcp.py): here for PATTERN_RULES.
WEBHOOK_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://"
WEBHOOK_SECRET_PATTERN = r"^whsec_[A-Za-z0-9+/=]{32,128}$"
MCP_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,31}$"
MCP_NAME_RULE = "a letter, then letters, digits and _ (at most 32 characters)"
# The tools an MCP server announces (checked where its answer is read, mcp/connection.py): the
# MCP specification's characters (A-Z a-z 0-9 _ - .: real servers use "-" and "."), at most
# 64 (the providers' limit on a function name), no "..", not starting with "." or "-". So
# NAME.tool is always an Id (a path segment) and always maps to a name a provider accepts.
MCP_TOOL_NAME_PATTERN = r"^(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$"
MCP_TOOL_NAME_RULE = "1 to 64 of A-Z a-z 0-9 _ - . (not starting with . or -, no ..)"
MCP_TOOL_NAME_RE = re.compile(MCP_TOOL_NAME_PATTERN)
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
SecretValue = Annotated[str, msgspec.Meta(pattern=SECRET_VALUE_PATTERN, min_length=1, max_length=MAX_SECRET)]

# What a 422 says when a value does not match a pattern above (msgspec's own message quotes
# the regex; api/util.py puts these words in its place).
PATTERN_RULES: dict[str, str] = {
    ID_PATTERN: "not a valid identifier",
    TYPE_PATTERN: TYPE_RULE,
    EVENT_HANDLER_TYPE_PATTERN: "1 to 128 printable characters, no spaces",
    TOOL_NAME_PATTERN: "must be a Python identifier of at most 64 characters, in ASCII (A-Z, a-z, 0-9 and _)",
    CODE_PATTERN: "must contain Python source",
    SESSION_NAME_PATTERN: SESSION_NAME_RULE,
    EVENT_TYPE_FILTER_PATTERN: "must be an event type, a prefix ending in * (Command*), or * (every event)",
    SECRET_NAME_PATTERN: "must be an environment-variable name: A-Z, 0-9 and _, not starting with a digit",
    SECRET_VALUE_PATTERN: "must be one line of text (no control characters)",
    WEBHOOK_URL_PATTERN: "must be an http:// or https:// URL",
    WEBHOOK_SECRET_PATTERN: "must be whsec_ and the base64 of 24 to 64 random bytes (Standard Webhooks)",
    MCP_NAME_PATTERN: f"must be {MCP_NAME_RULE}",
    ENV_NAME_PATTERN: "must be an environment-variable name (letters, digits and _, not starting with a digit)",
}


# msgspec's ValidationError message -> (field, issue) in words: the daemon's 422 details
# (api/util.py) and the CLI's checks of a file before sending it (`command batch -f`).
_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_MISSING = re.compile(r"Object missing required field `(?P<name>[^`]+)`")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<name>[^`]+)`")
_REGEX = re.compile(r"^Expected `str` matching regex '(?P<pattern>.*)'$")
# msgspec quotes a pattern with its backslashes doubled.
_RULES = {pattern.replace("\\", "\\\\"): rule for pattern, rule in PATTERN_RULES.items()}


def validation_issue(message: str) -> tuple[str, str]:
    """Turn a msgspec validation message into (field, issue) for the envelope's details."""
    path = ""
    match = _PATH.search(message)
    if match:
        path = match.group("path").lstrip(".")
        message = message[: match.start()]
    for pattern, issue in ((_MISSING, "Field is required"), (_UNKNOWN, "Unknown field")):
        found = pattern.search(message)
        if found:
            name = found.group("name")
            return (f"{path}.{name}" if path else name), issue
    regex = _REGEX.match(message)
    if regex and regex.group("pattern") in _RULES:
        message = _RULES[regex.group("pattern")]
    return (path or "body"), message
