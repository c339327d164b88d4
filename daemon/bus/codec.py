"""JSON columns: msgspec-encoded text in, plain Python values out."""

from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def dumps(value: Any) -> str:
    return _encoder.encode(value).decode("utf-8")


def loads(text: str | None) -> Any:
    if text is None:
        return None
    return _decoder.decode(text)
