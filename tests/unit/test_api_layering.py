"""The API layer goes through the bus: no module in daemon/api imports the store."""

from __future__ import annotations

import ast
from pathlib import Path

import llmgine_daemon.api

from tests.astparse import parse

API_DIR = Path(llmgine_daemon.api.__file__).parent
FORBIDDEN = "llmgine_daemon.store"


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """Every module an ``import`` names (``from x import y`` names x and x.y), with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def store_imports(source: str) -> list[tuple[int, str]]:
    return [
        (line, name)
        for line, name in imported_modules(parse(source))
        if name == FORBIDDEN or name.startswith(FORBIDDEN + ".")
    ]


def test_the_walk_finds_store_imports():
    # Each way of writing it, also inside functions and TYPE_CHECKING blocks.
    assert store_imports("from llmgine_daemon.store.db import Store\n")
    assert store_imports("import llmgine_daemon.store.maintenance as m\n")
    assert store_imports("from llmgine_daemon import store\n")
    assert store_imports("if TYPE_CHECKING:\n    from llmgine_daemon.store import db\n")
    assert store_imports("def f():\n    import llmgine_daemon.store\n")
    assert not store_imports("from llmgine_daemon.bus.errors import StorageBusy\n")
    assert not store_imports("from llmgine_daemon import storeroom\n")


def test_no_api_module_imports_the_store():
    modules = sorted(API_DIR.glob("*.py"))
    assert len(modules) > 10, API_DIR  # the walk looks where the modules are
    offenders = [f"{path.name}:{line}: {name}" for path in modules for line, name in store_imports(path.read_text())]
    assert offenders == [], "daemon/api must reach the store through the bus:\n" + "\n".join(offenders)
