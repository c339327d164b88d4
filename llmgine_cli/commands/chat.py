"""`llmgine ask` and `llmgine chat`: prompts to an LLM engine, answers streamed as written.

Both go through llmgine_cli/conversation.py (engine set-up, the live stream of one prompt)
and draw with live.PlainAnswer (piped) or live.RichAnswer (a terminal).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from llmgine_daemon.protocol import Command

from llmgine_cli.commands.args import parse_pairs, session_option, stdin_argument
from llmgine_cli.context import Environment
from llmgine_cli.errors import error_text
from llmgine_cli.ids import short_id
from llmgine_cli.options import state
from llmgine_cli.render import visible_line
from llmgine_cli.status import ExitStatus

if TYPE_CHECKING:  # imported where used: the stream machinery stays off other commands' start-up
    from llmgine_cli.conversation import Turn
    from llmgine_cli.live import PlainAnswer, RichAnswer

Model = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-M",
        show_default=False,
        help="The model of a new engine, e.g. openai/gpt-4o-mini (default: the daemon's default model).",
    ),
]
EngineOpt = Annotated[
    str | None,
    typer.Option(
        "--engine",
        "-E",
        metavar="ID",
        show_default=False,
        help="Talk to this existing engine (SinglePassEngine or ToolChatEngine) and its memory.",
    ),
]
SessionOpt = Annotated[
    str | None,
    session_option(
        "Create the engine in this session: id, prefix, short id or name (default: LLMGINE_SESSION, "
        "else `ask`'s own session, or a new one for `chat`).",
        eager=False,
        complete=False,
    ),
]
Params = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        "-p",
        metavar="KEY=VALUE",
        help="A per-call parameter (temperature, max_tokens, ...); KEY=string or KEY:=JSON "
        "(temperature:=0). Repeatable.",
    ),
]

HELP_TEXT = "/reset forgets the conversation, /exit (or Ctrl-D) leaves, Ctrl-C stops an answer"


def _view(env: Environment) -> PlainAnswer | RichAnswer:
    from llmgine_cli.live import PlainAnswer, RichAnswer

    return RichAnswer(env) if env.stdout_isatty else PlainAnswer(env)


def play(turn: Turn, env: Environment) -> Command:
    """Show one prompt's answer as it streams (tool calls as they happen); its final record.
    Until the first word arrives, a spinner (on a terminal's stderr) shows the wait."""
    import itertools

    from llmgine_cli.progress import spinner

    events = iter(turn)
    with spinner(env, "waiting for the first words"):
        first = list(itertools.islice(events, 1))
    with _view(env) as view:
        for event in itertools.chain(first, events):
            kind = event.event_type
            if kind == "EngineResponseDelta":
                view.delta(str(event.data.get("text") or ""))
            elif kind == "EngineToolCall":
                view.tool_call(event.data)
            elif kind == "ToolExecuted":
                view.tool_result(event.data)
            elif kind == "ApprovalRequested":  # a person decides, here (approve_inline.py)
                from llmgine_cli.approve_inline import decide_inline

                with view.paused():
                    decide_inline(env, turn.conversation.client, turn.conversation.session_id, event.data)
        assert turn.record is not None
        if turn.record.status == "completed":
            view.finish(turn.answer)
    return turn.record


def failure_line(record: Command) -> str:
    if record.error is not None:
        # A provider's error text (a model server's, a proxy's) or a tool's: shown, not obeyed.
        why = visible_line(error_text(record.error.code, record.error.message, record.error.details))
        return f"error: command {record.command_id} {record.status}: {why}"
    return f"error: command {record.command_id} {record.status}"


def _check_engine_flags(engine: str | None, **others: Any) -> None:
    given = [f"--{name}" for name, value in others.items() if value]
    if engine and given:
        raise typer.BadParameter(
            f"--engine talks to an existing engine: drop {', '.join(given)}", param_hint="--engine"
        )


def ask(
    ctx: typer.Context,
    prompt: Annotated[
        str | None,
        typer.Argument(metavar="[PROMPT]", show_default=False, help="The prompt (- or none: read it from stdin)."),
    ] = None,
    model: Model = None,
    engine: EngineOpt = None,
    session: SessionOpt = None,
    param: Params = None,
    cancel_on_interrupt: Annotated[
        bool,
        typer.Option("--cancel-on-interrupt", help="Ctrl-C cancels the answer (default: it continues in the daemon)."),
    ] = False,
) -> None:
    """Ask one question and print the answer as it is written.

    Piped, stdout gets only the answer's text (streamed), so `llmgine ask "..." | wc -w` works.
    Without --engine a SinglePassEngine is used: one already in the session (LLMGINE_SESSION)
    with that model, so its memory carries over, else a new one in a new session.

    Examples:

      llmgine ask "What is a message bus?" --model openai/gpt-4o-mini

      git diff | llmgine ask - -S demo
    """
    _check_engine_flags(engine, model=model)
    if prompt is None or prompt == "-":
        if sys.stdin.isatty():
            raise typer.BadParameter("give a PROMPT (or pipe one in)", param_hint="PROMPT")
        prompt = stdin_argument("PROMPT", "the prompt")
    if not prompt.strip():
        raise typer.BadParameter("the prompt is empty", param_hint="PROMPT")
    parameters = parse_pairs(param, "--param")
    app_ctx = state(ctx)
    env = app_ctx.env
    from llmgine_cli.conversation import Conversation

    conv = Conversation.open(app_ctx.client(), engine_id=engine, session_id=None if engine else session, model=model)
    if engine is None and session is None:
        conv.reset()  # the shared "ask" session's engine: each question starts afresh
    turn = conv.send(prompt, parameters)
    try:
        record = play(turn, env)
    except KeyboardInterrupt:
        # As every wait of the CLI: the command goes on unless --cancel-on-interrupt.
        if cancel_on_interrupt or turn.command_id is None:
            turn.cancel()
            env.err(f"interrupted: command {turn.command_id} cancelled" if turn.command_id else "interrupted")
        else:
            turn.close()
            env.err(
                f"interrupted: command {turn.command_id} continues in the daemon (stop it with: "
                f"llmgine command cancel {turn.command_id} --session {conv.session_id})"
            )
        raise typer.Exit(ExitStatus.INTERRUPTED) from None
    finally:
        conv.close()
    if record.status != "completed":
        env.err(failure_line(record))
        raise typer.Exit(ExitStatus.ERROR)


def default_model(client: Any) -> str:
    """The model an engine made without one uses: the daemon's providers.default_model."""
    try:
        for setting in client.config().settings:
            if setting.key == "providers.default_model" and setting.value:
                return f"{setting.value} (the default model)"
    except Exception:  # noqa: BLE001 - naming it is a courtesy; chat goes on
        pass
    return "(the default model)"


def _history_file(environ: Any) -> Path | None:
    try:
        from llmgine_daemon.settings import get_paths

        return get_paths(dict(environ)).state_dir / "chat_history"
    except Exception:  # no usable state dir: history for this run only
        return None


def _readline(environ: Any) -> Path | None:
    """Arrow keys and history (stdlib readline); the history file, if there is one."""
    try:
        import readline
    except ImportError:  # not on every platform; input() still works
        return None
    path = _history_file(environ)
    if path is not None:
        try:
            readline.read_history_file(path)
        except OSError:
            pass
    readline.set_history_length(1000)
    return path


class _Prompting:
    """The prompt being shown, while `chat` waits at it (None while an answer streams)."""

    prompt: str | None = None


@contextlib.contextmanager
def _mode_kept_across_ctrl_z() -> Iterator[_Prompting]:
    """Ctrl-Z, then fg: the shell gives the terminal back in its own mode, and the prompt's
    line editing (readline's mode) was gone: typed text echoed twice, arrows printed ^[[A.
    Stop as asked, then put the terminal back as it was and draw the prompt and what was typed
    again (the shell's `fg` line is where it stood), as bash does."""
    import os
    import signal
    import termios

    fd = sys.stdin.fileno()
    at = _Prompting()

    def stop(_signum: int, _frame: Any) -> None:
        mode = termios.tcgetattr(fd)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # stopped here until fg
        signal.signal(signal.SIGTSTP, stop)
        termios.tcsetattr(fd, termios.TCSANOW, mode)
        if at.prompt is not None:
            typed = ""
            with contextlib.suppress(ImportError):
                import readline

                typed = readline.get_line_buffer()
            sys.stdout.write(f"\r{at.prompt}{typed}")
            sys.stdout.flush()

    previous = signal.signal(signal.SIGTSTP, stop)
    try:
        yield at
    finally:
        signal.signal(signal.SIGTSTP, previous)


def _save_history(path: Path | None) -> None:
    if path is None:
        return
    try:
        import readline

        path.parent.mkdir(parents=True, exist_ok=True)
        readline.write_history_file(path)
        path.chmod(0o600)  # prompts can be private
    except (ImportError, OSError):
        pass


def chat(
    ctx: typer.Context,
    engine: EngineOpt = None,
    model: Model = None,
    system: Annotated[
        str | None,
        typer.Option("--system", metavar="TEXT", show_default=False, help="The system prompt of the new engine."),
    ] = None,
    tools: Annotated[
        bool,
        typer.Option("--tools", help="A ToolChatEngine: the model may call the session's tools (run in the sandbox)."),
    ] = False,
    session: SessionOpt = None,
) -> None:
    """Chat with a model in the terminal; answers stream in as they are written.

    /reset forgets the conversation, /exit or Ctrl-D leaves, Ctrl-C stops the current answer
    (cancels its command) and not the chat. Up/down arrows recall earlier prompts.

    Examples:

      llmgine chat --model openai/gpt-4o-mini --system "Answer briefly."

      llmgine chat --tools -S demo
    """
    _check_engine_flags(engine, model=model, system=system, tools=tools)
    app_ctx = state(ctx)
    env = app_ctx.env
    from llmgine_cli.conversation import Conversation

    conv = Conversation.open(
        app_ctx.client(),
        engine_id=engine,
        session_id=None if engine else session,
        model=model,
        engine_type="ToolChatEngine" if tools else "SinglePassEngine",
        configuration={"system_prompt": system} if system else None,
        reuse=False,
        session_name="chat",
    )
    e = conv.engine
    env.err(
        f"{e.engine_type} {e.model_name or default_model(conv.client)}: engine {short_id(e.engine_id)} "
        f"in session {short_id(e.session_id)}. {HELP_TEXT}."
    )
    interactive = sys.stdin.isatty()
    history = _readline(env.environ) if interactive else None
    prompt = "you> " if interactive else ""
    with _mode_kept_across_ctrl_z() if interactive else contextlib.nullcontext(_Prompting()) as at:
        _converse(conv, env, prompt, interactive, history, at)


def _converse(
    conv: Any, env: Environment, prompt: str, interactive: bool, history: Path | None, at: _Prompting
) -> None:
    """The chat's loop: a prompt, its answer, until /exit or Ctrl-D."""
    try:
        while True:
            try:
                at.prompt = prompt
                line = input(prompt)
            except EOFError:
                if interactive:
                    env.stdout.write("\n")
                break
            except KeyboardInterrupt:  # at the prompt: a fresh line, as a shell does
                env.stdout.write("\n")
                continue
            finally:
                at.prompt = None
            text = line.strip()
            if not text:
                continue
            if text in ("/exit", "/quit"):
                break
            if text == "/reset":
                env.err(f"conversation reset ({conv.reset()} messages forgotten)")
                continue
            if text.startswith("/"):
                env.err(HELP_TEXT if text == "/help" else f"unknown command {text}: {HELP_TEXT}")
                continue
            turn = conv.send(text)
            try:
                record = play(turn, env)
            except KeyboardInterrupt:
                turn.cancel()
                env.err("(answer cancelled)")
                continue
            if record.status != "completed":
                env.err(failure_line(record))
    finally:
        _save_history(history)
        conv.close()
