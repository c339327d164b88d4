"""`llmgine completion bash|zsh|fish`: print the shell completion script.

    mkdir -p ~/.local/share/bash-completion/completions
    llmgine completion bash > ~/.local/share/bash-completion/completions/llmgine
    llmgine completion zsh > "${fpath[1]}/_llmgine"
    mkdir -p ~/.config/fish/completions
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

      mkdir -p ~/.local/share/bash-completion/completions
      llmgine completion bash > ~/.local/share/bash-completion/completions/llmgine

      llmgine completion zsh > "${fpath[1]}/_llmgine"

      mkdir -p ~/.config/fish/completions
      llmgine completion fish > ~/.config/fish/completions/llmgine.fish

    The bash one is read by the bash-completion package (Debian: `apt-get install
    bash-completion`); without it, `llmgine --install-completion bash` adds a line to
    ~/.bashrc. For this shell only: `source <(llmgine completion bash)`.
    """
    state(ctx).env.stdout.write(scripts.script(shell.value))
