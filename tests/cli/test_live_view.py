"""The terminal view of `llmgine event tail` (llmgine_cli/live.py): every event is one line
that fits the terminal, however wide the terminal and however long the event's data."""

from __future__ import annotations

import io
import re

import pytest
from llmgine_daemon.protocol import Event

from llmgine_cli.context import Environment
from llmgine_cli.live import LiveTail

WORDS = " ".join(["supercalifragilistic"] * 20)


def _event(seq: int, event_type: str) -> Event:
    return Event(
        event_id=f"01a24c5c-9a68-7cd7-96fa-74e2259c0b{seq:02d}",
        seq=seq,
        session_id="01a24c5c-9a68-7682-add6-133122496426",
        event_type=event_type,
        data={"text": WORDS, "n": seq},
        metadata={},
        timestamp="2026-12-06T17:18:16.000000Z",
        source="api",
    )


@pytest.mark.parametrize("width", [80, 150])
def test_each_event_is_one_line_that_fits(width):
    out = io.StringIO()
    env = Environment(out, io.StringIO(), True, True, environ={})
    view = LiveTail(env, title="s")
    view.console.width = width
    with view:
        view.add(_event(1, "Wordy"))
        view.add(_event(2, "AnEventTypeNameLongerThanTheColumnForIt_" * 3))
    # As a terminal shows it: what follows a carriage return overwrites the line (the footer
    # the live view redraws), escape sequences are not text.
    lines = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw.split("\r")[-1]) for raw in out.getvalue().split("\n")]
    plain = "\n".join(lines)
    rows = [line for line in lines if "#1 " in line or "#2 " in line]
    assert len(rows) == 2, plain
    assert all(len(row.rstrip()) <= width for row in rows), rows
    assert rows[0].rstrip().endswith("…") and '{"text":"supercal' in rows[0]  # cut, not wrapped
    assert not [line for line in lines if line.startswith("ragilistic")]


@pytest.mark.parametrize("width", [50, 80])
def test_the_footer_is_one_line_that_fits(width):
    """The footer (state, session, counts, the busiest types) wrapped at 80 columns once a few
    types had come: its second line was left on the screen as the events scrolled past."""
    out = io.StringIO()
    env = Environment(out, io.StringIO(), True, True, environ={})
    view = LiveTail(env, title="01a24c5c-9a68-7682-add6-133122496426")
    view.console.width = width
    with view:
        for seq, kind in enumerate(["Alpha", "Beta", "Gamma", "Delta", "Epsilon", "Zeta"], start=1):
            view.add(_event(seq, kind))
    lines = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw.split("\r")[-1]) for raw in out.getvalue().split("\n")]
    footer = [line for line in lines if line.startswith("● ")]
    assert footer, lines
    assert all(len(line.rstrip()) <= width for line in lines), lines
    assert "22496426" in footer[-1] and "01a24c5c-9a68" not in footer[-1]  # the short id, as the rows
    following = lines[lines.index(footer[-1]) + 1 :]
    assert not [line for line in following if line.strip()], following  # nothing wrapped under it


def test_a_long_type_leaves_room_for_the_data_and_counts_read_right():
    """At 80 columns an event type longer than its column took the whole row (no data shown at
    all): it is cut to 32 columns with "…" now. And the footer said `1 events`."""
    out = io.StringIO()
    env = Environment(out, io.StringIO(), True, True, environ={})
    view = LiveTail(env, title="s")
    view.console.width = 80
    with view:
        view.add(_event(1, "VeryLongEventTypeNameThatGoesOnAndOnForeverAndEverAndEverMore"))
    lines = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw.split("\r")[-1]) for raw in out.getvalue().split("\n")]
    row = next(line for line in lines if "#1 " in line)
    assert "VeryLongEventTypeNameThatGoesOn…" in row and '{"text":"sup' in row, row
    footer = [line for line in lines if line.startswith("● ")]
    assert "  1 event  " in footer[-1], footer


def test_a_trace_of_one_span_says_span():
    """`llmgine trace ID` of a request's trace said `1 spans` in its first line."""
    from llmgine_cli.render_observability import render_trace

    span = {"name": "POST /api/db/vacuum", "offset_ms": 0.0, "duration_ms": 828.3, "status": "ok", "children": []}
    trace = {
        "trace_id": "01a250592b650e96384b8bb6f657f612",
        "root": "POST /api/db/vacuum",
        "duration_ms": 828.3,
        "span_count": 1,
        "status": "ok",
        "spans": [span],
    }
    out = io.StringIO()
    render_trace(Environment(out, io.StringIO(), False, False, environ={}), trace, "plain")
    assert out.getvalue().splitlines()[0].endswith("828.3ms  1 span  ok"), out.getvalue()
