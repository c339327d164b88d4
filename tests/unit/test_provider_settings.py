"""Provider settings: config file tables, environment, the key's variable, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from llmgine_daemon.engines.providers import Providers
from llmgine_daemon.settings import ConfigError, load_settings, write_config_value


def settings_for(home: Path, config: str = "", **env: str):  # type: ignore[no-untyped-def]
    (home / "config").mkdir(parents=True, exist_ok=True)
    (home / "config" / "config.toml").write_text(config)
    return load_settings(env={"LLMGINE_HOME": str(home), **env})


def test_defaults(home: Path) -> None:
    s = settings_for(home)
    assert s["providers.default"] == "openai"
    assert s["providers.openai.base_url"] == "https://api.openai.com/v1"
    assert s["providers.anthropic.base_url"] == "https://api.anthropic.com"
    assert s["providers.ollama.base_url"] == "http://127.0.0.1:11434/v1"
    assert s["providers.openai.api_key"] is None
    assert s["providers.openai.api_key_env"] == "OPENAI_API_KEY"


def test_config_file_tables_and_env_precedence(home: Path) -> None:
    config = """
[providers]
default = "ollama"

[providers.openai]
base_url = "https://openrouter.ai/api/v1/"
api_key = "from-file"
timeout = 12.5
max_retries = 5
"""
    s = settings_for(home, config)
    assert s["providers.default"] == "ollama"
    assert s["providers.openai.base_url"] == "https://openrouter.ai/api/v1"  # trailing slash dropped
    assert (s["providers.openai.api_key"], s.sources["providers.openai.api_key"]) == ("from-file", "file")
    assert s["providers.openai.timeout"] == 12.5 and s["providers.openai.max_retries"] == 5
    s = settings_for(home, config, OPENAI_API_KEY="from-env")
    assert (s["providers.openai.api_key"], s.sources["providers.openai.api_key"]) == ("from-env", "env")
    assert s.redacted("providers.openai.api_key") == "********"


def test_api_key_env_names_the_variable(home: Path) -> None:
    config = '[providers.anthropic]\napi_key_env = "MY_CLAUDE_KEY"\n'
    s = settings_for(home, config, MY_CLAUDE_KEY="k1")
    assert s["providers.anthropic.api_key"] == "k1" and s.sources["providers.anthropic.api_key"] == "env"
    providers = Providers(s)
    assert providers.configs["anthropic"].api_key == "k1"
    assert "k1" not in repr(providers.configs["anthropic"])


@pytest.mark.parametrize(
    "config, issue",
    [
        ("[providers.openai]\ntimeout = 0\n", "positive"),
        ('[providers.openai]\nbase_url = "ftp://x"\n', "http"),
        ("[providers.openai]\nmax_retries = -1\n", "non-negative"),
        ('[providers]\ndefault = "mistral"\n', "one of"),
        ('[providers.openai]\napi_key_env = "NOT A NAME"\n', "environment variable"),
        ("[providers.openai]\nbogus = 1\n", "unknown key"),
        ('[providers.mistral]\nbase_url = "http://x"\n', "unknown"),
    ],
)
def test_invalid_values_are_refused(home: Path, config: str, issue: str) -> None:
    with pytest.raises(ConfigError, match=issue):
        settings_for(home, config)


def test_config_set_writes_a_provider_table(home: Path) -> None:
    path = home / "config" / "config.toml"
    write_config_value(path, "providers.ollama.base_url", "http://gpu-box:11434/v1")
    assert "[providers.ollama]" in path.read_text()
    assert settings_for(home, path.read_text())["providers.ollama.base_url"] == "http://gpu-box:11434/v1"
