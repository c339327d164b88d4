"""Engine types: DummyEngine and the LLM engines. ``ENGINE_TYPES`` is what the app hands to the
Bus, with an ``EngineContext`` factory (engines/context.py) for their constructors."""

from __future__ import annotations

from llmgine_daemon.bus.engine_registry import EngineBase
from llmgine_daemon.engines.dummy import DummyEngine
from llmgine_daemon.engines.llm import LLM_ENGINE_TYPES

ENGINE_TYPES: dict[str, type[EngineBase]] = {DummyEngine.engine_type: DummyEngine, **LLM_ENGINE_TYPES}
