"""What LLM engines share inside one daemon: the providers (and their HTTP connection pool),
conversation memory, and the bus (for the session's tools)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmgine_daemon.engines.memory import Memory
from llmgine_daemon.engines.providers import Providers

if TYPE_CHECKING:
    from llmgine_daemon.bus.core import Bus
    from llmgine_daemon.bus.engine_registry import EngineBase
    from llmgine_daemon.settings import Settings


class LLMRuntime:
    def __init__(self, settings: Settings | dict[str, Any]) -> None:
        self.providers = Providers(settings)
        self._bus: Bus | None = None
        self._memory: Memory | None = None

    def attach(self, bus: Bus) -> None:
        """Called once the Bus exists (it is built with the engine types, so after them)."""
        self._bus = bus
        self._memory = Memory(bus.store, bus.events)

    @property
    def bus(self) -> Bus:
        assert self._bus is not None, "LLMRuntime.attach was not called"
        return self._bus

    @property
    def memory(self) -> Memory:
        assert self._memory is not None, "LLMRuntime.attach was not called"
        return self._memory

    def engine_types(self) -> dict[str, type[EngineBase]]:
        from llmgine_daemon.engines.llm import bind_engine_types

        return bind_engine_types(self)

    async def close(self) -> None:
        await self.providers.close()
