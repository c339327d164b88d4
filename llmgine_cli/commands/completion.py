"""`llmgine completion bash|zsh|fish`: print the shell completion script.

    llmgine completion bash > ~/.local/share/bash-completion/completions/llmgine
    llmgine completion zsh > "${fpath[1]}/_llmgine"
    llmgine completion fish > ~/.config/fish/completions/llmgine.fish

The same scripts are in the repository's completions/ folder. Session ids, engine ids, tool
names and event types complete from the running daemon (llmgine_cli/completion.py).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from llmgine_cli import completion as scripts
from llmgine_cli.options import state

app = typer.Typer()


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


@app.command("completion")
def completion(
    ctx: typer.Context,
    shell: Annotated[Shell, typer.Argument(metavar="SHELL", help="bash, zsh or fish.", case_sensitive=False)],
) -> None:
    """Print the shell completion script (see `llmgine completion --help` for where it goes).

    Where it goes (a new shell then completes commands, options, session ids and names,
    engine ids, tool names and event types from the running daemon):

      llmgine completion bash > ~/.local/share/bash-completion/completions/llmgine

      llmgine completion zsh > "${fpath[1]}/_llmgine"

      llmgine completion fish > ~/.config/fish/completions/llmgine.fish

    Or for this shell only: `source <(llmgine completion bash)`.
    """
    state(ctx).env.stdout.write(scripts.script(shell.value))
