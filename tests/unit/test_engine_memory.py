"""Trimming rules of engine memory, and cutting a turn short."""

from __future__ import annotations

from llmgine_daemon.engines.llm import complete_rounds
from llmgine_daemon.engines.memory import Bounds, plan_trim


def rows(*roles: str, size: int = 10) -> list[tuple[int, str, int]]:
    return [(i + 1, role, size) for i, role in enumerate(roles)]


def test_within_bounds_nothing_is_dropped() -> None:
    assert plan_trim(rows("user", "assistant", "user", "assistant"), Bounds(10, 1000)) == []


def test_oldest_exchanges_go_first() -> None:
    assert plan_trim(rows("user", "assistant", "user", "assistant", "user", "assistant"), Bounds(4, 1000)) == [1, 2]


def test_a_tool_result_never_outlives_its_call() -> None:
    # user, assistant(tool_calls), tool, tool, assistant | user, assistant
    history = rows("user", "assistant", "tool", "tool", "assistant", "user", "assistant")
    # Only 2 must go to fit 5, but the exchange goes whole: the memory restarts at a user message.
    assert plan_trim(history, Bounds(5, 1000)) == [1, 2, 3, 4, 5]


def test_characters_bound() -> None:
    history = [(1, "user", 50), (2, "assistant", 50), (3, "user", 10), (4, "assistant", 10)]
    assert plan_trim(history, Bounds(100, 60)) == [1, 2]


def test_the_newest_exchange_is_kept_even_over_the_bounds() -> None:
    history = [(1, "user", 10), (2, "assistant", 10), (3, "user", 500), (4, "assistant", 500)]
    assert plan_trim(history, Bounds(100, 100)) == [1, 2]
    assert plan_trim(rows("user", "assistant", "tool", "assistant"), Bounds(2, 1000)) == []


def call(*ids: str) -> dict:
    return {"role": "assistant", "content": "", "tool_calls": [{"id": i, "name": "t", "arguments": {}} for i in ids]}


def result(call_id: str) -> dict:
    return {"role": "tool", "tool_call_id": call_id, "content": "r"}


def test_complete_rounds_drops_an_unfinished_tool_round() -> None:
    user = {"role": "user", "content": "q"}
    assert complete_rounds([user, call("a", "b"), result("a")]) == [user]
    done = [user, call("a"), result("a"), call("b", "c"), result("b"), result("c")]
    assert complete_rounds(done) == done
    assert complete_rounds([*done, call("d")]) == done
