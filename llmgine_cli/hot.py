"""The commands shell scripts call in loops, and the fast path that runs them without Typer.

`llmgine session list`, `llmgine command run` and `llmgine event publish` are implemented
here once, on plain JSON values (no protocol models, no msgspec), and called two ways:

- by their Typer commands (commands/sessions.py, commands.py, events.py), which own the help
  text, completion and every usage error;
- by ``fast_main`` (from app.main), which recognises the same options for these three with a
  small parser and runs them without importing Typer, click or rich. Whatever it does not
  recognise exactly (``--help``, completion, an unknown or malformed option, a value Typer
  would reject) it leaves to the Typer app, which then parses the whole command line itself,
  so an error or a help page is always Typer's.

Only the standard library and this package's light modules (context, transport, wire,
render, errors) are imported on this path; tests/cli/test_fastpath.py checks both paths give
the same output and exit code.
"""

from __future__ import annotations

import os
import sys

from llmgine_cli.context import AppContext, Environment
from llmgine_cli.inputs import InputError, command_metadata, parse_object, parse_pairs
from llmgine_cli.progress import spinner
from llmgine_cli.render import FORMATS, View, cut_note, output_format, render, resolve_format, visible_line
from llmgine_cli.transport import HTTPTransport, segment

TYPE_CHECKING = False  # typing costs a few ms to import: annotations only
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

# Each long poll asks the daemon to hold the answer this long; the CLI polls again until done.
LONG_POLL_S = 25.0
TERMINAL_STATUSES = frozenset({"completed", "failed", "timed_out", "cancelled", "interrupted"})

SESSION_VIEW = View(id_field="session_id")
SESSION_LIST_VIEW = View(
    columns="ID=session_id, NAME=name, STATUS=status, CREATED=created_at, LAST ACTIVITY=last_activity_at",
    items="sessions",
    id_field="session_id",
)
COMMAND_VIEW = View(id_field="command_id")
EVENT_VIEW = View(id_field="event_id")


def _transport(app_ctx: AppContext) -> HTTPTransport:
    return app_ctx.client(cls=HTTPTransport)


# -- ids: a full id, a unique prefix, the short id, or (sessions) a name -------------------

RESOLVE_LIMIT = 1000  # the API's largest page


def _pages(
    transport: HTTPTransport, path: str, items: str, query: dict[str, Any] | None = None, *, given: str = ""
) -> list[Any]:
    """Every item of a paged listing (offset paging, the API's largest pages), read to find
    what ``given`` (a prefix, short id or name) names."""
    from llmgine_cli.errors import ApiError, api_error

    out: list[Any] = []
    while True:
        try:
            page = transport._call_json(
                "GET", path, query={**(query or {}), "limit": RESOLVE_LIMIT, "offset": len(out)}
            )
        except ApiError as exc:
            if exc.status != 403:
                raise
            # A session token may not list sessions: say why a prefix cannot be looked up.
            raise api_error(
                403,
                exc.code,
                f"{given!r} is not a full id, and this credential may not list {path} to find what it names: "
                "give the full id",
            ) from None
        out += page[items]
        if not page[items] or len(out) >= page.get("total", 0):
            return out


def resolve_session(app_ctx: AppContext, given: str, *, from_env: bool = False) -> str:
    """The session ``given`` names (id, prefix, short id or name); active ones win a tie.
    ``from_env``: LLMGINE_SESSION's, kept as given and then as its id (``session_from_env``:
    an error about the session says where it came from, failure.py)."""
    if from_env:
        app_ctx.session_from_env = [given]
    resolved = resolve_session_in(_transport(app_ctx), given)
    if from_env and app_ctx.session_from_env is not None:
        app_ctx.session_from_env.append(resolved)
    return resolved


def resolve_session_in(transport: HTTPTransport, given: str) -> str:
    """``resolve_session`` over a transport (a ``Client`` is one: shell completion's)."""
    from llmgine_cli import ids

    if ids.is_full_id(given):
        return given
    sessions = _pages(transport, "/api/sessions", "sessions", given=given)
    found = ids.matches(given, ((s["session_id"], s.get("name")) for s in sessions))
    active = {s["session_id"] for s in sessions if s.get("status") == "active"}
    if len(found) > 1 and len([f for f in found if f[0] in active]) == 1:
        found = [f for f in found if f[0] in active]
    resolved = ids.resolve("session", given, found)
    if resolved == given:  # no session has it as id, prefix or name: the daemon says NOT_FOUND...
        from llmgine_daemon.protocol.grammar import ID_RE

        if not ID_RE.match(given):  # ...of an identifier; a name such as "my projet" is none (422)
            from llmgine_cli.errors import api_error

            raise api_error(404, "SESSION_NOT_FOUND", f"session {given!r} not found")
    return resolved


def resolve_id(
    app_ctx: AppContext,
    kind: str,
    given: str,
    path: str,
    items: str,
    key: str,
    query: dict[str, Any] | None = None,
    name_key: str | None = None,
    paged: bool = True,
) -> str:
    """The id of ``kind`` that ``given`` names among the items of a listing. Nothing matches:
    NOT_FOUND (exit 4), as the daemon says for an id it does not know."""
    from llmgine_cli import ids
    from llmgine_cli.errors import api_error, not_found_code

    if ids.is_full_id(given):
        return given
    transport = _transport(app_ctx)
    if paged:
        listed = _pages(transport, path, items, query, given=given)
    else:
        listed = transport._call_json("GET", path, query={**(query or {}), "limit": RESOLVE_LIMIT})[items]
    found = ids.resolve(kind, given, ((i[key], i.get(name_key) if name_key else None) for i in listed))
    if found == given:
        raise api_error(404, not_found_code(kind), f"{kind} {given!r} not found")
    return found


# -- session list ------------------------------------------------------------------------


def session_list(
    app_ctx: AppContext,
    view: View = SESSION_LIST_VIEW,
    *,
    status: str | None,
    limit: int,
    offset: int,
    output: Any,
    quiet: bool,
    all_sessions: bool = False,
) -> int:
    """Sessions, newest first: the active ones unless --all or --status says otherwise."""
    if status is None and not all_sessions:
        status = "active"
        view = view.replace(empty="no active sessions (--all lists closed ones too)")
    page = _transport(app_ctx)._call_json(
        "GET", "/api/sessions", query={"limit": limit, "offset": offset, "status": status}
    )
    render(app_ctx.env, page, view, output, quiet)
    cut_note(app_ctx.env, output, quiet, page["total"], offset, len(page["sessions"]))
    return 0


# -- event publish -----------------------------------------------------------------------


def event_publish(
    app_ctx: AppContext,
    *,
    session: str,
    event_type: str,
    data: dict[str, Any],
    metadata: dict[str, Any],
    output: Any,
    quiet: bool,
) -> int:
    body = {"event_type": event_type, "data": data, "metadata": metadata}
    event = _transport(app_ctx)._call_json("POST", f"/api/sessions/{segment(session)}/events", body=body)
    render(app_ctx.env, event, EVENT_VIEW, output, quiet)
    return 0


# -- command run -------------------------------------------------------------------------


def submit_command(
    app_ctx: AppContext,
    *,
    session: str,
    command_type: str,
    parameters: dict[str, Any],
    metadata: dict[str, Any],
    wait: float,
    idempotency_key: str | None,
    after: list[str] | None = None,
    after_policy: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"command_type": command_type, "parameters": parameters, "metadata": metadata}
    if after:
        body["after"] = after
    if after_policy:
        body["after_policy"] = after_policy
    query = {"wait": f"{wait:g}"} if wait > 0 else {}
    return _transport(app_ctx)._call_json(
        "POST",
        f"/api/sessions/{segment(session)}/commands",
        body=body,
        query=query,
        wait=wait,
        idempotency_key=idempotency_key,
    )


def command_run(
    app_ctx: AppContext,
    *,
    session: str,
    command_type: str,
    parameters: dict[str, Any],
    metadata: dict[str, Any],
    no_wait: bool,
    idempotency_key: str | None,
    output: Any,
    quiet: bool,
    cancel_on_interrupt: bool = False,
    on_done: str | None = None,
    after: list[str] | None = None,
    after_policy: str | None = None,
) -> int:
    # Every run carries an idempotency key: a Ctrl-C during the first long poll sends the
    # same request again without waiting, which returns the command already submitted (never
    # a second one), so its id can be shown, or it can be cancelled.
    key = idempotency_key or os.urandom(16).hex()
    submit: dict[str, Any] = {
        "session": session,
        "command_type": command_type,
        "parameters": parameters,
        "metadata": metadata,
        "idempotency_key": key,
        "after": after,
        "after_policy": after_policy,
    }
    try:
        if no_wait:
            record = submit_command(app_ctx, **submit, wait=0)
        else:
            with spinner(app_ctx.env, f"{command_type}: waiting for it"):
                record = submit_command(app_ctx, **submit, wait=LONG_POLL_S)
    except KeyboardInterrupt:
        record = submit_command(app_ctx, **submit, wait=0)
        if record["status"] not in TERMINAL_STATUSES:
            return interrupted(app_ctx, record, cancel=cancel_on_interrupt)
    return finish_command(
        app_ctx,
        record,
        no_wait=no_wait,
        output=output,
        quiet=quiet,
        cancel_on_interrupt=cancel_on_interrupt,
        on_done=on_done,
    )


def interrupted(app_ctx: AppContext, record: dict[str, Any], *, cancel: bool) -> int:
    """Ctrl-C while waiting: say that the command goes on in the daemon and how to stop it,
    or (--cancel-on-interrupt) cancel it. Exit 130 either way."""
    cid, sid = record["command_id"], record["session_id"]
    if cancel:
        path = f"/api/sessions/{segment(sid)}/commands/{segment(cid)}/cancel"
        try:
            done = _transport(app_ctx)._call_json("POST", path, body={})
            app_ctx.env.err(f"interrupted: command {cid} {done['status']}")
        except Exception as exc:  # noqa: BLE001 - e.g. it finished meanwhile (409)
            app_ctx.env.err(f"interrupted: command {cid} could not be cancelled: {exc}")
        return 130
    app_ctx.env.err(
        f"interrupted: command {cid} continues in the daemon "
        f"(stop it with: llmgine command cancel {cid} --session {sid})"
    )
    return 130


def finish_command(
    app_ctx: AppContext,
    record: dict[str, Any],
    *,
    no_wait: bool,
    output: Any,
    quiet: bool,
    cancel_on_interrupt: bool = False,
    on_done: str | None = None,
) -> int:
    """Wait for the command (unless --no-wait), print it, run the --on-done hook (on_done.py)
    if it ended; exit 1 unless it completed, 130 when Ctrl-C stopped the waiting."""
    if not no_wait:
        waited = wait_for(app_ctx, record)
        if waited is None:
            return interrupted(app_ctx, record, cancel=cancel_on_interrupt)
        record = waited
    render_command(app_ctx, record, output, quiet)
    status = record["status"]
    if on_done and status in TERMINAL_STATUSES:
        from llmgine_cli.on_done import run_hook

        run_hook(app_ctx.env, on_done, record)
    if status in ("queued", "blocked", "executing", "completed"):
        return 0
    from llmgine_cli.errors import error_text

    error = record.get("error")  # (its message may be user code's: escapes shown, not obeyed)
    why = f": {error_text(error.get('code'), error.get('message'), error.get('details'))}" if error else ""
    app_ctx.env.err(visible_line(f"error: command {record['command_id']} {status}{why}"))
    return 1


def wait_for(app_ctx: AppContext, record: dict[str, Any]) -> dict[str, Any] | None:
    """Long-poll until the command finished; None when Ctrl-C stopped the waiting (the
    command goes on in the daemon, and the message says how to cancel it)."""
    transport = _transport(app_ctx)
    if record["status"] in TERMINAL_STATUSES:
        return record
    try:
        with spinner(app_ctx.env, f"{record.get('command_type', 'command')} {record['status']}"):
            return _poll(transport, record)
    except KeyboardInterrupt:
        return None


def _poll(transport: HTTPTransport, record: dict[str, Any]) -> dict[str, Any]:
    while record["status"] not in TERMINAL_STATUSES:
        path = f"/api/sessions/{segment(record['session_id'])}/commands/{segment(record['command_id'])}"
        record = transport._call_json("GET", path, query={"wait": f"{LONG_POLL_S:g}"}, wait=LONG_POLL_S)
    return record


def render_command(app_ctx: AppContext, record: dict[str, Any], output: Any, quiet: bool) -> None:
    if resolve_format(app_ctx.env, output) in ("table", "plain"):
        record = text_view(record)
    render(app_ctx.env, record, COMMAND_VIEW, output, quiet)


def text_view(record: dict[str, Any]) -> dict[str, Any]:
    """A record for table/plain output: the traceback stays in -o json."""
    error = record.get("error")
    if isinstance(error, dict) and isinstance(error.get("details"), dict):
        details = {k: v for k, v in error["details"].items() if k != "traceback"}
        record = {**record, "error": {**error, "details": details}}
    return record


# -- the fast path -----------------------------------------------------------------------

# Option spellings per command: name -> (destination, kind). Kinds: "flag" (no value), "str",
# "int:LO:HI" (an int in that range; HI may be empty), "float:LO" (at least LO), "list",
# "format" (-o), "priority". Each mirrors the Typer command's declaration (the help text and
# the error messages are Typer's); anything else falls back to Typer.
_GLOBAL = {
    "--url": ("url", "str"),
    "--api-key": ("api_key", "str"),
    "--timeout": ("global_timeout", "float:0.01"),
    "--utc": ("utc", "flag"),
}
_OUTPUT = {
    "-o": ("output", "format"),
    "--output": ("output", "format"),
    "--format": ("output", "format"),
    "-q": ("quiet", "flag"),
    "--quiet": ("quiet", "flag"),
}
_SESSION = {"-S": ("session", "str"), "--session": ("session", "str")}
_SPECS: dict[tuple[str, str], tuple[dict[str, tuple[str, str]], int]] = {
    ("session", "list"): (
        {
            "--status": ("status", "choice:active,closed"),
            "-s": ("status", "choice:active,closed"),
            "--all": ("all", "flag"),
            "-a": ("all", "flag"),
            "--limit": ("limit", "int:1:1000"),
            "-l": ("limit", "int:1:1000"),
            "-n": ("limit", "int:1:1000"),
            "--offset": ("offset", "int:0:"),
            **_OUTPUT,
        },
        0,
    ),
    ("command", "run"): (
        {
            **_SESSION,
            "-p": ("param", "list"),
            "--param": ("param", "list"),
            "--params": ("params", "str"),
            "--priority": ("priority", "priority"),
            "--timeout": ("timeout", "float:0.001"),
            "--no-wait": ("no_wait", "flag"),
            "--idempotency-key": ("idempotency_key", "str"),
            "--cancel-on-interrupt": ("cancel_on_interrupt", "flag"),
            **_OUTPUT,
        },
        1,
    ),
    ("event", "publish"): (
        {
            **_SESSION,
            "-d": ("data", "str"),
            "--data": ("data", "str"),
            "-m": ("meta", "list"),
            "--meta": ("meta", "list"),
            **_OUTPUT,
        },
        1,
    ),
}
PRIORITIES = ("high", "normal", "low")


class _Fallback(Exception):
    """The fast path does not handle this command line: Typer will."""


def _value(kind: str, text: str) -> Any:
    if kind in ("str", "list"):
        return text
    if kind.startswith("choice:"):
        if text not in kind[7:].split(","):
            raise _Fallback
        return text
    if kind in ("format", "priority"):
        if (value := output_format(text, FORMATS if kind == "format" else PRIORITIES)) is None:
            raise _Fallback
        return value
    try:
        number = float(text) if kind.startswith("float") else int(text)
    except ValueError:
        raise _Fallback from None
    if kind.startswith("float"):
        if not float(kind.split(":")[1]) <= number < float("inf"):  # NaN too
            raise _Fallback
        return number
    _, low, high = kind.split(":")
    if number < int(low) or (high and number > int(high)):
        raise _Fallback
    return number


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[str, str, dict[str, Any]]:
    """(group, command, values) for a command line the fast path runs; _Fallback otherwise."""
    values: dict[str, Any] = {}
    args = list(argv)
    i = 0

    def take(spec: dict[str, tuple[str, str]], arg: str) -> None:
        nonlocal i
        name, eq, inline = arg.partition("=")
        if name not in spec or (eq and not name.startswith("--")):
            raise _Fallback
        dest, kind = spec[name]
        if kind == "flag":
            if eq:
                raise _Fallback
            values[dest] = True
            i += 1
            return
        if eq:
            text = inline
            i += 1
        else:
            if i + 1 >= len(args):
                raise _Fallback
            text = args[i + 1]
            i += 2
        value = _value(kind, text)
        if kind == "list":
            values.setdefault(dest, []).append(value)
        else:
            values[dest] = value

    while i < len(args) and args[i].startswith("-"):  # global options, before the group
        take(_GLOBAL, args[i])
    if i + 2 > len(args):
        raise _Fallback
    entry = _SPECS.get((args[i], args[i + 1]))
    if entry is None:
        raise _Fallback
    group, command = args[i], args[i + 1]
    spec, n_positional = entry
    i += 2
    positional: list[str] = []
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and arg != "-":
            take(spec, arg)  # "--", "-h", "-qo", unknown options: _Fallback
        else:
            positional.append(arg)
            i += 1
    if len(positional) != n_positional:
        raise _Fallback
    values["positional"] = positional
    if "-S" in spec and "session" not in values:
        if not environ.get("LLMGINE_SESSION"):
            raise _Fallback  # Typer says the option is missing
        values["session"] = values["session_from_env"] = environ["LLMGINE_SESSION"]
    return group, command, values


def fast_main(argv: Sequence[str]) -> int | None:
    """Run ``argv`` without Typer if it is one of the hot commands; None: not handled."""
    environ = os.environ
    if any(name.startswith("_LLMGINE_COMPLETE") for name in environ):
        return None
    try:
        group, command, v = parse(argv, environ)
    except _Fallback:
        return None
    env = Environment.from_sys()
    app_ctx = AppContext(env, url=v.get("url"), api_key=v.get("api_key"), timeout=v.get("global_timeout"))
    output, quiet = v.get("output"), v.get("quiet", False)
    if v.get("utc"):
        from llmgine_cli import render

        render.USE_UTC = True
    try:
        return _dispatch(app_ctx, group, command, v, output, quiet)
    except InputError:
        return None  # Typer reports it, in its words, with exit code 2
    except KeyboardInterrupt:
        env.err("interrupted")
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except Exception as exc:  # noqa: BLE001 - reported as one line, like the Typer path
        from llmgine_cli.failure import report

        return report(exc, app_ctx)


def _dispatch(app_ctx: AppContext, group: str, command: str, v: dict[str, Any], output: Any, quiet: bool) -> int:
    if "session" in v:
        from llmgine_cli.ids import Ambiguous

        try:
            v["session"] = resolve_session(app_ctx, v["session"], from_env="session_from_env" in v)
        except Ambiguous as exc:
            app_ctx.env.err(f"error: --session: {exc}")
            return 2
    if (group, command) == ("session", "list"):
        return session_list(
            app_ctx,
            SESSION_LIST_VIEW,
            status=v.get("status"),
            all_sessions=v.get("all", False),
            limit=v.get("limit", 50),
            offset=v.get("offset", 0),
            output=output,
            quiet=quiet,
        )
    if (group, command) == ("event", "publish"):
        return event_publish(
            app_ctx,
            session=v["session"],
            event_type=v["positional"][0],
            data=parse_object(v.get("data"), "--data"),
            metadata=parse_pairs(v.get("meta"), "--meta"),
            output=output,
            quiet=quiet,
        )
    parameters = {**parse_object(v.get("params"), "--params"), **parse_pairs(v.get("param"), "--param")}
    return command_run(
        app_ctx,
        session=v["session"],
        command_type=v["positional"][0],
        parameters=parameters,
        metadata=command_metadata(v.get("priority"), v.get("timeout")),
        no_wait=v.get("no_wait", False),
        idempotency_key=v.get("idempotency_key"),
        output=output,
        quiet=quiet,
        cancel_on_interrupt=v.get("cancel_on_interrupt", False),
    )


def _silence_stdout() -> None:
    # The reader went away (`| head -1`): nothing more can be written, nor the final flush.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
