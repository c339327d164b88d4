"""daemon/coalesce.py over real sockets: writes of one turn leave together at its end, in
order; close and write_eof send what is held first; abort drops it; a real llmgined-style site
serves HTTP through it (keep-alive, pipelined requests, a large body)."""

from __future__ import annotations

import asyncio
import re
import socket

import pytest
from aiohttp import ClientSession, web
from llmgine_daemon.coalesce import MAX_HELD, CoalescingSite, hold_writes

from tests.eventually import eventually


class Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport


async def pair() -> tuple[asyncio.Transport, socket.socket]:
    """A held transport on one end of a socket pair; the other end as a plain socket."""
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    transport, _ = await asyncio.get_running_loop().connect_accepted_socket(Sink, ours)
    hold_writes(transport)
    return transport, theirs


def received(sock: socket.socket) -> bytes | None:
    """What has arrived (b"" at the end of the stream), None while nothing has."""
    try:
        return sock.recv(1 << 20)
    except BlockingIOError:
        return None


async def arrival(sock: socket.socket) -> bytes:
    """The next bytes to arrive (b"": the end of the stream)."""

    def got() -> tuple[bytes] | None:
        data = received(sock)
        return None if data is None else (data,)

    return (await eventually(got))[0]


async def until_the_end(sock: socket.socket) -> bytes:
    """Everything that arrives up to the end of the stream."""
    got = b""
    while chunk := await arrival(sock):
        got += chunk
    return got


async def test_writes_of_a_turn_leave_together_at_its_end():
    transport, theirs = await pair()
    try:
        transport.write(b"one ")
        transport.writelines([b"two ", memoryview(b"three ")])
        transport.write(b"")
        assert received(theirs) is None  # held: nothing sent within the turn
        assert transport.get_write_buffer_size() == len(b"one two three ")
        assert await arrival(theirs) == b"one two three "  # together, at the turn's end
        transport.write(b"four")  # a later turn's writes come after
        assert await arrival(theirs) == b"four"
    finally:
        transport.abort()
        theirs.close()


async def test_a_large_answer_is_not_held():
    """Past MAX_HELD a connection's writes go out at once, in order, into the transport's own
    buffer (whose flow control then applies as without holding)."""
    transport, theirs = await pair()
    try:
        transport.write(b"head ")
        body = b"b" * MAX_HELD
        transport.write(body)
        assert transport.__dict__.get("_llmgine_held") is None  # nothing left held
        got = b""
        while len(got) < len(b"head ") + len(body):
            got += await arrival(theirs)
        assert got == b"head " + body
    finally:
        transport.abort()
        theirs.close()


@pytest.mark.parametrize("end", ["write_eof", "close"])
async def test_ending_sends_what_is_held_first(end: str):
    transport, theirs = await pair()
    transport.write(b"last words")
    getattr(transport, end)()
    assert await until_the_end(theirs) == b"last words"
    transport.close()
    theirs.close()


async def test_abort_drops_what_is_held():
    transport, theirs = await pair()
    transport.write(b"never")
    transport.abort()
    assert await until_the_end(theirs) == b""
    theirs.close()


async def test_a_site_serves_http_through_held_writes(unused_tcp_port):
    big = b"x" * (3 << 20)

    async def small(request: web.Request) -> web.Response:
        return web.json_response({"n": int(request.match_info["n"])})

    async def large(request: web.Request) -> web.Response:
        return web.Response(body=big)

    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for i in range(5):
            await response.write(f"chunk {i}\n".encode())
            await asyncio.sleep(0)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/n/{n}", small)
    app.router.add_get("/large", large)
    app.router.add_get("/stream", streamed)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", unused_tcp_port))
    try:
        await CoalescingSite(runner, sock).start()
        base = f"http://127.0.0.1:{unused_tcp_port}"
        async with ClientSession() as client:
            # Many at once over a few keep-alive connections: each gets its own answer.
            async def get(n: int) -> int:
                async with client.get(f"{base}/n/{n}") as resp:
                    return int((await resp.json())["n"])

            assert await asyncio.gather(*(get(n) for n in range(200))) == list(range(200))
            async with client.get(f"{base}/large") as resp:
                assert await resp.read() == big
            async with client.get(f"{base}/stream") as resp:
                assert await resp.text() == "".join(f"chunk {i}\n" for i in range(5))
        # Pipelined: three requests in one packet, three answers in their order.
        reader, writer = await asyncio.open_connection("127.0.0.1", unused_tcp_port)
        writer.write(b"".join(f"GET /n/{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for n in (7, 8, 9)))
        answers = b""
        while answers.count(b'"n"') < 3:
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            assert chunk, answers
            answers += chunk
        assert re.findall(rb'"n": ?(\d+)', answers) == [b"7", b"8", b"9"]
        writer.close()
    finally:
        await runner.cleanup()
        sock.close()
