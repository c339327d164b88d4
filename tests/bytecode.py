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

Test modules too, when xdist workers will import them: pytest rewrites their ``assert``
statements before compiling them (about 6 CPU-seconds for the whole suite's), and each worker
collects every test. Started at the same moment, the workers all found the cache empty and all
rewrote everything; so the controller writes the rewritten modules of the paths being run into
the cache first (pytest's own cache format and functions, the ones its import hook uses), and
the workers load them. (Measured: a run of the whole suite that runs no test cost 28 CPU-s on
four workers, 13 after; CONTRIBUTING.md, "Suite timings".) Should pytest's internals change,
the workers rewrite for themselves, as before.

Registered in tests/conftest.py (``pytest_configure``, ``pytest_unconfigure``).
"""

from __future__ import annotations

import compileall
import fnmatch
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
    if config.getoption("numprocesses", None):  # xdist workers will collect (not with -n 0)
        _rewrite_tests(config)


def _fill() -> None:
    """Compile into the cache what this process has imported, and the project's packages."""
    for module in list(sys.modules.values()):
        source = getattr(getattr(module, "__spec__", None), "origin", None)
        if isinstance(source, str) and source.endswith(".py") and os.path.isfile(source):
            py_compile.compile(source, cfile=importlib.util.cache_from_source(source), quiet=2)
    for package in PACKAGES:
        compileall.compile_dir(ROOT / package, quiet=2)


def _rewrite_tests(config: pytest.Config) -> None:
    """Write the assertion-rewritten code of the test modules (and conftests) under the paths
    being run into the cache, where pytest's import hook looks before rewriting one."""
    try:
        from _pytest.assertion.rewrite import PYC_TAIL, _rewrite_test, _write_pyc, assertstate_key, get_cache_dir

        state = config.stash[assertstate_key]
    except (ImportError, KeyError):  # pytest's internals moved, or assertions are not rewritten
        return
    patterns = [*config.getini("python_files"), "conftest.py"]
    here = config.invocation_params.dir
    roots = [(here / arg.split("::")[0]).resolve() for arg in config.args] or [ROOT / "tests"]
    files: set[Path] = set()
    for root in roots:
        found = [root] if root.is_file() else sorted(root.rglob("*.py")) if root.is_dir() else []
        files.update(f for f in found if any(fnmatch.fnmatch(f.name, p) for p in patterns))
        files.update(parent / "conftest.py" for parent in root.parents if (parent / "conftest.py").is_file())
    for fn in sorted(files):
        try:
            source_hash, co = _rewrite_test(fn, config)
            cache_dir = get_cache_dir(fn)
            cache_dir.mkdir(parents=True, exist_ok=True)
            _write_pyc(state, co, source_hash, cache_dir / (fn.name[:-3] + PYC_TAIL))
        except Exception:  # noqa: S112 - a module that does not compile fails where it is imported
            continue


def pytest_unconfigure(config: pytest.Config) -> None:
    global _owned
    if _owned is not None:
        shutil.rmtree(_owned, ignore_errors=True)
        _owned = None
