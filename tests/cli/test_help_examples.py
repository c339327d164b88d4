"""Every `llmgine ...` example in a command's --help names options that command has: an
example is what a user copies first, so one that says `--follow` where the option is gone
is a lie the help tells."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest

from llmgine_cli.root import COMMANDS, build_command


def _commands() -> list[tuple[list[str], Any]]:
    out: list[tuple[list[str], Any]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        if hasattr(cmd, "list_commands"):
            ctx = cmd.context_class(cmd)
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), [*path, name])
        else:
            out.append((path, cmd))

    for name in COMMANDS:
        walk(build_command(name), [name])
    return out


def _root_options() -> set[str]:
    from typer.main import get_command

    from llmgine_cli.root import app

    return {o for p in get_command(app).params for o in getattr(p, "opts", [])}


ROOT_OPTIONS = _root_options()


def _examples(text: str) -> list[str]:
    """`llmgine ...` in backticks, or an indented line starting with llmgine (or X=$(llmgine)."""
    found = re.findall(r"`(llmgine [^`]+)`", text)
    text = re.sub(r"\\\n\s*", "", text)  # an example continued on the next line
    for line in text.splitlines():
        line = line.strip()
        match = re.match(r"^(?:[A-Z_]+=\$\()?(llmgine .*?)\)?$", line)
        if match and not line.startswith("`"):
            found.append(match.group(1))
    return found


def test_examples_in_help_name_real_options():
    commands = {tuple(path): cmd for path, cmd in _commands()}
    checked = 0
    for path, cmd in commands.items():
        for example in _examples(cmd.help or ""):
            for part in re.split(r"\||&&|;|\$\(", example):
                part = part.strip().removeprefix("xargs ").strip().rstrip(")")
                if not part.startswith("llmgine "):
                    continue
                try:
                    words = shlex.split(part)[1:]
                except ValueError:  # an example cut by a line break
                    continue
                if words and words[0] in ROOT_OPTIONS:  # `llmgine --install-completion bash`
                    checked += 1
                    continue
                target = next((p for n in range(len(words), 0, -1) if (p := tuple(words[:n])) in commands), None)
                assert target is not None, f"{' '.join(path)}: {part!r} names no command"
                options = {"--help", "-h"} | {o for p in commands[target].params for o in getattr(p, "opts", [])}
                for word in words[len(target) :]:
                    if re.match(r"^--?[A-Za-z]", word):
                        assert word.split("=")[0] in options, f"{' '.join(path)}: {word} in {part!r}"
                checked += 1
    assert checked >= 20, checked


def test_every_option_names_its_value_in_help():
    """`--name <str>`, `--port <int range>`, `--priority <int>`: Typer showed the type's name
    where the option names no value; each now shows one (NAME, N, SECONDS)."""
    from typer.testing import CliRunner

    from llmgine_cli.app import app

    runner = CliRunner()
    unnamed = []
    for path, _ in _commands():
        shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"}).stdout
        unnamed += [f"{' '.join(path)}: {line.strip()}" for line in shown.splitlines() if re.match(r"^│ +-", line)
                    and re.search(r"<(str|int|float|int range|float range)>", line)]  # fmt: skip
    assert not unnamed, unnamed


def _example_lines(text: str, inline: bool = True) -> list[str]:
    """Every example of a docstring as a user would paste it: an indented line, and
    (``inline``) `llmgine ...` in backticks (not a mention such as `llmgine command wait
    ID...`)."""
    found = [" ".join(m.split()) for m in re.findall(r"`((?:[A-Z_]+=\$\()?llmgine [^`]+)`", text) if "..." not in m]
    found = found if inline else []
    return found + [line.strip() for line in text.splitlines() if line[:1].isspace() and line.strip()]


@pytest.mark.parametrize("columns", [80, 60])
def test_examples_in_help_survive_a_paste(columns):
    """Every example in a --help, boxed at 80 columns or plain below, runs as written when it
    is copied from the terminal. Rich wrapped an example longer than the line (`... | jq -r`
    on one line, `.result.response` on the next; a pasted line break runs the first half
    alone), and click's plain layout rewrapped an example's lines into one another. So an
    example is one line of its own that fits 80 columns, never continued with a backslash
    (rich pads every line with spaces: a copy that keeps them makes `\\ ` an escaped space),
    and the plain layout keeps it as written (wider than a narrow terminal, the terminal wraps
    it, and a copy joins it again). Examples inside a sentence are checked at 80 columns only:
    below, they wrap with it."""
    from typer.testing import CliRunner

    from llmgine_cli.app import app

    runner = CliRunner()
    cut = []
    checked = 0
    for path, cmd in _commands():
        examples = _example_lines(cmd.help or "", inline=columns >= 80) if not cmd.hidden else []
        if not examples:
            continue
        shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": str(columns)}).stdout
        # Each screen line as pasted: without the panel's border and padding.
        screen = [line.strip().strip("│").strip().replace("`", "") for line in shown.splitlines()]
        for example in examples:
            checked += 1
            if example.endswith("\\") or not any(example in line for line in screen):
                cut.append(f"{' '.join(path)}: {example}")
    assert not cut, "\n".join(cut)
    assert checked >= 15, checked


def test_plain_help_under_80_columns_cuts_nothing():
    """Under 80 columns --help is click's plain layout, which cut a command's summary in a
    group's list to 45 characters and "..." ("shutdown  Ask the daemon to exit gracefully
    (does...") and ran the exit codes' table into one paragraph ("Exit codes:   0  success
    1  error (API error, failed command)   2  usage ...")."""
    from typer.testing import CliRunner

    from llmgine_cli.app import app

    runner = CliRunner()
    for path in ([], ["config"], ["daemon"], ["session"]):
        shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "60"}).stdout
        cut = [line for line in shown.splitlines() if line.endswith("...") and not line.startswith("Usage:")]
        assert "╭" not in shown and not cut, shown
    lines = [line.strip() for line in runner.invoke(app, ["--help"], env={"COLUMNS": "60"}).stdout.splitlines()]
    assert lines[lines.index("Exit codes:") + 1 :][:9] == [
        "0  success",
        "1  error (API error, failed command)",
        "2  usage error (bad option or argument)",
        "3  daemon not running or unreachable",
        "4  not found (404)",
        "5  unauthorized (401/403)",
        "6  conflict (409)",
        "7  timed out",
        "130  interrupted (Ctrl-C)",
    ]
