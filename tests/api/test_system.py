"""Spec section 8: health, status, config, shutdown."""

from __future__ import annotations

import os

from llmgine_daemon import __version__
from llmgine_daemon.api.keys import SHUTDOWN

from tests.conftest import create_session


async def test_health(app_client):
    resp = await app_client.get("/api/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "healthy" and body["version"] == __version__
    assert body["timestamp"].endswith("Z")
    # Whole seconds, an integer as in the API contract's example ("uptime": 3600).
    assert type(body["uptime"]) is int and body["uptime"] >= 0
    assert resp.headers["X-Llmgine-Version"] == __version__


async def test_status_counts_storage(app_client, home, database_url):
    await create_session(app_client)
    body = await (await app_client.get("/api/status")).json()
    assert body["version"] == __version__ and body["pid"] == os.getpid()
    if database_url is None:
        assert body["storage"]["backend"] == "sqlite"
        assert body["storage"]["path"] == str(home / "data" / "llmgine.db")
    else:  # the URL without its password
        assert body["storage"]["backend"] == "postgresql"
        user, _, rest = database_url.removeprefix("postgresql://").partition(":")
        assert body["storage"]["path"] == f"postgresql://{user}@{rest.split('@', 1)[1]}"
    assert body["storage"]["size_bytes"] > 0
    assert body["counts"]["sessions"] == 1 and body["counts"]["events"] == 1
    assert isinstance(body["listeners"], list)
    cluster = body["cluster"]
    assert cluster["backend"] == body["storage"]["backend"] and cluster["lease_timeout"] == 15.0
    if database_url is None:  # one node, the whole bus: no leases, no heartbeat (bus/cluster.py's LocalCluster)
        nodes = [(n["node_id"], n["pid"], n["leases"]) for n in cluster["nodes"]]
        assert nodes == [(cluster["node_id"], os.getpid(), 0)]
    else:  # this node, registered in the database (bus/cluster_shared.py)
        assert [n["pid"] for n in cluster["nodes"]] == [os.getpid()]


async def test_config_sources_and_redaction(make_client, home):
    (home / "config").mkdir(parents=True, exist_ok=True)
    (home / "config" / "config.toml").write_text('[logging]\nlevel = "warning"\n')
    client = await make_client(API_KEY_SECRET="do-not-show", ENABLE_METRICS="false")
    body = await (await client.get("/api/config", headers={"Authorization": "Bearer do-not-show"})).json()
    by_key = {s["key"]: s for s in body["settings"]}
    assert body["config_file"] == str(home / "config" / "config.toml")
    assert by_key["logging.level"] == {"key": "logging.level", "env": "LOG_LEVEL", "value": "warning", "source": "file"}
    assert by_key["observability.enable_metrics"]["value"] is False
    assert by_key["observability.enable_metrics"]["source"] == "env"
    assert by_key["server.port"]["source"] == "default"
    assert by_key["security.api_key_secret"]["value"] == "********"
    assert (
        "do-not-show"
        not in await (await client.get("/api/config", headers={"Authorization": "Bearer do-not-show"})).text()
    )
    for env in (
        "API_HOST",
        "API_PORT",
        "API_WORKERS",
        "DATABASE_URL",
        "LOG_LEVEL",
        "LOG_FILE",
        "API_KEY_SECRET",
        "CORS_ORIGINS",
        "ENABLE_METRICS",
        "ENABLE_TRACING",
    ):
        assert env in {s["env"] for s in body["settings"]}


async def test_shutdown_is_accepted_then_signalled(app_client):
    resp = await app_client.post("/api/shutdown")
    assert resp.status == 202
    assert (await resp.json())["status"] == "shutting_down"
    await __import__("asyncio").wait_for(app_client.app[SHUTDOWN].wait(), timeout=5)
