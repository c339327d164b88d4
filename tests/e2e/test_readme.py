"""Every `console` block of README.md, run against a fresh daemon, output compared.

A block is a shell session: `$ ` starts a command (`> ` continues it), the lines after it are
its output (stdout and stderr, as a terminal shows them). Blocks run in order in one bash, so
variables carry over. Expected output lines match with `…` standing for any text and any
run of spaces for any run of spaces; a line that is only `…` stands for any number of lines.
A command with no output shown may print anything. Every command must exit 0. A block right
after `<!-- no-test -->` is not run (it needs something CI does not have).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.clitools import cleanup_home, cli_env, full_env, short_home

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.sqlite_only(reason="the README's commands as written: the embedded SQLite default"),
]

README = Path(__file__).resolve().parents[2] / "README.md"
SENTINEL = "__readme_rc__"


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)
    line: int = 0


def blocks(text: str) -> Iterator[list[Step]]:
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```console":
            skip = i > 0 and lines[i - 1].strip() == "<!-- no-test -->"
            steps: list[Step] = []
            i += 1
            while lines[i].strip() != "```":
                line = lines[i]
                if line.startswith("$ "):
                    steps.append(Step(line[2:], line=i + 1))
                elif line.startswith("> ") or line == ">":
                    steps[-1].command += "\n" + line[2:]
                else:
                    steps[-1].expected.append(line)
                i += 1
            if not skip:
                yield steps
        i += 1


def _pattern(expected: str) -> re.Pattern[str]:
    parts = [".*" if tok == "…" else re.escape(tok).replace("…", ".*") for tok in expected.split()]
    return re.compile(r"\s+".join(parts))


def matches(expected: list[str], actual: list[str]) -> bool:
    if not expected:
        return not actual
    head, rest = expected[0], expected[1:]
    if head.strip() == "…":
        return any(matches(rest, actual[k:]) for k in range(len(actual) + 1))
    return bool(actual) and bool(_pattern(head).fullmatch(actual[0].strip())) and matches(rest, actual[1:])


class Shell:
    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=cwd,
        )
        self.send("exec 2>&1")

    def send(self, command: str) -> tuple[int, list[str]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{command}\nprintf '\\n{SENTINEL} %s\\n' $?\n")
        self.proc.stdin.flush()
        out: list[str] = []
        for line in self.proc.stdout:
            if line.startswith(SENTINEL):
                while out and not out[-1].strip():
                    out.pop()
                return int(line.split()[1]), out
            out.append(line.rstrip("\n"))
        raise AssertionError(f"the shell ended during {command!r}: {out}")

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(10)


def test_readme_console_blocks(tmp_path: Path) -> None:
    home = short_home()
    bindir = Path(sys.executable).parent
    env = full_env(
        {
            **cli_env(home, LLMGINE_NO_AUTOSTART=None, COLUMNS="120"),
            "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    assert shutil.which("llmgine", path=env["PATH"]), "llmgine is not installed next to python"
    shell = Shell(env, tmp_path)
    ran = 0
    try:
        for steps in blocks(README.read_text(encoding="utf-8")):
            for step in steps:
                rc, out = shell.send(step.command)
                where = f"README.md:{step.line}: $ {step.command}"
                assert rc == 0, f"{where}\nexit {rc}\n" + "\n".join(out)
                if step.expected:
                    assert matches(step.expected, out), (
                        f"{where}\n--- README shows ---\n"
                        + "\n".join(step.expected)
                        + "\n--- it printed ---\n"
                        + "\n".join(out)
                    )
                ran += 1
        assert ran >= 30
    finally:
        shell.send("llmgine daemon stop >/dev/null")
        shell.close()
        cleanup_home(home)
