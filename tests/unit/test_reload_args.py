"""``llmgined --reload``: the child's command line is the supervisor's without the reload
options, however argparse let them be written (daemon/reload.py ``child_args``)."""

from __future__ import annotations

import pytest
from llmgine_daemon.reload import child_args
from llmgine_daemon.server import build_parser


@pytest.mark.parametrize(
    "argv",
    [
        ["--reload", "--reload-dir", "src", "--port", "8001"],
        ["--port", "8001", "--reload-dir=src", "--reload"],
        # argparse takes an unambiguous abbreviation of a long option: the supervisor read
        # these as --reload-dir, and the child, given them without --reload, refused to start
        # ("--reload-dir is an option of --reload"), so the supervisor exited 2.
        ["--reload", "--reload-d", "src", "--port", "8001"],
        ["--reload", "--reload-di=src", "--port", "8001"],
        ["--reload-", "src", "--reload", "--port", "8001"],
    ],
)
def test_the_child_gets_no_reload_option(argv):
    parser = build_parser()
    given = parser.parse_args(argv)
    assert given.reload and given.reload_dir == ["src"]
    assert child_args(argv) == ["--port", "8001"]
    child = parser.parse_args(child_args(argv))
    assert not child.reload and child.reload_dir == [] and child.port == "8001"


def test_other_options_and_values_are_kept():
    argv = ["--reload", "--log-file", "/tmp/reload.log", "--config", "c.yaml", "--port=8001"]
    assert child_args(argv) == ["--log-file", "/tmp/reload.log", "--config", "c.yaml", "--port=8001"]
