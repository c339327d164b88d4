"""Approval asked inline by `llmgine chat` and `llmgine ask` (docs/agents.md): when the engine
waits for a decision on a tool call (``ApprovalRequested``), ask on the terminal

    Run get_weather(location="Melbourne")? [y/N/e(dit)]

y runs it, e asks for other arguments (a JSON object) and runs it with those, anything else
(Enter) denies it. Without a terminal to ask on, say how to decide from elsewhere
(`llmgine approval approve|deny`); the answer then waits for that decision.
"""

from __future__ import annotations

import sys
from typing import Any

from llmgine_cli.client import ApiError, Client
from llmgine_cli.context import Environment
from llmgine_cli.inputs import loads
from llmgine_cli.render import json_text, visible_line

PROMPT_SUFFIX = "? [y/N/e(dit)] "


def call_text(tool: str, arguments: dict[str, Any]) -> str:
    """``get_weather(location="Melbourne")``: as a call in Python, values in JSON. A model's
    text (from a page it read) is in it: what a terminal would obey is shown as escapes."""
    args = ", ".join(f"{visible_line(str(key))}={json_text(value, indent=False)}" for key, value in arguments.items())
    return f"{visible_line(tool)}({args})"


def _ask(env: Environment, prompt: str) -> str | None:
    """One line typed on the terminal (the prompt on stderr: stdout may be piped); None at EOF."""
    env.stderr.write(prompt)
    env.stderr.flush()
    line = sys.stdin.readline()
    return line.strip() if line else None


def decide_inline(env: Environment, client: Client, session_id: str, data: dict[str, Any]) -> None:
    approval_id = str(data.get("approval_id"))
    tool = str(data.get("tool_name"))
    arguments = data.get("arguments") or {}
    if not sys.stdin.isatty():
        env.err(
            f"approval needed: {call_text(tool, arguments)}: run `llmgine approval approve {approval_id} "
            f"--session {session_id}` (or deny); waiting for the decision"
        )
        return
    answer = _ask(env, f"Run {call_text(tool, arguments)}{PROMPT_SUFFIX}")
    decision, edited, reason = "deny", None, "denied at the prompt"
    if answer is not None and answer.lower() in ("y", "yes"):
        decision, reason = "approve", None
    elif answer is not None and answer.lower() in ("e", "edit"):
        while True:
            text = _ask(env, f"arguments (JSON object) [{json_text(arguments, indent=False)}]: ")
            try:
                edited = loads(text) if text else arguments
            except ValueError as exc:
                env.err(f"not JSON: {exc}")
                continue
            if isinstance(edited, dict):
                break
            env.err("not a JSON object")
        decision, reason = "approve", None
    try:
        client.decide_approval(session_id, approval_id, decision, reason=reason, arguments=edited)
    except ApiError as exc:  # decided elsewhere meanwhile, expired, or invalid edited arguments
        env.err(f"approval not recorded: {exc}")
        if exc.status == 422:
            client.decide_approval(session_id, approval_id, "deny", reason=f"invalid arguments: {exc}")
