"""Text that reaches a terminal or a line-oriented log, made safe to show: C0 and C1 controls
and DEL as escapes (``\\n``, ``\\x1b``, ``\\x9b``...), the Unicode line and paragraph
separators (where ``splitlines()`` breaks a line) and the bidirectional controls (U+202A-202E,
U+2066-2069, and the marks U+200E, U+200F, U+061C). Data that is anybody's text - an event's
type or data, a client's log message, user code's error - must not move the cursor, change
colours, set the window title, reorder what follows it nor forge a line of a log.

And text the database is to store: PostgreSQL's text holds no NUL character, so a NUL is
kept written ``\x00`` (``without_nul``), as the log file writes it.

One table for the daemon's text log (observability/logs.py) and the CLI's rendering
(llmgine_cli/render.py, live.py): standard library only, so the CLI's start-up can import it.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no typing at run time: the CLI imports this on every call
if TYPE_CHECKING:
    from typing import Any

CONTROL_ESCAPES = (
    {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
    | {10: "\\n", 13: "\\r", 9: "\\t"}
    | {0x2028: "\\u2028", 0x2029: "\\u2029"}
    # The bidirectional controls: they reorder what a terminal shows after them, so a line
    # would read differently from what it holds ("Trojan Source", CVE-2021-42574), the marks
    # (LRM, RLM, ALM) included.
    | {c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)}
)

# JSON text a terminal may show (`-o json`, a template's values, an approval prompt): JSON
# escapes the C0 controls itself, but not DEL, the C1 controls (U+009B is an 8-bit CSI, U+009D
# an OSC: terminals that decode UTF-8 obey them), the line separators nor the bidirectional
# controls. Written as \u escapes they are the same JSON value, shown rather than obeyed.
JSON_ESCAPES = {c: f"\\u{c:04x}" for c in CONTROL_ESCAPES if c >= 0x7F}


def json_visible(text: str) -> str:
    """JSON text (as ``json.dumps`` writes it) with nothing left in it a terminal would obey."""
    return text.translate(JSON_ESCAPES)


NUL = "\x00"


def without_nul(value: Any) -> Any:
    """``value`` with every NUL character in its strings (keys too) written ``\\x00``: a single
    one (bus.log of user code, a client's message, an error's text in a span, a model's answer)
    would fail a whole write on PostgreSQL, a telemetry flush with every session's records in
    it. Callers test for a NUL first (rare)."""
    if isinstance(value, str):
        return value.replace(NUL, "\\x00")
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(without_nul(v) for v in value)
    return value
