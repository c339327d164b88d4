"""A client generated from GET /openapi.json by a widely used third-party generator
(openapi-python-client) drives the core flow against a real daemon over TCP with an API key:
create a session, publish an event, run a command, list events. Its functions are named by
the operationIds (``create_session``, ``publish_event``, ``execute_command``, ...)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.clitools import Daemon, cleanup_home, free_port, short_home, start_daemon, stop_process

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.sqlite_only(reason="a client generated from the OpenAPI document; storage plays no part"),
]

SECRET = "generated-client-secret-0123456789"
PACKAGE = "llmgine_generated_api"


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    home = short_home()
    try:
        running = start_daemon(home, port=free_port(), env={"API_KEY_SECRET": SECRET})
        try:
            yield running
        finally:
            stop_process(running.proc)
    finally:
        cleanup_home(home)


def _generate(document: bytes, where: Path) -> Any:
    spec = where / "openapi.json"
    spec.write_bytes(document)
    generator = Path(sys.executable).with_name("openapi-python-client")
    command = [str(generator)] if generator.exists() else [sys.executable, "-m", "openapi_python_client"]
    done = subprocess.run(
        [*command, "generate", "--path", str(spec), "--meta", "none", "--output-path", str(where / PACKAGE)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=where,
        # The generator formats its output with ruff, installed beside this interpreter (the
        # test extra): found when the suite runs from a virtualenv that is not activated too.
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr  # every operation generated
    sys.path.insert(0, str(where))
    return importlib.import_module(PACKAGE)


def test_generated_client_drives_the_core_flow(daemon: Daemon, tmp_path: Path) -> None:
    request = urllib.request.Request(f"{daemon.tcp_url}/openapi.json", headers={"Authorization": f"Bearer {SECRET}"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        document = resp.read()
    assert json.loads(document)["paths"]["/api/sessions"]["post"]["operationId"] == "createSession"
    try:
        _generate(document, tmp_path)
        from llmgine_generated_api import AuthenticatedClient
        from llmgine_generated_api.api.commands import execute_command
        from llmgine_generated_api.api.engines import create_engine
        from llmgine_generated_api.api.events import list_events, publish_event
        from llmgine_generated_api.api.sessions import create_session
        from llmgine_generated_api.models import (
            Command,
            CommandCreate,
            CommandCreateParameters,
            Engine,
            EngineCreate,
            EngineCreateEngineType,
            ErrorEnvelope,
            Event,
            EventCreate,
            EventCreateData,
            EventList,
            Session,
            SessionCreate,
        )

        with AuthenticatedClient(
            base_url=daemon.tcp_url, token=SECRET, raise_on_unexpected_status=True, timeout=30
        ) as client:
            session = create_session.sync(client=client, body=SessionCreate(name="generated"))
            assert isinstance(session, Session), session
            assert session.name == "generated" and session.session_token
            # Times are datetimes to the generated client (`format: date-time`), in UTC.
            assert isinstance(session.created_at, datetime), session.created_at
            assert session.created_at.utcoffset() == timedelta(0)
            sid = session.session_id

            event = publish_event.sync(
                sid,
                client=client,
                body=EventCreate(event_type="Greeted", data=EventCreateData.from_dict({"who": "Ann"})),
            )
            assert isinstance(event, Event), event
            assert event.data.to_dict() == {"who": "Ann"}

            engine = create_engine.sync(
                client=client, body=EngineCreate(engine_type=EngineCreateEngineType("DummyEngine"), session_id=sid)
            )
            assert isinstance(engine, Engine), engine
            command = execute_command.sync(
                sid,
                client=client,
                wait=30,
                body=CommandCreate(
                    command_type=engine.command_type, parameters=CommandCreateParameters.from_dict({"prompt": "Hi"})
                ),
            )
            assert isinstance(command, Command), command
            assert command.status == "completed", command

            events = list_events.sync(sid, client=client, limit=100)
            assert isinstance(events, EventList), events
            types = [e.event_type for e in events.events]
            assert types[0] == "SessionStarted" and "Greeted" in types and "CommandResult" in types, types
            assert [e.seq for e in events.events] == sorted(e.seq for e in events.events)

            # Errors come back as the envelope model.
            empty = create_session.sync_detailed(client=client, body=SessionCreate())
            assert empty.status_code == 201
            unknown = list_events.sync("no-such-session", client=client)
            assert isinstance(unknown, ErrorEnvelope) and unknown.error.code == "SESSION_NOT_FOUND"
    finally:
        sys.path[:] = [p for p in sys.path if p != str(tmp_path)]
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]
