"""The layering of docs/architecture.md, checked against the imports of every module.

server → app → api → engines → bus → mcp → sandbox → observability → store → protocol/settings/aio:
a module imports from its own layer or from a layer below, never above. Imports inside
functions count too (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.astparse import parse

ROOT = Path(__file__).resolve().parents[2]
DAEMON = ROOT / "daemon"

# Higher imports lower. protocol, settings and aio share the bottom but do not import each other.
RANK = {
    "__main__": 10,
    "server": 9,
    "reload": 8.9,  # llmgined --reload: runs the server as its child (standard library only)
    "logsetup": 8.8,  # the daemon's log handler and format, set up by the server at start
    "coalesce": 8.5,  # the listeners' writes held to the end of the loop's turn (aiohttp only)
    "app": 8,
    "api": 7,
    "engines": 6,
    "bus": 5,
    "mcp": 4.5,  # MCP servers at run time: the bus calls it, it uses the sandbox's bubblewrap
    "sandbox": 4,
    "observability": 3,
    "store": 2,
    "secrets": 1.7,  # provider keys: uses settings (write_private) and protocol
    "settings": 1.5,  # uses paths and its table
    "settings_table": 1.3,  # uses its parsers and the features' settings
    "settings_features": 1.2,  # uses the parsers
    "settings_parsers": 1.1,
    "protocol": 1,
    "paths": 1,
    "aio": 1,
    "argv": 1,  # options taken out of a command line (standard library only)
    "textsafe": 1,  # control characters as escapes, for the log and the CLI (standard library only)
}
# What the CLI may use of the daemon's package (it imports them on every invocation).
CLI_ALLOWED = {"protocol", "settings", "textsafe", "__version__"}


def _layer(path: Path) -> str:
    parts = path.relative_to(DAEMON).parts
    return parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module or name) for every llmgine_daemon import in ``path``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            module = node.module or ""
            if module == "llmgine_daemon":
                found += [(node.lineno, alias.name) for alias in node.names]
            elif module.startswith("llmgine_daemon."):
                found.append((node.lineno, module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("llmgine_daemon")]
    return found


def _target(name: str) -> str:
    return name.removeprefix("llmgine_daemon.").split(".")[0]


def test_every_daemon_module_has_a_layer():
    layers = {_layer(p) for p in DAEMON.rglob("*.py")} - {"__init__"}
    assert layers <= set(RANK), f"add to RANK (and docs/architecture.md): {layers - set(RANK)}"


@pytest.mark.parametrize("path", sorted(DAEMON.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_runs_back_up(path: Path):
    own = _layer(path)
    if own == "__init__":
        return
    wrong = []
    for line, name in _imports(path):
        target = _target(name)
        if target == own or target == "__version__":
            continue
        if RANK.get(target, 0) >= RANK[own]:
            wrong.append(f"{path.relative_to(ROOT)}:{line} ({own}) imports {name}")
    assert not wrong, "imports against the layering (docs/architecture.md):\n" + "\n".join(wrong)


def test_bus_never_imports_aiohttp():
    for path in (DAEMON / "bus").rglob("*.py"):
        tree = parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "aiohttp" for n in names), f"{path}:{node.lineno}"


def test_cli_uses_only_protocol_and_settings_of_the_daemon():
    wrong = []
    for path in (ROOT / "llmgine_cli").rglob("*.py"):
        for line, name in _imports(path):
            if _target(name) not in CLI_ALLOWED:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)
