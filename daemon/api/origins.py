"""Browser defences on TCP: the Host allowlist (DNS rebinding) and the Origin allowlist (CORS,
cross-site requests, WebSocket hijacking).

Host: a web page on evil.example whose name is re-pointed at 127.0.0.1 reaches the daemon
with ``Host: evil.example`` (Ollama's CVE-2024-28224); only names we expect are served.
IP literals cannot be rebound, so when the daemon is bound to a wildcard address any IP
literal is fine.

Origin: browsers send it on every cross-origin request and on every WebSocket handshake.
Allowed are the configured CORS_ORIGINS and the daemon's own origin (same Host). Anything
else is refused with 403 before authentication, and ``Access-Control-Allow-Origin`` only ever
echoes a listed origin, never ``*``.

Binding: a non-loopback TCP listener needs a credential configured on purpose (``check_bind``,
asked at start once the keys of the backend in use are loaded).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from llmgine_daemon.paths import StartupError
from llmgine_daemon.protocol import REQUEST_ID_HEADER, SESSION_TOKEN_HEADER, VERSION_HEADER
from llmgine_daemon.settings import Settings
from llmgine_daemon.settings_parsers import normalize_origin

LOOPBACK_NAMES = frozenset({"localhost"})
WILDCARDS = frozenset({"0.0.0.0", "::", ""})

# Every request header the API reads (README: Errors, Waiting, Observability, the stream
# protocol): a browser page may send only those a preflight allows.
CORS_ALLOW_HEADERS = ", ".join(
    (
        "Authorization",
        "Content-Type",
        SESSION_TOKEN_HEADER,
        REQUEST_ID_HEADER,
        "Idempotency-Key",
        "Prefer",
        "traceparent",
        "tracestate",
        "Last-Event-ID",
    )
)
CORS_EXPOSE_HEADERS = ", ".join(
    (
        REQUEST_ID_HEADER,
        VERSION_HEADER,
        "RateLimit",
        "RateLimit-Policy",
        "Retry-After",
        "WWW-Authenticate",
        "Allow",
        "Idempotent-Replayed",
        "Preference-Applied",
        "traceparent",
    )
)
CORS_MAX_AGE = "600"


def target_host(target: str, header: str | None) -> str | None:
    """The host a request names: its ``Host`` header, or the authority of its request line's
    absolute URI (``GET http://host:port/path``), which a server takes instead (RFC 9112,
    3.2.2). aiohttp routes such a request on its path; only the header was checked, so
    ``GET http://elsewhere/api/sessions`` with an allowed Host was served."""
    if target.startswith("/"):
        return header
    scheme, sep, rest = target.partition("://")
    if not sep:  # "*", or CONNECT's authority-form: no URI to take a host from
        return header
    return rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]


def split_host(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` (IPv6 in brackets) → (lower-case name, port); None when malformed."""
    value = value.strip()
    if not value or any(c in value for c in "/@?#\\ \t"):
        return None
    port_text = ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return None
            port_text = rest[1:]
    elif value.count(":") == 1:
        name, port_text = value.split(":")
    elif ":" in value:
        return None
    else:
        name = value
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or int(port_text) > 65535:
            return None
        port = int(port_text)
    name = name.lower().rstrip(".")
    return (name, port) if name else None


# How many distinct Host values HostPolicy remembers its answer for (then it starts over).
HOST_MEMO = 256


class HostPolicy:
    def __init__(self, settings: Settings) -> None:
        bound = settings.host.strip("[]").lower()
        self.any_host = "*" in settings["security.allowed_hosts"]
        self.bound = bound
        self.wildcard_bind = bound in WILDCARDS
        self.names = {n.strip().lower().rstrip(".") for n in settings["security.allowed_hosts"]}
        self.names.discard("*")
        self.names |= LOOPBACK_NAMES
        if not self.wildcard_bind:
            self.names.add(bound)
        self._seen: dict[str | None, bool] = {}

    def allows(self, header: str | None) -> bool:
        """Whether ``header`` names this daemon; remembered per distinct header value (a
        client sends the same Host on every request, so this parses it once)."""
        if self.any_host:
            return True
        known = self._seen.get(header)
        if known is None:
            known = self._judge(header)
            if len(self._seen) >= HOST_MEMO:
                self._seen.clear()
            self._seen[header] = known
        return known

    def _judge(self, header: str | None) -> bool:
        parsed = split_host(header or "")
        if parsed is None:
            return False  # an empty or malformed Host included
        name = parsed[0]
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            address = None
        if address is not None:
            return address.is_loopback or self.wildcard_bind or name in self.names
        if name in self.names:
            return True
        # ".example.com" in allowed_hosts admits its subdomains.
        return any(n.startswith(".") and name.endswith(n) for n in self.names)


class OriginPolicy:
    def __init__(self, settings: Settings) -> None:
        # Each entry is an origin, never "*" (settings_parsers.origins refuses both where the
        # setting is given: "*" would let any web page drive a code-running API).
        self.listed = {normalize_origin(x) for x in settings["security.cors_origins"]} - {None}

    def is_listed(self, origin: str) -> bool:
        return normalize_origin(origin) in self.listed

    def allows(self, origin: str, host_header: str | None) -> bool:
        normalized = normalize_origin(origin)
        if normalized is None:
            return False
        if normalized in self.listed:
            return True
        # Same origin: a page served from this very address, by us (http) or by a TLS proxy in
        # front of us that passes the Host on (https; README's nginx): the page of /docs at
        # https://NAME sends Origin https://NAME with its POSTs and WebSocket handshakes.
        return host_header is not None and normalized in (
            normalize_origin(f"http://{host_header}"),
            normalize_origin(f"https://{host_header}"),
        )

    def cors_headers(self, origin: str) -> dict[str, str]:
        """Headers for an actual response to a listed origin (echoes it exactly, plus Vary)."""
        return {
            "Access-Control-Allow-Origin": normalize_origin(origin) or "",
            "Access-Control-Expose-Headers": CORS_EXPOSE_HEADERS,
            "Vary": "Origin",
        }

    def preflight_headers(self, origin: str, methods: str) -> dict[str, str]:
        return {
            "Access-Control-Allow-Origin": normalize_origin(origin) or "",
            "Access-Control-Allow-Methods": methods,
            "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
            "Access-Control-Max-Age": CORS_MAX_AGE,
            "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        }


def check_bind(settings: Settings, has_user_keys: Callable[[], bool]) -> None:
    """Refuse a non-loopback TCP listener unless a credential was configured on purpose: the
    API key secret, or a key from `llmgine auth key create` that is still good (the local CLI's
    key does not count). Asked once the store is open, so the keys are those of the backend in
    use (on PostgreSQL, the cluster's)."""
    if not settings.tcp_enabled:
        return
    host = settings.host
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if loopback or settings["security.api_key_secret"] or has_user_keys():
        return
    raise StartupError(
        f"server.host {host!r}: refusing to listen on a non-loopback address without a "
        "credential; set security.api_key_secret (API_KEY_SECRET) or create a key with "
        "`llmgine auth key create` first"
    )
