"""One prompt to an LLM engine, followed live: what `llmgine ask` and `llmgine chat` share.

    conv = Conversation.open(client, engine_id=None, session_id=None, model="openai/gpt-4o-mini")
    turn = conv.send("Hello!")
    for event in turn:      # EngineResponseDelta, EngineToolCall, ToolExecuted, ... of this prompt
        ...
    turn.record             # the finished Command (status, result or error)

The session's event stream is opened, and the server has said where it starts, BEFORE the
prompt is submitted, so not even the first delta can be missed. A session runs one command at
a time, so every event between the command's CommandStarted and its CommandResult is its
doing (ToolExecuted carries no command_id; the engine's own events do).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from llmgine_daemon.protocol import Command, Engine, Event
from llmgine_daemon.protocol.streams import Hello

from llmgine_cli.client import ApiError, Client
from llmgine_cli.stream import EventStream, command_events

# What a turn listens to: the command's brackets, the engine's events, the sandbox's tool runs.
STREAM_TYPES = ("CommandStarted", "CommandResult", "Engine*", "ToolExecuted", "Approval*")
# ... as the engine (its events, its tool calls) and the daemon wrote them: any member of the
# session (a session token's page, its user code) may publish an EngineResponseDelta naming
# the command, whose text was printed as the model's answer.
TURN_SOURCES = ("engine", "bus")
LLM_ENGINES = ("SinglePassEngine", "ToolChatEngine")


@dataclass
class Conversation:
    client: Client
    engine: Engine
    created_session: bool = False  # made for this call: close it when done

    @property
    def session_id(self) -> str:
        return self.engine.session_id

    @classmethod
    def open(
        cls,
        client: Client,
        *,
        engine_id: str | None = None,
        session_id: str | None = None,
        model: str | None = None,
        engine_type: str = "SinglePassEngine",
        configuration: dict[str, Any] | None = None,
        reuse: bool = True,
        session_name: str = "ask",
    ) -> Conversation:
        """The engine to talk to: the one named, else one of ``engine_type`` (and ``model``)
        already in ``session_id`` (``reuse``), else a new one in that session, or in a new
        session made for it."""
        if engine_id is not None:
            return cls(client, client.get_engine(engine_id))
        created = False
        if session_id is None and reuse and session_name == "ask":
            # `ask` keeps one session for itself (the newest active one made by `ask`),
            # instead of leaving a closed session behind per question. A session has one
            # engine per type: one of another model makes way for the model asked for.
            for session in client.list_sessions(status="active", limit=1000).sessions:
                if session.name == session_name and (session.metadata or {}).get("cli") == session_name:
                    for engine in client.list_engines(
                        session_id=session.session_id, status="active", limit=100
                    ).engines:
                        if engine.engine_type != engine_type:
                            continue
                        if model is None or engine.model_name == model:
                            return cls(client, engine)
                        client.delete_engine(engine.engine_id)
                    return cls(client, client.create_engine(engine_type, session.session_id, model, {}))
        if session_id is None:
            session_id = client.create_session(name=session_name, metadata={"cli": session_name}).session_id
            created = session_name != "ask"  # `ask` keeps its session for the next question
        elif reuse and not configuration:
            for engine in client.list_engines(session_id=session_id, status="active", limit=100).engines:
                if engine.engine_type == engine_type and (model is None or engine.model_name == model):
                    return cls(client, engine)
        try:
            engine = client.create_engine(engine_type, session_id, model, configuration or {})
        except ApiError as exc:
            if exc.status == 409:
                raise type_taken(client, session_id, engine_type, exc) from None
            raise
        return cls(client, engine, created)

    def send(self, prompt: str, parameters: dict[str, Any] | None = None) -> Turn:
        return Turn(self, prompt, parameters or {})

    def reset(self) -> int:
        """Forget the conversation; the number of messages deleted."""
        return self.client.reset_engine(self.engine.engine_id).deleted

    def close(self) -> None:
        if self.created_session:
            try:
                self.client.delete_session(self.session_id)  # closed; its history stays readable
            except ApiError:
                pass


@dataclass
class Turn:
    conversation: Conversation
    prompt: str
    parameters: dict[str, Any]
    command_id: str | None = None
    record: Command | None = None
    text: list[str] = field(default_factory=list)  # the deltas seen so far
    _stream: EventStream | None = None

    def __iter__(self) -> Iterator[Event]:
        conv = self.conversation
        client = conv.client
        stream = self._stream = EventStream(client, conv.session_id, event_types=STREAM_TYPES, reconnect=False)
        items = iter(stream)
        try:
            for item in items:  # the hello: registered, so nothing after it can be missed
                if isinstance(item, Hello):
                    break
            self.record = client.execute_engine(conv.engine.engine_id, self.prompt, self.parameters, {})
            cid = self.command_id = self.record.command_id
            for item in command_events(items, cid):
                # Ours, and the tools run while it ran (their ToolExecuted events).
                if item.data.get("command_id") != cid and item.event_type != "ToolExecuted":
                    continue
                # A publisher's claimed source (metadata.source: "engine" is honoured, as the
                # spec's example sends it) is not the engine's: its own events carry none.
                if item.source not in TURN_SOURCES or "source" in item.metadata:
                    continue
                if item.event_type == "EngineResponseDelta":
                    self.text.append(str(item.data.get("text") or ""))
                yield item
        finally:
            self.close()
        self.record = client.get_command(conv.session_id, cid)

    def cancel(self) -> Command | None:
        """Cancel the command (Ctrl-C); None when it had already finished or never started."""
        self.close()
        if self.command_id is None:
            return None
        try:
            return self.conversation.client.cancel_command(self.conversation.session_id, self.command_id)
        except ApiError as exc:
            if exc.status == 409:  # finished meanwhile
                return None
            raise

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()

    @property
    def answer(self) -> str:
        """The whole answer: the streamed text, or the result's when nothing was streamed."""
        streamed = "".join(self.text)
        if streamed or self.record is None or not isinstance(self.record.result, dict):
            return streamed
        return str(self.record.result.get("text") or self.record.result.get("response") or "")


def type_taken(
    client: Client, session_id: str, engine_type: str, exc: ApiError, use: str = "talk to it with --engine {id}"
) -> ApiError:
    """The daemon's 409 for a second engine of a type in a session ("a handler for
    'SinglePassEngineCommand' is already registered") as what it means here, and the way out
    (``use``, with the engine's short id for ``{id}``)."""
    from llmgine_cli.errors import api_error
    from llmgine_cli.ids import short_id

    for engine in client.list_engines(session_id=session_id, status="active", limit=100).engines:
        if engine.engine_type == engine_type:
            model = f"model {engine.model_name}" if engine.model_name else "the default model"
            message = (
                f"session {short_id(session_id)} already has a {engine_type} ({short_id(engine.engine_id)}, "
                f"{model}), and a session has one engine of each type: {use.format(id=short_id(engine.engine_id))}, "
                "or give another session (-S)"
            )
            return api_error(exc.status, exc.code, message, exc.details, exc.request_id)
    return exc
