"""The `llmgine` entry point.

The three commands scripts call in loops run on the fast path (hot.py: no Typer, click,
rich or msgspec is imported); everything else, and anything the fast path does not
recognise exactly, goes to the Typer app in root.py, which imports only the invoked
command's module.

``from llmgine_cli.app import app`` still gives the Typer app (imported on first use).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from llmgine_cli.context import clicolor, escape_unencodable_output, open_closed_std_streams
    from llmgine_cli.hot import fast_main

    open_closed_std_streams()
    clicolor()
    escape_unencodable_output()
    args = sys.argv[1:] if argv is None else list(argv)
    code = fast_main(args)
    if code is not None:
        return code
    from llmgine_cli.root import run

    return run(args)


def __getattr__(name: str) -> object:
    if name in ("app", "error_line", "RootGroup", "COMMANDS", "build_command"):
        from llmgine_cli import root

        return getattr(root, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
