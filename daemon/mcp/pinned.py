"""The HTTP client of streamable-HTTP MCP servers: it connects only to addresses the host policy
checked (``mcp.allowed_hosts``, bus/webhook_policy.py), as the webhook sender's resolver does
(api/webhook_sender.py).

The SDK speaks HTTP through httpx2, whose connection pool would resolve the host name itself:
a name could then answer the daemon's check with an allowed address and the connection with
another (DNS rebinding). Here the pool's network backend asks ``resolve`` (the bus's
resolve-and-check) for the addresses and connects to one of them, so the address connected to
is always one that was checked; TLS still verifies the certificate against the name. No DNS
cache, no proxy from the environment. httpx2/httpcore2 are imported when a connection starts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

# host, port -> the addresses to connect to, all checked; raises (LaunchError) to refuse.
Resolve = Callable[[str, int], Awaitable[list[str]]]


def http_client(resolve: Resolve) -> Any:
    """An ``httpx2.AsyncClient`` with the SDK's timeouts whose connections go only to the
    addresses ``resolve`` returns."""
    import httpcore2
    import httpx2
    from mcp.shared._httpx_utils import MCP_DEFAULT_SSE_READ_TIMEOUT, MCP_DEFAULT_TIMEOUT

    class PinnedBackend(httpcore2.AsyncNetworkBackend):
        def __init__(self) -> None:
            self._inner = httpcore2.AnyIOBackend()

        async def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Iterable[Any] | None = None,
        ) -> httpcore2.AsyncNetworkStream:
            try:
                addresses = await resolve(host, port)
            except Exception as exc:  # the policy's refusal, or no answer
                raise httpcore2.ConnectError(str(exc)) from None
            failure: Exception = httpcore2.ConnectError(f"{host!r} resolves to nothing")
            for address in addresses:
                try:
                    return await self._inner.connect_tcp(
                        address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                    )
                except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                    failure = exc
            raise failure

        async def connect_unix_socket(
            self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
        ) -> httpcore2.AsyncNetworkStream:
            raise httpcore2.ConnectError("unix sockets are not used for MCP servers")

        async def sleep(self, seconds: float) -> None:
            await self._inner.sleep(seconds)

    transport = httpx2.AsyncHTTPTransport(trust_env=False)
    # httpx2's transport takes no network backend: its pool is replaced by one with ours.
    # The same pool options as httpx2's defaults (100 connections, 20 kept alive for 5 s).
    transport._pool = httpcore2.AsyncConnectionPool(  # noqa: SLF001
        ssl_context=transport._pool._ssl_context,  # noqa: SLF001
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        network_backend=PinnedBackend(),
    )
    timeout = httpx2.Timeout(MCP_DEFAULT_TIMEOUT, read=MCP_DEFAULT_SSE_READ_TIMEOUT)
    return httpx2.AsyncClient(transport=transport, timeout=timeout, trust_env=False)
