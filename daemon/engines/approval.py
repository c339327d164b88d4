"""A ToolChat turn's state, and the approval gate in front of its tool calls.

``TurnState`` is what the tool loop of engines/llm.py holds between model calls: the turn's
messages so far, the calls of the current round not run yet, rounds, calls made and token
counts. It is saved with each approval request (bus/approvals.py), so a command that was
waiting for a decision when the daemon stopped resumes from it: the same approval, the same
remaining calls, nothing asked of the model again.

Which calls need approval (``needs_approval``), any of:
- the tool was registered with ``requires_approval: true``;
- the engine's ``require_approval`` configuration: ``true`` (every tool) or a list of names;
- the setting ``tools.require_approval`` (every tool, every engine).

The gate (``ask``): publish ``EngineStatusUpdate {status: waiting_approval}`` (which writes
the ``EngineToolCall`` before it), request, wait. Approved: the call runs, with the edited
arguments if any. Denied or expired: the model gets an error result saying so (and why). A
wait cancelled at shutdown leaves everything pending (``suspended``: the engine writes nothing
of the turn); any other cancel (the command cancelled or timed out, its session ended)
cancels the request first.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from llmgine_daemon.bus.engine_registry import ConfigField
from llmgine_daemon.engines.memory import Message
from llmgine_daemon.engines.providers import ToolCall
from llmgine_daemon.protocol import Approval

if TYPE_CHECKING:
    from llmgine_daemon.bus.commands import Execution
    from llmgine_daemon.engines.context import EngineContext


class ApprovalField(ConfigField):
    """``require_approval``: true (every tool), false, or a list of tool names."""

    __slots__ = ()

    def check(self, value: Any) -> str | None:
        if value is None or isinstance(value, bool):
            return None
        if isinstance(value, list) and all(isinstance(v, str) for v in value) and len(value) <= 1000:
            return None
        return "must be true, false or a list of tool names"


REQUIRE_APPROVAL = ApprovalField(
    "require_approval",
    "boolean",
    False,
    "ask a person before running a tool: true (every tool) or a list of tool names "
    "(also: a tool registered with requires_approval, the setting tools.require_approval)",
)


@dataclass
class TurnState:
    turn: list[Message]
    pending: list[dict[str, Any]] = field(default_factory=list)  # this round's calls not run yet
    rounds: int = 0
    calls_made: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    first_delta_ms: float | None = None
    # Not saved: the approval a resumed turn waits for, and whether a shutdown cut the wait.
    waiting: Approval | None = field(default=None, compare=False)
    suspended: bool = field(default=False, compare=False)

    def saved(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("waiting")
        data.pop("suspended")
        return data

    @classmethod
    def restore(cls, data: dict[str, Any], waiting: Approval) -> TurnState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known, waiting=waiting)


def pending_call(part: dict[str, Any]) -> ToolCall:
    return ToolCall(part["id"], part["name"], part.get("arguments") or {}, part.get("invalid_arguments"))


def as_pending(call: ToolCall) -> dict[str, Any]:
    return {**call.as_message_part(), "invalid_arguments": call.invalid_arguments}


def needs_approval(context: EngineContext, configured: Any, tool: str, registered: bool) -> bool:
    if registered or context.approvals.policy.require_all or configured is True:
        return True
    return isinstance(configured, list) and tool in configured


async def resume(context: EngineContext, command_id: str) -> TurnState | None:
    """The saved turn of a command that was waiting for a decision at the last shutdown."""
    found = await context.approvals.checkpoint(command_id)
    if found is None:
        return None
    approval, data = found
    return TurnState.restore(data, approval)


async def ask(
    context: EngineContext, ctx: Execution, call: ToolCall, state: TurnState, base: dict[str, Any]
) -> tuple[ToolCall | None, str]:
    """Wait for a person's decision on ``call``: (the call to run, with the arguments
    approved; or None, and the error the model gets instead)."""
    approvals = context.approvals
    command = ctx.command
    approval = state.waiting if state.waiting is not None and state.waiting.call_id == call.id else None
    stored = approval is not None
    if not stored:
        # Publish (not emit): what the engine emitted so far is written before the request.
        await ctx.publish(
            "EngineStatusUpdate", {**base, "status": "waiting_approval", "tool": call.name}, source="engine"
        )
        approval = approvals.new(
            command.command_id, command.session_id, base.get("engine_id"), call.id, call.name, call.arguments
        )
    assert approval is not None
    try:
        # Inside: a cancel that comes while the request is being written withdraws it too (the
        # write goes on; the withdrawal is written after it). Outside, the command was left
        # waiting_approval in the store, its request pending, though it answered cancelled.
        if stored:
            await approvals.resume(approval)
        else:
            await approvals.request(approval, state.saved())
        decided = await approvals.wait(approval)
    except asyncio.CancelledError:
        if ctx.cancel_reason == "shutdown":
            state.suspended = True  # resumed at the next start (bus/approvals.py)
        else:
            await asyncio.shield(approvals.cancel(approval, ctx.cancel_reason or "timeout"))
        raise
    state.waiting = None
    await approvals.consume(approval)
    ctx.emit("EngineStatusUpdate", {**base, "status": "executing_tools", "tools": [call.name]}, source="engine")
    if decided.status == "approved":
        arguments = decided.final_arguments if decided.final_arguments is not None else call.arguments
        return ToolCall(call.id, call.name, arguments), ""
    error = {
        "error": f"not run: the user {'did not answer in time' if decided.status == 'expired' else 'denied it'}",
        "decision": decided.status,
    }
    if decided.reason:
        error["reason"] = decided.reason
    return None, json.dumps(error)
