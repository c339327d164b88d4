"""daemon/coalesce.py over real sockets: writes of one turn leave together at its end, in
order; close and write_eof send what is held first; abort drops it; a real llmgined-style site
serves HTTP through it (keep-alive, pipelined requests, a large body)."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys

import pytest
from aiohttp import ClientSession, web
from llmgine_daemon.coalesce import MAX_HELD, CoalescingSite, Flusher, coalesced, hold_writes

from tests.eventually import eventually


class Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport


async def pair(flusher: Flusher | None = None) -> tuple[asyncio.Transport, socket.socket]:
    """A held transport on one end of a socket pair (sent by ``flusher``, else one of its own);
    the other end as a plain socket."""
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    transport, _ = await asyncio.get_running_loop().connect_accepted_socket(Sink, ours)
    hold_writes(transport, flusher or Flusher(asyncio.get_running_loop()))
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
        assert transport.get_write_buffer_size() == 0  # nor in the transport's buffer
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


async def test_one_connection_failing_its_flush_does_not_hold_up_the_others():
    flusher = Flusher(asyncio.get_running_loop())  # one listener's connections
    a, a_peer = await pair(flusher)
    b, b_peer = await pair(flusher)
    try:
        a.write_eof()
        a.write(b"after the end")  # the transport refuses it when it is sent
        b.write(b"for b")
        assert await arrival(b_peer) == b"for b"
        b.write(b"and more")  # b's next turn is flushed as usual
        assert await arrival(b_peer) == b"and more"
    finally:
        for transport, peer in ((a, a_peer), (b, b_peer)):
            transport.abort()
            peer.close()


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


class Recorder(asyncio.Protocol):
    """A server protocol that records asyncio's flow control calls."""

    made: list[Recorder] = []

    def __init__(self) -> None:
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        Recorder.made.append(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False


READER = (
    "import socket, sys, time\n"
    "c = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
    "time.sleep(0.3)\n"
    "while c.recv(1 << 20):\n"
    "    pass\n"
)


async def test_a_paused_writer_is_resumed_once_all_is_sent(unused_tcp_port):
    """Writes held while the transport's buffer drains must not keep the writer paused: asyncio
    resumes it from the transport's own buffer size (found in review: counting held bytes there
    left it paused for good, and the next drain() waited forever)."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(coalesced(Recorder), "127.0.0.1", unused_tcp_port)
    reader = subprocess.Popen([sys.executable, "-c", READER, str(unused_tcp_port)])
    try:
        protocol = await eventually(lambda: Recorder.made[-1] if Recorder.made else None)
        transport = protocol.transport
        try:
            # Past what the socket's buffers take: paused until the client reads.
            transport.write(b"a" * (64 << 20))
            assert protocol.paused
            bursts = 0
            while type(transport).get_write_buffer_size(transport) > 0 and bursts < 100_000:
                transport.write(b"b" * 20_000)  # held: a burst per turn while the buffer drains
                bursts += 1
                await asyncio.sleep(0)
            await eventually(lambda: not protocol.paused)
        finally:
            transport.close()
    finally:
        server.close()
        await asyncio.to_thread(reader.wait, 60)
