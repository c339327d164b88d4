"""``--on-done CMD``: a shell command the CLI runs, in its own process, when the command it
waited for has ended (`llmgine command run`). The daemon never runs shell commands.

The hook gets the outcome in its environment:

    LLMGINE_STATUS        completed, failed, timed_out, cancelled or interrupted
    LLMGINE_COMMAND_ID    the command's id
    LLMGINE_SESSION_ID    its session's id
    LLMGINE_COMMAND_TYPE  its type

It runs with ``sh -c`` after the command's result was printed; its output goes to the CLI's
stderr (stdout stays the result, for scripts and -o json). The CLI's exit code stays the
command's; a hook that fails or cannot start is reported as one warning line.
"""

from __future__ import annotations

from typing import Any

from llmgine_cli.context import Environment


def run_hook(env: Environment, command: str, record: dict[str, Any]) -> int:
    import os
    import subprocess

    environ = {
        **os.environ,
        "LLMGINE_STATUS": str(record["status"]),
        "LLMGINE_COMMAND_ID": str(record["command_id"]),
        "LLMGINE_SESSION_ID": str(record["session_id"]),
        "LLMGINE_COMMAND_TYPE": str(record.get("command_type", "")),
    }
    env.stdout.flush()
    # Straight to our stderr when it is a file: the hook's output shows as it is written (a
    # slow hook showed nothing until it ended, and nothing at all after Ctrl-C). A stream with
    # no file behind it (a test runner's) gets it afterwards.
    try:
        direct: Any = env.stderr.fileno()
        env.stderr.flush()
    except (AttributeError, OSError, ValueError):
        direct = None
    try:
        done = subprocess.run(
            ["/bin/sh", "-c", command],
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if direct is None else direct,
            stderr=subprocess.STDOUT,
            check=False,
        )
    except OSError as exc:
        env.err(f"warning: --on-done could not start: {exc.strerror or exc}")
        return 127
    text = done.stdout.decode("utf-8", "replace").rstrip("\n") if done.stdout else ""
    if text:
        env.err(text)
    if done.returncode != 0:
        env.err(f"warning: --on-done exited {done.returncode}")
    return done.returncode
