"""JSON columns: msgspec-encoded text in, plain Python values out."""

from __future__ import annotations

import os
import threading
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


# Identifiers: random (version 4) UUIDs, drawn from a pooled os.urandom read. uuid.uuid4() makes
# one getrandom syscall per id; a command records five ids, so the pool is a measurable win.
_POOL_BYTES = 4096
_pool = b""
_pos = _POOL_BYTES
_pool_lock = threading.Lock()  # ids are made on the event loop and in the store's writer thread


def new_id() -> str:
    global _pool, _pos
    with _pool_lock:
        if _pos + 16 > len(_pool):
            _pool, _pos = os.urandom(_POOL_BYTES), 0
        raw = _pool[_pos:_pos + 16]
        _pos += 16
    n = (int.from_bytes(raw, "big") & ~(0xF000 << 64) & ~(0xC000 << 48)) | (0x4000 << 64) | (0x8000 << 48)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
