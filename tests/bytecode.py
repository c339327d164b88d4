"""Compile each Python module once per run, also where bytecode is not to be written.

With ``PYTHONDONTWRITEBYTECODE`` set (some CI images and sandboxes set it), every Python
process the suite starts - xdist workers, hundreds of ``llmgined`` and ``llmgine`` processes -
compiles the project's modules from source again, and pytest rewrites the asserts of every test
module again in each worker: measured, about 4 CPU-seconds per worker and 0.15 per daemon start.
So the process that starts the run (pytest itself, or xdist's controller) gives everything it
starts one shared cache in a temp dir instead (``PYTHONPYCACHEPREFIX``: nothing is written
beside the sources, as the variable asked) and removes that dir at the end. Where bytecode may
be written, or a prefix is set already, nothing changes.

Registered in tests/conftest.py (``pytest_configure``, ``pytest_unconfigure``).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pytest

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


def pytest_unconfigure(config: pytest.Config) -> None:
    global _owned
    if _owned is not None:
        shutil.rmtree(_owned, ignore_errors=True)
        _owned = None
