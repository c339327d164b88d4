"""A PostgreSQL URL's own ``connect_timeout`` is the daemon's too (store/pg_connect.py): it was
always 10 s, whatever the URL said, while the URL's keepalive settings were kept."""

from __future__ import annotations

import socket
import time

import pytest
from llmgine_daemon.store.errors import StorageUnavailable
from llmgine_daemon.store.pg_connect import CONNECT_TIMEOUT_S, connect, connect_args, url_connect_timeout

BASE = "postgresql://u:pw@127.0.0.1:5432/db"


@pytest.mark.parametrize(
    ("query", "seconds"),
    [("", CONNECT_TIMEOUT_S), ("?connect_timeout=3", 3), ("?connect_timeout=1", 2), ("?connect_timeout=0", 10)],
)
def test_the_urls_connect_timeout_is_taken(query: str, seconds: int) -> None:
    assert url_connect_timeout(BASE + query) == seconds
    assert connect_args(BASE + query)["connect_timeout"] == seconds
    # A stop's shorter bound still holds over a longer one of the URL's.
    assert connect_args(BASE + query, timeout=2)["connect_timeout"] == 2


def test_a_server_that_never_answers_is_given_up_after_the_urls_timeout() -> None:
    # A listener that accepts (the kernel does, into its backlog) and never says a word: a
    # frozen server. With ?connect_timeout=2 the attempt ends after 2 s, not 10.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="cannot connect to PostgreSQL at 127.0.0.1"):
            connect(f"postgresql://u:pw@127.0.0.1:{port}/db?connect_timeout=2")
        assert time.monotonic() - started < CONNECT_TIMEOUT_S - 2
