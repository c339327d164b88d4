"""Session tokens cannot multiply a session's reach: at most max_tokens_per_session live tokens
(409 LIMIT_REACHED past it), and all tokens of a session share one rate-limit bucket. The
limiter's clock is frozen: counts, not timings."""

from __future__ import annotations

import asyncio

from tests.api.secutil import bearer, freeze, new_session, start
from tests.conftest import assert_envelope


async def mint(client, sid: str, headers: dict[str, str]):
    return await client.post(f"/api/sessions/{sid}/token", headers=headers)


async def test_live_tokens_per_session_are_capped(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings, LLMGINE_MAX_TOKENS_PER_SESSION="3")
    s = await new_session(client, local)  # token 1
    sid = s["session_id"]
    # The session's own token may mint (token 2), the API key too (token 3)...
    resp = await mint(client, sid, {"X-Session-Token": s["session_token"]})
    assert resp.status == 201, await resp.text()
    minted = (await resp.json())["session_token"]
    assert (await mint(client, sid, bearer(local))).status == 201
    # ...and then nobody may: the fourth live token is refused, naming the setting.
    for headers in ({"X-Session-Token": minted}, bearer(local)):
        resp = await mint(client, sid, headers)
        assert resp.status == 409
        error = assert_envelope(await resp.json(), "LIMIT_REACHED")
        assert error["details"] == {"limit": "max_tokens_per_session", "max": 3}
        assert "security.limits.max_tokens_per_session" in error["message"]
    # Another session has its own allowance.
    other = await new_session(client, local)
    assert (await mint(client, other["session_id"], bearer(local))).status == 201
    # The tokens that exist still work.
    assert (await client.get(f"/api/sessions/{sid}", headers={"X-Session-Token": minted})).status == 200


async def test_concurrent_mints_cannot_overshoot(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings, LLMGINE_MAX_TOKENS_PER_SESSION="4")
    sid = (await new_session(client, local))["session_id"]
    results = await asyncio.gather(*(mint(client, sid, bearer(local)) for _ in range(12)))
    assert sorted(r.status for r in results) == [201] * 3 + [409] * 9


async def test_default_cap_is_ten(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings)
    sid = (await new_session(client, local))["session_id"]
    statuses = [(await mint(client, sid, bearer(local))).status for _ in range(10)]
    assert statuses == [201] * 9 + [409]


async def test_all_tokens_of_a_session_share_one_bucket(aiohttp_client, make_settings):
    client, local = await start(aiohttp_client, make_settings, LLMGINE_RATE_LIMIT_AUTHENTICATED="6")
    freeze(client)
    s = await new_session(client, local)
    sid = s["session_id"]
    tokens = [s["session_token"]]
    for _ in range(2):  # minted with the API key: from the key's bucket, not the session's
        tokens.append((await (await mint(client, sid, bearer(local))).json())["session_token"])
    statuses = []
    for i in range(9):
        resp = await client.get(f"/api/sessions/{sid}", headers={"X-Session-Token": tokens[i % 3]})
        statuses.append(resp.status)
    assert statuses == [200] * 6 + [429] * 3
    assert_envelope(await resp.json(), "RATE_LIMITED")
    # A token minted now starts with the same empty bucket.
    resp = await mint(client, sid, {"X-Session-Token": tokens[0]})
    assert resp.status == 429
    fresh = (await (await mint(client, sid, bearer(local))).json())["session_token"]
    assert (await client.get(f"/api/sessions/{sid}", headers={"X-Session-Token": fresh})).status == 429
    # Another session's token, and the API key, have buckets of their own.
    other = await new_session(client, local)
    resp = await client.get(f"/api/sessions/{other['session_id']}", headers={"X-Session-Token": other["session_token"]})
    assert resp.status == 200
    assert (await client.get("/api/status", headers=bearer(local))).status == 200
