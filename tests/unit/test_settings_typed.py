"""Typed views of the settings read on every request: the same values as ``settings[key]``,
as the types their names promise, following the environment like any setting."""

from __future__ import annotations

from llmgine_daemon.settings import Limits, load_settings


def test_defaults_are_typed(tmp_path):
    settings = load_settings(env={"LLMGINE_HOME": str(tmp_path)})
    assert settings.read_timeout == settings["server.read_timeout"]
    assert isinstance(settings.read_timeout, float)
    assert settings.max_ws_message_size == settings["server.max_ws_message_size"]
    assert settings.rate_limit_unix_socket is False
    assert settings.session_token_registration is False
    limits = settings.limits
    assert isinstance(limits, Limits)
    for name in Limits.__dataclass_fields__:
        assert getattr(limits, name) == settings[f"security.limits.{name}"]
        assert type(getattr(limits, name)) is int


def test_views_follow_the_environment(tmp_path):
    settings = load_settings(
        env={
            "LLMGINE_HOME": str(tmp_path),
            "LLMGINE_READ_TIMEOUT": "2",
            "LLMGINE_RATE_LIMIT_UNIX_SOCKET": "true",
            "LLMGINE_SANDBOX_SESSION_TOKEN_REGISTRATION": "1",
            "LLMGINE_MAX_SESSIONS": "7",
            "LLMGINE_MAX_WEBSOCKETS_PER_CREDENTIAL": "0",
        }
    )
    assert settings.read_timeout == 2.0 and isinstance(settings.read_timeout, float)
    assert settings.rate_limit_unix_socket is True
    assert settings.session_token_registration is True
    assert settings.limits.max_sessions == 7
    assert settings.limits.max_websockets_per_credential == 0
