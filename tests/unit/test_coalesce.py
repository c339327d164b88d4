"""daemon/coalesce.py over real sockets: writes of one turn leave together at its end, in
order; close and write_eof send what is held first; abort drops it; a real llmgined-style site
serves HTTP through it (keep-alive, pipelined requests, a large body)."""

from __future__ import annotations

import asyncio
import re
import socket

from aiohttp import ClientSession, web
from llmgine_daemon.coalesce import CoalescingSite, hold_writes


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


def received(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 20)
    except BlockingIOError:
        return b""


async def test_writes_of_a_turn_leave_together_at_its_end():
    transport, theirs = await pair()
    try:
        transport.write(b"one ")
        transport.writelines([b"two ", memoryview(b"three ")])
        transport.write(b"")
        assert received(theirs) == b""  # held: nothing sent within the turn
        assert transport.get_write_buffer_size() == len(b"one two three ")
        await asyncio.sleep(0)  # the turn ends; the next one starts with the flush
        await asyncio.sleep(0)
        assert received(theirs) == b"one two three "
        transport.write(b"four")  # a later turn's writes come after
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert received(theirs) == b"four"
    finally:
        transport.abort()
        theirs.close()


async def test_close_and_write_eof_send_what_is_held_first():
    transport, theirs = await pair()
    transport.write(b"last words")
    transport.write_eof()
    await asyncio.sleep(0.05)
    assert received(theirs) == b"last words"
    assert received(theirs) == b""  # then end of stream
    transport.close()
    theirs.close()

    transport, theirs = await pair()
    transport.write(b"bye")
    transport.close()
    await asyncio.sleep(0.05)
    assert received(theirs) == b"bye"
    theirs.close()


async def test_abort_drops_what_is_held():
    transport, theirs = await pair()
    transport.write(b"never")
    transport.abort()
    await asyncio.sleep(0.05)
    assert received(theirs) == b""
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
