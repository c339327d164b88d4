"""The CLI's own small pieces: the default socket found without the settings module, the
HTTP/1.1 client over a socket (against real servers), and short ids."""

from __future__ import annotations

import contextlib
import os
import socket
import threading

import pytest
from llmgine_daemon.settings import load_settings

from llmgine_cli import ids, transport, wire
from llmgine_cli.target import _home_socket, _platform_socket, default_target


@pytest.mark.parametrize("home", ["{tmp}", "{tmp}/", "{tmp}//a/./b", "{tmp}/a/../b", "rel/home", "./rel//x/"])
def test_the_fast_default_socket_is_the_settings_one(tmp_path, monkeypatch, home):
    monkeypatch.chdir(tmp_path)
    env = {"LLMGINE_HOME": home.format(tmp=tmp_path)}
    fast = _home_socket(env)
    assert fast is not None
    assert fast == str(load_settings(env=env).socket_path)
    assert default_target(env).socket_path == fast


def test_anything_that_can_move_the_socket_leaves_it_to_the_settings(tmp_path):
    env = {"LLMGINE_HOME": str(tmp_path)}
    for name in ("LLMGINE_SOCKET", "LLMGINE_NO_SOCKET", "LLMGINE_CONFIG"):
        assert _home_socket({**env, name: "x"}) is None
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.toml").write_text('[server]\nsocket = "/tmp/elsewhere.sock"\n')
    assert _home_socket(env) is None
    assert default_target(env).socket_path == "/tmp/elsewhere.sock"
    assert _home_socket({}) is None  # no LLMGINE_HOME: the platform's rules (settings) decide


@pytest.mark.parametrize("private_runtime", [True, False])
def test_the_platform_socket_is_the_settings_one(tmp_path, monkeypatch, private_runtime):
    from llmgine_daemon.settings import APP_NAME

    from llmgine_cli import target

    assert target.APP_NAME == APP_NAME
    for name in ("LLMGINE_HOME", "LLMGINE_CONFIG", "LLMGINE_SOCKET", "LLMGINE_NO_SOCKET"):
        monkeypatch.delenv(name, raising=False)
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700 if private_runtime else 0o777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("HOME", str(tmp_path))
    fast = _platform_socket(os.environ)
    slow = str(load_settings(env=os.environ).socket_path)
    assert fast in (None, slow)
    assert default_target(os.environ).socket_path == slow
    (tmp_path / "cfg" / "llmgine").mkdir(parents=True)
    (tmp_path / "cfg" / "llmgine" / "config.toml").write_text("")
    assert _platform_socket(os.environ) is None  # a config file could say otherwise
    assert _platform_socket({"XDG_RUNTIME_DIR": str(runtime)}) is None  # not os.environ: settings


def test_protocol_names_agree_with_the_daemon():
    from llmgine_daemon.protocol import REQUEST_ID_HEADER, VERSION_HEADER

    assert (transport.VERSION_HEADER, transport.REQUEST_ID_HEADER) == (VERSION_HEADER, REQUEST_ID_HEADER)


def serve_once(answer: bytes) -> tuple[str, threading.Thread, list[bytes]]:
    """A Unix socket server that reads one request and writes ``answer`` in small pieces."""
    path = f"/tmp/lgw-{os.getpid()}-{threading.get_ident()}.sock"
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    seen: list[bytes] = []

    def run() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            seen.append(data)
            for i in range(0, len(answer), 7):
                conn.sendall(answer[i : i + 7])
        server.close()
        os.unlink(path)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return path, thread, seen


@pytest.mark.parametrize(
    "answer",
    [
        b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"a": 123}\n',
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"a"\r\n7\r\n: 123}\n\r\n0\r\nX-T: y\r\n\r\n',
        b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"a": 123}\n',
        b'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"a": 123}\n',
    ],
)
def test_wire_reads_every_framing(answer):
    path, thread, seen = serve_once(answer)
    sock = wire.connect(path, None, None, 5)
    try:
        got = wire.exchange(sock, "POST", "/api/x?y=1", "localhost", {"Accept": "application/json"}, b"{}")
    finally:
        sock.close()
    thread.join(5)
    assert (got.status, got.body) == (200, b'{"a": 123}\n')
    assert seen[0].startswith(b"POST /api/x?y=1 HTTP/1.1\r\nHost: localhost\r\n")
    assert b"Content-Length: 2\r\n" in seen[0]


def test_wire_refuses_what_is_not_http():
    path, thread, _ = serve_once(b"SSH-2.0-OpenSSH\r\n\r\n")
    sock = wire.connect(path, None, None, 5)
    with pytest.raises(wire.BadResponse):
        wire.exchange(sock, "GET", "/", "localhost", {}, None)
    sock.close()
    thread.join(5)


def test_short_ids_are_the_random_part():
    a, b = "01a2499c-a119-7ef0-be65-bab29d2b4678", "01a2499c-a119-7ef0-be65-0000000000ff"
    assert ids.short_id(a) == "9d2b4678" and ids.short_id(b) == "000000ff"
    assert ids.short_id("01a2499b873ebf02df0831a4907b8c21") == "907b8c21"
    assert ids.short_id("get_weather") == "get_weather" and ids.short_id(None) == "-"
    candidates = [(a, "demo"), (b, "demo"), ("01a2499d-0000-7000-8000-123456789abc", "other")]
    assert ids.resolve("session", "9d2b4678", candidates) == a
    assert ids.resolve("session", "9d2b", candidates) == a  # the start of the short id
    assert ids.resolve("session", "01a2499d", candidates) == candidates[2][0]
    assert ids.resolve("session", "other", candidates) == candidates[2][0]
    assert ids.resolve("session", "nothing", candidates) == "nothing"
    with pytest.raises(ids.Ambiguous, match="9d2b4678 \\(demo\\), 000000ff \\(demo\\)"):
        ids.resolve("session", "demo", candidates)
    with pytest.raises(ids.Ambiguous):
        ids.resolve("session", "01a2499c", candidates)


def test_cells_never_recurse_without_bound():
    from llmgine_cli.render import compact

    deep: object = {"x": 1}
    for _ in range(5000):
        deep = {"a": deep}
    text = compact(deep)
    assert text.startswith('{"a":{"a":') and "…" in text and len(text) <= 200
    assert compact({"k": "v" * 500}, 20) == '{"k":"vvvvvvvvvvvvv…'


def _full_backlog(path: str) -> tuple[socket.socket, list[socket.socket]]:
    """A listening Unix socket that accepts nothing, its backlog filled: the next connect is
    refused with EAGAIN (as a daemon too busy to accept)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(0)
    queued: list[socket.socket] = []
    while True:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(5)
        try:
            probe.connect(path)
        except BlockingIOError:
            probe.close()
            return server, queued
        queued.append(probe)


def test_a_busy_daemon_is_waited_for_not_taken_for_absent(home):
    """With a timeout, connecting to a Unix socket whose backlog is full fails at once with
    EAGAIN: scripts running many `llmgine` calls together were told "no daemon" (and the CLI
    started another). The connection is now tried again until the timeout."""
    path = str(home / "busy.sock")
    server, queued = _full_backlog(path)
    accepted: list[socket.socket] = []

    def accept_later() -> None:
        threading.Event().wait(0.3)
        server.settimeout(10)  # the test ends even if the connection never came
        with contextlib.suppress(OSError):
            while len(accepted) < len(queued) + 1:
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=accept_later, daemon=True)
    thread.start()
    try:
        sock = wire.connect(path, None, None, 10)
        sock.close()
    finally:
        thread.join(10)
        for s in [*queued, *accepted, server]:
            s.close()
    assert len(accepted) == len(queued) + 1


def test_a_daemon_that_never_accepts_is_a_timeout(home):
    path = str(home / "stuck.sock")
    server, queued = _full_backlog(path)
    try:
        with pytest.raises(TimeoutError):
            wire.connect(path, None, None, 0.3)
    finally:
        for s in [*queued, server]:
            s.close()
