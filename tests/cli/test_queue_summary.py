"""The line `llmgine ps` writes on stderr (and `top` heads its frames with): counts per status,
throughput, the sandbox; it fits an 80-column terminal."""

from __future__ import annotations

from llmgine_cli.commands.queue import _summary


def test_the_summary_names_the_statuses_that_have_commands():
    data = {
        "counts": {"queued": 3, "executing": 1},
        "finished_last_minute": {"completed": 12, "failed": 1},
        "sandbox_busy": 0,
        "sandbox_workers": 2,
        "sandbox_state": "running",
    }
    line = _summary(data)
    assert line == "3 queued, 1 executing; 13 finished in the last minute; sandbox 0/2 busy"
    assert len(line) <= 80  # naming all four statuses, it was 101 characters
    idle = {"counts": {}, "finished_last_minute": {}, "sandbox_busy": None, "sandbox_workers": None}
    assert _summary(idle) == "0 queued; 0 finished in the last minute"
    # Workers not started yet (the pool starts them with user code): no "0/2 busy".
    standby = {**data, "sandbox_state": "standby"}
    line = _summary(standby)
    assert line == "3 queued, 1 executing; 13 finished in the last minute; sandbox standby"
    assert len(line) <= 80
    assert _summary({**data, "sandbox_state": "failed"}).endswith("; sandbox failed")
    # A daemon from before sandbox_state: the counts, as before.
    assert _summary({k: v for k, v in data.items() if k != "sandbox_state"}).endswith("sandbox 0/2 busy")
    waiting = {**idle, "counts": {"blocked": 2, "waiting_approval": 1}}
    assert _summary(waiting).startswith("0 queued, 2 blocked, 1 waiting_approval; ")
