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
_VARIANT = "89ab"  # the variant bits are 10: the 17th hex digit is one of these


def new_id() -> str:
    global _pool, _pos
    with _pool_lock:
        if _pos + 10 > len(_pool):
            _pool, _pos = os.urandom(_POOL_BYTES), 0
        rand = _pool[_pos : _pos + 10]
        _pos += 10
    h = ((time.time_ns() // 1_000_000).to_bytes(6, "big") + rand).hex()
    return f"{h[:8]}-{h[8:12]}-7{h[13:16]}-{_VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"
