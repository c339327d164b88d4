"""The `llmgine` CLI and the Python client library it is built on.

    from llmgine_cli import Client, AsyncClient, LlmgineError

Imported lazily: `llmgine --help` must not pay for what it does not use.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs a few ms to import: annotations only
if TYPE_CHECKING:
    from typing import Any

    from llmgine_cli.aclient import AsyncClient
    from llmgine_cli.client import Client
    from llmgine_cli.errors import ApiError, LlmgineError

__all__ = ["AsyncClient", "Client", "ApiError", "LlmgineError"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from llmgine_cli.client import Client

        return Client
    if name == "AsyncClient":
        from llmgine_cli.aclient import AsyncClient

        return AsyncClient
    if name in ("ApiError", "LlmgineError"):
        from llmgine_cli import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'llmgine_cli' has no attribute {name!r}")
