"""JSON columns: msgspec-encoded text in, plain Python values out."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def dumps(value: Any) -> str:
    return _encoder.encode(value).decode("utf-8")


def loads(text: str | None) -> Any:
    if text is None:
        return None
    return _decoder.decode(text)


def row_reader(model: Callable[..., T], columns: str, *, json: Iterable[str] = ()) -> Callable[..., T]:
    """A function making ``model`` from a row selected as ``columns`` (a SELECT list whose names
    are the model's fields), the columns named in ``json`` decoded; its keywords are the
    model's other fields."""
    names = tuple(name.strip() for name in columns.split(","))
    decoded = frozenset(json)

    def read(row: Sequence[Any], **extra: Any) -> T:
        return model(**{n: loads(v) if n in decoded else v for n, v in zip(names, row, strict=False)}, **extra)

    return read


# Identifiers: UUIDs version 7 (RFC 9562): a 48-bit millisecond timestamp, then 74 random bits,
# so ids made one after another sort together. Every id column is indexed, and a random (v4) key
# lands each insert on a different page of each index: a batch of writes then dirtied hundreds
# of pages, each written to the WAL and fsynced at COMMIT (bench/README.md). Time-ordered keys
# append to the right edge of the indexes instead. The random bits come from a pooled
# os.urandom read (uuid.uuid4() makes one getrandom syscall per id).
_POOL_BYTES = 4096
_pool = ""  # random hex digits, drawn from os.urandom a pool at a time
_pos = 0
_pool_lock = threading.Lock()  # ids are made on the event loop and in the store's writer thread
# The variant bits are 10: the 17th hex digit is one of 89ab (chosen by two random bits).
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}
_stamp = (-1, "")  # (millisecond, its 12 hex digits as "xxxxxxxx-xxxx")


def new_id() -> str:
    global _pool, _pos, _stamp
    with _pool_lock:
        if _pos + 19 > len(_pool):
            _pool, _pos = os.urandom(_POOL_BYTES).hex(), 0
        r = _pool[_pos : _pos + 19]
        _pos += 19
    ms = time.time_ns() // 1_000_000
    stamp = _stamp  # one read: another thread may replace it meanwhile
    if ms != stamp[0]:
        h = ms.to_bytes(6, "big").hex()
        stamp = _stamp = (ms, f"{h[:8]}-{h[8:]}")
    return f"{stamp[1]}-7{r[:3]}-{_VARIANT[r[3]]}{r[4:7]}-{r[7:]}"
