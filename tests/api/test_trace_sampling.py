"""Issue 18: spans are stored for a sampled fraction of traces (decided from the trace id at its
root), plus every failed span and every slow one; ids still reach every record. Against the
real app and a real SQLite file.

The trace ids are chosen, through the client's ``traceparent`` with the sampled flag unset:
the last 8 hex digits decide (``tracing.sampled_by_rate``), so an id ending in ``00000000`` is
in any fraction above 0 and one ending in ``ffffffff`` in none below 1.
"""

from __future__ import annotations

from typing import Any

from tests.api.bus_helpers import DUMMY, session_with_engine
from tests.api.test_observability import TP, get_json, scrape
from tests.api.test_usercode_observability import spans
from tests.conftest import assert_envelope, create_session
from tests.dbtools import open_db

SAMPLED = "4bf92f3577b34da6a3ce9290" + "00000000"
UNSAMPLED = "4bf92f3577b34da6a3ce9291" + "ffffffff"
PARENT = "00f067aa0ba902b7"


def traceparent(trace_id: str, flags: str = "00") -> dict[str, str]:
    return {"traceparent": f"00-{trace_id}-{PARENT}-{flags}"}


async def run_command(client: Any, sid: str, trace_id: str, flags: str = "00") -> dict[str, Any]:
    resp = await client.post(
        f"/api/sessions/{sid}/commands?wait=30",
        json={"command_type": DUMMY, "parameters": {"prompt": "p"}},
        headers=traceparent(trace_id, flags),
    )
    assert resp.status in (200, 201), await resp.text()
    record = await resp.json()
    assert record["status"] == "completed", record
    assert record["trace_id"] == trace_id
    return record


# No span counts as slow: under load a request can pass the default 250 ms, and a slow span is
# stored even in an unsampled trace (test_slow_spans_are_stored_in_an_unsampled_trace).
NEVER_SLOW = "600000"


async def test_sampled_trace_keeps_all_its_spans_across_the_queue(make_client):
    client = await make_client(LLMGINE_TRACE_SAMPLE_RATE="0.5")
    sid, _ = await session_with_engine(client)
    await run_command(client, sid, SAMPLED)
    trace = await get_json(client, f"/api/observability/traces/{SAMPLED}")
    names = {s["name"] for s in spans(trace["spans"])}
    # The request, and the queued command's run in another task (continued from the traceparent
    # kept with the command): the root's decision held everywhere.
    assert {"POST /api/sessions/{session_id}/commands", "command.queue_wait", "command.run", "engine.run"} <= names
    assert all("sampled" not in s["attributes"] for s in spans(trace["spans"]))


async def test_unsampled_trace_keeps_its_id_and_says_it_was_not_sampled(make_client):
    client = await make_client(LLMGINE_TRACE_SAMPLE_RATE="0.5", LLMGINE_SLOW_SPAN_MS=NEVER_SLOW)
    sid, _ = await session_with_engine(client)
    before = await scrape(client)
    record = await run_command(client, sid, UNSAMPLED)

    # The id is everywhere still: the command, its events, the response's traceparent.
    resp = await client.get(f"/api/sessions/{sid}", headers=traceparent(UNSAMPLED))
    assert resp.status == 200
    trace_id, _ = TP.match(resp.headers["traceparent"]).groups()
    assert trace_id == UNSAMPLED and resp.headers["traceparent"].endswith("-00")
    with open_db(client) as db:
        event_traces = {t for (t,) in db.execute("SELECT trace_id FROM events WHERE session_id = ?", (sid,))}
    assert record["trace_id"] in event_traces

    answer = await get_json(client, f"/api/observability/traces/{UNSAMPLED}", status=404)
    error = assert_envelope(answer, "NOT_FOUND")
    assert "was not sampled" in error["message"] and "50%" in error["message"]
    assert "LLMGINE_TRACE_SAMPLE_RATE" in error["message"] and "observability.slow_span_ms" in error["message"]
    assert error["details"] == {"trace_id": UNSAMPLED, "sampled": False, "sample_rate": 0.5}
    listing = await get_json(client, "/api/observability/traces?since=1h&limit=1000")
    assert UNSAMPLED not in {t["trace_id"] for t in listing["traces"]}

    # Metrics count every request, sampled or not.
    after = await scrape(client)
    key = (
        "llmgine_http_requests_total",
        (("method", "POST"), ("route", "/api/sessions/{session_id}/commands"), ("status", "200")),
    )
    key201 = (key[0], (*key[1][:2], ("status", "201")))
    moved = after.get(key, 0) - before.get(key, 0) + after.get(key201, 0) - before.get(key201, 0)
    assert moved == 1


async def test_client_sampled_flag_is_honoured(make_client):
    client = await make_client(LLMGINE_TRACE_SAMPLE_RATE="0", LLMGINE_SLOW_SPAN_MS=NEVER_SLOW)
    resp = await client.post("/api/sessions", json={}, headers=traceparent(UNSAMPLED, "01"))
    assert resp.status == 201 and resp.headers["traceparent"].endswith("-01")
    trace = await get_json(client, f"/api/observability/traces/{UNSAMPLED}")
    assert [s["name"] for s in trace["spans"]] == ["POST /api/sessions"]
    assert [c["name"] for c in trace["spans"][0]["children"]] == ["store.commit"]
    # Without the flag, the rate decides: 0 stores nothing.
    resp = await client.post("/api/sessions", json={}, headers=traceparent(SAMPLED))
    assert resp.status == 201 and resp.headers["traceparent"].endswith("-00")
    answer = await get_json(client, f"/api/observability/traces/{SAMPLED}", status=404)
    assert "was not sampled" in assert_envelope(answer, "NOT_FOUND")["message"]


async def test_failed_spans_are_stored_in_an_unsampled_trace(make_client):
    client = await make_client(LLMGINE_TRACE_SAMPLE_RATE="0")
    sid = (await create_session(client))["session_id"]
    resp = await client.post(
        f"/api/sessions/{sid}/handlers/commands",
        json={"command_type": "Boom", "handler_function": "def boom(c):\n    raise ValueError('no')\n"},
    )
    assert resp.status == 201
    resp = await client.post(f"/api/sessions/{sid}/commands?wait=30", json={"command_type": "Boom"})
    record = await resp.json()
    assert record["status"] == "failed", record
    assert resp.headers["traceparent"].endswith("-00")
    trace = await get_json(client, f"/api/observability/traces/{record['trace_id']}")
    stored = spans(trace["spans"])
    by_name = {s["name"]: s for s in stored}
    assert by_name["handler.run"]["status"] == "error" and "ValueError: no" in by_name["handler.run"]["error"]
    assert by_name["command.run"]["status"] == "error"
    # Only what the rule keeps: failed spans, or spans past the (default) slow threshold.
    for span in stored:
        assert span["status"] == "error" or span["duration_ms"] >= 250, span
        assert span["attributes"]["sampled"] is False


async def test_slow_spans_are_stored_in_an_unsampled_trace(make_client):
    # A threshold every span passes: the whole request is kept, marked as from an unsampled trace.
    client = await make_client(LLMGINE_TRACE_SAMPLE_RATE="0", LLMGINE_SLOW_SPAN_MS="0.000001")
    resp = await client.post("/api/sessions", json={}, headers=traceparent(UNSAMPLED))
    assert resp.status == 201 and resp.headers["traceparent"].endswith("-00")
    trace = await get_json(client, f"/api/observability/traces/{UNSAMPLED}")
    assert [s["name"] for s in trace["spans"]] == ["POST /api/sessions"]
    assert {c["name"] for c in trace["spans"][0]["children"]} == {"store.commit"}
    assert all(s["attributes"]["sampled"] is False for s in spans(trace["spans"]))


async def test_sampling_settings_are_validated(make_settings):
    import pytest
    from llmgine_daemon.settings import ConfigError

    assert make_settings(LLMGINE_TRACE_SAMPLE_RATE="1%")["observability.trace_sample_rate"] == 0.01
    assert make_settings(LLMGINE_TRACE_SAMPLE_RATE="0.25")["observability.trace_sample_rate"] == 0.25
    assert make_settings()["observability.slow_span_ms"] == 250.0
    for bad in ("2", "-0.1", "lots", "150%"):
        with pytest.raises(ConfigError, match="LLMGINE_TRACE_SAMPLE_RATE"):
            make_settings(LLMGINE_TRACE_SAMPLE_RATE=bad)
    for bad in ("-1", "slow", "inf"):
        with pytest.raises(ConfigError, match="LLMGINE_SLOW_SPAN_MS"):
            make_settings(LLMGINE_SLOW_SPAN_MS=bad)
