"""Settings precedence, validation messages and config-file editing."""

from __future__ import annotations

import stat
import tomllib

import pytest
from llmgine_daemon.settings import (
    ConfigError,
    database_path,
    get_paths,
    load_settings,
    write_config_value,
)


def write(home, text):
    (home / "config").mkdir(parents=True, exist_ok=True)
    path = home / "config" / "config.toml"
    path.write_text(text)
    return path


def test_defaults(home):
    s = load_settings(env={"LLMGINE_HOME": str(home)})
    assert s.sources["server.port"] == "default"
    assert not s.tcp_enabled
    assert s.socket_path == home / "run" / "llmgined.sock"
    assert s.database_path == home / "data" / "llmgine.db"
    assert s["database.synchronous"] == "full"


def test_precedence_file_env_flag(home):
    write(home, "[server]\nport = 9001\nhost = '127.0.0.1'\n[logging]\nlevel = 'debug'\n")
    env = {"LLMGINE_HOME": str(home), "API_PORT": "9002", "LOG_LEVEL": "ERROR"}
    s = load_settings(env=env, flags={"server.port": "9003"})
    assert (s.port, s.sources["server.port"]) == (9003, "flag")
    assert (s["logging.level"], s.sources["logging.level"]) == ("error", "env")
    assert (s.host, s.sources["server.host"]) == ("127.0.0.1", "file")
    assert s.tcp_enabled


def test_storage_url_is_another_name_for_the_database_url(home):
    write(home, "[storage]\nurl = 'postgresql://llmgine@db.example:5432/bus'\n")
    s = load_settings(env={"LLMGINE_HOME": str(home)})
    assert (s["database.url"], s.sources["database.url"]) == ("postgresql://llmgine@db.example:5432/bus", "file")
    write(home, "[storage]\nurll = 'x'\n")
    with pytest.raises(ConfigError, match="storage.urll"):
        load_settings(env={"LLMGINE_HOME": str(home)})


def test_spec_yaml_sections_as_toml_tables(home):
    write(
        home,
        """
[server]
host = "127.0.0.1"
port = 8000
workers = 4
[database]
url = "sqlite:///./llmgine.db"
[logging]
level = "INFO"
file = "logs/api.log"
[security]
api_key_secret = "your-secret-key"
cors_origins = ["http://localhost:3000", "https://yourdomain.com"]
[observability]
enable_metrics = true
enable_tracing = true
""",
    )
    s = load_settings(env={"LLMGINE_HOME": str(home)})
    assert s["security.cors_origins"] == ["http://localhost:3000", "https://yourdomain.com"]
    assert s.workers == 4
    assert s.database_path.name == "llmgine.db" and s.database_path.is_absolute()


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("server:\n  port: [\n", "not valid YAML: expected the node content, but found '<stream end>' (line 3"),
        ("- server\n", "must be a mapping of sections"),
        ("server:\n  prot: 1\n", "unknown key 'server.prot'"),
        ("nope:\n  x: 1\n", "unknown table [nope]"),
        ("server:\n  port: eighty\n", "server.port = 'eighty': expected an integer"),
    ],
)
def test_bad_yaml_file_names_file_key_value(home, text, fragment):
    path = home / "api.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={"LLMGINE_HOME": str(home)})
    assert str(info.value).startswith(f"{path}: ") and fragment in str(info.value)


def test_yaml_empty_values_leave_defaults(home):
    path = home / "api.yml"
    path.write_text("# comments only, then empty sections\nserver:\nlogging:\n  file:\n  level: DEBUG\n")
    s = load_settings(path, env={"LLMGINE_HOME": str(home)})
    assert (s["logging.level"], s.sources["logging.level"]) == ("debug", "file")
    assert (s["logging.file"], s.sources["logging.file"]) == (None, "default")
    assert write_config_value(path, "logging.level", "info")  # it was "writes TOML only"
    s = load_settings(path, env={"LLMGINE_HOME": str(home)})
    assert (s["logging.level"], s.sources["logging.level"]) == ("info", "file")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[server]\nprot = 1\n", "unknown key 'server.prot'"),
        ("[nope]\nx = 1\n", "unknown table [nope]"),
        ("[server]\nport = 'eighty'\n", "server.port = 'eighty': expected an integer"),
        ("[server]\nport = 70000\n", "expected a port number"),
        ("[server\nport = 1\n", "not valid TOML"),
        ("[observability]\nenable_metrics = 'maybe'\n", "expected a boolean"),
        # A table written as a value was "unknown key 'server'" (the key is known, as a table).
        ("server = 5\n", "server is a table ([server]), not a value"),
        (
            "[database]\nbusy_timeout = 1e308\n",
            "database.busy_timeout = 1e+308: expected a positive number of seconds, at most 1e+09",
        ),
        ("[database]\nevent_retention_days = 100000\n", "expected a number of days from 0 to 36500"),
        ("[webhooks]\nkeep_days = 1e6\n", "expected a positive number of days, at most 36500"),
    ],
)
def test_bad_file_names_file_key_value(home, text, fragment):
    path = write(home, text)
    with pytest.raises(ConfigError) as info:
        load_settings(env={"LLMGINE_HOME": str(home)})
    assert fragment in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("none", "none"), ("None", "none"), (" 70000 - 70009 ", "70000-70009"), ("70000-70000", "70000-70000")],
)
def test_sandbox_uids_is_a_range_or_empty(home, value, expected):
    settings = load_settings(env={"LLMGINE_HOME": str(home), "LLMGINE_SANDBOX_UIDS": value})
    assert settings["sandbox.uids"] == expected


@pytest.mark.parametrize("value", ["70000", "0-10", "10-5", "a-b", "1-4294967295", "-5"])
def test_a_bad_sandbox_uids_range_is_refused(home, value):
    with pytest.raises(ConfigError, match="sandbox.uids .*expected"):
        load_settings(env={"LLMGINE_HOME": str(home), "LLMGINE_SANDBOX_UIDS": value})


def test_bad_env_names_variable(home):
    with pytest.raises(ConfigError, match="environment API_PORT: server.port = 'x'"):
        load_settings(env={"LLMGINE_HOME": str(home), "API_PORT": "x"})


def test_database_urls(home):
    paths = get_paths({"LLMGINE_HOME": str(home)})
    assert database_path("sqlite:////tmp/x.db", paths).as_posix() == "/tmp/x.db"
    # PostgreSQL: the bus is in the database; the SQLite path stays the default one (unused).
    assert database_path("postgresql://user:pass@db/llmgine", paths) == paths.database
    with pytest.raises(ConfigError, match="not supported") as err:
        database_path("mysql://user:pass@db/llmgine", paths)
    assert "pass" not in str(err.value) and "********" in str(err.value)
    with pytest.raises(ConfigError, match="port is not a number") as err:
        database_path("postgresql://user:s3cret@db:x/llmgine", paths)
    assert "s3cret" not in str(err.value)
    with pytest.raises(ConfigError, match="needs a database name"):
        database_path("postgresql://user@db:5432", paths)


def test_missing_explicit_config_file(home):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(home / "nope.toml", env={"LLMGINE_HOME": str(home)})


def test_write_config_value_keeps_everything_else(home):
    path = write(home, "# comment\n[server]\nport = 9000\n[logging]\nlevel = 'info'\n")
    write_config_value(path, "server.host", "127.0.0.1")
    write_config_value(path, "observability.enable_metrics", False)
    doc = tomllib.loads(path.read_text())
    assert doc == {
        "server": {"port": 9000, "host": "127.0.0.1"},
        "logging": {"level": "info"},
        "observability": {"enable_metrics": False},
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    write_config_value(path, "observability.enable_metrics", None)
    assert "observability" not in tomllib.loads(path.read_text())
    with pytest.raises(ConfigError):
        write_config_value(path, "server.nope", 1)


def test_database_url_passwords_are_hidden_wherever_they_are_given(tmp_path) -> None:
    from llmgine_daemon.settings import redact_url

    assert redact_url("postgresql://u:pw@h/db") == "postgresql://u:********@h/db"
    assert redact_url("postgresql://u@h/db?sslmode=require&password=pw&x=1") == (
        "postgresql://u@h/db?sslmode=require&password=********&x=1"
    )
    assert redact_url("host=h password='p w\\' x' dbname=d") == "host=h password=******** dbname=d"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    # `llmgine config show` (GET /api/config) shows it through Settings.redacted.
    settings = load_settings(env={"LLMGINE_HOME": str(tmp_path), "DATABASE_URL": "postgresql://u@h/db?password=pw"})
    assert settings.redacted("database.url") == "postgresql://u@h/db?password=********"


def test_log_level_takes_warn_and_fatal_as_the_log_api_does(home):
    """LOG_LEVEL=WARN stopped the daemon at start ("expected one of debug, info, warning, ...")
    while POST /api/observability/logs took "warn": both take Python's aliases now."""
    for given, level in (("WARN", "warning"), ("fatal", "critical"), ("Info", "info")):
        s = load_settings(env={"LLMGINE_HOME": str(home), "LOG_LEVEL": given})
        assert s["logging.level"] == level
        assert load_settings(env={"LLMGINE_HOME": str(home)}, flags={"logging.level": given})["logging.level"] == level
    with pytest.raises(ConfigError, match="expected one of debug, info, warning, error, critical"):
        load_settings(env={"LLMGINE_HOME": str(home), "LOG_LEVEL": "trace"})
