"""Every listing pages the same way: `?limit=&offset=` and `{items, total, limit, offset}`.

The lists the daemon holds whole (tools, handlers, keys, secrets, webhooks, schedules, MCP
servers, approvals) ignored both parameters, as unknown ones: a page asked for with
`?limit=2&offset=2` was every item again, and a front end paging through them showed them
twice. Without `limit` they still answer all of them (`limit: null`)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.bus_helpers import DUMMY, session_with_engine
from tests.conftest import assert_envelope


async def created(client: Any, path: str, body: dict[str, Any], method: str = "POST") -> None:
    resp = await client.request(method, path, json=body)
    assert resp.status in (200, 201), await resp.text()


async def tools(client: Any, sid: str, i: int) -> str:
    name = f"t{i}"
    await created(
        client, f"/api/sessions/{sid}/tools", {"name": name, "function_code": f"def {name}():\n    return 1\n"}
    )
    return f"/api/sessions/{sid}/tools"


async def handlers(client: Any, sid: str, i: int) -> str:
    body = {"event_type": f"E{i}", "handler_function": "def h(event):\n    return 1\n"}
    await created(client, f"/api/sessions/{sid}/handlers/events", body)
    return f"/api/sessions/{sid}/handlers"


async def keys(client: Any, sid: str, i: int) -> str:
    await created(client, "/api/auth/keys", {"name": f"k{i}"})
    return "/api/auth/keys"


async def secrets(client: Any, sid: str, i: int) -> str:
    await created(client, f"/api/secrets/PAGED_{i}", {"value": "v"}, method="PUT")
    return "/api/secrets"


async def webhooks(client: Any, sid: str, i: int) -> str:
    await created(client, "/api/webhooks", {"url": f"http://127.0.0.1:9/hook{i}", "session_id": sid})
    return f"/api/webhooks?session_id={sid}"


async def schedules(client: Any, sid: str, i: int) -> str:
    command = {"command_type": DUMMY, "parameters": {"prompt": f"p{i}"}}
    await created(client, "/api/schedules", {"session_id": sid, "command": command, "every": 3600})
    return f"/api/schedules?session_id={sid}"


def ids(items: list[dict[str, Any]]) -> list[str]:
    """Who each item is (a key's last_used_at moves with every request that lists them)."""
    names = ("handler_id", "key_id", "webhook_id", "schedule_id", "name")
    return [next(item[n] for n in names if n in item) for item in items]


@pytest.mark.parametrize(
    "make, field",
    [
        (tools, "tools"),
        (handlers, "handlers"),
        (keys, "keys"),
        (secrets, "secrets"),
        (webhooks, "webhooks"),
        (schedules, "schedules"),
    ],
)
async def test_held_lists_page_as_every_listing(app_client, make, field):
    sid, _ = await session_with_engine(app_client)
    for i in range(4):
        path = await make(app_client, sid, i)
    sep = "&" if "?" in path else "?"
    whole = await (await app_client.get(path)).json()
    assert whole["limit"] is None and whole["offset"] == 0, whole
    total = whole["total"]
    assert total >= 4 and len(whole[field]) == total  # all of them, as before
    page = await (await app_client.get(f"{path}{sep}limit=2&offset=1")).json()
    assert (page["limit"], page["offset"], page["total"]) == (2, 1, total)
    assert ids(page[field]) == ids(whole[field])[1:3]
    tail = await (await app_client.get(f"{path}{sep}offset={total - 1}")).json()
    assert ids(tail[field]) == ids(whole[field])[-1:] and tail["limit"] is None
    for bad in ("limit=0", "limit=1001", "limit=x", "offset=-1"):
        resp = await app_client.get(f"{path}{sep}{bad}")
        assert resp.status == 422, (path, bad)
        assert assert_envelope(await resp.json(), "VALIDATION_ERROR")["details"]["field"] == bad.split("=")[0]
