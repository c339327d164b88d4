"""docker's verbs: `ls` and `rm` for every group's list and delete (and `mcp delete` for its
remove), hidden from --help and completion. Real llmgine and llmgined processes."""

from __future__ import annotations

from tests.clitools import run_cli


def test_ls_and_rm_are_list_and_delete(daemon):
    sid = run_cli(["session", "create", "-q"], daemon.env).stdout.strip()
    listed = run_cli(["session", "ls", "-q", "--limit", "1000"], daemon.env)
    assert listed.returncode == 0 and sid in listed.stdout.split()
    assert listed.stdout == run_cli(["session", "list", "-q", "--limit", "1000"], daemon.env).stdout
    removed = run_cli(["session", "rm", sid, "-q"], daemon.env)
    assert (removed.returncode, removed.stdout.strip()) == (0, sid)
    assert run_cli(["session", "get", sid, "--format", "{{.status}}"], daemon.env).stdout == "closed\n"
    keys = run_cli(["auth", "key", "ls", "-q"], daemon.env)  # a nested group too
    assert keys.returncode == 0 and keys.stdout.strip()


def test_mcp_takes_delete_and_rm_for_remove(daemon):
    sid = run_cli(["session", "create", "-q"], daemon.env).stdout.strip()
    answers = [run_cli(["mcp", verb, "nope", "-S", sid], daemon.env) for verb in ("remove", "delete", "rm")]
    assert {(a.returncode, a.stderr) for a in answers} == {(4, answers[0].stderr)}
    assert "MCP server 'nope' not found" in answers[0].stderr


def test_aliases_are_not_listed(daemon):
    helped = run_cli(["session", "-h"], {**daemon.env, "COLUMNS": "120"})
    names = {
        line.strip("│ ").split()[0] for line in helped.stdout.splitlines() if line.startswith("│ ") and line.strip("│ ")
    }
    assert {"list", "delete"} <= names and not {"ls", "rm"} & names, names
    env = {**daemon.env, "COMP_WORDS": "llmgine mcp ", "COMP_CWORD": "2", "_LLMGINE_COMPLETE": "complete_bash"}
    completed = run_cli([], env)
    assert completed.stdout.split() == ["add", "list", "get", "tools", "remove"]
