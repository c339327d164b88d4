"""LLM providers on aiohttp's client: OpenAI-compatible Chat Completions and Anthropic Messages.

No provider SDK: both wire formats are small, and owning the HTTP layer is what lets us map
every failure to one of our error codes, retry the right ones, and cancel a stream cleanly.
"""

from llmgine_daemon.engines.providers.base import (
    ChatRequest,
    Completion,
    Message,
    Provider,
    ProviderConfig,
    StreamItem,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
)
from llmgine_daemon.engines.providers.errors import ProviderError
from llmgine_daemon.engines.providers.registry import Providers, UnknownModel, resolve_model

__all__ = [
    "ChatRequest",
    "Completion",
    "Message",
    "Provider",
    "ProviderConfig",
    "ProviderError",
    "Providers",
    "StreamItem",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolSpec",
    "UnknownModel",
    "Usage",
    "resolve_model",
]
