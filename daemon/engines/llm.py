"""SinglePassEngine and ToolChatEngine: engines that talk to a real model.

Both handle one prompt as one *turn* of a stored conversation (engines/memory.py):

    EngineStatusUpdate {status: processing}
    EngineStatusUpdate {status: calling_llm}
    EngineResponseDelta {text} ...                  as the model writes
    (ToolChatEngine, when the model calls tools:)
    EngineStatusUpdate {status: executing_tools}
    EngineToolCall {call_id, tool_name, arguments}  then the sandbox's ToolExecuted, per call
    EngineStatusUpdate {status: calling_llm} ...    the results go back to the model
    EngineResponse {text, finish_reason, usage, latency_ms, ...}
    EngineStatusUpdate {status: completed | failed | cancelled}

A provider failure fails the command with the provider's code (PROVIDER_*); a cancel or a
timeout stops the stream where it is and stores what had arrived (marked partial).

An engine gets the daemon's providers, conversation memory and session tools from the
``EngineContext`` (engines/context.py) the bus passes to its constructor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from llmgine_daemon.bus.commands import Execution, command_depth, current
from llmgine_daemon.bus.engine_registry import ConfigField, EngineBase
from llmgine_daemon.bus.errors import BusError, invalid
from llmgine_daemon.bus.mcp_servers import provider_tool_name
from llmgine_daemon.engines.approval import (
    REQUIRE_APPROVAL,
    TurnState,
    as_pending,
    ask,
    needs_approval,
    pending_call,
    resume,
)
from llmgine_daemon.engines.memory import Bounds, Message
from llmgine_daemon.engines.providers import (
    ChatRequest,
    Completion,
    ProviderError,
    TextDelta,
    ToolCall,
    ToolSpec,
    UnknownModel,
    Usage,
    resolve_model,
)
from llmgine_daemon.observability import metrics, tracing
from llmgine_daemon.protocol import Command, Engine, ErrorCode
from llmgine_daemon.store.db import StorageError

if TYPE_CHECKING:
    from llmgine_daemon.engines.context import EngineContext

log = logging.getLogger("llmgine.engines")

# A tool result longer than this is cut before it goes back to the model (and into memory).
MAX_TOOL_RESULT_CHARS = 20_000
# The calls of one answer that run (max_tool_rounds bounds the rounds): the rest are answered
# with OVER_LIMIT, as every call needs its result, and the model may make them next round.
MAX_TOOL_CALLS = 32
OVER_LIMIT = json.dumps(
    {"error": f"not run: at most {MAX_TOOL_CALLS} tool calls in one answer; make the rest in the next"}
)


class StopField(ConfigField):
    """``stop``: one string or a list of up to four (what both providers accept)."""

    __slots__ = ()

    def check(self, value: Any) -> str | None:
        values = [value] if isinstance(value, str) else value
        if value is None:
            return None
        if not (isinstance(values, list) and all(isinstance(v, str) for v in values) and len(values) <= 4):
            return "must be a string or a list of at most 4 strings"
        if "" in values:  # Anthropic refuses it (400); OpenAI would stop at once, or never
            return "must not be an empty string"
        return None


class PositiveNumber(ConfigField):
    __slots__ = ()

    def check(self, value: Any) -> str | None:
        issue = super().check(value)
        if issue is None and value is not None and value <= 0:
            return "must be greater than 0"
        return issue


CALL_FIELDS: tuple[ConfigField, ...] = (
    ConfigField(
        "temperature",
        "number",
        None,
        "sampling temperature, 0-2 (Anthropic: 0-1; provider default when unset)",
        minimum=0,
        maximum=2,
    ),
    ConfigField(
        "max_tokens",
        "integer",
        None,
        "most tokens in one answer (Anthropic: 1024 when unset)",
        minimum=1,
        maximum=1_000_000,
    ),
    ConfigField("top_p", "number", None, "nucleus sampling", minimum=0, maximum=1),
    StopField("stop", "string", None, "stop sequence: a string or a list of up to 4"),
    ConfigField("system_prompt", "string", None, "system prompt sent before the conversation"),
    PositiveNumber(
        "timeout",
        "number",
        None,
        "seconds to wait for the model to start answering and between streamed chunks "
        "(default: providers.<name>.timeout)",
        maximum=3600,
    ),
)
MEMORY_FIELDS: tuple[ConfigField, ...] = (
    ConfigField("memory_max_messages", "integer", 100, "messages kept in the conversation", minimum=2, maximum=100_000),
    ConfigField(
        "memory_max_chars", "integer", 200_000, "characters kept in the conversation", minimum=100, maximum=100_000_000
    ),
)
TOOL_ROUNDS = ConfigField(
    "max_tool_rounds", "integer", 8, "model -> tools -> model rounds per prompt", minimum=1, maximum=100
)


# Anthropic's temperature is 0-1 (OpenAI's, CALL_FIELDS' range, 0-2): a value past it would
# be a 400 from the provider at every prompt.
MAX_TEMPERATURE = {"anthropic": 1}


def temperature_issue(kind: str, value: Any) -> str | None:
    most = MAX_TEMPERATURE.get(kind)
    if most is not None and isinstance(value, int | float) and value > most:
        return f"must be at most {most} for {kind} models"
    return None


@dataclass(frozen=True)
class Options:
    temperature: float | None
    max_tokens: int | None
    top_p: float | None
    stop: list[str] | None
    system_prompt: str | None
    timeout: float | None
    max_tool_rounds: int


def tool_message(call: ToolCall, content: str, is_error: bool) -> Message:
    if len(content) > MAX_TOOL_RESULT_CHARS:
        content = content[:MAX_TOOL_RESULT_CHARS] + f"\n[truncated: {len(content)} characters in all]"
    msg: Message = {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": content}
    if is_error:
        msg["is_error"] = True
    return msg


def complete_rounds(turn: list[Message]) -> list[Message]:
    """The turn up to its last tool round whose calls all have results (a cut turn must not
    leave a call without its result in memory)."""
    for i in range(len(turn) - 1, -1, -1):
        msg = turn[i]
        if msg["role"] == "assistant" and msg.get("tool_calls"):
            answered = {m.get("tool_call_id") for m in turn[i + 1 :] if m["role"] == "tool"}
            if not {c["id"] for c in msg["tool_calls"]} <= answered:
                return turn[:i]
            break
    return turn


@contextlib.contextmanager
def llm_call(provider: str, model: str, round_: int) -> Iterator[tracing.Span]:
    """One model call: an ``llm.call`` span, ``llm_calls_total`` by outcome (ok, error,
    cancelled) and ``llm_call_duration_seconds``."""
    t0 = time.monotonic()
    outcome = "error"
    try:
        with tracing.span("llm.call", kind="client", provider=provider, model=model, round=round_) as span:
            yield span
        outcome = "ok"
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    finally:
        metrics.inc("llm_calls_total", provider=provider, model=model, outcome=outcome)
        metrics.observe("llm_call_duration_seconds", time.monotonic() - t0, provider=provider, model=model)


class LLMEngine(EngineBase):
    context: EngineContext
    offers_tools: ClassVar[bool] = False
    config_fields = CALL_FIELDS + MEMORY_FIELDS

    def __init__(self, record: Engine, context: EngineContext) -> None:
        super().__init__(record, context)
        self.tool_names: dict[str, str] = {}  # as offered to the model -> the tool's name
        self.approval_tools: set[str] = set()  # registered with requires_approval
        # Checked here so a bad model name is a 422 at creation, not a failure at first use.
        try:
            self.provider_name, self.model = resolve_model(
                record.model_name or context.providers.default_model, context.providers.default_provider
            )
        except UnknownModel as exc:
            raise invalid("model_name", str(exc)) from None

    @classmethod
    def validate_config(cls, configuration: dict[str, Any]) -> dict[str, Any]:
        super().validate_config(configuration)
        return configuration

    @classmethod
    def validate_new(cls, model_name: str | None, configuration: dict[str, Any], context: Any) -> None:
        providers = context.providers
        try:
            name, _ = resolve_model(model_name or providers.default_model, providers.default_provider)
        except UnknownModel:
            return  # said by __init__, as model_name
        issue = temperature_issue(providers.configs[name].kind, configuration.get("temperature"))
        if issue is not None:
            raise invalid("configuration.temperature", issue)

    # -- options ------------------------------------------------------------------------

    def options(self, command: Command) -> Options:
        """Configuration, with per-call overrides from the command's parameters (validated:
        a typo in a parameter name fails the call instead of being ignored)."""
        # Not per call: memory bounds, and require_approval (a command must not lift it).
        fields = {f.name: f for f in self.config_fields if f not in MEMORY_FIELDS and f is not REQUIRE_APPROVAL}
        values: dict[str, Any] = {}
        for name, value in command.parameters.items():
            if name == "prompt":
                continue
            fld = fields.get(name)
            if fld is None:
                raise invalid(
                    f"parameters.{name}",
                    f"unknown parameter for {self.engine_type}",
                    available=sorted(["prompt", *fields]),
                )
            issue = fld.check(value)
            if issue is None and name == "temperature":
                issue = temperature_issue(self.context.providers.configs[self.provider_name].kind, value)
            if issue is not None:
                raise invalid(f"parameters.{name}", issue)
            values[name] = fld.normal(value)

        def get(name: str) -> Any:
            if values.get(name) is not None:
                return values[name]
            value = self.record.configuration.get(name)
            return value if value is not None else next(f.default for f in self.config_fields if f.name == name)

        stop = get("stop")
        return Options(
            temperature=get("temperature"),
            max_tokens=get("max_tokens"),
            top_p=get("top_p"),
            stop=[stop] if isinstance(stop, str) else stop,
            system_prompt=get("system_prompt"),
            timeout=get("timeout"),
            max_tool_rounds=get("max_tool_rounds") if self.offers_tools else 0,
        )

    def bounds(self) -> Bounds:
        conf = self.record.configuration
        return Bounds(conf.get("memory_max_messages") or 100, conf.get("memory_max_chars") or 200_000)

    # -- tools --------------------------------------------------------------------------

    async def tool_specs(self) -> list[ToolSpec]:
        """The session's tools as the model is offered them. An MCP server's ``server.tool``
        goes by ``server-tool`` (providers allow no "." in a function name); ``tool_names``
        maps the names back."""
        if not self.offers_tools:
            return []
        tools = await self.context.tools.list(self.record.session_id)
        self.tool_names = {}
        specs = []
        for tool in tools:
            # Unique: an MCP server's lookup.record and lookup_record are both lookup_record
            # to a provider (which refuses a name twice); the second is lookup_record_2.
            offered = base = provider_tool_name(tool.name)
            n = 2
            while offered in self.tool_names:
                offered = f"{base[:60]}_{n}"
                n += 1
            self.tool_names[offered] = tool.name
            specs.append(ToolSpec(offered, tool.description, tool.parameters))
        self.approval_tools = {t.name for t in tools if t.requires_approval}
        return specs

    async def run_round(self, ctx: Execution, state: TurnState, base: dict[str, Any]) -> None:
        """Run the calls of a round not run yet (all of them, or, resumed after a restart,
        those from the one that waited for approval on)."""
        while state.pending:
            part = state.pending[0]
            call = pending_call(part)
            if part.get("over_limit"):
                msg, ran = tool_message(call, OVER_LIMIT, True), call
            else:
                msg, ran = await self.run_tool(ctx, call, base, state)
            state.pending.pop(0)
            state.turn.append(msg)
            state.calls_made.append(
                {
                    "call_id": call.id,
                    "tool_name": self.tool_names.get(call.name, call.name),
                    "arguments": ran.arguments,
                    "is_error": bool(msg.get("is_error")),
                }
            )
        state.rounds += 1

    async def run_tool(
        self, ctx: Execution, call: ToolCall, base: dict[str, Any], state: TurnState
    ) -> tuple[Message, ToolCall]:
        """The call's result message, and the call as it ran (arguments edited on approval)."""
        name = self.tool_names.get(call.name, call.name)
        if state.waiting is None or state.waiting.call_id != call.id:  # a resumed call said so already
            ctx.emit(
                "EngineToolCall",
                {**base, "call_id": call.id, "tool_name": name, "arguments": call.arguments},
                source="engine",
            )
        if call.invalid_arguments is not None:
            error = {"error": "the arguments were not a JSON object", "received": call.invalid_arguments[:500]}
            return tool_message(call, json.dumps(error), True), call
        if name not in self.tool_names.values():  # made up: nothing to run, nobody to ask
            error = {
                "error": f"no tool named {call.name[:200]!r}",
                "code": ErrorCode.TOOL_NOT_FOUND,
                "available": sorted(self.tool_names),
            }
            return tool_message(call, json.dumps(error), True), call
        configured = self.record.configuration.get("require_approval")
        if needs_approval(self.context, configured, name, name in self.approval_tools):
            # Asked under the tool's own name (an MCP tool's server.tool, not server-tool).
            approved, refusal = await ask(self.context, ctx, replace(call, name=name), state, base)
            if approved is None:
                return tool_message(call, refusal, True), call
            call = replace(approved, name=call.name)
        return await self.execute_tool(name, call, command_depth(ctx.command.metadata)), call

    async def execute_tool(self, name: str, call: ToolCall, depth: int = 0) -> Message:
        """Run a tool the model called, at the depth of the command (``bus.execute`` nests an
        engine's command too): a tool whose user code executes this engine's command again
        would otherwise run at depth 0 each time round, past ``sandbox.max_depth``, and wait
        for its session's share of the pool, which the tool that started it holds."""
        try:
            result = await self.context.tools.execute(
                self.record.session_id, name, call.arguments, source="engine", depth=depth
            )
        except BusError as exc:  # unknown tool, arguments that do not fit its schema
            return tool_message(call, json.dumps({"error": exc.message, "code": exc.code}), True)
        if result.error:
            return tool_message(call, json.dumps({"error": result.error}), True)
        value = result.result
        return tool_message(call, value if isinstance(value, str) else json.dumps(value), False)

    # -- usage --------------------------------------------------------------------------

    async def record_usage(self, ctx: Execution, provider: str, model: str, usage: Usage) -> None:
        """One model call's tokens onto the command's row (bus/usage.py), as soon as the call
        ended: what was spent is counted even if the command is cancelled later."""
        command = ctx.command
        try:
            total = await self.context.usage.record(
                command.command_id,
                self.record.engine_id,
                provider,
                model,
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_tokens,
            )
        except StorageError as exc:  # the answer matters more than its bookkeeping
            log.warning("could not record the usage of command %s: %s", command.command_id, exc)
            return
        command.usage = total  # after the commit, like every change to a live record

    # -- the turn -----------------------------------------------------------------------

    async def handle(self, command: Command) -> Any:
        ctx = current()
        prompt = command.parameters.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise invalid("parameters.prompt", "a non-empty string is required")
        opts = self.options(command)
        engine_id = self.record.engine_id
        base = {"engine_id": engine_id, "command_id": command.command_id}

        def status(value: str, **extra: Any) -> None:
            ctx.emit("EngineStatusUpdate", {**base, "status": value, **extra}, source="engine")

        status("processing")
        t0 = time.monotonic()
        provider, model = self.context.providers.resolve(self.record.model_name)
        history = await self.context.memory.load(engine_id)
        tools = await self.tool_specs()
        system: list[Message] = [{"role": "system", "content": opts.system_prompt}] if opts.system_prompt else []
        state = await resume(self.context, command.command_id) if self.offers_tools else None
        if state is None:
            state = TurnState(turn=[{"role": "user", "content": prompt}])
        parts: list[str] = []

        def summary(text: str, finish_reason: str) -> dict[str, Any]:
            return {
                **base,
                "response": text,
                "text": text,
                "finish_reason": finish_reason,
                "usage": {
                    "prompt_tokens": state.prompt_tokens,
                    "completion_tokens": state.completion_tokens,
                    "cached_tokens": state.cached_tokens,
                    "cost_usd": ctx.command.usage.cost_usd if ctx.command.usage is not None else None,
                },
                "latency_ms": round((time.monotonic() - t0) * 1000, 3),
                "first_delta_ms": state.first_delta_ms,
                "model": f"{provider.name}/{model}",
                "tool_rounds": state.rounds,
                "tool_calls": state.calls_made,
            }

        try:
            if state.pending:  # resumed after a restart, in the middle of a round
                status("executing_tools", tools=[self.tool_names.get(c["name"], c["name"]) for c in state.pending])
                await self.run_round(ctx, state, base)
            while True:
                status("calling_llm", round=state.rounds)
                request = ChatRequest(
                    model,
                    system + history + state.turn,
                    tools,
                    opts.temperature,
                    opts.max_tokens,
                    opts.top_p,
                    opts.stop,
                    opts.timeout,
                )
                parts = []
                completion: Completion | None = None
                with llm_call(provider.name, model, state.rounds) as span:
                    async for item in provider.stream(request):
                        if isinstance(item, TextDelta):
                            if state.first_delta_ms is None:
                                state.first_delta_ms = round((time.monotonic() - t0) * 1000, 3)
                            parts.append(item.text)
                            ctx.emit("EngineResponseDelta", {**base, "text": item.text}, source="engine")
                        elif isinstance(item, Completion):
                            completion = item
                    assert completion is not None  # Provider.stream always ends with one
                    span.set(
                        finish_reason=completion.finish_reason,
                        prompt_tokens=completion.usage.prompt_tokens,
                        completion_tokens=completion.usage.completion_tokens,
                        cached_tokens=completion.usage.cached_tokens,
                        tool_calls=len(completion.tool_calls),
                    )
                state.prompt_tokens += completion.usage.prompt_tokens
                state.completion_tokens += completion.usage.completion_tokens
                state.cached_tokens += completion.usage.cached_tokens
                await self.record_usage(ctx, provider.name, model, completion.usage)
                if not (completion.tool_calls and tools):
                    state.turn.append({"role": "assistant", "content": completion.text})
                    finish = completion.finish_reason
                    break
                if state.rounds >= opts.max_tool_rounds:
                    # The calls the model still wants are not run (nor stored: a call without
                    # its result would break the next request).
                    state.turn.append({"role": "assistant", "content": completion.text})
                    finish = "max_tool_rounds"
                    break
                state.turn.append(
                    {
                        "role": "assistant",
                        "content": completion.text,
                        "tool_calls": [c.as_message_part() for c in completion.tool_calls],
                    }
                )
                state.pending = [
                    {**as_pending(c), "over_limit": i >= MAX_TOOL_CALLS} for i, c in enumerate(completion.tool_calls)
                ]
                status("executing_tools", tools=[self.tool_names.get(c.name, c.name) for c in completion.tool_calls])
                await self.run_round(ctx, state, base)
        except asyncio.CancelledError:
            if state.suspended:  # shutdown while waiting for approval: resumed at the next start
                raise
            # Cancelled or timed out: keep what arrived, then let the runner record why.
            if provider.reported is not None:  # the cut call's input, billed all the same
                state.prompt_tokens += provider.reported.prompt_tokens
                state.completion_tokens += provider.reported.completion_tokens
                state.cached_tokens += provider.reported.cached_tokens
                await self.record_usage(ctx, provider.name, model, provider.reported)
            text = "".join(parts)
            kept = complete_rounds(state.turn)
            if text:
                kept = [*kept, {"role": "assistant", "content": text}]
            try:
                await self.context.memory.append(
                    engine_id, kept, self.bounds(), command_id=command.command_id, partial_last=bool(text)
                )
            finally:
                ctx.emit("EngineResponse", summary(text, "cancelled"), source="engine")
                status("cancelled")
            raise
        except ProviderError as exc:
            status("failed", error={"code": exc.code, "message": exc.message})
            raise BusError(exc.code, exc.message, {**exc.details, "model": f"{provider.name}/{model}"}) from None
        await self.context.memory.append(engine_id, state.turn, self.bounds(), command_id=command.command_id)
        result = summary(state.turn[-1]["content"], finish)
        ctx.emit("EngineResponse", result, source="engine")
        status("completed")
        return result


class SinglePassEngine(LLMEngine):
    engine_type = "SinglePassEngine"
    command_type = "SinglePassEngineCommand"
    description = "One model call per prompt, streamed; keeps the conversation (OpenAI-compatible or Anthropic)."


class ToolChatEngine(LLMEngine):
    engine_type = "ToolChatEngine"
    command_type = "ToolChatEngineCommand"
    description = (
        "The model calls the session's tools (run in the sandbox) until it answers, "
        "at most max_tool_rounds rounds; streamed; keeps the conversation."
    )
    offers_tools = True
    config_fields = CALL_FIELDS + (TOOL_ROUNDS, REQUIRE_APPROVAL) + MEMORY_FIELDS


LLM_ENGINES: tuple[type[LLMEngine], ...] = (SinglePassEngine, ToolChatEngine)

# What the app hands the Bus (beside engines.ENGINE_TYPES' DummyEngine).
LLM_ENGINE_TYPES: dict[str, type[EngineBase]] = {cls.engine_type: cls for cls in LLM_ENGINES}
