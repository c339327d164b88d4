"""RFC 6455 5.1: a client masks every frame it sends, and a server that receives an unmasked
one closes the connection (1002, protocol error). aiohttp's reader unmasks what it gets and
accepts the rest; api/sockets.py's ``Socket`` checks (a page's frames are always masked: the
browser does it, so only a hand-made client, or one meant to confuse an intermediary, sends
them bare)."""

from __future__ import annotations

import asyncio
import os
import socket
import struct

import pytest

from tests.conftest import create_session


def frame(payload: bytes, *, opcode: int = 0x1, masked: bool = True) -> bytes:
    head = bytes((0x80 | opcode,))
    size = len(payload)
    bit = 0x80 if masked else 0
    if size < 126:
        head += bytes((bit | size,))
    else:
        head += bytes((bit | 126,)) + struct.pack("!H", size)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await asyncio.wait_for(reader.readexactly(2), 30)
    size = second & 0x7F
    if size == 126:
        size = struct.unpack("!H", await reader.readexactly(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", await reader.readexactly(8))[0]
    return first & 0x0F, await asyncio.wait_for(reader.readexactly(size), 30)


async def open_stream(
    app_client, *, first: bytes = b"", rcvbuf: int | None = None, sid: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw WebSocket on a session's event stream (``sid``'s, or a new session's); ``first``
    goes in the same write as the handshake (a client need not wait for the 101 before sending
    frames); ``rcvbuf``: the socket's receive buffer (small: the daemon's writes back up soon)."""
    sid = sid or (await create_session(app_client))["session_id"]
    raw = socket.socket()
    if rcvbuf is not None:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.connect(("127.0.0.1", app_client.port))
    reader, writer = await asyncio.open_connection(sock=raw)
    auth = app_client.session.headers.get("Authorization", "")
    writer.write(
        f"GET /api/sessions/{sid}/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
        + first
    )
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)).startswith(b"HTTP/1.1 101")
    return reader, writer


async def until_close(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Frames up to the daemon's close frame: (its code, its reason)."""
    while True:
        opcode, payload = await read_frame(reader)
        if opcode == 0x8:
            return struct.unpack("!H", payload[:2])[0], payload[2:]


PING = b'{"type":"ping"}'


@pytest.mark.parametrize(
    "bare",
    [frame(PING, masked=False), frame(b"", opcode=0x9, masked=False), frame(b"x" * 300, masked=False)],
    ids=["text", "ping", "long"],
)
async def test_an_unmasked_frame_closes_the_websocket_with_1002(app_client, bare):
    reader, writer = await open_stream(app_client)
    writer.write(frame(PING) + bare + frame(PING))
    code, reason = await until_close(reader)
    assert code == 1002 and b"mask" in reason
    assert await asyncio.wait_for(reader.read(), 30) == b""  # and the connection ends
    writer.close()


async def test_an_unmasked_frame_sent_with_the_handshake_closes_too(app_client):
    reader, writer = await open_stream(app_client, first=frame(PING, masked=False))
    code, _ = await until_close(reader)
    assert code == 1002
    writer.close()


async def test_masked_frames_are_answered(app_client):
    reader, writer = await open_stream(app_client)
    writer.write(frame(PING) + frame(b"x" * 100, opcode=0x9) + frame(b" " * 300 + PING))
    answers = []
    while len(answers) < 3:
        opcode, payload = await read_frame(reader)
        if opcode == 0xA or payload == b'{"type":"pong"}':
            answers.append(opcode)
    assert sorted(answers) == [0x1, 0x1, 0xA]
    writer.write(frame(struct.pack("!H", 1000), opcode=0x8))
    assert (await until_close(reader))[0] == 1000
    writer.close()
