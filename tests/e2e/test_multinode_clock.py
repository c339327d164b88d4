"""A node whose clock is wrong, on a shared PostgreSQL database. Leases already follow the
database's clock (store/pg_cluster.py); schedules followed each node's own: a node an hour
ahead joining the cluster took every schedule's firings of that hour as "missed while down"
(``missed: skip``: claimed with no command), then fired them an hour early. Schedules now
follow the database's clock on every node, and the node says its clock is off.

The skewed clock is the interpreter's (a ``sitecustomize`` on the node's PYTHONPATH shifts
``time.time`` and ``datetime.now``), as libfaketime would do for the whole process.
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_multinode import Node, start_on_a_free_port
from tests.eventually import eventually_blocking

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(180),
    pytest.mark.own_database(reason="its nodes share a PostgreSQL database of their own"),
]

SKEW_S = 3600.0
SITECUSTOMIZE = """
import datetime as _dt, time as _time

_SKEW = {skew}
_real_time, _real_ns = _time.time, _time.time_ns
_time.time = lambda: _real_time() + _SKEW
_time.time_ns = lambda: _real_ns() + int(_SKEW * 1e9)


class _Skewed(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return _dt.datetime.fromtimestamp(_time.time(), tz)

    @classmethod
    def utcnow(cls):
        return _dt.datetime.fromtimestamp(_time.time(), _dt.UTC).replace(tzinfo=None)


_dt.datetime = _Skewed
"""


def _node(home: Path, env: dict[str, str], url: str) -> Node:
    home.mkdir()
    port, proc = start_on_a_free_port(home, env)
    return Node(home, port, proc, url)


def _stop(node: Node) -> str:
    node.proc.send_signal(signal.SIGTERM)
    try:
        _, err = node.proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        node.proc.kill()
        _, err = node.proc.communicate()
    return err


def test_a_node_an_hour_ahead_neither_skips_nor_fires_schedules_early(pg_url: str, tmp_path: Path) -> None:
    shim = tmp_path / "skew"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SITECUSTOMIZE.format(skew=SKEW_S))
    env = {"DATABASE_URL": pg_url, "LLMGINE_LEASE_TIMEOUT": "2"}
    a = _node(tmp_path / "a", env, pg_url)
    b = None
    try:
        sid = a.call("POST", "/api/sessions", {})["session_id"]
        a.call("POST", "/api/engines", {"engine_type": "DummyEngine", "session_id": sid})
        body = {"every": "1s", "session_id": sid, "command": {"command_type": "DummyEngineCommand"}}
        schedule = a.call("POST", "/api/schedules", body)
        b = _node(tmp_path / "b", {**env, "PYTHONPATH": str(shim)}, pg_url)
        assert b.call("GET", "/api/health")  # the skewed node serves

        def fired_since_b_started() -> list[str]:
            listing = a.call("GET", f"/api/sessions/{sid}/commands?limit=200")
            items = listing.get("commands", listing.get("items", []))
            dues = sorted(c["metadata"]["schedule_due"] for c in items)
            return dues if len(dues) >= 6 else []  # firings go on with both nodes up

        dues = eventually_blocking(fired_since_b_started, timeout=60)
        now = dt.datetime.now(dt.UTC)
        for due in dues:  # none an hour early (due an hour ahead), none lost to a "missed" skip
            assert abs((dt.datetime.fromisoformat(due) - now).total_seconds()) < 120, (due, now)
        got = a.call("GET", f"/api/schedules/{schedule['schedule_id']}")
        assert abs((dt.datetime.fromisoformat(got["next_due"]) - now).total_seconds()) < 120, got
    finally:
        err_b = _stop(b) if b is not None else ""
        _stop(a)
    # The operator is told.
    assert "clock" in err_b and "ahead of the database" in err_b, err_b[-3000:]
    assert "Traceback" not in err_b
