"""A command line with some of its options taken out, however argparse lets them be written
(``--opt VALUE``, ``--opt=VALUE``, an unambiguous abbreviation): ``llmgined --reload``'s child
runs without ``--reload`` and ``--reload-dir`` (reload.py), and a daemon given a password in
``--database-url`` runs itself again without it (server.py). Standard library only."""

from __future__ import annotations

from collections.abc import Callable


def without_options(
    argv: list[str], takes_value: Callable[[str], bool], flag: Callable[[str], bool] = lambda arg: False
) -> list[str]:
    """``argv`` without the options ``takes_value`` names (and their values) and the flags
    ``flag`` names (each called with an option as written, before any ``=``)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        name, equals, _ = arg.partition("=")
        if skip:
            skip = False
        elif takes_value(name):
            skip = not equals
        elif equals or not flag(arg):
            kept.append(arg)
    return kept
