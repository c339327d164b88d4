"""How an Idempotency-Key's body is compared (bus/idempotency.py): a hash of msgspec's sorted
JSON of the decoded body, in C (Python's json.dumps with sort_keys took about ten times as long
on the event loop), and keys an older version stored with its hash still replay."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace
from typing import Any

import msgspec
from llmgine_daemon.api.keys import BUS
from llmgine_daemon.bus import idempotency
from llmgine_daemon.bus.idempotency import IdempotencyKey
from llmgine_daemon.protocol import EventCreate

from tests.conftest import assert_envelope, create_session


def test_the_canonical_form_is_msgspecs_sorted_json():
    body = msgspec.json.decode(b'{"event_type": "T", "data": {"b": 1, "a": "\xc3\xa9t\xc3\xa9"}}', type=EventCreate)
    same = msgspec.json.decode(b'{"data": {"a": "\xc3\xa9t\xc3\xa9", "b": 1}, "event_type": "T"}', type=EventCreate)
    other = msgspec.json.decode(b'{"event_type": "T", "data": {"b": 2, "a": "\xc3\xa9t\xc3\xa9"}}', type=EventCreate)
    key = IdempotencyKey.of("POST /x", "k", body)
    assert key == IdempotencyKey.of("POST /x", "k", same)
    assert key != IdempotencyKey.of("POST /x", "k", other)
    digest = hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()
    assert key.body_hash == idempotency.VERSION + digest


async def test_a_key_stored_with_the_older_hash_still_replays(app_client):
    s = await create_session(app_client)
    path = f"/api/sessions/{s['session_id']}/events"
    body: dict[str, Any] = {"event_type": "T", "data": {"b": 1, "a": "été"}}
    first = await app_client.post(path, json=body, headers={"Idempotency-Key": "k1"})
    assert first.status == 201
    # As an older version stored it: Python's json, keys sorted, non-ASCII escaped.
    decoded = msgspec.json.decode(json.dumps(body).encode(), type=EventCreate)
    canonical = json.dumps(msgspec.to_builtins(decoded), sort_keys=True, separators=(",", ":"), default=str)
    legacy = hashlib.sha256(canonical.encode()).hexdigest()
    assert legacy != IdempotencyKey.of("", "", decoded).body_hash

    def rewrite(conn: Any) -> None:
        conn.execute("UPDATE idempotency_keys SET body_hash = ? WHERE key = ?", (legacy, "k1"))

    await app_client.app[BUS].store.write(rewrite)
    again = await app_client.post(path, json=body, headers={"Idempotency-Key": "k1"})
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["event_id"] == (await first.json())["event_id"]
    changed = await app_client.post(path, json={**body, "data": {"b": 2}}, headers={"Idempotency-Key": "k1"})
    assert_envelope(await changed.json(), "IDEMPOTENCY_KEY_REUSED")


async def test_another_body_under_a_key_of_this_version_costs_no_legacy_hash(app_client, monkeypatch):
    """The older hash (Python's json of the decoded body: the ~230 ms of an 800 KB body this
    change took off the loop) was made for every body that did not match, in the store's
    writer: a key used again with another large body, again and again, cost what it did before.
    It is made only for a key an older version stored (its hash has no version mark)."""
    s = await create_session(app_client)
    path = f"/api/sessions/{s['session_id']}/events"
    body: dict[str, Any] = {"event_type": "T", "data": {"n": 1}}
    assert (await app_client.post(path, json=body, headers={"Idempotency-Key": "k2"})).status == 201

    def refuse(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("the older hash was made")

    monkeypatch.setattr(idempotency, "json", SimpleNamespace(dumps=refuse))
    changed = await app_client.post(path, json={**body, "data": {"n": 2}}, headers={"Idempotency-Key": "k2"})
    assert_envelope(await changed.json(), "IDEMPOTENCY_KEY_REUSED")
    again = await app_client.post(path, json=body, headers={"Idempotency-Key": "k2"})
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true"
