"""health / status / shutdown / --version / --help, global options and exit codes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from llmgine_daemon import __version__

from tests.cli.conftest import API_KEY
from tests.clitools import cleanup_home, cli_env, invoke, one_line, short_home, start_daemon

# One worker runs this module: its module-scoped daemons and servers are set up once,
# not once per test (tests/scheduling.py).
pytestmark = pytest.mark.xdist_group("tests/cli/test_system.py")


def test_version(cold_cli):
    result = cold_cli("--version")
    assert result.exit_code == 0
    assert result.stdout == f"llmgine {__version__}\n"


def test_help_lists_exit_codes(cold_cli):
    result = cold_cli("--help")
    assert result.exit_code == 0
    assert "Exit codes" in result.stdout
    for text in ("daemon not running", "not found", "unauthorized", "130"):
        assert text in result.stdout


def test_no_arguments_shows_help(cold_cli):
    result = cold_cli()
    assert result.exit_code in (0, 2)
    assert "session" in result.output and "daemon" in result.output


def test_usage_errors_exit_2(cold_cli):
    assert cold_cli("no-such-command").exit_code == 2
    assert cold_cli("session", "list", "--bogus").exit_code == 2
    assert cold_cli("session", "get").exit_code == 2
    assert cold_cli("session", "list", "-o", "yaml").exit_code == 2


def test_health(cli, daemon):
    result = cli("health", "-o", "json")
    assert result.exit_code == 0
    body = json.loads(result.stdout)
    assert body["status"] == "healthy" and body["version"] == __version__
    plain = cli("health").stdout.splitlines()
    assert plain[0].split() == ["status", "healthy"]
    assert cli("health", "-q").stdout == ""


def test_status(cli, daemon):
    body = json.loads(cli("status", "-o", "json").stdout)
    assert body["pid"] == daemon.proc.pid
    assert daemon.socket_url in body["listeners"]
    assert daemon.tcp_url in body["listeners"]
    assert body["storage"]["backend"] == "sqlite"
    assert cli("status", "-q").stdout.strip() == str(daemon.proc.pid)
    plain = dict(line.split(None, 1) for line in cli("status").stdout.splitlines())
    assert plain["pid"] == str(daemon.proc.pid)
    assert "counts.sessions" in plain and "storage.path" in plain


def test_url_flag_and_env_select_the_daemon(cli, daemon):
    over_tcp = cli("--url", daemon.tcp_url, "status", "-q")
    assert over_tcp.exit_code == 0 and over_tcp.stdout.strip() == str(daemon.proc.pid)
    via_env = cli("status", "-q", LLMGINE_URL=daemon.socket_url)
    assert via_env.stdout.strip() == str(daemon.proc.pid)


def test_not_running_exits_3(cold_cli):
    result = cold_cli("session", "list")
    assert result.exit_code == 3
    line = one_line(result.stderr)
    assert "llmgined is not running" in line and "LLMGINE_NO_AUTOSTART" in line
    assert cold_cli("health").exit_code == 3
    assert cold_cli("status").exit_code == 3


def test_explicit_url_is_never_autostarted(cold_cli, cold_home):
    result = cold_cli("--url", f"unix://{cold_home}/other.sock", "session", "list", LLMGINE_NO_AUTOSTART=None)
    assert result.exit_code == 3
    assert "cannot connect" in one_line(result.stderr)
    assert not (cold_home / "run" / "llmgined.pid").exists()
    refused = cold_cli("--url", "http://127.0.0.1:9", "health")
    assert refused.exit_code == 3


def test_bad_url_is_a_usage_error(cold_cli):
    result = cold_cli("--url", "ftp://x", "health")
    assert result.exit_code == 2
    assert one_line(result.stderr).startswith("error: invalid URL")


@pytest.fixture(scope="module")
def secured_cli(secured):
    def run(*args: str, **env: str | None):
        return invoke(["--url", secured.tcp_url, *args], {**secured.env, **env})

    return run


def test_tcp_without_key_exits_5(secured_cli, tmp_path):
    # A CLI with no key file for this daemon (another home) and no --api-key gets 401.
    result = secured_cli("session", "list", LLMGINE_HOME=str(tmp_path))
    assert result.exit_code == 5
    line = one_line(result.stderr)
    assert line.startswith("error: UNAUTHORIZED: ") and "--api-key" in line
    assert secured_cli("--api-key", "wrong", "session", "list").exit_code == 5


def test_own_tcp_daemon_needs_no_key(secured_cli):
    # The daemon's listening socket belongs to us: the CLI offers the local key file.
    assert secured_cli("session", "list").exit_code == 0


def test_tcp_with_key_works(secured_cli):
    assert secured_cli("--api-key", API_KEY, "session", "list").exit_code == 0
    assert secured_cli("session", "create", "-q", LLMGINE_API_KEY=API_KEY).exit_code == 0
    assert secured_cli("health").exit_code == 0  # the probe needs no key


def test_a_session_token_is_told_to_give_the_full_id(secured_cli):
    # A session token may not list sessions, so a prefix cannot be looked up with it: the
    # error says so (it said "this session token only opens its own session's endpoints").
    created = json.loads(secured_cli("--api-key", API_KEY, "session", "create", "-o", "json").stdout)
    sid, token = created["session_id"], created["session_token"]
    result = secured_cli("--api-key", token, "command", "list", "-S", sid[:8])
    assert result.exit_code == 5
    line = one_line(result.stderr)
    assert "not a full id" in line and "give the full id" in line, line
    assert secured_cli("--api-key", token, "command", "list", "-S", sid).exit_code == 0


def test_shutdown_stops_the_daemon():
    home = short_home()
    try:
        d = start_daemon(home)
        result = invoke(["shutdown", "-o", "json"], d.env)
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["status"] == "shutting_down"
        assert d.proc.wait(15) == 0
        assert not (home / "run" / "llmgined.sock").exists()
        assert invoke(["shutdown"], d.env).exit_code == 3  # nothing left to stop
    finally:
        cleanup_home(home)


# -- a stand-in for a daemon of another version (or not a daemon at all) ---------------------


BUSY_SESSION = "0192f000-0000-7000-8000-00000000c0f1"  # a whole id: nothing to resolve first
ELSEWHERE_SESSION = "0192f000-0000-7000-8000-000000000404"  # answered by "another server"


class _Foreign(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/api/health":
            # A float uptime, as daemons sent before it was whole seconds.
            body = json.dumps(
                {"status": "healthy", "timestamp": "2024-01-01T00:00:00Z", "version": "9.9.9", "uptime": 61.75}
            ).encode()
            self._send(200, body, {"X-Llmgine-Version": "9.9.9"})
        elif self.path.startswith(f"/api/sessions/{BUSY_SESSION}"):
            body = json.dumps(
                {"error": {"code": "CONFLICT", "message": "busy", "details": {}}, "timestamp": "t", "request_id": "r1"}
            ).encode()
            self._send(409, body, {"X-Llmgine-Version": "9.9.9"})
        elif self.path.startswith(f"/api/sessions/{ELSEWHERE_SESSION}"):
            self._send(404, b"File not found", {"Content-Type": "text/plain"})
        elif self.path == "/api/status":
            self._send(200, b'{"not": "a status"}', {})
        else:
            self._send(502, b"<html>bad gateway</html>", {"Content-Type": "text/html"})

    def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(code)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def foreign_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Foreign)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_version_mismatch_warns_once_on_stderr(foreign_url, cold_home):
    result = invoke(["--url", foreign_url, "health", "-o", "json"], cli_env(cold_home))
    assert result.exit_code == 0
    assert json.loads(result.stdout)["version"] == "9.9.9"
    line = one_line(result.stderr)
    assert line.startswith("warning:") and "9.9.9" in line and __version__ in line


def test_a_daemon_that_sends_a_float_uptime_is_still_healthy(foreign_url, cold_home):
    """`uptime` in /api/health became an integer; the CLI read a daemon of another version
    that sends a float (all of them before) as "unexpected answer ... Expected `int`, got
    `float`" (exit 1), and `llmgine daemon start` took it for no daemon at all."""
    from llmgine_cli.daemonctl import probe
    from llmgine_cli.target import parse_url

    env = cli_env(cold_home)
    shown = invoke(["--url", foreign_url, "health", "-o", "json"], env)
    assert shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout)["uptime"] == 61.75
    plain = invoke(["--url", foreign_url, "health", "-o", "plain"], env)
    assert plain.exit_code == 0 and "1m" in plain.stdout, plain.stdout
    health = probe(parse_url(foreign_url))
    assert health is not None and health.version == "9.9.9"


def test_conflict_exits_6(foreign_url, cold_home):
    result = invoke(["--url", foreign_url, "session", "get", BUSY_SESSION], cli_env(cold_home))
    assert result.exit_code == 6
    assert "error: CONFLICT: busy" in result.stderr


def test_answers_outside_the_protocol_are_one_line_errors(foreign_url, cold_home):
    env = cli_env(cold_home)
    bad_gateway = invoke(["--url", foreign_url, "session", "list"], env)
    assert bad_gateway.exit_code == 1
    assert one_line(bad_gateway.stderr).startswith("error: HTTP_502: ")
    garbled = invoke(["--url", foreign_url, "status"], env)
    assert garbled.exit_code == 1
    assert one_line(garbled.stderr).startswith("error: unexpected answer")
    # Another server's 404 was exit 4, which a script reads as "no such session" (and creates
    # one); without llmgined's header and envelope it is an error saying where it came from.
    elsewhere = invoke(["--url", foreign_url, "session", "get", ELSEWHERE_SESSION], env)
    assert elsewhere.exit_code == 1, elsewhere.stderr
    line = one_line(elsewhere.stderr)
    assert line.startswith("error: HTTP_404: ") and "not an answer of llmgined" in line and foreign_url in line


def _command_summaries(text: str) -> dict[str, list[str]]:
    """The Commands panel of a --help: each command's description, as its lines."""
    import re

    found: dict[str, list[str]] = {}
    name = ""
    inside = False
    for line in text.splitlines():
        if "─ Commands" in line:
            inside = True
            continue
        if inside and line.startswith("╰"):
            break
        match = re.match(r"│ (\S+)?(\s+)(.*?)\s*│$", line) if inside else None
        if match:
            name = match.group(1) or name
            found.setdefault(name, []).append(match.group(3))
    return found


@pytest.mark.parametrize("columns", ["80", "200"])
@pytest.mark.parametrize("group", [(), ("session",), ("command",), ("handler", "add"), ("webhook",)])
def test_command_lists_wrap_summaries_at_the_width_only(cold_cli, group, columns):
    # A summary written over two source lines must not break where the source did: every
    # line but a summary's last is as full as the width allows (its next word did not fit).
    result = cold_cli(*group, "--help", COLUMNS=columns)
    assert result.exit_code == 0
    summaries = _command_summaries(result.stdout)
    assert summaries, result.stdout
    width = max(len(line) for line in result.stdout.splitlines() if line.startswith("│"))
    for name, lines in summaries.items():
        first = next(line for line in result.stdout.splitlines() if line.startswith(f"│ {name} "))
        room = width - 2 - first.index(lines[0])  # the description's column, to the " │"
        for line, after in zip(lines, lines[1:], strict=False):
            assert len(line) + 1 + len(after.split()[0]) > room, (name, line, after)


@pytest.mark.parametrize("command", [("chat",), ("ask",), ("mcp", "add"), ("engine", "messages")])
def test_help_paragraphs_wrap_at_the_width_only(cold_cli, command):
    # A command's own --help: its prose paragraphs are wrapped at the terminal's width, not
    # where the docstring's source lines broke (those are ~100 columns: at 80 each broke
    # mid-sentence and wrapped again).
    result = cold_cli(*command, "--help", COLUMNS="80")
    assert result.exit_code == 0
    body = result.stdout.split("╭")[0].splitlines()[3:]  # after the usage line and the summary
    paragraphs: list[list[str]] = [[]]
    for line in body:
        if line.strip():
            paragraphs[-1].append(line.strip())
        elif paragraphs[-1]:
            paragraphs.append([])
    lines_checked = 0
    for paragraph in paragraphs:
        for line, after in zip(paragraph, paragraph[1:], strict=False):
            assert len(line) + 1 + len(after.split()[0]) > 78, (line, after)
            lines_checked += 1
    assert lines_checked, result.stdout


@pytest.mark.parametrize("command", [("session",), ("chat",), ("usage",), ("event",)])
def test_completion_options_are_the_roots_only(cold_cli, command):
    # `llmgine --install-completion` installs it; the groups' and commands' own --help does
    # not list the two options again (four lines of every group's help at 80 columns).
    assert "--install-completion" in cold_cli("--help").stdout
    result = cold_cli(*command, "--help")
    assert result.exit_code == 0
    assert "--install-completion" not in result.stdout and "--show-completion" not in result.stdout


def _every_command() -> list[tuple[str, ...]]:
    """Every `llmgine ...` command path: the groups, and each group's commands."""
    from llmgine_cli.root import COMMANDS, build_command

    paths: list[tuple[str, ...]] = []
    for name in COMMANDS:
        command = build_command(name)
        paths.append((name,))
        paths.extend((name, sub) for sub in getattr(command, "commands", {}))
    return paths


def test_no_help_is_cut_at_80_columns(cold_cli):
    # Rich shrinks the options table's columns to fit the width, and cuts with … a word that
    # does not fit its column: an option's name (--cancel-on-interru…) or a word of its help
    # (table|plain|json|jso…) could no longer be read (or typed) from --help at 80 columns.
    cut = []
    for path in _every_command():
        result = cold_cli(*path, "--help", COLUMNS="80")
        assert result.exit_code == 0, (path, result.stdout)
        cut.extend((" ".join(path), line) for line in result.stdout.splitlines() if "…" in line)
    assert not cut, cut
