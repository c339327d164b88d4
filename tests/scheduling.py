"""How the tests are dealt to xdist's workers (``--dist loadgroup``, pyproject.toml).

loadgroup deals single tests to whichever worker is free next, so the tests of one module end up
on every worker, interleaved with other modules'. For a test that uses a module-scoped fixture
(a daemon, a browser, a PostgreSQL database shared by the module) that meant one fixture per
worker, and worse: pytest tears a module's fixtures down as soon as a worker runs a test of
another module, and builds them again for the next one. Such tests are put in an
``xdist_group`` named after their module, so one worker runs the module and sets its fixtures up
once (tests already in a group keep it). The tests of a module still run in pytest's order, and
each test still gets its own home (tests/conftest.py).

Then the long tests go first (those marked ``e2e``: real daemons, a browser, the fuzzer): started
last, one of them would run on alone while the other workers sit idle. (loadgroup hands out
groups, largest first, before single tests.)

Registered in tests/conftest.py.
"""

from __future__ import annotations

import pytest

SHARED_SCOPES = frozenset({"class", "module", "package"})


def shares_fixtures(item: pytest.Item) -> bool:
    """Does the test use a fixture set up once for several tests (but not for the session)?"""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(defs and defs[-1].scope in SHARED_SCOPES for defs in info.name2fixturedefs.values())


# Before xdist's own hook (it reads the xdist_group marks to name each test's group).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None and shares_fixtures(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)  # stable: e2e first
