"""``parse``: ast.parse, around a CPython 3.11 fault.

Now and then, in a test process that has run many other tests, CPython 3.11.7's ast.parse
raises ``SystemError: AST constructor recursion depth mismatch`` on a file it parses fine
elsewhere (it happened once in CI, in tests/unit/test_api_layering.py). The fault is the
interpreter's, not the file's. So that one parse is done again in a fresh interpreter, and the
tree comes back pickled. Any other error is raised as it is.
"""

from __future__ import annotations

import ast
import pickle
import subprocess
import sys

_FRESH = "import ast, pickle, sys; sys.stdout.buffer.write(pickle.dumps(ast.parse(sys.stdin.read())))"


def parse(source: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SystemError:
        out = subprocess.run(
            [sys.executable, "-c", _FRESH], input=source.encode(), capture_output=True, check=True, timeout=60
        ).stdout
        tree = pickle.loads(out)
        assert isinstance(tree, ast.Module)
        return tree
