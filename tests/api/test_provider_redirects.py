"""A provider's redirect is not followed. aiohttp follows up to ten by default, to any host:
whoever answers for the provider (a compromised or hostile compatible server, or anything on
the path of an http:// base URL) could send the daemon to loopback services, the cloud's
metadata address or the LAN, with the prompt (307) and Anthropic's ``x-api-key`` (aiohttp
drops only ``Authorization`` on a cross-origin redirect), and the start of the answer came back
in the command's error, which a session token reads."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from tests.api.llm_helpers import MODELS, create_llm_engine, execute

SECRET = "internal-service-answer-1234"


class Servers:
    """A "provider" that answers every request with a redirect to an "internal" service, which
    answers 500 quoting SECRET (a provider's error body is quoted in the command's error)."""

    def __init__(self) -> None:
        self.internal_hits: list[tuple[str, dict[str, str]]] = []
        self.runners: list[web.AppRunner] = []
        self.status = 307

    async def start(self) -> None:
        async def internal(request: web.Request) -> web.Response:
            self.internal_hits.append((request.method, dict(request.headers)))
            return web.Response(status=500, text=SECRET)

        async def provider(request: web.Request) -> web.Response:
            raise web.HTTPException(headers={"Location": f"{self.internal_root}/latest/meta-data?x=1"}) from None

        self.internal_root = await self._serve(internal)
        self.provider_root = await self._serve(provider)

    async def _serve(self, handler: Any) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._status(handler))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    def _status(self, handler: Any) -> Any:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except web.HTTPException as exc:
                return web.Response(status=self.status, headers=exc.headers)

        return wrapped

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


@pytest.fixture
async def servers() -> Any:
    s = Servers()
    await s.start()
    yield s
    await s.stop()


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("status", [302, 307])
async def test_a_providers_redirect_is_not_followed(make_client: Any, servers: Servers, kind: str, status: int) -> None:
    servers.status = status
    client = await make_client(
        OPENAI_BASE_URL=servers.provider_root + "/v1",
        ANTHROPIC_BASE_URL=servers.provider_root,
        OPENAI_API_KEY="sk-test-0123456789abcdef",
        ANTHROPIC_API_KEY="sk-ant-test-0123456789abcdef",
    )
    engine = await create_llm_engine(client, model=MODELS[kind])
    record = await execute(client, engine["engine_id"], "hi")
    assert servers.internal_hits == []
    assert record["status"] == "failed", record
    error = record["error"]
    assert error["code"] == "PROVIDER_BAD_REQUEST", error
    assert f"HTTP {status}" in error["message"] and "redirect" in error["message"]
    assert f"{servers.internal_root}/latest/meta-data" in error["message"]  # where, without the query
    assert "x=1" not in error["message"] and SECRET not in str(record)
