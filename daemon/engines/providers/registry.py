"""Model routing and the configured providers.

``resolve_model("anthropic/claude-3-5-haiku-latest")`` -> ("anthropic", "claude-3-5-haiku-latest").
A prefix that names a known provider picks it; anything else is a model of the default provider
(``providers.default``), except bare ``claude-*`` names, which can only mean Anthropic. A model
name may itself contain slashes (OpenRouter's ``meta-llama/llama-3-8b``): only a known
provider prefix is split off.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from llmgine_daemon.engines.providers.anthropic import AnthropicProvider
from llmgine_daemon.engines.providers.base import Provider, ProviderConfig
from llmgine_daemon.engines.providers.openai import OpenAIProvider
from llmgine_daemon.engines.providers.urls import base_url_warning
from llmgine_daemon.secrets import SecretStore
from llmgine_daemon.settings import BY_KEY, PROVIDERS, Settings, redact_url

log = logging.getLogger("llmgine.providers")

# Which wire format each provider speaks.
KINDS = {"openai": "openai", "anthropic": "anthropic", "ollama": "openai"}
CLASSES: dict[str, type[Provider]] = {"openai": OpenAIProvider, "anthropic": AnthropicProvider}
# Local servers usually run without a key.
KEY_OPTIONAL = {"ollama"}


class UnknownModel(ValueError):
    pass


# Longer than any provider's model id (an AWS Bedrock ARN is about 100 characters).
MAX_MODEL_NAME = 256


def resolve_model(model_name: str, default_provider: str = "openai") -> tuple[str, str]:
    name = model_name.strip()
    if not name:
        raise UnknownModel("model name is empty")
    if len(name) > MAX_MODEL_NAME:
        raise UnknownModel(f"model name is {len(name)} characters long; at most {MAX_MODEL_NAME}")
    if any(ch.isspace() or not ch.isprintable() for ch in name):
        raise UnknownModel(f"model name {name[:80]!r} holds a space or a control character; no model's does")
    prefix, sep, rest = name.partition("/")
    if sep and prefix in PROVIDERS:
        if not rest:
            raise UnknownModel(f"model name {model_name!r} names a provider but no model")
        return prefix, rest
    if name.startswith("claude-"):
        return "anthropic", name
    return default_provider, name


def provider_config(
    settings: Settings | dict[str, Any], name: str, secrets: SecretStore | None = None
) -> ProviderConfig:
    def get(key: str) -> Any:
        return settings[f"providers.{name}.{key}"]

    return ProviderConfig(
        name=name,
        kind=KINDS[name],
        base_url=get("base_url"),
        api_key=get("api_key"),
        timeout=float(get("timeout")),
        max_retries=int(get("max_retries")),
        require_key=name not in KEY_OPTIONAL,
        api_key_env=get("api_key_env") or "",
        secrets=secrets.get if secrets is not None else None,
    )


class Providers:
    """The configured providers and the one HTTP client session they share (connection reuse
    to the same API across calls matters: a TLS handshake costs more than a short answer)."""

    def __init__(self, settings: Settings | dict[str, Any]) -> None:
        self.settings = settings
        self.default_provider: str = settings["providers.default"]
        self.default_model: str = settings["providers.default_model"]
        paths = getattr(settings, "paths", None)
        self.secrets = SecretStore(paths.config_dir / "secrets.json") if paths is not None else None
        self.configs = {name: provider_config(settings, name, self.secrets) for name in PROVIDERS}
        # Once per daemon: a base URL in the other SDK's form works, but says so.
        for name, config in self.configs.items():
            key = f"providers.{name}.base_url"
            shown = redact_url(config.base_url)  # a proxy's password stays out of the log
            warning = base_url_warning(name, config.kind, shown, f"{BY_KEY[key].env} ({key})")
            if warning is not None:
                log.warning("%s", warning)
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            # No total timeout: a long answer may stream for minutes; stalls are caught per
            # read (providers.X.timeout).
            self._http = aiohttp.ClientSession(
                # No pool limit (aiohttp's is 100 connections): the 101st concurrent prompt
                # waited for a free one, and failed PROVIDER_TIMEOUT without being sent. A
                # session runs one command at a time, which bounds the streams.
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
                # Never send cookies a provider set back on later calls.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._http

    def resolve(self, model_name: str | None) -> tuple[Provider, str]:
        provider_name, model = resolve_model(model_name or self.default_model, self.default_provider)
        config = self.configs[provider_name]
        return CLASSES[config.kind](config, self._session()), model

    def override(self, name: str, **changes: Any) -> None:
        """Replace fields of one provider's config (tests point base_url at a fake)."""
        from dataclasses import replace

        self.configs[name] = replace(self.configs[name], **changes)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
