"""The README's error table names every error code the API can return."""

from __future__ import annotations

from pathlib import Path

from llmgine_daemon.protocol import ERROR_STATUS

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_error_code_is_documented():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Errors") : text.index("## Security model")]
    missing = [code for code in ERROR_STATUS if f"`{code}`" not in section]
    assert not missing, f"README ## Errors does not list: {missing}"
