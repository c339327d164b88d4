"""The HTTP side of webhook deliveries: the ``Sender`` app.py hands to the bus
(bus/webhook_outbox.py), on one aiohttp client session (and one for session tokens' webhooks).

Only hosts ``webhooks.allowed_hosts`` allows are called (a session token's webhook:
``webhooks.session_token_allowed_hosts``; bus/webhook_policy.py): the URL is
checked again at every attempt (the setting may have changed since registration), and the
client's resolver resolves names itself and refuses a name when ANY of its addresses is not in
an allowed network; the connection then goes only to the addresses it checked (no DNS cache, so
every attempt resolves again). Redirects are never followed (a 3xx is a failed attempt), and no
proxy from the environment is used. Errors say what went wrong, never the secret or the body.
"""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from llmgine_daemon.bus.errors import BusError
from llmgine_daemon.bus.webhook_policy import SESSION_TOKEN_HOSTS, HostPolicy

MAX_ERROR = 300
# How much of an answer's body is read (and dropped: only the status counts). The rest is not
# read and the connection is closed: reading it whole let a target answering gigabytes within
# webhooks.timeout grow llmgined by as much, for each delivery in flight.
MAX_ANSWER = 64 * 1024


async def _drain(response: aiohttp.ClientResponse) -> None:
    left = MAX_ANSWER
    while left > 0:
        chunk = await response.content.read(left)
        if not chunk:
            return
        left -= len(chunk)


class _PolicyResolver(AbstractResolver):
    def __init__(self, policy: HostPolicy) -> None:
        self.policy = policy
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        try:
            self.policy.check_resolved(host, [r["host"] for r in found])
        except BusError as exc:
            raise OSError(exc.message) from None
        return found

    async def close(self) -> None:
        await self._inner.close()


class HttpSender:
    """``await sender(url, headers, body, timeout, session_token)`` -> (status, error). A
    session token's webhook goes by ``session_token_policy`` (webhooks.session_token_allowed_hosts),
    through a client of its own (the resolver checks its addresses against that list)."""

    def __init__(self, policy: HostPolicy, session_token_policy: HostPolicy | None = None) -> None:
        self.policies = (policy, session_token_policy or HostPolicy.parse([], SESSION_TOKEN_HOSTS))
        self._sessions: dict[bool, aiohttp.ClientSession] = {}

    def _client(self, session_token: bool) -> aiohttp.ClientSession:
        if session_token not in self._sessions:
            resolver = _PolicyResolver(self.policies[session_token])
            connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, limit=32)
            self._sessions[session_token] = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._sessions[session_token]

    async def __call__(
        self, url: str, headers: dict[str, str], body: bytes, timeout: float, session_token: bool = False
    ) -> tuple[int | None, str | None]:
        try:
            self.policies[session_token].check_url(url)
        except BusError as exc:
            return None, exc.message
        try:
            async with self._client(session_token).post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                await _drain(response)
                status = response.status
                if 300 <= status < 400:
                    return status, f"redirect not followed (HTTP {status})"
                return status, None
        except TimeoutError:
            return None, f"timed out after {timeout:g} s"
        except (aiohttp.ClientError, OSError) as exc:
            return None, _describe(exc)

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()


def _describe(exc: Any) -> str:
    cause = getattr(exc, "os_error", None) or exc.__cause__ or exc
    text = f"{type(exc).__name__}: {cause}"
    return text[:MAX_ERROR]
