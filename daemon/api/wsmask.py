"""RFC 6455 5.1: "a client MUST mask all frames that it sends to the server", and "the server
MUST close the connection upon receiving a frame that is not masked". aiohttp's frame reader
unmasks what it gets and takes the rest as it is; ``MaskedOnly`` sits in front of it, finds the
frames' boundaries in the bytes a client sends (their headers: the length and the mask bit),
and at the first unmasked frame hands the reader nothing more and fails the socket's queue
with a ``WebSocketError`` 1002: the WebSocket's ``receive`` then closes it with 1002 (protocol
error), as for any frame aiohttp itself refuses. Frames before it are read as usual.

(Masking keeps a page's bytes from being read as something else by a proxy in between: a
browser masks every frame, so only a hand-made client sends them bare.)"""

from __future__ import annotations

from typing import Any

from aiohttp import WebSocketError, WSCloseCode

UNMASKED = "unmasked frame: a client must mask every frame it sends (RFC 6455 5.1)"


class FrameHeads:
    """Where frames start in a client's bytes, chunk after chunk."""

    __slots__ = ("skip", "head")

    def __init__(self) -> None:
        self.skip = 0  # payload bytes of the current frame still to come
        self.head = b""  # the start of a header cut by the end of the last chunk

    def unmasked(self, data: bytes) -> int | None:
        """Offset in ``data`` of the first unmasked frame (0 when its header began in an
        earlier chunk), or None when there is none."""
        pos, end = 0, len(data)
        while pos < end:
            if self.skip:
                step = min(self.skip, end - pos)
                self.skip -= step
                pos += step
                continue
            carried = len(self.head)
            buf = self.head + data[pos : pos + 14]  # a header is at most 14 bytes
            if len(buf) >= 2 and not buf[1] & 0x80:
                return max(pos - carried, 0)
            size = buf[1] & 0x7F if len(buf) >= 2 else 0
            extra = 2 if size == 126 else 8 if size == 127 else 0
            if len(buf) < 2 + extra + 4:  # the chunk ends inside the header
                self.head = buf
                return None
            if extra:
                size = int.from_bytes(buf[2 : 2 + extra], "big")
            self.head = b""
            pos += 2 + extra + 4 - carried
            self.skip = size
        return None


class MaskedOnly:
    """A WebSocket's frame reader (aiohttp's), fed only up to a client's first unmasked frame."""

    __slots__ = ("reader", "queue", "frames", "refused")

    def __init__(self, reader: Any, queue: Any, frames: FrameHeads) -> None:
        self.reader, self.queue, self.frames = reader, queue, frames
        self.refused = False

    def refuse(self) -> tuple[bool, bytes]:
        self.refused = True
        self.queue.set_exception(WebSocketError(WSCloseCode.PROTOCOL_ERROR, UNMASKED))
        return True, b""  # as aiohttp's reader answers a frame it refuses: read no more

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self.refused:
            return True, b""
        bad = self.frames.unmasked(bytes(data))
        if bad is None:
            return self.reader.feed_data(data)  # type: ignore[no-any-return]
        if bad:
            self.reader.feed_data(data[:bad])
        return self.refuse()

    def feed_eof(self) -> None:
        self.reader.feed_eof()
