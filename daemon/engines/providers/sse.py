"""Server-sent events, as both providers stream them (WHATWG EventSource parsing rules).

A stall (no bytes for ``timeout`` seconds) raises ``asyncio.TimeoutError``; each line read has
its own deadline, so a slow but steady stream (or Anthropic's ``ping`` events) never times out
while a silent one does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True)
class SSEvent:
    event: str
    data: str


async def iter_sse(resp: aiohttp.ClientResponse, timeout: float) -> AsyncIterator[SSEvent]:
    event = ""
    data: list[str] = []
    content = resp.content
    while True:
        async with asyncio.timeout(timeout):
            raw = await content.readline()
        if not raw:  # end of body: a last event without its blank line still counts
            if data:
                yield SSEvent(event or "message", "\n".join(data))
            return
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield SSEvent(event or "message", "\n".join(data))
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
