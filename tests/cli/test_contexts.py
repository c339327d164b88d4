"""`llmgine context`: named daemons, as `docker context`. Real llmgine processes in a home
with no daemon of its own (auto-start off), reaching real llmgined processes by name."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

from tests.cli.conftest import API_KEY
from tests.clitools import default_signals, full_env, run_cli


def test_a_named_daemon_is_used_by_flag_variable_or_use(daemon, cold_home):
    env = {"LLMGINE_HOME": str(cold_home), "LLMGINE_NO_AUTOSTART": "1", "LLMGINE_URL": None, "LLMGINE_CONTEXT": None}
    sid = run_cli(["session", "create", "-q"], daemon.env).stdout.strip()
    assert run_cli(["session", "list", "-q"], env).returncode == 3  # no daemon in this home
    added = run_cli(["context", "add", "main", "--url", daemon.socket_url, "-q"], env)
    assert (added.returncode, added.stdout) == (0, "main\n"), added.stderr
    path = cold_home / "config" / "contexts.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    by_flag = run_cli(["--context", "main", "session", "list", "-q", "--limit", "1000"], env)
    assert by_flag.returncode == 0 and sid in by_flag.stdout.split(), by_flag.stderr
    # LLMGINE_CONTEXT on the fast path (hot.py), and --context over LLMGINE_URL (a flag wins).
    by_variable = run_cli(["session", "list", "-q", "--limit", "1000"], {**env, "LLMGINE_CONTEXT": "main"})
    assert by_variable.returncode == 0 and sid in by_variable.stdout.split(), by_variable.stderr
    over_url = run_cli(
        ["--context", "main", "session", "get", sid, "-q"], {**env, "LLMGINE_URL": "unix:///nowhere.sock"}
    )
    assert (over_url.returncode, over_url.stdout.strip()) == (0, sid), over_url.stderr

    assert run_cli(["context", "use", "main", "-q"], env).stdout == "main\n"
    listed = run_cli(["context", "ls", "--format", "{{.name}} {{.current}}"], env)
    assert listed.stdout.splitlines() == ["default false", "main true"]
    # For scripts, the local daemon's URL and a missing key are null (they were display text).
    as_json = json.loads(run_cli(["context", "ls", "-o", "json"], env).stdout)["contexts"]
    assert as_json[0] == {"name": "default", "current": False, "url": None, "api_key": None}
    assert as_json[1]["url"] == daemon.socket_url
    assert run_cli(["session", "get", sid, "--format", "{{.session_id}}"], env).stdout.strip() == sid
    # --url and LLMGINE_URL still win over the context in use.
    assert run_cli(["session", "list"], {**env, "LLMGINE_URL": "unix:///nowhere.sock"}).returncode == 3
    assert run_cli(["--context", "default", "session", "list"], env).returncode == 3

    assert run_cli(["context", "use", "default", "-q"], env).returncode == 0
    assert run_cli(["session", "list"], env).returncode == 3
    assert run_cli(["context", "rm", "main", "-q"], env).stdout == "main\n"
    assert run_cli(["context", "ls", "-q"], env).stdout == "default\n"


def test_a_context_carries_its_api_key(secured, cold_home):
    env = {"LLMGINE_HOME": str(cold_home), "LLMGINE_NO_AUTOSTART": "1", "LLMGINE_URL": None, "LLMGINE_API_KEY": None}
    add = subprocess.run(
        [sys.executable, "-m", "llmgine_cli", "context", "add", "sec", "--url", secured.tcp_url, "--api-key-stdin"],
        input=API_KEY,
        env=full_env(env),
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=default_signals,
    )
    assert add.returncode == 0, add.stderr
    assert API_KEY not in add.stdout + add.stderr  # shown as "set", never printed
    assert "api_key  set" in add.stdout
    assert run_cli(["--context", "sec", "session", "list"], env).returncode == 0
    # --context displaces LLMGINE_URL and the LLMGINE_API_KEY that goes with it: that key, for
    # another daemon, was sent to the context's (a 401 there, and the key shown to it).
    elsewhere = {**env, "LLMGINE_URL": "http://127.0.0.1:9", "LLMGINE_API_KEY": "lgk_0123456789ab_another-daemons"}
    over = run_cli(["--context", "sec", "session", "list"], elsewhere)
    assert over.returncode == 0, over.stderr
    run_cli(["context", "add", "nokey", "--url", secured.tcp_url], env)
    assert run_cli(["--context", "nokey", "session", "list"], env).returncode == 5


def test_mistakes_are_usage_errors(cold_home):
    env = {"LLMGINE_HOME": str(cold_home), "LLMGINE_NO_AUTOSTART": "1", "LLMGINE_URL": None, "LLMGINE_CONTEXT": None}
    unknown = run_cli(["--context", "nope", "session", "list"], env)
    assert (unknown.returncode, unknown.stderr) == (2, "error: no context 'nope': `llmgine context ls` lists them\n")
    assert run_cli(["context", "use", "nope"], env).returncode == 4
    assert run_cli(["context", "add", "x", "--url", "ftp://h"], env).returncode == 2
    assert run_cli(["context", "add", "default", "--url", "http://h:1"], env).returncode == 2
    assert run_cli(["context", "add", "x", "--url", "http://h:1"], env).returncode == 0
    taken = run_cli(["context", "add", "x", "--url", "http://h:2"], env)
    assert taken.returncode == 6 and "--replace" in taken.stderr
    assert run_cli(["context", "add", "x", "--url", "http://h:2", "--replace"], env).returncode == 0
    (cold_home / "config" / "contexts.json").write_text("{not json")
    damaged = run_cli(["session", "list"], env)
    assert (
        damaged.returncode == 2 and "contexts.json is damaged" in damaged.stderr and "Traceback" not in damaged.stderr
    )


def test_daemon_commands_manage_the_local_daemon_not_the_context_in_use(daemon, cold_home):
    """`llmgine daemon stop` with `context use prod` done must not stop prod: the daemon
    commands manage this machine's daemon unless --url/--context names another."""
    env = {"LLMGINE_HOME": str(cold_home), "LLMGINE_NO_AUTOSTART": "1", "LLMGINE_URL": None, "LLMGINE_CONTEXT": None}
    assert run_cli(["context", "add", "shared", "--url", daemon.socket_url, "-q"], env).returncode == 0
    assert run_cli(["context", "use", "shared", "-q"], env).returncode == 0
    assert run_cli(["daemon", "status"], env).returncode == 3  # no local daemon in this home
    stopped = run_cli(["daemon", "stop"], env)
    assert stopped.returncode == 0 and "not running" in stopped.stdout + stopped.stderr
    assert daemon.proc.poll() is None
    assert run_cli(["status", "-q"], env).stdout.strip() == str(daemon.proc.pid)  # the context's
    assert run_cli(["--context", "shared", "daemon", "status", "-q"], env).stdout.strip() == str(daemon.proc.pid)


def test_context_names_complete(cold_home):
    env = {"LLMGINE_HOME": str(cold_home), "LLMGINE_NO_AUTOSTART": "1", "LLMGINE_CONTEXT": None}
    assert run_cli(["context", "add", "prod", "--url", "http://127.0.0.1:9", "-q"], env).returncode == 0
    for words, cword in (("llmgine --context ", "2"), ("llmgine context use ", "3")):
        completing = {**env, "COMP_WORDS": words, "COMP_CWORD": cword, "_LLMGINE_COMPLETE": "complete_bash"}
        assert run_cli([], completing).stdout.split() == ["default", "prod"], words


def test_several_contexts_are_removed_in_turn(cold_home):
    """`context rm a gone b`, as `docker context rm`: each in turn, the missing one its error
    line and the exit code (4), the others removed all the same."""
    env = {"LLMGINE_HOME": str(cold_home), "LLMGINE_NO_AUTOSTART": "1", "LLMGINE_URL": None, "LLMGINE_CONTEXT": None}
    for name in ("a", "b", "c"):
        assert run_cli(["context", "add", name, "--url", "http://127.0.0.1:9", "-q"], env).returncode == 0
    assert run_cli(["context", "use", "b", "-q"], env).returncode == 0
    removed = run_cli(["context", "rm", "a", "gone", "b", "-o", "json"], env)
    assert removed.returncode == 4
    assert removed.stderr == "error: NOT_FOUND: no context 'gone': `llmgine context ls` lists them\n"
    assert [c["name"] for c in json.loads(removed.stdout)["contexts"]] == ["a", "b"]
    listed = run_cli(["context", "ls", "--format", "{{.name}} {{.current}}"], env)
    assert listed.stdout.splitlines() == ["default true", "c false"]  # b was in use: default again
    one = run_cli(["context", "rm", "gone"], env)
    assert (one.returncode, one.stdout) == (4, "")
    assert one.stderr == "error: NOT_FOUND: no context 'gone': `llmgine context ls` lists them\n"
