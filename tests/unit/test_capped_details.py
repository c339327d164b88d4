"""A failed sandboxed call's ``error.details`` is held to ``sandbox.max_output`` bytes of JSON
(daemon/sandbox/calls.py ``capped_details``): each string keeps its start, an equal share of the
bytes, whatever its characters; the result never exceeds the limit, whatever the limit."""

from __future__ import annotations

import json

import pytest
from llmgine_daemon.sandbox.calls import capped_details, clean_error


def size(value: object) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode())


def test_details_in_a_script_of_several_bytes_a_character_keep_their_start():
    """A message in Japanese (3 bytes a character) kept only the marker: the strings were cut
    to a share of characters, three times what fits in bytes."""
    details = {"type": "ValueError", "message": "語" * 300_000, "traceback": "Traceback\n" + "語" * 300_000}
    capped = capped_details(details, 65536)
    assert size(capped) <= 65536
    assert capped["truncated"] is True and capped["type"] == "ValueError", capped.keys()
    assert capped["message"].startswith("語語語") and capped["traceback"].startswith("Traceback\n語")


def test_escapes_take_their_room_too():
    details = {"type": "E", "message": "\x01" * 100_000, "traceback": '"\\' * 50_000}
    capped = capped_details(details, 4096)
    assert size(capped) <= 4096 and capped["type"] == "E" and capped["message"].startswith("\x01")


@pytest.mark.parametrize("limit", [1, 2, 10, 49, 60, 100])
def test_a_small_limit_is_never_exceeded_nor_an_error(limit):
    """sandbox.max_output takes any positive number: empty details were a ZeroDivisionError
    past a limit of 1 byte, and the marker alone exceeded a limit under its own size."""
    for details in ({}, {"message": "m" * 500}, {"a": 1, "b": [1] * 100}):
        capped = clean_error({"code": "EXECUTION_FAILED", "message": "m", "details": details}, limit)["details"]
        assert size(capped) <= max(limit, 2), (limit, capped)
