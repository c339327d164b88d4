"""Server-sent events, as both providers stream them (WHATWG EventSource parsing rules).

A stall raises ``asyncio.TimeoutError``: no event for ``timeout`` seconds, keep-alives not
counted (comments, and the events ``keepalive`` names: Anthropic's ``ping``), so a slow but
steady answer never times out while a silent one, or one only kept warm by a proxy or a
stalled server, does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True)
class SSEvent:
    event: str
    data: str


async def iter_sse(
    resp: aiohttp.ClientResponse, timeout: float, keepalive: Callable[[SSEvent], bool] | None = None
) -> AsyncIterator[SSEvent]:
    event = ""
    data: list[str] = []
    content = resp.content
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with asyncio.timeout_at(deadline):
            raw = await content.readline()
        if not raw:  # end of body: a last event without its blank line still counts
            if data:
                yield SSEvent(event or "message", "\n".join(data))
            return
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                sse = SSEvent(event or "message", "\n".join(data))
                yield sse
                if keepalive is None or not keepalive(sse):
                    deadline = loop.time() + timeout  # from when the next one is asked for
            event, data = "", []
            continue
        if line.startswith(":"):
            continue  # comment / keep-alive
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        # "id" and "retry" are for EventSource reconnection, which a POST stream cannot use.
