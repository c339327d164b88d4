"""The suite's grouping holds: tests of one ``xdist_group`` reach one worker (tests/scheduling.py).

pytest-xdist marks a grouped test by a suffix of its node id on the worker that collected it;
a pytest that ignores that suffix (9.2 with xdist 3.8: pyproject.toml pins below it) makes
``--dist loadgroup`` deal grouped tests one by one, and every shared module fixture is then
built again on each worker, silently.
"""

from __future__ import annotations

import pytest

GROUP = "tests/unit/test_scheduling.py"


@pytest.mark.xdist_group(GROUP)
def test_a_grouped_test_carries_its_group(request: pytest.FixtureRequest) -> None:
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not run by an xdist worker under --dist loadgroup")
    assert request.node.nodeid.endswith("@" + GROUP), request.node.nodeid
