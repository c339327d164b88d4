"""Identifiers: UUID version 7 (time-ordered), so ids made one after another sit together in
the indexes; trace ids likewise start with the time."""

from __future__ import annotations

import time
import uuid

from llmgine_daemon.bus.codec import new_id
from llmgine_daemon.observability.tracing import TRACE_ID, new_trace_id


def test_ids_are_uuid7_unique_and_ordered_by_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_id() for _ in range(5000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for text in ids:
        u = uuid.UUID(text)
        assert str(u) == text and u.version == 7 and u.variant == uuid.RFC_4122
        assert before <= u.int >> 80 <= after
    stamps = [uuid.UUID(t).int >> 80 for t in ids]
    assert stamps == sorted(stamps)
    # 74 random bits: the low bits differ even within one millisecond.
    assert len({uuid.UUID(t).int & ((1 << 62) - 1) for t in ids}) == len(ids)


def test_trace_ids_are_w3c_and_start_with_the_time() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_trace_id() for _ in range(1000)]
    assert all(TRACE_ID.match(t) and t != "0" * 32 for t in ids)
    assert len(set(ids)) == len(ids)
    assert all(before <= int(t[:12], 16) <= time.time_ns() // 1_000_000 for t in ids)
