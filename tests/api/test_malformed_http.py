"""Requests aiohttp's parser refuses (api/malformed.py), and bodies that cannot be decoded
(api/limits.py read_body): the error envelope, never text/plain, a 500 or a logged traceback.

The parser's refusals never reach the app's middleware, so these run the daemon's own TCP site
(server.py's TcpSite) on a real socket."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from llmgine_daemon.api.limits import runner_kwargs
from llmgine_daemon.app import create_app
from llmgine_daemon.server import TcpSite
from llmgine_daemon.settings import Settings

from tests.conftest import assert_envelope


@pytest.fixture
async def site_port(make_settings: Callable[..., Settings]) -> AsyncIterator[int]:
    settings = make_settings(LLMGINE_MAX_HEADER_SIZE="1024")
    runner = web.AppRunner(create_app(settings), handle_signals=False, **runner_kwargs(settings))
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    try:
        await TcpSite(runner, sock).start()
        yield sock.getsockname()[1]
    finally:
        await runner.cleanup()
        sock.close()


async def exchange(port: int, data: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send raw bytes; the status line, headers and body of the answer (read to EOF)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), timeout=30)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return lines[0], headers, body


HOST = b"Host: 127.0.0.1\r\n"
MALFORMED = {
    "negative content-length": b"POST /api/sessions HTTP/1.1\r\n" + HOST + b"Content-Length: -1\r\n\r\n{}",
    "header over the limit": b"GET /api/health HTTP/1.1\r\n" + HOST + b"X-Big: " + b"x" * 2000 + b"\r\n\r\n",
    "request line over the limit": b"GET /api/health?" + b"a" * 2000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
    "unknown method": b"FOO /api/health HTTP/1.1\r\n" + HOST + b"\r\n",
    "bad chunk size": b"POST /api/sessions HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    "both lengths": b"POST /api/sessions HTTP/1.1\r\n"
    + HOST
    + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "control character in a header": b"GET /api/health HTTP/1.1\r\n" + HOST + b"X-Request-ID: a\x01b\r\n\r\n",
    "tls to the plain port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
    # Each header under the limit (1024 here), together over 8 of them (api/malformed.py HEAD_LINES).
    "a head over eight header lines": b"GET /api/health HTTP/1.1\r\n"
    + HOST
    + b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 1000) for i in range(9))
    + b"\r\n",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_unparseable_requests_get_the_envelope(site_port, case, caplog):
    caplog.set_level(logging.DEBUG)
    status, headers, body = await exchange(site_port, MALFORMED[case])
    assert status.split()[1] == "400", status
    assert headers["content-type"].startswith("application/json")
    error = assert_envelope(json.loads(body), "VALIDATION_ERROR")
    assert error["message"] == "malformed HTTP request" and error["details"]["issue"]
    assert headers["x-request-id"] == json.loads(body)["request_id"] and headers["x-llmgine-version"]
    # A client's malformed bytes are not the daemon's error: no ERROR record, no traceback.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]


async def test_the_site_still_serves_good_requests(site_port):
    status, headers, body = await exchange(
        site_port, b"GET /api/health HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"
    )
    assert status.split()[1] == "200" and json.loads(body)["status"] == "healthy"


async def test_a_body_that_is_not_in_its_content_encoding_is_400(app_client, caplog):
    resp = await app_client.post(
        "/api/sessions",
        data=b'{"name": "x"}',
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert resp.status == 400, await resp.text()
    error: dict[str, Any] = assert_envelope(await resp.json(), "INVALID_JSON")
    assert "gzip" in error["message"] and error["details"]["content_encoding"] == "gzip"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_gzip_body_is_read(app_client):
    import gzip

    resp = await app_client.post(
        "/api/sessions",
        data=gzip.compress(b'{"name": "zipped"}'),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert resp.status == 201 and (await resp.json())["name"] == "zipped"


async def test_a_head_still_coming_is_refused_once_over_the_limit(site_port):
    # Before any credential: 120 headers of 8 KB and then nothing held about 2 MB of the
    # daemon's memory per connection until the read timeout (400 connections: +770 MB).
    head = b"GET /api/health HTTP/1.1\r\n" + HOST + b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 1000) for i in range(9))
    status, _, body = await exchange(site_port, head)  # no blank line: the head is unfinished
    assert status.split()[1] == "400", status
    error = assert_envelope(json.loads(body), "VALIDATION_ERROR")
    assert error["details"]["issue"] == "request head over 8192 bytes"


async def test_bodies_and_pipelined_requests_are_not_counted_as_head(site_port):
    body = b"x" * 200_000  # sent with its head at once: the body's bytes are no head's
    post = (
        b"POST /api/sessions HTTP/1.1\r\n"
        + HOST
        + b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )
    status, _, answer = await exchange(site_port, post)
    assert status.split()[1] == "401", (status, answer[:200])
    many = b"GET /api/health HTTP/1.1\r\n" + HOST + b"X-Pad: " + b"p" * 900 + b"\r\n\r\n"
    status, _, answer = await exchange(
        site_port, many * 20 + b"GET /api/health HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"
    )
    assert status.split()[1] == "200" and answer.count(b'"healthy"') == 21, answer[-300:]


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/0.9", None])
async def test_a_request_in_an_http_version_not_served_is_505(site_port, version, caplog):
    # aiohttp answered in the request's version, framed as HTTP/1.1: "HTTP/2.0 200 OK",
    # "HTTP/0.9 403 Forbidden" (and for no version at all, HTTP/0.9's request line).
    caplog.set_level(logging.DEBUG)
    line = b"GET /api/health" + (b" " + version if version else b"") + b"\r\n"
    status, headers, body = await exchange(site_port, line + (HOST if version else b"") + b"\r\n")
    assert status.startswith("HTTP/1.") and status.split()[1] == "505", status
    error = assert_envelope(json.loads(body), "VALIDATION_ERROR")
    assert error["message"] == "HTTP version not supported"
    shown = (version or b"HTTP/0.9").decode()
    assert error["details"]["issue"] == f"{shown} is not served: HTTP/1.1 or HTTP/1.0"
    assert headers["x-request-id"] == json.loads(body)["request_id"]  # (and closed: read to its end)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # the versions served are served
    for served in (b"HTTP/1.1", b"HTTP/1.0"):
        status, _, _ = await exchange(
            site_port, b"GET /api/health " + served + b"\r\n" + HOST + b"Connection: close\r\n\r\n"
        )
        assert status.split()[1] == "200", (served, status)
