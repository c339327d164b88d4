"""How the tests are dealt to xdist's workers (``--dist loadgroup``, pyproject.toml).

loadgroup hands out the groups (``xdist_group``), largest first, then single tests to whichever
worker is free next. So the long tests go first here (those marked ``e2e``: real daemons, a
browser, the fuzzer): started last, one of them would run on alone while the other workers sit
idle.

Groups, by convention: a module whose many short tests share an expensive module-scoped
fixture (a daemon, a browser) is one ``xdist_group`` named after the module
(``tests/cli/test_bus_cli.py``). Dealt test by test, its tests would land on every worker,
interleaved with other modules', and pytest tears a module's fixtures down as soon as a worker
runs a test of another module, then builds them again for the next one: a daemon per test, not
per module. A module of a few long tests is better spread over the workers (one fixture each)
than run in a row on one.

Registered in tests/conftest.py.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)  # stable: e2e first
