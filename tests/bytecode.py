"""Compile each Python module once, also where bytecode is not to be written.

With ``PYTHONDONTWRITEBYTECODE`` set (some CI images and sandboxes set it), every Python
process the suite starts - xdist workers, hundreds of ``llmgined`` and ``llmgine`` processes -
compiles the project's modules from source again: measured, about 0.15 CPU-seconds per daemon
start. So the process that starts the run (pytest itself, or xdist's controller) gives
everything it starts one bytecode cache in the temp dir instead (``PYTHONPYCACHEPREFIX``:
nothing is written beside the sources, as the variable asked), and fills it at once with what
it has imported and the project's own packages (a prefix hides the ``__pycache__`` folders
beside the sources, the standard library's included: without that, the first daemons of a run
would compile it all, slowly, on a loaded machine). Where bytecode may be written, or a prefix
is set already, nothing changes.

The cache is kept from one run to the next (``llmgine-pyc-UID`` in the temp dir, like a
``__pycache__``: a module is compiled again when its source changes), so a run only checks
it: filling an empty one cost the controller about 8 CPU-seconds, serially, before any worker
started. It is used only if it is a directory of this user's that nobody else can write (it is
code this user's processes run); otherwise a run makes a private one and removes it at the end,
as before.

Test modules too, when xdist workers will import them: pytest rewrites their ``assert``
statements before compiling them (about 6 CPU-seconds for the whole suite's), and each worker
collects every test. Started at the same moment, the workers all found the cache empty and all
rewrote everything; so the controller writes the rewritten modules of the paths being run into
the cache first (pytest's own cache format and functions, the ones its import hook uses), and
the workers load them. (Measured: a run of the whole suite that runs no test cost 28 CPU-s on
four workers, 19 after; CONTRIBUTING.md, "Suite timings".) Should pytest's internals change,
the workers rewrite for themselves, as before.

Registered in tests/conftest.py (``pytest_configure``, ``pytest_unconfigure``).
"""

from __future__ import annotations

import compileall
import fnmatch
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("daemon", "llmgine_cli")  # llmgine_daemon is daemon/ (an editable install)

_owned: str | None = None  # a private cache dir this process made (and removes)


def _kept_cache() -> str | None:
    """The cache kept between runs: made if missing; None unless it is a real directory (not
    a link) of this user's that no one else can write."""
    path = os.path.join(tempfile.gettempdir(), f"llmgine-pyc-{os.getuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    mine = stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022
    return path if mine else None


def pytest_configure(config: pytest.Config) -> None:
    global _owned
    if not sys.dont_write_bytecode or sys.pycache_prefix or os.environ.get("PYTHONPYCACHEPREFIX"):
        return  # bytecode is written already (or to a cache someone chose): leave it so
    cache = _kept_cache()
    if cache is None:
        cache = _owned = tempfile.mkdtemp(prefix="lgpyc")
    # For every process started from here on (they inherit the environment) ...
    os.environ["PYTHONPYCACHEPREFIX"] = cache
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    # ... and for the modules this one imports from now on (test modules, with -n 0).
    sys.pycache_prefix = cache
    sys.dont_write_bytecode = False
    _fill()
    if config.getoption("numprocesses", None):  # xdist workers will collect (not with -n 0)
        _rewrite_tests(config)


def _fill() -> None:
    """Compile into the cache what this process has imported, and the project's packages
    (what is there and current is left as it is)."""
    for module in list(sys.modules.values()):
        source = getattr(getattr(module, "__spec__", None), "origin", None)
        if isinstance(source, str) and source.endswith(".py") and os.path.isfile(source):
            compileall.compile_file(source, quiet=2)
    for package in PACKAGES:
        compileall.compile_dir(ROOT / package, quiet=2)


def _rewrite_tests(config: pytest.Config) -> None:
    """Write the assertion-rewritten code of the test modules (and conftests) under the paths
    being run into the cache, where pytest's import hook looks before rewriting one."""
    try:
        from _pytest.assertion.rewrite import (
            PYC_TAIL,
            _read_pyc,
            _rewrite_test,
            _write_pyc,
            assertstate_key,
            get_cache_dir,
        )

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
            pyc = get_cache_dir(fn) / (fn.name[:-3] + PYC_TAIL)
            if _read_pyc(fn, pyc, state.trace) is not None:
                continue  # rewritten already, from this very source (pytest checks its hash)
            checked, co = _rewrite_test(fn, config)  # the source's hash or stat, by version
            pyc.parent.mkdir(parents=True, exist_ok=True)
            _write_pyc(state, co, checked, pyc)
        except Exception:  # noqa: S112 - a module that does not compile fails where it is imported
            continue


def pytest_unconfigure(config: pytest.Config) -> None:
    global _owned
    if _owned is not None:
        shutil.rmtree(_owned, ignore_errors=True)
        _owned = None
