"""Several nodes on one PostgreSQL database through an outage of the database longer than the
lease timeout (bus/cluster_shared.py): every lease expired meanwhile, by the server's clock,
though no node died. The first node to reach the database again took the others' sessions
over, and the commands those healthy nodes were running ended ``interrupted``. A node that
was cut off from the database gives the others a lease timeout, once it reaches it again,
to renew their leases before it takes any over."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import psycopg
from llmgine_daemon.api.keys import BUS

from tests.api.bus_helpers import BLOCK_MS, cancel, cluster_node, create_engine, status_of, submit
from tests.conftest import create_session
from tests.e2e.test_postgres import set_connections
from tests.eventually import eventually

LEASE_TIMEOUT = "1"


def server_clock(url: str) -> float:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())").fetchone()
    assert row is not None
    return float(row[0])


async def test_an_outage_longer_than_the_lease_timeout_interrupts_nothing(
    pg_server: Any, pg_url: str, aiohttp_client: Any, tmp_path: Path
) -> None:
    env = {"LLMGINE_LEASE_TIMEOUT": LEASE_TIMEOUT}
    nodes = [await cluster_node(aiohttp_client, pg_url, tmp_path / name, **env) for name in "abc"]
    running: list[tuple[Any, str, str]] = []
    for node in nodes:
        for _ in range(3):
            sid = (await create_session(node))["session_id"]
            await create_engine(node, sid)
            running.append((node, sid, (await submit(node, sid, delay_ms=BLOCK_MS))["command_id"]))
    for node, sid, cid in running:
        assert await status_of(node, sid, cid) == "executing"
    assert all(node.app[BUS].cluster.owns(sid) for node, sid, _ in running)

    set_connections(pg_server, pg_url, False)
    try:
        await asyncio.sleep(3 * float(LEASE_TIMEOUT))  # every lease expires, by the server's clock
    finally:
        set_connections(pg_server, pg_url, True)
    # Wait until every node ticked a lease timeout and a tick after the database came back: a
    # node taking the others' sessions would have by then.
    back = server_clock(pg_url)

    def ticked() -> bool:
        with psycopg.connect(pg_url) as conn:
            beats = conn.execute("SELECT heartbeat FROM cluster_nodes").fetchall()
        return len(beats) == 3 and all(b > back + 2 * float(LEASE_TIMEOUT) for (b,) in beats)

    await eventually(lambda: asyncio.to_thread(ticked), timeout=60, message="every node to tick again")
    for node, sid, cid in running:
        assert await status_of(nodes[0], sid, cid) == "executing", (sid, cid)
        assert node.app[BUS].cluster.owns(sid)
    for node, sid, cid in running:
        assert (await cancel(node, sid, cid))["status"] == "cancelled"


async def test_an_outage_is_one_error_line_not_one_per_write(
    pg_server: Any, pg_url: str, aiohttp_client: Any, tmp_path: Path, caplog: Any
) -> None:
    """Every write that could not connect logged its own ERROR line (hundreds a second under
    load, the same words); the first is said, the others counted until a write commits."""
    node = await cluster_node(aiohttp_client, pg_url, tmp_path / "a")
    sid = (await create_session(node))["session_id"]
    set_connections(pg_server, pg_url, False)
    try:
        for _ in range(20):
            resp = await node.post(f"/api/sessions/{sid}/events", json={"event_type": "While"})
            assert resp.status == 503, await resp.text()
    finally:
        set_connections(pg_server, pg_url, True)
    resp = await node.post(f"/api/sessions/{sid}/events", json={"event_type": "After"})
    assert resp.status == 201, await resp.text()
    store = [r.getMessage() for r in caplog.records if r.name == "llmgine.store"]
    failed = [m for m in store if m.startswith("write transaction of")]
    # One line per store that wrote meanwhile: the bus's, and the telemetry's if it flushed.
    assert 1 <= len(failed) <= 2 and all("cannot connect to PostgreSQL" in m for m in failed), failed
    again = [int(m.split("after ")[1].split()[0]) for m in store if m.startswith("writes commit again")]
    assert again and max(again) >= 20, store  # the 20 requests' (and the cluster tick's)


async def test_a_registry_sync_during_an_outage_is_a_line_not_a_traceback(
    pg_server: Any, pg_url: str, aiohttp_client: Any, tmp_path: Path, caplog: Any
) -> None:
    """The re-read of other nodes' engines and handlers (a notification, the LISTEN connection
    made again, the tick) logged a whole traceback when the database could not be reached."""
    node = await cluster_node(aiohttp_client, pg_url, tmp_path / "a")
    cluster = node.app[BUS].cluster
    set_connections(pg_server, pg_url, False)
    try:
        cluster._sync_registry()  # what a notification or the tick does
        assert cluster._registry_task is not None
        await cluster._registry_task
    finally:
        set_connections(pg_server, pg_url, True)
    said = [r for r in caplog.records if r.name == "llmgine.cluster" and "registry" in r.getMessage()]
    assert said and all(r.exc_info is None for r in said), [(r.getMessage(), r.exc_info) for r in said]
    assert "cannot connect to PostgreSQL" in said[0].getMessage()
