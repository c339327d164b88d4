"""Webhooks and schedules in the bus, without HTTP: the host policy, firing times (croniter,
time zones, late firings folded), and the outbox cursor shared by two derivers on two
connections of one database file (as two daemons would share it)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from zoneinfo import ZoneInfo

import pytest
from llmgine_daemon.bus.core import Bus
from llmgine_daemon.bus.errors import BusError
from llmgine_daemon.bus.schedule_times import parse
from llmgine_daemon.bus.webhook_outbox import Outbox
from llmgine_daemon.bus.webhook_policy import HostPolicy, check_secret, new_secret, sign
from llmgine_daemon.bus.webhooks import WebhookConfig
from llmgine_daemon.protocol import WebhookCreate
from llmgine_daemon.store import pg_cluster
from llmgine_daemon.store.postgres import PgStore

UTC = dt.UTC


def test_the_default_policy_allows_loopback_only() -> None:
    policy = HostPolicy.parse(["127.0.0.0/8", "::1", "localhost"])
    for url in (
        "http://127.0.0.1:8/x",
        "https://127.9.9.9/",
        "http://[::1]:80/",
        "http://localhost/",
        "http://LOCALHOST./",
    ):
        policy.check_url(url)
    for url in ("http://10.0.0.1/", "http://[::ffff:10.0.0.1]/", "http://169.254.169.254/", "http://example.com/"):
        with pytest.raises(BusError) as err:
            policy.check_url(url)
        assert err.value.code == "FORBIDDEN"
    assert policy.address_allowed("::ffff:127.0.0.1")  # IPv4-mapped loopback
    policy.check_resolved("localhost", ["127.0.0.1", "::1"])
    with pytest.raises(BusError):
        policy.check_resolved("localhost", ["127.0.0.1", "10.0.0.1"])  # one bad address is enough
    with pytest.raises(BusError):
        policy.check_resolved("nowhere", [])
    anything = HostPolicy.parse(["*"])
    anything.check_url("https://example.com/hook")
    anything.check_resolved("example.com", ["93.184.216.34"])


def test_secrets_and_signatures() -> None:
    secret = new_secret()
    check_secret(secret)
    with pytest.raises(BusError):
        check_secret("whsec_" + "A" * 8)
    first, second = sign(secret, "id-1", 1700000000, b"{}"), sign(secret, "id-2", 1700000000, b"{}")
    assert first.startswith("v1,") and first != second


def test_cron_in_a_zone_across_a_dst_change() -> None:
    when = parse("30 2 * * *", None, None, "Europe/Berlin")
    # 2027-03-28: Berlin skips 02:00-03:00 (no 02:30 that day).
    start = dt.datetime(2027, 3, 27, 12, tzinfo=UTC)
    times = when.upcoming(when.first(start), 3)
    local = [t.astimezone(ZoneInfo("Europe/Berlin")) for t in times]
    assert [t.day for t in local] == sorted({t.day for t in local})  # each day at most once
    assert all(t.tzinfo == UTC for t in times) and times == sorted(times)


def test_every_folds_late_firings_into_one() -> None:
    when = parse(None, "2s", None, "UTC")
    due = dt.datetime(2030, 1, 1, tzinfo=UTC)
    assert when.following(due, due) == due + dt.timedelta(seconds=2)
    # Seven seconds late: the next firing is the first one after now, on the same grid.
    assert when.following(due, due + dt.timedelta(seconds=7)) == due + dt.timedelta(seconds=8)
    once = parse(None, None, "2030-01-01T09:00:00", "Asia/Tokyo")
    assert once.first(due - dt.timedelta(days=1)) == dt.datetime(2030, 1, 1, 0, tzinfo=UTC)
    assert once.following(due, due) is None


@pytest.fixture
async def two_buses(pg_url: str) -> AsyncIterator[tuple[Bus, Bus]]:
    """Two buses on one database, each with its own store (connections and writer): two nodes,
    so PostgreSQL (a SQLite file serves one daemon: store/db.py ``_lock_database``), with the
    statements every node's write transactions run (bus/cluster_shared.py)."""
    stores = [PgStore(pg_url) for _ in range(2)]
    for store in stores:
        store.first_statements, store.last_statements = (pg_cluster.LOCK_FIRST,), (pg_cluster.SAVE_HEAD,)
        await store.open()
    buses = (Bus(stores[0]), Bus(stores[1]))
    try:
        yield buses
    finally:
        for store in stores:
            await store.close()


async def test_two_derivers_share_the_cursor_and_derive_each_event_once(two_buses: tuple[Bus, Bus]) -> None:
    one, two = two_buses
    sid = (await one.sessions.create(None, {})).session_id
    await one.webhooks.create(WebhookCreate(url="http://127.0.0.1:9/a", session_id=sid), None)
    await one.webhooks.create(WebhookCreate(url="http://127.0.0.1:9/b", events=["Odd"]), None)
    for i in range(300):  # more than one round (ROUND = 256)
        await one.events.publish(sid, "Odd" if i % 2 else "Even", {"i": i}, {})
    outboxes = [Outbox(one, WebhookConfig()), Outbox(two, WebhookConfig())]

    async def drain(outbox: Outbox) -> None:
        while await outbox.derive_once():
            pass

    for _ in range(3):
        await asyncio.gather(*(drain(o) for o in outboxes))
    rows = await one.store.fetchall("SELECT webhook_id, event_seq FROM webhook_deliveries")
    assert len(rows) == len(set(rows)) == 300 + 150
    cursor = await one.store.fetchone("SELECT seq FROM webhook_cursor")
    top = await one.store.fetchone("SELECT MAX(seq) FROM events")
    assert cursor == top
