"""The API contract's configuration, as its users write it: the YAML config file
(``config/api.yaml``, its sections and keys) and its environment variables in a ``.env`` file
(``llmgined --env-file``), read by a real app."""

from __future__ import annotations

import pytest
from llmgine_daemon.app import create_app
from llmgine_daemon.server import build_parser, settings_from_args
from llmgine_daemon.settings import ConfigError, read_env_file

from tests.conftest import assert_envelope, serve

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


# The contract's environment variables, as a `.env` file for `--env-file .env`.
SPEC_ENV_FILE = """\
# Server Configuration
API_HOST=0.0.0.0
API_PORT=8000
API_WORKERS=4

# Database
DATABASE_URL=sqlite:///{home}/data/llmgine.db

# Logging
LOG_LEVEL=INFO
LOG_FILE={home}/logs/api.log

# Security
API_KEY_SECRET=your-secret-key
CORS_ORIGINS=http://localhost:3000,https://yourdomain.com

# Observability
ENABLE_METRICS=true
ENABLE_TRACING=true
export LLMGINE_HOME="{home}"
"""


@backend_free
async def test_llmgined_env_file(home, aiohttp_client, monkeypatch):
    env_file = home / ".env"
    env_file.write_text(SPEC_ENV_FILE.format(home=home))
    for name in ("LLMGINE_HOME", "LLMGINE_CONFIG", "API_HOST", "API_PORT", "API_WORKERS", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name in ("LOG_FILE", "API_KEY_SECRET", "CORS_ORIGINS", "ENABLE_METRICS", "ENABLE_TRACING"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOG_LEVEL", "warning")  # the real environment wins over the file
    settings = settings_from_args(build_parser().parse_args(["--env-file", str(env_file)]))
    client = await serve(aiohttp_client, create_app(settings), settings)
    auth = {"Authorization": "Bearer your-secret-key"}
    body = await (await client.get("/api/config", headers=auth)).json()
    by_key = {s["key"]: (s["value"], s["source"]) for s in body["settings"]}
    assert by_key["server.host"] == ("0.0.0.0", "env") and by_key["server.port"] == (8000, "env")
    assert by_key["server.workers"] == (4, "env")
    assert by_key["database.url"] == (f"sqlite:///{home}/data/llmgine.db", "env")
    assert by_key["logging.level"] == ("warning", "env")
    assert by_key["logging.file"] == (f"{home}/logs/api.log", "env")
    assert by_key["security.cors_origins"] == (["http://localhost:3000", "https://yourdomain.com"], "env")
    assert by_key["observability.enable_metrics"] == (True, "env")
    assert body["config_file"] == str(home / "config" / "config.toml")  # LLMGINE_HOME from the file
    assert_envelope(await (await client.get("/api/sessions")).json(), "UNAUTHORIZED")


@pytest.mark.parametrize(
    "line, value",
    [
        ("A=plain value # a comment", "plain value"),
        ("export A='single # kept $HOME'", "single # kept $HOME"),
        ('A="two\\nlines \\"quoted\\""', 'two\nlines "quoted"'),
        ("A=", ""),
        ("  A = spaced  ", "spaced"),
    ],
)
def test_env_file_values(tmp_path, line, value):
    path = tmp_path / ".env"
    path.write_text(f"# comment\n\n{line}\n")
    assert read_env_file(path) == {"A": value}


@pytest.mark.parametrize("line", ["JUST_A_NAME", "1A=x", "A='unclosed", 'A="unclosed'])
def test_env_file_bad_line_names_file_and_line_not_value(tmp_path, line):
    path = tmp_path / ".env"
    path.write_text(f"OK=1\n{line}\n")
    with pytest.raises(ConfigError) as info:
        read_env_file(path)
    assert str(info.value).startswith(f"{path}:2: expected NAME=value")
    assert "unclosed" not in str(info.value)
