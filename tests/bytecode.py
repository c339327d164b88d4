"""Compile each Python module once per run, also where bytecode is not to be written.

With ``PYTHONDONTWRITEBYTECODE`` set (some CI images and sandboxes set it), every Python
process the suite starts - xdist workers, hundreds of ``llmgined`` and ``llmgine`` processes -
compiles the project's modules from source again: measured, about 0.15 CPU-seconds per daemon
start. So the process that starts the run (pytest itself, or xdist's controller) gives
everything it starts one shared cache in a temp dir instead (``PYTHONPYCACHEPREFIX``: nothing
is written beside the sources, as the variable asked), fills it at once with what it has
imported and the project's own packages (a prefix hides the ``__pycache__`` folders beside the
sources, the standard library's included: without that, the first daemons of a run would
compile it all, slowly, on a loaded machine), and removes it at the end. Where bytecode may be
written, or a prefix is set already, nothing changes.

Registered in tests/conftest.py (``pytest_configure``, ``pytest_unconfigure``).
"""

from __future__ import annotations

import compileall
import importlib.util
import os
import py_compile
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("daemon", "llmgine_cli")  # llmgine_daemon is daemon/ (an editable install)

_owned: str | None = None  # the cache dir this process made (and removes)


def pytest_configure(config: pytest.Config) -> None:
    global _owned
    if not sys.dont_write_bytecode or sys.pycache_prefix or os.environ.get("PYTHONPYCACHEPREFIX"):
        return  # bytecode is written already (or to a cache someone chose): leave it so
    _owned = tempfile.mkdtemp(prefix="lgpyc")
    # For every process started from here on (they inherit the environment) ...
    os.environ["PYTHONPYCACHEPREFIX"] = _owned
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    # ... and for the modules this one imports from now on (test modules, with -n 0).
    sys.pycache_prefix = _owned
    sys.dont_write_bytecode = False
    _fill()


def _fill() -> None:
    """Compile into the cache what this process has imported, and the project's packages."""
    for module in list(sys.modules.values()):
        source = getattr(getattr(module, "__spec__", None), "origin", None)
        if isinstance(source, str) and source.endswith(".py") and os.path.isfile(source):
            py_compile.compile(source, cfile=importlib.util.cache_from_source(source), quiet=2)
    for package in PACKAGES:
        compileall.compile_dir(ROOT / package, quiet=2)


def pytest_unconfigure(config: pytest.Config) -> None:
    global _owned
    if _owned is not None:
        shutil.rmtree(_owned, ignore_errors=True)
        _owned = None
