"""StreamFilter: the Python predicate (live delivery) and its SQL (replay) agree."""

from __future__ import annotations

import random
import sqlite3

import pytest
from llmgine_daemon.bus.errors import BusError
from llmgine_daemon.bus.stream_filter import StreamFilter
from llmgine_daemon.protocol import Event

TYPES = [
    "CommandStarted",
    "CommandResult",
    "Command",
    "command",
    "Engine_x",
    "EngineX",
    "SessionEnded",
    "SessionStarted",
    "A%B",
    "A_B",
]
SOURCES = ["api", "bus", "engine", "handler"]
SESSIONS = ["s1", "s2", None]
PATTERNS = ["Command*", "Command", "Engine_*", "A%*", "A_B", "*", "Session*", "Nope"]


def test_python_and_sql_agree_on_random_filters():
    rng = random.Random(3)
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, session_id TEXT, event_type TEXT, source TEXT)")
    events = []
    for seq in range(1, 400):
        e = Event(
            event_id=str(seq),
            seq=seq,
            session_id=rng.choice(SESSIONS),
            event_type=rng.choice(TYPES),
            data={},
            metadata={},
            timestamp="t",
            source=rng.choice(SOURCES),
        )
        events.append(e)
        conn.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (e.seq, e.session_id, e.event_type, e.source))
    for _ in range(200):
        flt = StreamFilter(
            rng.choice(SESSIONS),
            rng.sample(PATTERNS, rng.randint(0, 3)),
            rng.sample(SOURCES, rng.randint(0, 2)),
        )
        where, params = flt.sql()
        got = [r[0] for r in conn.execute(f"SELECT seq FROM events WHERE {where} ORDER BY seq", params)]
        assert got == [e.seq for e in events if flt.matches(e)], flt.describe()


@pytest.mark.parametrize(
    "types",
    [["a*b"], [""], ["x" * 201], ["t"] * 1 + [f"t{i}" for i in range(40)]],
)
def test_bad_patterns_are_validation_errors(types):
    with pytest.raises(BusError) as info:
        StreamFilter(None, types)
    assert info.value.code == "VALIDATION_ERROR"
    assert info.value.details["field"] == "event_type"


@pytest.mark.parametrize("sources", [["API"], ["nobody"], [""]])
def test_bad_sources_are_validation_errors(sources):
    """A stream refuses what the event list refuses (``?source=``): only the sources events
    have."""
    with pytest.raises(BusError) as info:
        StreamFilter(None, [], sources)
    assert info.value.code == "VALIDATION_ERROR"
    assert info.value.details["field"] == "source"


def test_any_type_user_code_may_publish_can_be_followed():
    """User code publishes types of any 1-128 characters (bus/usercode_bridge.py): a stream
    filter takes them as they are, exact or as a prefix."""
    flt = StreamFilter(None, ["order/created", "Order Created", "9lives*"])
    assert flt.event_types == ("order/created", "Order Created", "9lives*")
