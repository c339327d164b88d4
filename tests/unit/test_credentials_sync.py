"""Keys and tokens across nodes sharing one database: two ``Credentials`` over one real store
stand for two nodes (what each knows is in its memory; the database is the truth).

A key made on one node works on the other at once (an unknown id makes it re-read); a key
revoked, or a session ended, on one node stops working on the other at its next sync, and
its WebSockets are told; each node keeps its own local CLI key.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from llmgine_daemon.bus.auth import MISS_SYNC_EVERY, AuthFailure, Credentials, local_key_name
from llmgine_daemon.bus.core import Bus


async def node(bus: Bus, *, shared: bool = True) -> Credentials:
    credentials = Credentials(bus.store)
    credentials.shared = shared
    await credentials.load()
    return credentials


async def test_a_key_made_on_one_node_works_on_the_other_at_once(bus: Bus):
    a, b = await node(bus), await node(bus)
    record, key = await a.create_key("ci", None)
    with pytest.raises(AuthFailure):
        b.verify(key)  # b has not seen it yet
    assert await b.sync_on_miss(key)
    assert b.verify(key).credential_id == record.key_id


async def test_unknown_credentials_make_a_node_reread_at_its_pace_at_most(bus: Bus):
    b = await node(bus)
    assert not await b.sync_on_miss("lgk_0123456789ab_" + "x" * 43)
    first = b.synced_at
    assert first > 0
    # A flood of made-up ids costs at most one read per MISS_SYNC_EVERY: the next miss waits.
    assert not await b.sync_on_miss("lgk_ba9876543210_" + "y" * 43)
    assert b.synced_at - first >= MISS_SYNC_EVERY - 0.05  # the reads, not their ends, are paced
    assert not await b.sync_on_miss("not-a-credential")


async def test_a_key_made_right_after_a_reread_is_still_found(bus: Bus):
    a, b = await node(bus), await node(bus)
    await b.sync()  # b has just read (as its periodic sync does)
    _, key = await a.create_key("ci", None)
    assert await b.sync_on_miss(key)  # waits out the pace, then reads again
    assert b.verify(key)


async def test_one_node_alone_never_rereads(bus: Bus):
    a = await node(bus, shared=False)
    assert not await a.sync_on_miss("lgk_0123456789ab_" + "x" * 43)
    assert a.synced_at == 0.0


async def test_a_key_revoked_on_one_node_stops_working_on_the_other_and_its_sockets_are_told(bus: Bus):
    a, b = await node(bus), await node(bus)
    record, key = await a.create_key("ci", None)
    await b.sync()
    assert b.verify(key)
    told: list[list[str]] = []
    b.on_revoked(told.append)
    await a.revoke_key(record.key_id)
    assert b.verify(key)  # until b catches up
    await b.sync()
    with pytest.raises(AuthFailure, match="revoked"):
        b.verify(key)
    assert told == [[record.key_id]]


async def test_a_session_ended_on_one_node_ends_its_tokens_on_the_other(bus: Bus):
    a, b = await node(bus), await node(bus)
    sid = (await bus.sessions.create(None, {})).session_id
    token_record, token = await a.mint_session_token(sid)
    assert await b.sync_on_miss(token)
    assert b.verify(token).session_id == sid
    told: list[list[str]] = []
    b.on_revoked(told.append)
    bus.sessions.hooks.append(a.session_ended)  # the session ends on node a
    bus.sessions.ending.append(a.end_tokens)
    await bus.sessions.close(sid)
    await b.sync()
    with pytest.raises(AuthFailure):
        b.verify(token)
    assert told == [[token_record.token_id]]


async def test_each_node_keeps_its_own_local_key(bus: Bus, tmp_path: Path):
    a, b = await node(bus), await node(bus)
    path_a, path_b = tmp_path / "a" / "local.key", tmp_path / "b" / "local.key"
    path_a.parent.mkdir()
    path_b.parent.mkdir()
    assert local_key_name(path_a) != local_key_name(path_b)
    await a.ensure_local_key(path_a)
    await b.sync()
    await b.ensure_local_key(path_b)
    await a.sync()
    # Neither start revoked the other's key.
    assert a.verify(path_a.read_text().strip()).kind == "key"
    assert a.verify(path_b.read_text().strip()).kind == "key"
    # Restarting a keeps its key (the file still holds a valid one).
    again = await node(bus)
    await again.ensure_local_key(path_a)
    assert again.verify(path_a.read_text().strip())
    # A lost key file: a new key for that file, the old one of that name revoked, b's kept.
    old = path_a.read_text().strip()
    path_a.unlink()
    await again.ensure_local_key(path_a)
    with pytest.raises(AuthFailure, match="revoked"):
        again.verify(old)
    assert again.verify(path_b.read_text().strip())


async def test_a_verified_credential_remembered_still_meets_revocation_expiry_and_session_end(bus: Bus):
    """verify() remembers what it verified (no SHA-256 per request), yet a revoked key, an
    expired key, an ended session's token and a record replaced by a re-read are each judged
    afresh on their next use."""
    a = await node(bus, shared=False)
    record, key = await a.create_key("ci", None)
    assert a.verify(key) == a.verify(key)  # the second from memory
    await a.revoke_key(record.key_id)
    with pytest.raises(AuthFailure, match="revoked"):
        a.verify(key)

    record, key = await a.create_key("ci", None)
    a.verify(key)
    record.expires_at = "2000-01-01T00:00:00Z"
    with pytest.raises(AuthFailure, match="expired"):
        a.verify(key)

    session = await bus.sessions.create(None, {})
    token = a.pending_session_token()
    await bus.store.write(lambda c: token.write(c, session.session_id))
    presented = token.publish()
    assert a.verify(presented).session_id == session.session_id
    await a.session_ended(session.session_id, False)
    with pytest.raises(AuthFailure):
        a.verify(presented)

    record, key = await a.create_key("ci", None)
    a.verify(key)
    await a.sync()  # records replaced by fresh ones read from the database
    assert a.verify(key).credential_id == record.key_id
    await bus.store.write(
        lambda c: c.execute("UPDATE api_keys SET revoked_at = 'x' WHERE key_id = ?", (record.key_id,))
    )
    await a.sync()
    with pytest.raises(AuthFailure, match="revoked"):
        a.verify(key)
