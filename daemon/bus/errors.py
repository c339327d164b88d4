"""Domain errors. The bus raises these; the API turns them into the error envelope.

    BusError(code, message, details)   code is a protocol.ErrorCode; the HTTP status follows it
"""

from __future__ import annotations

from typing import Any


class BusError(Exception):
    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}
