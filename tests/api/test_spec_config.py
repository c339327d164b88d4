"""The API contract's configuration, as its users write it: the YAML config file
(``config/api.yaml``, its sections and keys) read by a real app."""

from __future__ import annotations

import pytest

from tests.conftest import assert_envelope

# The contract's own file, word for word but for the two paths (kept in the test's home).
SPEC_YAML = """\
# config/api.yaml
server:
  host: 0.0.0.0
  port: 8000
  workers: 4

database:
  url: sqlite:///{home}/data/llmgine.db

logging:
  level: INFO
  file: {home}/logs/api.log

security:
  api_key_secret: your-secret-key
  cors_origins:
    - http://localhost:3000
    - https://yourdomain.com

observability:
  enable_metrics: true
  enable_tracing: true
"""

backend_free = pytest.mark.sqlite_only(reason="the config file is read the same way on either backend")


@backend_free
async def test_the_spec_yaml_config_file_is_read(make_client, home):
    config = home / "config" / "api.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(SPEC_YAML.format(home=home))
    config.chmod(0o600)
    client = await make_client(authenticated=False, LLMGINE_CONFIG=str(config), API_WORKERS="")
    auth = {"Authorization": "Bearer your-secret-key"}  # security.api_key_secret, from the file
    body = await (await client.get("/api/config", headers=auth)).json()
    assert body["config_file"] == str(config)
    by_key = {s["key"]: (s["value"], s["source"]) for s in body["settings"]}
    assert by_key["server.host"] == ("0.0.0.0", "file")
    assert by_key["server.port"] == (8000, "file")
    assert by_key["server.workers"] == (4, "file")
    assert by_key["logging.level"] == ("info", "file")
    assert by_key["logging.file"] == (f"{home}/logs/api.log", "file")
    assert by_key["security.api_key_secret"] == ("********", "file")
    assert by_key["security.cors_origins"] == (["http://localhost:3000", "https://yourdomain.com"], "file")
    assert by_key["observability.enable_metrics"] == (True, "file")
    assert by_key["observability.enable_tracing"] == (True, "file")
    # The listed origin may call the API from a browser.
    resp = await client.get("/api/sessions", headers={**auth, "Origin": "http://localhost:3000"})
    assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert_envelope(await (await client.get("/api/sessions")).json(), "UNAUTHORIZED")
