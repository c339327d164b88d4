"""The Python client library (`from llmgine_cli import Client, AsyncClient`) against a real
llmgined: the spec's "Migration from Message Bus" example, typed errors, the event iterator,
and the async client over both transports."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from typing import Any

import pytest
from llmgine_daemon.protocol import ErrorCode

from llmgine_cli import AsyncClient, Client, LlmgineError
from llmgine_cli import errors as E
from tests.clitools import Daemon, cleanup_home, short_home, start_daemon, stop_process


async def handle_command(command):  # type: ignore[no-untyped-def]
    # Runs in the daemon's sandbox: its source is what register_command_handler sends.
    return {"echo": command.parameters["prompt"].upper()}


@pytest.fixture(params=["unix", "tcp"])
def url(request: pytest.FixtureRequest, daemon: Daemon) -> str:
    return daemon.socket_url if request.param == "unix" else daemon.tcp_url


def client_for(url: str, daemon: Daemon) -> Client:
    return Client(url, env={"LLMGINE_HOME": str(daemon.home)})


def test_migration_from_the_message_bus(url: str, daemon: Daemon) -> None:
    client = client_for(url, daemon)
    session = client.create_session(name="migrated")
    handler = client.register_command_handler(session, "DummyEngineCommand", handle_command)
    assert handler.function == "handle_command"
    assert client.execute(session, "DummyEngineCommand", prompt="Hello") == {"echo": "HELLO"}
    event = client.publish(session, "DummyEngineStatusUpdate", status="processing")
    assert (event.event_type, event.data) == ("DummyEngineStatusUpdate", {"status": "processing"})


def test_failures_are_typed(daemon: Daemon) -> None:
    client = client_for(daemon.socket_url, daemon)
    with pytest.raises(E.SessionNotFound) as caught:
        client.get_session("no-such-session")
    assert isinstance(caught.value, E.NotFound) and isinstance(caught.value, LlmgineError)
    assert caught.value.status == 404 and caught.value.code == "SESSION_NOT_FOUND"
    session = client.create_session()
    with pytest.raises(E.HandlerNotFound):
        client.execute(session, "NobodyHandlesThis", x=1)
    client.register_command_handler(session, "Boom", "def boom(command):\n    raise ValueError('no')\n")
    with pytest.raises(E.CommandExecutionFailed) as failed:
        client.execute(session, "Boom")
    assert failed.value.command is not None and failed.value.command.status == "failed"
    with pytest.raises(E.ValidationError):
        client.list_sessions(limit=0)
    with pytest.raises(E.SessionNotFound):  # the live stream raises the same classes
        next(iter(client.events("no-such-session", since=0)))


def test_every_error_code_has_a_class() -> None:
    codes = {v for k, v in vars(ErrorCode).items() if k.isupper()}
    assert codes == set(E.BY_CODE)
    for code, cls in E.BY_CODE.items():
        assert E.api_error(400, code, "m").__class__ is cls
    assert E.api_error(404, "SOMETHING_NEW", "m").__class__ is E.NotFound  # a newer daemon


def test_events_resume_from_the_last_seq(daemon: Daemon) -> None:
    client = client_for(daemon.socket_url, daemon)
    session = client.create_session()
    for n in range(3):
        client.publish(session, "Tick", n=n)
    seen = []
    for event in client.events(session, event_types=["Tick"], since=0):
        seen.append(event)
        if len(seen) == 2:
            break
    assert [e.data["n"] for e in seen] == [0, 1]
    client.publish(session, "Tick", n=3)
    rest = []
    for event in client.events(session, event_types=["Tick"], since=seen[-1].seq):
        rest.append(event.data["n"])
        if len(rest) == 2:
            break
    assert rest == [2, 3]


def test_async_client(url: str, daemon: Daemon) -> None:
    async def main() -> dict[str, Any]:
        async with AsyncClient(url, env={"LLMGINE_HOME": str(daemon.home)}) as client:
            session, health = await asyncio.gather(client.create_session(name="a"), client.health())
            assert health.status == "healthy"
            await client.register_command_handler(session, "DummyEngineCommand", handle_command)
            results = await asyncio.gather(
                *(client.execute(session, "DummyEngineCommand", prompt=p) for p in ("a", "b"))
            )
            with pytest.raises(E.SessionNotFound):
                await client.get_session("nope")
            await client.publish(session, "Tock", n=1)
            async for event in client.events(session, event_types=["Tock"], since=0):
                assert event.data == {"n": 1}
                break
            assert await client.delete_session(session.session_id, purge=True) is None
            return {"results": results}

    assert asyncio.run(main()) == {"results": [{"echo": "A"}, {"echo": "B"}]}


def test_the_cli_never_imports_aiohttp() -> None:
    code = (
        "import sys, llmgine_cli.app, llmgine_cli; llmgine_cli.AsyncClient; llmgine_cli.Client;"
        "print('aiohttp' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_events_resume_across_a_daemon_restart() -> None:
    home = short_home()
    try:
        first = start_daemon(home)
        client = Client(first.socket_url, env={"LLMGINE_HOME": str(home)})
        session = client.create_session()
        events = client.events(session, event_types=["Tick"], since=0)
        client.publish(session, "Tick", n=1)
        assert next(events).data == {"n": 1}
        stop_process(first.proc)
        second = start_daemon(home)
        try:
            client.publish(session, "Tick", n=2)
            client.publish(session, "Tick", n=3)
            assert [next(events).data["n"], next(events).data["n"]] == [2, 3]  # nothing lost or repeated
        finally:
            stop_process(second.proc)
    finally:
        cleanup_home(home)


def test_path_segments_stay_one_segment():
    from llmgine_cli.client import _seg

    assert _seg("orders/paid") == "orders%2Fpaid"
    assert _seg("..") == "%2E%2E" and _seg(".") == "%2E"
    assert _seg("a.b") == "a.b" and _seg("*") == "%2A"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), [1.0, {"x": float("-inf")}]])
def test_nan_and_infinity_are_refused_not_sent_as_null(value: Any) -> None:
    """msgspec writes NaN and Infinity as null: ``publish(sid, "T", a=nan)`` stored a null."""
    client = Client("http://127.0.0.1:9")  # nothing is sent: the body is refused first
    with pytest.raises(ValueError, match="NaN and Infinity are not JSON"):
        client.publish("s", "T", a=value)
    with pytest.raises(ValueError, match="NaN and Infinity are not JSON"):
        client.submit_command("s", "X", {"p": value}, {})


def test_a_page_cut_short_is_a_lost_connection_in_both_clients(daemon: Daemon) -> None:
    """A large page is sent in parts (chunked); when the daemon cannot read a later part it
    ends the connection before the last chunk. AsyncClient took the end of the connection
    for the last chunk and decoded what it had: ProtocolError 'Input data was truncated'.
    Both clients now say what happened: the connection was lost (DaemonUnreachable)."""
    client = client_for(daemon.tcp_url, daemon)
    session = client.create_session()
    for i in range(12):  # about 11 MB: past the daemon's 8 MiB, so the page goes in parts
        client.publish(session, "Big", i=i, b="x" * 900_000)
    with sqlite3.connect(daemon.home / "data" / "llmgine.db") as db:  # the last part's row, damaged
        damaged = db.execute("UPDATE events SET data = '{' WHERE event_type = 'Big' AND data LIKE '{\"i\":11,%'")
        assert damaged.rowcount == 1

    async def page() -> Any:
        async with AsyncClient(daemon.tcp_url, env={"LLMGINE_HOME": str(daemon.home)}) as aclient:
            return await aclient.list_events(session.session_id, limit=20)

    with pytest.raises(E.DaemonUnreachable, match="lost the connection"):
        asyncio.run(page())
    with pytest.raises(E.DaemonUnreachable, match="lost the connection"):
        client.list_events(session.session_id, limit=20)


def test_a_daemon_killed_before_it_answers_is_a_lost_connection_in_both_clients() -> None:
    """A daemon killed (or a connection ended) after the request was sent and before the first
    byte of the answer: Client said the connection was lost; AsyncClient read the empty
    status line as an answer that is not HTTP (ProtocolError "not an HTTP answer: ''"), an
    error a caller does not retry. Both now say DaemonUnreachable, "lost the connection"."""
    home = short_home()
    try:
        d = start_daemon(home)
        env = {"LLMGINE_HOME": str(home)}
        client = Client(d.socket_url, env=env)
        sid = client.create_session().session_id
        client.create_engine("DummyEngine", sid, None, {})
        running = client.submit_command(sid, "DummyEngineCommand", {"prompt": "p", "delay_ms": 600_000}, {})

        async def held() -> Any:
            async with AsyncClient(d.socket_url, env=env) as aclient:
                wait = asyncio.ensure_future(aclient.get_command(sid, running.command_id, wait=60))
                await asyncio.sleep(1.0)  # the request is sent and held (wait=60)
                d.proc.kill()
                return await wait

        with pytest.raises(E.DaemonUnreachable, match="lost the connection"):
            asyncio.run(held())
    finally:
        stop_process(d.proc)
        cleanup_home(home)
