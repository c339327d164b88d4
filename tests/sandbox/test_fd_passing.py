"""Every worker runs as the same uid (``nobody`` for a root daemon), and the kernel counts the
descriptors in flight over Unix sockets per uid: past the sender's RLIMIT_NOFILE, a sender is
refused (ETOOMANYREFS). User code that keeps a few hundred in flight must not stop other
workers from starting their calls (their forker handed each call's socket to the zygote that
way: it died, and every other session's call failed with WORKER_CRASHED until the call holding
them ended). Real workers, two of them: one holds, the other serves another session."""

from __future__ import annotations

from tests.sandbox.holding import HOLD_UNTIL_ENDED, while_held

# Sends its own socket again and again without reading it: each copy is "in flight" until the
# socket is closed. Then waits (publishing, so the test knows) until its session is ended.
HOLD = (
    """
import socket, time

async def hold():
    a, b = socket.socketpair()
    sent, refused = 0, ""
    for _ in range(10):
        try:
            socket.send_fds(a, [b"x"], [a.fileno()] * 253)
            sent += 253
        except OSError as exc:
            refused = type(exc).__name__
            break
"""
    + HOLD_UNTIL_ENDED
    + """
    return {"sent": sent, "refused": refused}
"""
)
ONE = "def one():\n    return 1\n"


async def test_descriptors_in_flight_do_not_stop_other_workers(make_client):
    client = await make_client(API_WORKERS="2")

    async def others_run(b: str) -> None:
        for _ in range(3):
            resp = await client.post(f"/api/sessions/{b}/tools/one/execute", json={"arguments": {}})
            body = await resp.json()
            assert body["error"] is None and body["result"] == 1, body
        resp = await client.post(f"/api/sessions/{b}/tools?replace=true", json={"name": "one", "function_code": ONE})
        assert resp.status == 201, await resp.text()

    held_out, _ = await while_held(client, ("hold", HOLD), ("one", ONE), others_run)
    # The attack did what it meant to: more in flight than any sandbox process may open.
    assert held_out["result"]["sent"] > 256, held_out
    status = await (await client.get("/api/status")).json()
    assert status["sandbox"]["crashes"] == 0, status["sandbox"]
