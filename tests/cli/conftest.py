"""Fixtures: real llmgined processes for the CLI tests to talk to.

``daemon`` (one per test session) listens on a Unix socket and on TCP without a key;
``secured`` listens on TCP with API_KEY_SECRET set; ``home`` is a fresh short LLMGINE_HOME
with no daemon (for daemon management and "not running" tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import Result

from tests.clitools import (
    Daemon,
    cleanup_home,
    cli_env,
    invoke,
    running_daemon,
    short_home,
)

API_KEY = "test-secret-key"


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    with running_daemon() as d:
        yield d


@pytest.fixture(scope="module")
def secured() -> Iterator[Daemon]:
    with running_daemon("--no-socket", env={"API_KEY_SECRET": API_KEY}) as d:
        yield d


@pytest.fixture
def cli(daemon: Daemon) -> Callable[..., Result]:
    """``cli(*args, **env)``: llmgine in-process against the shared daemon."""

    def run(*args: str, **env: str | None) -> Result:
        return invoke(args, {**daemon.env, **env})

    return run


@pytest.fixture
def cold_home() -> Iterator[Path]:
    """A home with no daemon; anything started in it is stopped afterwards."""
    home = short_home()
    try:
        yield home
    finally:
        cleanup_home(home)


@pytest.fixture
def cold_cli(cold_home: Path) -> Callable[..., Result]:
    def run(*args: str, **env: str | None) -> Result:
        return invoke(args, cli_env(cold_home, **env))

    return run
