#!/usr/bin/env python3
"""Regenerate what is derived from the code: the shell completion scripts in completions/ and
the configuration table in README.md (from daemon/settings.py's SETTINGS and llmgined's
flags). `--check` changes nothing and exits 1 when something is stale (the test suite runs
it: tests/unit/test_generated_docs.py).

    python scripts/generate_docs.py          # rewrite
    python scripts/generate_docs.py --check  # verify
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"
COMPLETION_FILES = {"bash": "llmgine.bash", "zsh": "_llmgine", "fish": "llmgine.fish"}


def _default(value: Any, secret: bool) -> str:
    if value is None or (secret and value):
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return "`[" + ", ".join(f'"{v}"' for v in value) + "]`" if value else "none"
    return f"`{value}`"


def settings_table() -> str:
    from llmgine_daemon.server import FLAGS
    from llmgine_daemon.settings import SETTINGS

    rows = [
        "| config file key | environment | flag | default | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in SETTINGS:
        flag = f"`{FLAGS[s.key]}`" if s.key in FLAGS else ""
        meaning = s.help.replace("|", "\\|") + (" (secret: redacted in `/api/config`)" if s.secret else "")
        rows.append(f"| `{s.key}` | `{s.env}` | {flag} | {_default(s.default, s.secret)} | {meaning} |")
    return "\n".join(rows)


def expected() -> dict[Path, str]:
    from llmgine_cli.completion import script

    files = {ROOT / "completions" / name: script(shell) for shell, name in COMPLETION_FILES.items()}
    text = README.read_text(encoding="utf-8")
    head, sep, rest = text.partition(START)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"README.md lacks the {START} ... {END} markers")
    files[README] = f"{head}{START}\n{settings_table()}\n{END}{tail}"
    return files


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path, content in expected().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == content:
            continue
        stale.append(path.relative_to(ROOT))
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
    if check and stale:
        print("stale (run python scripts/generate_docs.py): " + ", ".join(map(str, stale)))
        return 1
    for path in stale:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
