"""Provider base URLs as each provider's official SDK defines them.

- OpenAI (and every OpenAI-compatible server): the base URL *includes* the API version,
  ``OPENAI_BASE_URL=http://host:port/v1``; requests go to ``{base}/chat/completions``.
- Anthropic: the base URL is the server's root, *without* ``/v1``,
  ``ANTHROPIC_BASE_URL=http://host:port``; requests go to ``{base}/v1/messages``.

The other form is accepted too, with a warning the daemon logs once at start-up
(``Providers``): an OpenAI base URL with no path at all gets ``/v1`` appended, an Anthropic one
ending in ``/v1`` has it taken off. Any other path is used as given (OpenRouter's
``https://openrouter.ai/api/v1``, a proxy's ``/openai/v1``).
"""

from __future__ import annotations

from urllib.parse import urlsplit


def _path(base_url: str) -> str:
    return urlsplit(base_url).path.rstrip("/")


def openai_base(base_url: str) -> str:
    """The URL ``/chat/completions`` is appended to."""
    base = base_url.rstrip("/")
    return base + "/v1" if not _path(base) else base


def anthropic_root(base_url: str) -> str:
    """The URL ``/v1/messages`` is appended to."""
    base = base_url.rstrip("/")
    return base[: -len("/v1")] if _path(base).endswith("/v1") else base


def endpoint(kind: str, base_url: str) -> str:
    """The URL a chat request of this wire format is posted to."""
    if kind == "anthropic":
        return anthropic_root(base_url) + "/v1/messages"
    return openai_base(base_url) + "/chat/completions"


def base_url_warning(name: str, kind: str, base_url: str, setting: str) -> str | None:
    """What to tell the user when ``base_url`` is in the other SDK's form (None: it is not)."""
    if kind == "anthropic" and anthropic_root(base_url) != base_url.rstrip("/"):
        return (
            f"{setting} = {base_url} ends in /v1, but like the official Anthropic SDK llmgine takes the "
            f"server's root (requests go to {{base}}/v1/messages); using {endpoint(kind, base_url)}. "
            f"Drop the /v1 to silence this warning."
        )
    if kind == "openai" and openai_base(base_url) != base_url.rstrip("/"):
        return (
            f"{setting} = {base_url} has no path, but like the official OpenAI SDK llmgine takes a base "
            f"URL that includes the API version (requests go to {{base}}/chat/completions); using "
            f"{endpoint(kind, base_url)}. Add /v1 to silence this warning."
        )
    return None
