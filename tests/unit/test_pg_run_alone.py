"""``Store.run_alone`` on PostgreSQL after a server restart (store/postgres.py
``_alone_once_more``): maintenance (`db vacuum`) found the writer's connection dead, as the
first write after a restart did, and was answered 503; it runs once more on a new one."""

from __future__ import annotations

import pytest
from llmgine_daemon.bus.events import insert_event
from llmgine_daemon.store.postgres import PgStore

from tests.postgres import PgServer


async def test_maintenance_after_a_server_restart_runs_on_a_new_connection() -> None:
    server = PgServer.start()  # a server of its own: restarting the shared one ends other tests'
    try:
        if server.proc is None:
            pytest.skip("an existing server (LLMGINE_TEST_DATABASE_URL) is not restarted by the tests")
        store = PgStore(server.new_database())
        await store.open()
        try:
            await store.write(lambda conn: insert_event(conn, None, "Before", {}))  # the writer is connected
            server.restart()
            ran: list[int] = []

            def vacuum_like(conn):  # safe to run again, as run_alone asks
                ran.append(conn.execute("SELECT 1").fetchone()[0])
                return "done"

            assert await store.run_alone(vacuum_like) == "done"
            assert ran == [1]  # once: the first attempt failed before it ran anything
            await store.write(lambda conn: insert_event(conn, None, "After", {}))
        finally:
            await store.close()
    finally:
        server.stop()
