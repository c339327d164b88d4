"""`llmgine config path | show | get | set | unset`."""

from __future__ import annotations

import json
import tomllib

from tests.clitools import one_line

CONFIG = """\
# my settings
[server]
host = "127.0.0.1"
workers = 2

[logging]
level = "debug"

[security]
cors_origins = ["http://a.example", "http://b.example"]
"""


def test_path(cold_cli, cold_home):
    result = cold_cli("config", "path")
    assert result.exit_code == 0
    assert result.stdout == f"{cold_home}/config/config.toml\n"
    assert json.loads(cold_cli("config", "path", "-o", "json").stdout) == {
        "config_file": f"{cold_home}/config/config.toml"
    }
    moved = cold_cli("config", "path", LLMGINE_CONFIG=str(cold_home / "other.toml"))
    assert moved.stdout.strip() == str(cold_home / "other.toml")


def test_show_asks_the_daemon(cli, daemon):
    view = json.loads(cli("config", "show", "-o", "json").stdout)
    by_key = {s["key"]: s for s in view["settings"]}
    # The shared daemon was started with --port: only the daemon knows that came from a flag.
    assert by_key["server.port"] == {"key": "server.port", "env": "API_PORT", "value": daemon.port, "source": "flag"}
    plain = cli("config", "show").stdout.splitlines()
    assert plain[0].split() == ["KEY", "VALUE", "SOURCE", "ENV"]  # the value before the env name (80 columns)
    assert "server.port" in cli("config", "show", "-q").stdout.split()


def test_get_from_daemon_and_by_env_name(cli, daemon):
    assert cli("config", "get", "server.port").stdout == f"{daemon.port}\n"
    assert cli("config", "get", "API_PORT").stdout == f"{daemon.port}\n"
    assert cli("config", "get", "server.host").stdout == "\n"  # unset: empty
    value = json.loads(cli("config", "get", "server.port", "-o", "json").stdout)
    assert value["source"] == "flag"


def test_show_without_daemon_exits_3_and_local_works(cold_cli, cold_home):
    # Exit 3 names --local too, which works without a daemon (it named only `daemon start`).
    for args, local in ((["show"], "config show --local"), (["get", "API_PORT"], "config get server.port --local")):
        down = cold_cli("config", *args)
        assert down.exit_code == 3 and local in one_line(down.stderr), down.stderr
    result = cold_cli("config", "show", "--local", "-o", "json", API_PORT="9123", API_KEY_SECRET="hush")
    assert result.exit_code == 0
    view = json.loads(result.stdout)
    by_key = {s["key"]: s for s in view["settings"]}
    assert by_key["server.port"]["value"] == 9123 and by_key["server.port"]["source"] == "env"
    assert by_key["security.api_key_secret"]["value"] == "********"  # redacted
    assert by_key["logging.level"]["source"] == "default"
    assert view["config_file"] == f"{cold_home}/config/config.toml"


def test_set_and_unset_keep_every_other_key(cold_cli, cold_home):
    path = cold_home / "config" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text(CONFIG)

    result = cold_cli("config", "set", "server.port", "9001")
    assert result.exit_code == 0 and result.stdout == ""
    assert "restart" in one_line(result.stderr)
    assert cold_cli("config", "set", "CORS_ORIGINS", "http://c.example,http://d.example").exit_code == 0
    assert cold_cli("config", "set", "observability.enable_metrics", "false").exit_code == 0
    doc = tomllib.loads(path.read_text())
    assert doc == {
        "server": {"host": "127.0.0.1", "workers": 2, "port": 9001},
        "logging": {"level": "debug"},
        "security": {"cors_origins": ["http://c.example", "http://d.example"]},
        "observability": {"enable_metrics": False},
    }
    local = cold_cli("config", "get", "server.port", "--local", "-o", "json").stdout
    assert json.loads(local) == {"key": "server.port", "env": "API_PORT", "value": 9001, "source": "file"}

    assert cold_cli("config", "unset", "server.port").exit_code == 0
    assert cold_cli("config", "unset", "observability.enable_metrics").exit_code == 0
    doc = tomllib.loads(path.read_text())
    assert doc["server"] == {"host": "127.0.0.1", "workers": 2}
    assert "observability" not in doc and doc["logging"] == {"level": "debug"}
    assert cold_cli("config", "get", "server.port", "--local").stdout == "\n"


def test_set_and_unset_edit_a_yaml_file_and_keep_its_comments_in_a_copy(cold_cli, cold_home):
    # `config set` on a config.yaml (the API's own format) was exit 1, "writes TOML only"; and
    # on either format the file's comments went without a word.
    import yaml

    path = cold_home / "api.yaml"
    text = "server:\n  port: 8123  # the port\nlogging:\n  level: info\n"
    path.write_text(text)
    result = cold_cli("config", "set", "logging.level", "debug", LLMGINE_CONFIG=str(path))
    assert result.exit_code == 0, result.output
    backup = cold_home / "api.yaml.bak"
    assert f"(comments are not kept: the file as it was is in {backup})" in one_line(result.stderr)
    assert backup.read_text() == text and backup.stat().st_mode & 0o077 == 0
    assert yaml.safe_load(path.read_text()) == {"server": {"port": 8123}, "logging": {"level": "debug"}}
    assert path.stat().st_mode & 0o077 == 0
    again = cold_cli("config", "set", "providers.openai.timeout", "30", LLMGINE_CONFIG=str(path))
    assert again.exit_code == 0 and "comments" not in again.stderr and backup.read_text() == text
    assert cold_cli("config", "unset", "server.port", LLMGINE_CONFIG=str(path)).exit_code == 0
    got = cold_cli("config", "get", "providers.openai.timeout", "--local", LLMGINE_CONFIG=str(path))
    assert got.stdout == "30.0\n"
    doc = yaml.safe_load(path.read_text())
    assert doc == {"logging": {"level": "debug"}, "providers": {"openai": {"timeout": 30.0}}}

    # A `#` that is no comment (a URL's fragment) makes no copy, and no note.
    plain = cold_home / "plain.toml"
    plain.write_text('[providers.openai]\nbase_url = "http://127.0.0.1:9/v1#x"\n')
    result = cold_cli("config", "set", "logging.level", "info", LLMGINE_CONFIG=str(plain))
    assert result.exit_code == 0 and "comments" not in result.stderr
    assert not (cold_home / "plain.toml.bak").exists()
    assert tomllib.loads(plain.read_text())["providers"]["openai"]["base_url"] == "http://127.0.0.1:9/v1#x"


def test_get_prints_an_object_as_json_that_set_takes_back(cold_cli, cold_home):
    # config get printed a table's or an object's value as Python's repr ({'m': [1.0, ...]}),
    # which neither `config set` nor the environment (LLMGINE_PRICES is JSON) takes.
    prices = '{"m-1": [1.5, 2, 0.5]}'
    retry = '{"SinglePassEngineCommand": {"retries": 3, "retry_on": ["PROVIDER_RATE_LIMITED"]}}'
    assert cold_cli("config", "set", "usage.prices", prices).exit_code == 0
    assert cold_cli("config", "set", "commands.retry_defaults", retry).exit_code == 0
    for key, sent in (("usage.prices", prices), ("commands.retry_defaults", retry)):
        shown = cold_cli("config", "get", key, "--local").stdout.strip()
        assert json.loads(shown) == json.loads(sent), shown
        assert cold_cli("config", "set", key, shown).exit_code == 0  # round trip
        assert cold_cli("config", "get", key, "--local").stdout.strip() == shown
    assert cold_cli("config", "get", "mcp.allowed_hosts", "--local").stdout == "127.0.0.0/8,::1,localhost\n"


def test_set_creates_the_file_private(cold_cli, cold_home):
    assert cold_cli("config", "set", "logging.level", "warning").exit_code == 0
    path = cold_home / "config" / "config.toml"
    assert tomllib.loads(path.read_text()) == {"logging": {"level": "warning"}}
    assert path.stat().st_mode & 0o077 == 0


def test_bad_keys_and_values_are_usage_errors(cold_cli, cold_home):
    for args in (
        ("set", "server.prot", "1"),
        ("set", "server.port", "http"),
        ("set", "logging.level", "loud"),
        # Accepted, then the daemon refused to start on them: no origin, and the wildcard.
        ("set", "security.cors_origins", "localhost:3000"),
        ("set", "security.cors_origins", "http://a.example,*"),
        ("get", "nope", "--local"),
        ("unset", "nope"),
    ):
        result = cold_cli("config", *args)
        assert result.exit_code == 2, args
        assert "Traceback" not in result.output
    assert not (cold_home / "config" / "config.toml").exists()


def test_broken_config_file_is_one_line(cold_cli, cold_home):
    path = cold_home / "config" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text("[server\nport = 1\n")
    result = cold_cli("config", "show", "--local")
    assert result.exit_code == 1
    assert "not valid TOML" in one_line(result.stderr)


def test_get_names_a_value_the_daemon_has_not_read_yet(cli, daemon):
    # `config set KEY V && config get KEY` printed the running daemon's value (here an empty
    # line) and nothing else: the note on stderr says the file has V and what applies it.
    from pathlib import Path

    # The daemon is every CLI test's: its home must have no config file afterwards either (the
    # fast path reads one when it is there: test_process.py counts its imports).
    path = Path(cli("config", "path").stdout.strip())
    existed = path.exists()
    assert cli("config", "set", "logging.file", "/tmp/llmgine-never.log").exit_code == 0
    try:
        got = cli("config", "get", "logging.file")
        assert got.exit_code == 0 and got.stdout == "\n"
        note = one_line(got.stderr)
        assert "config.toml says logging.file = /tmp/llmgine-never.log" in note and "daemon restart" in note
        assert cli("config", "get", "logging.file", "-q").stderr == ""  # scripts: the value only
    finally:
        assert cli("config", "unset", "logging.file").exit_code == 0
        if not existed:
            path.unlink()
    assert cli("config", "get", "logging.file").stderr == ""
