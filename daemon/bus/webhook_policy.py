"""Where webhooks may call (``webhooks.allowed_hosts``), and how a delivery is signed.

The setting lists IP networks or addresses (``127.0.0.0/8``, ``::1``) and host names
(``localhost``); ``*`` allows any host. A URL passes at registration when it is http(s), has
no user:password part, and its host is an allowed address or an allowed name. At delivery the
name is resolved and EVERY address it resolves to must lie in an allowed network (the
resolver of api/webhook_sender.py connects only to the addresses checked here), so a name that
was allowed cannot be pointed (DNS rebinding, an edited hosts file) at an address that is not;
redirects are never followed. A session token, then, cannot make the daemon call anything the
owner did not allow.

Signing follows Standard Webhooks (https://www.standardwebhooks.com): headers ``webhook-id``
(the delivery's id, the same on every attempt), ``webhook-timestamp`` (Unix seconds) and
``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, keyed with the
base64-decoded part of the ``whsec_...`` secret.

Standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from llmgine_daemon.bus.errors import BusError, invalid
from llmgine_daemon.protocol import ErrorCode

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SECRET_PREFIX = "whsec_"
# Where a session token's webhooks may call (bus/webhooks.py ``WebhookConfig.policy_for``).
SESSION_TOKEN_HOSTS = "webhooks.session_token_allowed_hosts"
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(os.urandom(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def check_secret(secret: str) -> None:
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except ValueError:
        raise invalid("secret", "must be whsec_ and valid base64") from None
    if not 24 <= len(key) <= 64:
        raise invalid("secret", "must hold 24 to 64 bytes (base64-encoded after whsec_)")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header's value for one attempt."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def forbidden_host(host: str, why: str, setting: str = "webhooks.allowed_hosts") -> BusError:
    what = setting.partition(".")[0].removesuffix("s")  # webhook, mcp
    return BusError(
        ErrorCode.FORBIDDEN,
        f"{what} host {host!r} is not allowed: {why} (setting {setting})",
        {"host": host, "setting": setting},
    )


@dataclass(frozen=True)
class HostPolicy:
    """Also where MCP servers may be reached (``mcp.allowed_hosts``, bus/mcp_servers.py):
    ``setting`` names the one the policy comes from."""

    networks: tuple[Network, ...]
    names: frozenset[str]
    any_host: bool = False
    setting: str = "webhooks.allowed_hosts"

    @classmethod
    def parse(cls, entries: list[str], setting: str = "webhooks.allowed_hosts") -> HostPolicy:
        networks: list[Network] = []
        names: set[str] = set()
        for entry in entries:
            entry = entry.strip().lower()
            if entry == "*":
                return cls((), frozenset(), True, setting)
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.add(entry.rstrip("."))
        return cls(tuple(networks), frozenset(names), setting=setting)

    def for_session_token(self, what: str) -> HostPolicy:
        """This policy, as a session token's ``what`` (webhooks, HTTP MCP servers) go by it:
        FORBIDDEN naming its setting while it lists nothing (none by default)."""
        if not (self.any_host or self.networks or self.names):
            raise BusError(
                ErrorCode.FORBIDDEN,
                f"a session token may not register {what} unless {self.setting} lists their host "
                "(loopback is the machine's own services); use an API key, or set that",
                {"setting": self.setting},
            )
        return self

    def address_allowed(self, address: str) -> bool:
        if self.any_host:
            return True
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)

    def check_url(self, url: str) -> str:
        """Refuse (422/403) a URL a webhook may not call; returns its host."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise invalid("url", f"not a valid URL: {exc}") from None
        if parts.scheme not in ("http", "https"):
            raise invalid("url", "must be an http:// or https:// URL")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise invalid("url", "must name a host")
        if parts.username is not None or parts.password is not None:
            raise invalid("url", "must not carry a user name or password")
        if port == 0:
            raise invalid("url", "port 0 is not a port")
        if self.any_host:
            return host
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            if host.lower() not in self.names:
                raise forbidden_host(host, "the name is not listed", self.setting) from None
            return host
        if not self.address_allowed(host):
            raise forbidden_host(host, "the address is in no allowed network", self.setting)
        return host

    def check_resolved(self, host: str, addresses: list[str]) -> None:
        """At delivery: every address ``host`` resolved to must be allowed."""
        bad = [a for a in addresses if not self.address_allowed(a)]
        if bad or not addresses:
            raise forbidden_host(host, f"it resolves to {', '.join(bad) or 'nothing'}", self.setting)
