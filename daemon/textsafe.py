"""Text that reaches a terminal or a line-oriented log, made safe to show: C0 and C1 controls
and DEL as escapes (``\\n``, ``\\x1b``, ``\\x9b``...), and the Unicode line and paragraph
separators (where ``splitlines()`` breaks a line). Data that is anybody's text - an event's
type or data, a client's log message, user code's error - must not move the cursor, change
colours, set the window title nor forge a line of a log.

One table for the daemon's text log (observability/logs.py) and the CLI's rendering
(llmgine_cli/render.py, live.py): standard library only, so the CLI's start-up can import it.
"""

from __future__ import annotations

CONTROL_ESCAPES = (
    {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
    | {10: "\\n", 13: "\\r", 9: "\\t"}
    | {0x2028: "\\u2028", 0x2029: "\\u2029"}
)
