"""Engine types: DummyEngine now, real LLM engines later. ``ENGINE_TYPES`` is what the app hands
to the Bus."""

from __future__ import annotations

from llmgine_daemon.bus.engine_registry import EngineBase
from llmgine_daemon.engines.dummy import DummyEngine

ENGINE_TYPES: dict[str, type[EngineBase]] = {cls.engine_type: cls for cls in (DummyEngine,)}
