"""JSON columns: msgspec-encoded text in, plain Python values out."""

from __future__ import annotations

import os
import threading
import time
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


# Identifiers: UUIDs version 7 (RFC 9562): a 48-bit millisecond timestamp, then 74 random bits,
# so ids made one after another sort together. Every id column is indexed, and a random (v4) key
# lands each insert on a different page of each index: a batch of writes then dirtied hundreds
# of pages, each written to the WAL and fsynced at COMMIT (bench/README.md). Time-ordered keys
# append to the right edge of the indexes instead. The random bits come from a pooled
# os.urandom read (uuid.uuid4() makes one getrandom syscall per id).
_POOL_BYTES = 4096
_pool = b""
_pos = _POOL_BYTES
_pool_lock = threading.Lock()  # ids are made on the event loop and in the store's writer thread
_VERSION_VARIANT = (0x7 << 76) | (0x2 << 62)
_RANDOM_MASK = ((1 << 12) - 1) << 64 | ((1 << 62) - 1)


def new_id() -> str:
    global _pool, _pos
    with _pool_lock:
        if _pos + 10 > len(_pool):
            _pool, _pos = os.urandom(_POOL_BYTES), 0
        rand = int.from_bytes(_pool[_pos:_pos + 10], "big")
        _pos += 10
    n = (time.time_ns() // 1_000_000) << 80 | _VERSION_VARIANT | (rand & _RANDOM_MASK)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
