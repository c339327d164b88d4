"""What engines use besides their record: ``EngineContext``, passed to every engine's
constructor by the bus (``Engines`` in bus/engine_registry.py builds engines as
``cls(record, context)``).

One per daemon, never module or class state (tests run several daemons in one process): the
LLM providers and their HTTP connection pool (the app owns them and closes them on shutdown),
the conversation memory, and the bus's session tools (ToolChatEngine). It needs parts of the
Bus, so the app hands the Bus a factory (``EngineContext.factory(providers)``) that the Bus
calls once those parts exist, before any engine is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmgine_daemon.engines.memory import Memory
from llmgine_daemon.engines.providers import Providers

if TYPE_CHECKING:
    from llmgine_daemon.bus.approvals import Approvals
    from llmgine_daemon.bus.core import Bus
    from llmgine_daemon.bus.tools import Tools
    from llmgine_daemon.bus.usage import UsageBook


@dataclass(frozen=True, slots=True)
class EngineContext:
    providers: Providers
    memory: Memory
    tools: Tools
    usage: UsageBook
    approvals: Approvals

    @classmethod
    def for_bus(cls, providers: Providers, bus: Bus) -> EngineContext:
        return cls(
            providers=providers,
            memory=Memory(bus.store, bus.events, bus.capacity.max_engine_memory_per_session),
            tools=bus.tools,
            usage=bus.usage,
            approvals=bus.approvals,
        )

    @classmethod
    def factory(cls, providers: Providers) -> Callable[[Bus], EngineContext]:
        """What ``Bus(engine_context=...)`` takes: builds this daemon's context from its Bus."""
        return lambda bus: cls.for_bus(providers, bus)
