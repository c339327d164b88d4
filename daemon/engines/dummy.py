"""DummyEngine: a deterministic stand-in for an LLM engine, for tests, demos and benchmarks.

Each command publishes ``DummyEngineStatusUpdate {status: "processing"}``, waits ``delay_ms``
(simulated latency), then either fails (``fail: true``) after ``{status: "failed"}`` or
publishes ``{status: "completed"}`` and returns a result built only from the prompt and the
engine's settings. ``delay_ms`` and ``fail`` can also be set per command in its parameters.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from llmgine_daemon.bus.commands import current
from llmgine_daemon.bus.engine_registry import ConfigField, EngineBase
from llmgine_daemon.bus.errors import invalid
from llmgine_daemon.protocol import Command


class DummyEngineError(Exception):
    """The simulated failure of ``fail: true``."""


class DummyEngine(EngineBase):
    engine_type = "DummyEngine"
    command_type = "DummyEngineCommand"
    description = "Echoes the prompt deterministically; simulates latency and failure."
    eager = True  # nothing outside the daemon: a command may start before it is stored
    config_fields = (
        ConfigField(
            "delay_ms", "integer", 0, "simulated latency per command, in milliseconds", minimum=0, maximum=3_600_000
        ),
        ConfigField("fail", "boolean", False, "make every command fail (COMMAND_EXECUTION_FAILED)"),
        ConfigField(
            "temperature", "number", 0.7, "accepted for compatibility; echoed in the result", minimum=0, maximum=2
        ),
        ConfigField(
            "max_tokens", "integer", 1000, "truncates the response to this many words", minimum=1, maximum=1_000_000
        ),
    )

    async def handle(self, command: Command) -> Any:
        ctx = current()
        prompt = command.parameters.get("prompt")
        if not isinstance(prompt, str):
            # The caller's mistake, not the engine's: VALIDATION_ERROR naming the field, as
            # the LLM engines say it (no COMMAND_EXECUTION_FAILED with the daemon's traceback).
            raise invalid("parameters.prompt", "Field is required" if prompt is None else "must be a string")
        # Every override checked before anything happens (a bad one is VALIDATION_ERROR).
        delay_ms, fail, max_tokens, temperature = (
            self.setting(name, command) for name in ("delay_ms", "fail", "max_tokens", "temperature")
        )
        status = {"engine_id": self.record.engine_id, "command_id": command.command_id}
        ctx.emit("DummyEngineStatusUpdate", {"status": "processing", **status}, source="engine")
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000.0)
        if fail:
            ctx.emit("DummyEngineStatusUpdate", {"status": "failed", **status}, source="engine")
            raise DummyEngineError(f"DummyEngine {self.record.engine_id} failed as configured (fail=true)")
        words = prompt.split()
        response_words = ["Dummy", "response", "to:", *words][:max_tokens]
        ctx.emit("DummyEngineStatusUpdate", {"status": "completed", **status}, source="engine")
        return {
            "response": " ".join(response_words),
            "engine_id": self.record.engine_id,
            "model_name": self.record.model_name,
            "temperature": temperature,
            "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest()[:16],
            "usage": {"prompt_tokens": len(words), "completion_tokens": len(response_words)},
        }
