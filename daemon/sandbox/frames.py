"""The pipe protocol between the pool (in the daemon) and a worker process.

A frame is a 4-byte big-endian length followed by one msgpack-encoded ``Frame``. The worker
imports this module too, so it may import only msgspec and the standard library.

    pool   -> worker   Run            run one call (op "call") or validate code (op "inspect")
    worker -> pool     Ready          the worker booted; what isolation it ended up with
    worker -> pool     Started        the per-call child's pid (the pool kills it on a deadline)
    child  -> pool     BusRequest     user code called bus.publish/execute/call_tool
    pool   -> child    BusReply       the answer to one BusRequest
    child  -> pool     Log            bus.log(level, message), fire and forget
    child  -> pool     Done           the call's outcome
    worker -> pool     Exited         the per-call child is gone (its wait status, described)

Only the worker (the zygote) holds the pool's pipes. The child, which runs user code, talks to
the zygote over a socket of its own for that one call; the zygote checks each frame (bus
requests, logs, one Done with this call's id) before passing it on, so user code can neither
forge the worker's frames nor read another call's.

JSON payloads (arguments, results, bus values) travel as JSON text in ``bytes`` fields: the
worker checks that a result really is JSON with the standard library's encoder, and the daemon
decodes it once.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import msgspec

HEADER = struct.Struct(">I")


class Ready(msgspec.Struct, tag=True):
    pid: int
    uid: int
    pidns: bool
    cgroup: bool
    python: str


class Run(msgspec.Struct, tag=True):
    call_id: str
    op: str  # "call" | "inspect"
    kind: str  # "tool" | "command" | "event"
    code: str
    function: str | None  # None: the last top-level function in the code
    payload: bytes = b"{}"  # call: JSON arguments (tool) or the record (handlers)
    deadline: float = 30.0
    max_output: int = 65536
    max_result: int = 1048576


class Started(msgspec.Struct, tag=True):
    call_id: str
    pid: int


class BusRequest(msgspec.Struct, tag=True):
    req_id: int
    op: str  # publish | execute | call_tool
    args: bytes  # JSON object


class BusReply(msgspec.Struct, tag=True):
    req_id: int
    ok: bool
    value: bytes = b"null"  # JSON
    error: str = ""


class Log(msgspec.Struct, tag=True):
    level: str
    message: str


class Done(msgspec.Struct, tag=True):
    call_id: str
    ok: bool
    result: bytes = b"null"  # JSON text when ok
    error: dict[str, Any] | None = None  # {code, message, details}
    output: str = ""
    output_truncated: bool = False


class Exited(msgspec.Struct, tag=True):
    call_id: str
    status: str  # "exit 0", "signal SIGSEGV", ...
    clean: bool
    retire: bool = False  # the call left something behind: the pool replaces this worker


Frame = Ready | Run | Started | BusRequest | BusReply | Log | Done | Exited

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Frame)


def call_error(code: str, message: str, /, **details: Any) -> dict[str, Any]:
    """A failed call's ``error``: the one shape on both sides of the pipes."""
    return {"code": code, "message": message, "details": details}


class FrameError(Exception):
    """The other side sent something that is not a frame: the worker is not trusted further."""


def encode(frame: Frame) -> bytes:
    body = _encoder.encode(frame)
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> Frame:
    # RecursionError: a frame user code wrote nesting deeper than the stack. The zygote's is
    # shallow, the daemon's deep: one the zygote passed on failed in the daemon (a 500).
    try:
        return _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise FrameError(f"bad frame: {exc}") from None


# -- blocking helpers, used by the worker ---------------------------------------------------


def write_frame(fd: int, frame: Frame) -> None:
    data = memoryview(encode(frame))
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _read_exact(fd: int, size: int) -> bytes:
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise EOFError("pipe closed")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, max_size: int = 1 << 30) -> Frame:
    (size,) = HEADER.unpack(_read_exact(fd, HEADER.size))
    if size > max_size:
        raise FrameError(f"frame of {size} bytes is over the {max_size} byte limit")
    return decode(_read_exact(fd, size))
