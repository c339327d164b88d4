"""A webhook delivery whose attempt meets a full disk (a tmpfs in the test's directory, as in
test_operator_faults.py): one line in the log, never a traceback, and the delivery sent again
once its lease runs out."""

from __future__ import annotations

import os
import signal

import pytest

from tests.e2e.test_bus_crash import call
from tests.e2e.test_llmgined import exit_code, free_port, run_daemon, wait_for_http
from tests.e2e.test_operator_faults import fill_up, small_disk  # noqa: F401 - small_disk: a fixture
from tests.eventually import eventually_blocking

pytestmark = pytest.mark.e2e


@pytest.mark.sqlite_only(reason="an SQLite file on a file system that fills up")
def test_a_webhook_answer_the_full_disk_cannot_record_is_one_line_and_sent_again(small_disk):  # noqa: F811
    # A delivery's attempt whose outcome could not be written (the disk full meanwhile) was
    # logged with a traceback; it is one line, and its lease running out sends it again.
    import http.server
    import threading

    arrived, release, answered = threading.Event(), threading.Event(), []

    class Hold(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["content-length"]))
            arrived.set()
            release.wait(60)
            self.send_response(204)
            self.end_headers()
            answered.append(self.headers["webhook-id"])

        def log_message(self, *args: object) -> None:
            pass

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hold)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    home, log = small_disk / "h", small_disk.parent / "daemon.log"
    port = free_port()
    env = {"LOG_FILE": str(log), "LOG_FORMAT": "text", "LLMGINE_WEBHOOK_TIMEOUT": "1"}
    proc = run_daemon(home, "--port", str(port), env=env)
    try:
        wait_for_http(port, proc)
        status, session = call(port, "POST", "/api/sessions", {}, home=home)
        assert status == 201
        sid = session["session_id"]
        hook = {"url": f"http://127.0.0.1:{receiver.server_port}/hook", "events": ["Ping"], "session_id": sid}
        status, webhook = call(port, "POST", "/api/webhooks", hook, home=home)
        assert status == 201, webhook
        assert call(port, "POST", f"/api/sessions/{sid}/events", {"event_type": "Ping"}, home=home)[0] == 201
        assert arrived.wait(30)
        fill_up(small_disk)
        release.set()  # answered: the attempt's outcome meets the full disk
        eventually_blocking(lambda: "webhook attempt not recorded" in log.read_text(), message="no line said so")
        os.unlink(small_disk / "filler")

        def delivered() -> bool:
            path = f"/api/webhooks/{webhook['webhook_id']}/deliveries"
            rows = call(port, "GET", path, home=home)[1]["deliveries"]
            return bool(rows) and rows[0]["status"] == "delivered"

        eventually_blocking(delivered, timeout=60, message="the delivery was not sent again")
        assert len(answered) == 2  # the first answer, not recorded, and the one sent again
    finally:
        receiver.shutdown()
        proc.send_signal(signal.SIGTERM)
        assert exit_code(proc) == 0
    text = log.read_text()
    assert "Traceback" not in text, text[-4000:]
