"""llmgined: the LLMGine message bus as a local daemon (installed as ``llmgine_daemon``)."""

__version__ = "0.1.0"
