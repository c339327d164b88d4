"""llmgined's log destination: LOG_FILE rotated, structured lines."""

from __future__ import annotations

import json
import logging

import pytest
from llmgine_daemon.observability.context import bind
from llmgine_daemon.server import setup_logging
from llmgine_daemon.settings import load_settings


@pytest.fixture
def restore_root_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_log_file_json_lines_rotated(tmp_path, restore_root_logging):
    path = tmp_path / "logs" / "api.log"
    settings = load_settings(
        env={
            "LLMGINE_HOME": str(tmp_path),
            "LOG_FILE": str(path),
            "LOG_LEVEL": "debug",
            "LOG_MAX_BYTES": "2000",
            "LOG_BACKUP_COUNT": "2",
        }
    )
    setup_logging(settings)
    log = logging.getLogger("llmgine.unit")
    with bind(session_id="s-1", command_id="c-1"):
        log.debug("first %d", 1)
    for i in range(100):
        log.info("filler line %d with some padding to make the file rotate soon", i)
    first = (
        json.loads(path.with_name("api.log.2").read_text().splitlines()[0])
        if path.with_name("api.log.2").exists()
        else None
    )
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines and all({"timestamp", "level", "logger", "message"} <= set(line) for line in lines)
    assert path.stat().st_size <= 2000
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in path.parent.iterdir())
    assert sorted(p.name for p in path.parent.iterdir()) == ["api.log", "api.log.1", "api.log.2"]
    assert first is None or first["level"] in ("debug", "info")


def test_log_file_first_record_has_context(tmp_path, restore_root_logging):
    path = tmp_path / "api.log"
    setup_logging(load_settings(env={"LLMGINE_HOME": str(tmp_path), "LOG_FILE": str(path)}))
    with bind(session_id="s-1", command_id="c-1"):
        logging.getLogger("llmgine.unit").warning("with context")
    logging.getLogger("llmgine.unit").debug("below the level")
    [line] = [json.loads(x) for x in path.read_text().splitlines()]
    assert line["message"] == "with context" and line["session_id"] == "s-1" and line["command_id"] == "c-1"


def test_text_format_on_request(tmp_path, restore_root_logging):
    path = tmp_path / "api.log"
    setup_logging(load_settings(env={"LLMGINE_HOME": str(tmp_path), "LOG_FILE": str(path), "LOG_FORMAT": "text"}))
    with bind(session_id="s-1"):
        logging.getLogger("llmgine.unit").error("plain")
    text = path.read_text()
    assert "ERROR" in text and "llmgine.unit: plain" in text and "session=s-1" in text


def test_provider_keys_are_masked_in_the_log(tmp_path, restore_root_logging):
    """A provider's configured key is masked as API_KEY_SECRET is (a proxy's error quoting it,
    a traceback's request headers): it was written out as it was."""
    path = tmp_path / "api.log"
    env = {"LLMGINE_HOME": str(tmp_path), "LOG_FILE": str(path), "ANTHROPIC_API_KEY": "provider-key-4242-abcd"}
    setup_logging(load_settings(env=env))
    logging.getLogger("llmgine.unit").warning("refused: x-api-key provider-key-4242-abcd")
    text = path.read_text()
    assert "refused: x-api-key ********" in text and "provider-key-4242-abcd" not in text
    # A placeholder a local server ignores (Ollama's docs say api_key="ollama") is no secret:
    # masking it would mask every "ollama" in the log.
    path.unlink()
    setup_logging(load_settings(env={**env, "ANTHROPIC_API_KEY": "", "OPENAI_API_KEY": "ollama"}))
    logging.getLogger("llmgine.unit").warning("ollama: model not found")
    assert "ollama: model not found" in path.read_text()
