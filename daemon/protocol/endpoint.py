"""One operation of the API (its name, method, path, models, errors and Client method): the
type of the endpoint table's rows (endpoints.py, which re-exports it).

Only msgspec and the standard library may be imported here (see the package docstring).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llmgine_daemon.protocol.base import ErrorCode


@dataclass(frozen=True)
class Endpoint:
    name: str  # the operationId
    method: str
    path: str  # with {placeholders}, as the document shows it
    responses: Mapping[int, Any]  # status -> protocol model, str, dict, or None (no body)
    request: type | None = None
    request_required: bool = True
    # Beyond the common ones; an operation under a session ({session_id} in its path) may also
    # answer SESSION_NOT_FOUND, put first without being written in each row.
    errors: tuple[str, ...] = ()
    client: str | None = None  # the Client method (None: not a JSON call, or EventStream's)
    params: tuple[str, ...] = field(init=False, default=())  # the path's placeholders

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(part[1:-1] for part in self.path.split("/") if part.startswith("{")))
        if "session_id" in self.params and ErrorCode.SESSION_NOT_FOUND not in self.errors:
            object.__setattr__(self, "errors", (ErrorCode.SESSION_NOT_FOUND, *self.errors))

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.path

    @property
    def response(self) -> Any:
        """The model of the success answer (the first 2xx that has a body)."""
        for status, model in sorted(self.responses.items()):
            if 200 <= status < 300 and model is not None:
                return model
        return None

    def url(self, **params: str) -> str:
        """The path with its placeholders filled (each value already %-encoded)."""
        return self.path.format(**params)
