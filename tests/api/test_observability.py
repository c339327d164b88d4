"""Spec section 7: logs, metrics, traces - against the real app and a real SQLite file."""

from __future__ import annotations

import contextlib
import logging
import re

import pytest
from aiohttp import web
from llmgine_daemon.api.keys import BUS, OBSERVABILITY
from llmgine_daemon.sandbox.pool import SandboxUnavailable
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import assert_envelope, create_session
from tests.dbtools import dump_all, open_db

TP = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$")
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"

log = logging.getLogger("llmgine.test")


@pytest.fixture
def route_client(aiohttp_client, make_settings):
    """``await route_client(**env)``: the real app plus one route whose handler logs, the way
    bus code deep below a request would."""
    from llmgine_daemon.app import create_app

    from tests.conftest import authorize

    async def handler(request: web.Request) -> web.Response:
        level = logging.getLevelName(request.query.get("level", "info").upper())
        log.log(level, "hello from %s", request.match_info["session_id"])
        return web.json_response({})

    async def make(**env):
        app = create_app(make_settings(**env))
        app.router.add_get("/api/sessions/{session_id}/test-log", handler)
        client = authorize(await aiohttp_client(app))
        # The sandbox pool logs once it has checked the isolation, in the background: let that
        # line be written before the test's own, or it lands among them (under load, after a
        # cursor). (It starts no worker: none of these tests runs user code.)
        with contextlib.suppress(SandboxUnavailable):
            await app[BUS].sandbox_pool().wait_probed()
        return client

    return make


async def get_json(client, path, status=200, **kwargs):
    resp = await client.get(path, **kwargs)
    assert resp.status == status, await resp.text()
    return await resp.json()


# -- traces --------------------------------------------------------------------------------------


async def test_traceparent_continued_and_returned(app_client):
    resp = await app_client.post(
        "/api/sessions", json={"name": "t"}, headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
    )
    assert resp.status == 201
    trace_id, span_id = TP.match(resp.headers["traceparent"]).groups()
    assert trace_id == CLIENT_TRACE and span_id != CLIENT_SPAN

    trace = await get_json(app_client, f"/api/observability/traces/{CLIENT_TRACE}")
    assert trace["trace_id"] == CLIENT_TRACE and trace["status"] == "ok"
    [root] = trace["spans"]
    assert root["name"] == "POST /api/sessions" and root["kind"] == "server"
    assert root["span_id"] == span_id and root["parent_id"] == CLIENT_SPAN
    assert root["attributes"]["http.status_code"] == 201
    assert [c["name"] for c in root["children"]] == ["store.commit"]
    commit = root["children"][0]
    assert commit["parent_id"] == span_id and commit["attributes"]["batch_size"] >= 1
    assert trace["span_count"] == 2
    session_id = (await resp.json())["session_id"]
    assert root["attributes"]["session_id"] == session_id  # known only after the handler ran
    listing = await get_json(app_client, f"/api/observability/traces?session_id={session_id}")
    assert [t["trace_id"] for t in listing["traces"]] == [CLIENT_TRACE]

    # the event recorded by that request carries its trace id
    session = await resp.json()
    with open_db(app_client) as db:
        [(event_trace,)] = db.execute("SELECT trace_id FROM events WHERE session_id = ?", (session["session_id"],))
    assert event_trace == CLIENT_TRACE


async def test_new_trace_when_none_or_malformed(app_client):
    for headers in ({}, {"traceparent": "garbage"}, {"traceparent": f"00-{'0' * 32}-{CLIENT_SPAN}-01"}):
        resp = await app_client.get("/api/sessions", headers=headers)
        trace_id, _ = TP.match(resp.headers["traceparent"]).groups()
        assert trace_id not in (CLIENT_TRACE, "0" * 32)
    # error responses carry one too, and so do unknown routes
    resp = await app_client.get("/api/sessions/nope")
    assert resp.status == 404 and TP.match(resp.headers["traceparent"])
    resp = await app_client.get("/no/such/route")
    assert resp.status == 404 and TP.match(resp.headers["traceparent"])


async def test_trace_list_and_errors(app_client):
    session = await create_session(app_client)
    sid = session["session_id"]
    resp = await app_client.delete(f"/api/sessions/{sid}")
    trace_id = TP.match(resp.headers["traceparent"]).group(1)
    listing = await get_json(app_client, f"/api/observability/traces?session_id={sid}")
    by_id = {t["trace_id"]: t for t in listing["traces"]}
    assert trace_id in by_id
    assert by_id[trace_id]["root"] == "DELETE /api/sessions/{session_id}"
    assert by_id[trace_id]["session_id"] == sid and by_id[trace_id]["span_count"] >= 2
    # observability reads are not traced (pollers would flood the store)
    assert not any(t["root"].startswith("GET /api/observability") for t in listing["traces"])
    everything = await get_json(app_client, "/api/observability/traces?since=1h")
    assert len(everything["traces"]) >= 2
    assert (await get_json(app_client, "/api/observability/traces?since=2999-01-01T00:00:00Z"))["traces"] == []

    missing = await get_json(app_client, f"/api/observability/traces/{'a' * 32}", status=404)
    assert_envelope(missing, "NOT_FOUND")
    bad = await get_json(app_client, "/api/observability/traces/xyz", status=422)
    assert_envelope(bad, "VALIDATION_ERROR")
    bad = await get_json(app_client, "/api/observability/traces?since=yesterday", status=422)
    assert assert_envelope(bad, "VALIDATION_ERROR")["details"]["field"] == "since"


async def test_tracing_disabled_records_nothing(make_client):
    client = await make_client(ENABLE_TRACING="false")
    resp = await client.post("/api/sessions", json={}, headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
    # ids still propagate (logs and responses correlate), but nothing is recorded
    assert TP.match(resp.headers["traceparent"]).group(1) == CLIENT_TRACE
    assert (await get_json(client, "/api/observability/traces"))["traces"] == []
    body = await get_json(client, f"/api/observability/traces/{CLIENT_TRACE}", status=404)
    assert "disabled" in body["error"]["message"]
    with open_db(client, telemetry=True) as db:
        assert db.execute("SELECT COUNT(*) FROM spans").fetchone()[0] == 0


# -- logs ----------------------------------------------------------------------------------------


async def post_log(client, status=201, **body):
    resp = await client.post("/api/observability/logs", json=body)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_manual_logging(app_client):
    session = await create_session(app_client)
    record = await post_log(
        app_client,
        level="warning",
        message="User action completed",
        metadata={"user_id": "user123", "api_key": "sk-live-123456789abcdef", "session_id": session["session_id"]},
    )
    assert record["id"] > 0 and record["source"] == "client" and record["level"] == "warning"
    assert record["session_id"] == session["session_id"]
    assert record["metadata"]["user_id"] == "user123"
    assert record["metadata"]["api_key"] == "[redacted]"
    assert TP.match(f"00-{record['trace_id']}-{record['span_id']}-01") and record["request_id"]
    listed = await get_json(app_client, f"/api/observability/logs?session_id={session['session_id']}")
    assert [r["id"] for r in listed["logs"]] == [record["id"]]
    assert listed["logs"][0] == record
    # defaults: level info
    assert (await post_log(app_client, message="x"))["level"] == "info"


async def test_a_clients_exception_text_cannot_forge_log_lines(app_client):
    """ "exception" is printed as it is (the daemon's own traceback); a client's goes under
    another name and is rendered escaped like the rest of its record."""
    from llmgine_cli.render_observability import log_line

    record = await post_log(app_client, message="hi", metadata={"exception": "a\nFORGED CRITICAL\x1b[2J"})
    assert "exception" not in record["metadata"]
    assert record["metadata"]["client_exception"] == "a\nFORGED CRITICAL\x1b[2J"
    line = log_line(record)
    assert "\n" not in line and "\x1b" not in line, line


async def test_manual_logging_validation(app_client):
    for body, field in (
        ({"level": "loud", "message": "x"}, "level"),
        ({"level": "info"}, "message"),
        ({"message": "x", "extra": 1}, "extra"),
        ({"message": ""}, "message"),
    ):
        payload = await post_log(app_client, status=422, **body)
        assert assert_envelope(payload, "VALIDATION_ERROR")["details"]["field"] == field


async def test_logs_filtered_by_level_session_time_text(route_client):
    client = await route_client()
    s1 = (await create_session(client))["session_id"]
    s2 = (await create_session(client))["session_id"]
    await client.get(f"/api/sessions/{s1}/test-log?level=debug")  # below LOG_LEVEL=info: dropped
    await client.get(f"/api/sessions/{s1}/test-log?level=info")
    await client.get(f"/api/sessions/{s1}/test-log?level=error")
    await client.get(f"/api/sessions/{s2}/test-log?level=warning")
    await post_log(client, level="critical", message="Disk on fire", metadata={"session_id": s2})

    mine = await get_json(client, f"/api/observability/logs?session_id={s1}")
    assert [(r["level"], r["message"]) for r in mine["logs"]] == [
        ("info", f"hello from {s1}"),
        ("error", f"hello from {s1}"),
    ]
    # records logged deep inside a request carry its session, request and trace
    first = mine["logs"][0]
    assert first["logger"] == "llmgine.test" and first["source"] == "daemon"
    assert first["request_id"] and first["trace_id"] and first["span_id"]

    warn_up = await get_json(client, "/api/observability/logs?level=warning&limit=100")
    # (Only ours: asyncio may warn meanwhile about a child process of an earlier test's sandbox.)
    ours = [r for r in warn_up["logs"] if r["logger"] != "asyncio"]
    assert [r["level"] for r in ours] == ["error", "warning", "critical"]
    assert all(r["level"] != "info" for r in warn_up["logs"])

    text = await get_json(client, "/api/observability/logs?q=ON%20FIRE")
    assert [r["message"] for r in text["logs"]] == ["Disk on fire"]

    assert (await get_json(client, "/api/observability/logs?since=2999-01-01T00:00:00Z"))["logs"] == []
    assert (await get_json(client, "/api/observability/logs?until=2000-01-01T00:00:00Z"))["logs"] == []
    recent = await get_json(client, f"/api/observability/logs?since=10m&session_id={s2}")
    assert len(recent["logs"]) == 2
    cutoff = recent["logs"][1]["timestamp"]
    before = await get_json(client, f"/api/observability/logs?until={cutoff}&session_id={s2}")
    assert [r["message"] for r in before["logs"]] == [f"hello from {s2}"]

    # limit keeps the newest; after= is a cursor for following
    last_two = await get_json(client, "/api/observability/logs?level=warning&limit=2")
    assert [r["level"] for r in last_two["logs"]] == ["warning", "critical"]
    cursor = last_two["next_after"]
    assert (await get_json(client, f"/api/observability/logs?after={cursor}"))["logs"] == []
    newer = await post_log(client, message="later")
    follow = await get_json(client, f"/api/observability/logs?after={cursor}")
    assert [r["id"] for r in follow["logs"]] == [newer["id"]] and follow["next_after"] == newer["id"]

    bad = await get_json(client, "/api/observability/logs?level=verbose", status=422)
    assert assert_envelope(bad, "VALIDATION_ERROR")["details"]["field"] == "level"


async def test_log_level_setting_honoured(route_client):
    client = await route_client(LOG_LEVEL="error")
    sid = (await create_session(client))["session_id"]
    await client.get(f"/api/sessions/{sid}/test-log?level=warning")
    await client.get(f"/api/sessions/{sid}/test-log?level=error")
    got = await get_json(client, f"/api/observability/logs?session_id={sid}")
    assert [r["level"] for r in got["logs"]] == ["error"]


async def test_secrets_never_logged_or_traced(route_client):
    client = await route_client(API_KEY_SECRET="s3cret-key-value")
    auth = {"Authorization": "Bearer s3cret-key-value"}
    resp = await client.post("/api/sessions", json={}, headers=auth)
    sid = (await resp.json())["session_id"]
    await client.get(f"/api/sessions/{sid}/test-log", headers=auth)
    await post_log_auth(client, auth, message="token is Bearer abcdefghijkl", metadata={"password": "pw"})
    await get_json(client, "/api/observability/logs", headers=auth)  # flush
    dump = dump_all(client)  # every row of both databases
    assert "s3cret-key-value" not in dump and "abcdefghijkl" not in dump and "'pw'" not in dump
    assert "Bearer [redacted]" in dump


async def post_log_auth(client, headers, **body):
    resp = await client.post("/api/observability/logs", json=body, headers=headers)
    assert resp.status == 201, await resp.text()


async def test_log_retention_bound(make_client):
    client = await make_client(LLMGINE_LOG_RETENTION_ROWS="10", LLMGINE_TRACE_RETENTION_SPANS="15")
    ids = [(await post_log(client, message=f"m{i}"))["id"] for i in range(30)]
    for _ in range(20):
        await create_session(client)
    kept = await get_json(client, "/api/observability/logs?limit=1000")
    assert len(kept["logs"]) <= 10
    assert kept["logs"][-1]["message"] in ("m29",) or kept["logs"][-1]["id"] > ids[-1]
    await get_json(client, "/api/observability/traces")  # flush spans
    with open_db(client, telemetry=True) as db:
        assert db.execute("SELECT COUNT(*) FROM logs").fetchone()[0] <= 10
        assert db.execute("SELECT COUNT(*) FROM spans").fetchone()[0] <= 15


# -- metrics -------------------------------------------------------------------------------------


def prom(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def scrape(client) -> dict:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    return prom(await resp.text())


async def test_prometheus_parses_and_counters_move(app_client):
    before = await scrape(app_client)
    key = ("llmgine_http_requests_total", (("method", "POST"), ("route", "/api/sessions"), ("status", "201")))
    assert before.get(key, 0) == 0
    for _ in range(3):
        await create_session(app_client)
    after = await scrape(app_client)
    assert after[key] == 3
    assert after[("llmgine_events_published_total", (("type", "SessionStarted"),))] == 3
    assert after[("llmgine_storage_transactions_total", (("outcome", "ok"),))] >= 3
    assert after[("llmgine_storage_batch_size_count", ())] >= 3
    count = ("llmgine_http_request_duration_seconds_count", (("method", "POST"), ("route", "/api/sessions")))
    inf = (
        "llmgine_http_request_duration_seconds_bucket",
        (("le", "+Inf"), ("method", "POST"), ("route", "/api/sessions")),
    )
    assert after[count] == 3 and after[inf] == 3
    assert after[("llmgine_ws_subscribers", ())] == 0
    # routes are templates, never raw ids
    assert not any(
        "/api/sessions/" in dict(labels).get("route", "{") and "{" not in dict(labels)["route"] for _, labels in after
    )


async def test_metrics_json(app_client):
    session = await create_session(app_client)
    await app_client.get("/api/sessions/does-not-exist")
    body = await get_json(app_client, "/api/observability/metrics")
    assert body["enabled"] is True and body["session_id"] is None and body["uptime"] >= 0
    families = {m["name"]: m for m in body["metrics"]}
    assert families["http_requests_total"]["type"] == "counter"
    statuses = {s["labels"]["status"] for s in families["http_requests_total"]["series"]}
    assert {"201", "404"} <= statuses
    [latency] = [
        s
        for s in families["http_request_duration_seconds"]["series"]
        if s["labels"] == {"route": "/api/sessions", "method": "POST"}
    ]
    assert latency["count"] == 1 and latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]

    per_session = await get_json(app_client, f"/api/observability/metrics?session_id={session['session_id']}")
    assert per_session["session_id"] == session["session_id"]
    families = {m["name"]: m for m in per_session["metrics"]}
    assert families["events_published_total"]["series"] == [{"labels": {"type": "SessionStarted"}, "value": 1.0}]
    assert families["command_queue_depth"]["series"][0]["value"] == 0
    missing = await get_json(app_client, "/api/observability/metrics?session_id=nope", status=404)
    assert_envelope(missing, "SESSION_NOT_FOUND")


async def test_metrics_disabled_stops_collecting(make_client):
    client = await make_client(ENABLE_METRICS="false")
    await create_session(client)
    resp = await client.get("/metrics")
    assert_envelope(await resp.json(), "NOT_FOUND")
    body = await get_json(client, "/api/observability/metrics")
    assert body["enabled"] is False and body["metrics"] == []

    registry = client.app[OBSERVABILITY].registry
    assert all(not series for series in registry._values.values())


async def test_one_session_cannot_take_every_event_type_series(app_client):
    """events_published_total keeps 500 label sets and folds the rest into `_other` for the
    daemon's lifetime: a token publishing 500 made-up types folded every later type of every
    session. A session brings at most 50 types; its others fold alone."""
    a, b = await create_session(app_client), await create_session(app_client)
    before = await scrape(app_client)
    for i in range(60):
        resp = await app_client.post(f"/api/sessions/{a['session_id']}/events", json={"event_type": f"Junk{i}"})
        assert resp.status == 201
    resp = await app_client.post(f"/api/sessions/{b['session_id']}/events", json={"event_type": "Mine"})
    assert resp.status == 201
    after = await scrape(app_client)
    junk = [dict(labels)["type"] for name, labels in after if name == "llmgine_events_published_total"]
    assert len([t for t in junk if t.startswith("Junk")]) == 50
    other = ("llmgine_events_published_total", (("type", "_other"),))
    assert after.get(other, 0) - before.get(other, 0) == 10
    assert after[("llmgine_events_published_total", (("type", "Mine"),))] == 1
    assert after[("llmgine_events_published_total", (("type", "SessionStarted"),))] >= 2  # the bus's own
