"""One call, in the child the worker forks for it (see ``worker.py``): what user code sees
(the global ``bus``, its capped stdout and stderr) and how the call runs - compile the code,
find the function, call it, check and send back its result (``child_main``, never returns).

Only msgspec and the standard library may be imported here (and the sandbox's own modules,
which obey the same rule).
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import inspect
import io
import json
import linecache
import math
import os
import resource
import sys
import traceback
from typing import Any

from llmgine_daemon.sandbox import frames
from llmgine_daemon.sandbox.frames import call_error as call_error
from llmgine_daemon.sandbox.introspect import describe_function

# Call error codes (mirrored in protocol.CallErrorCode for the wire).
SYNTAX_ERROR = "SYNTAX_ERROR"
CODE_ERROR = "CODE_ERROR"
FUNCTION_NOT_FOUND = "FUNCTION_NOT_FOUND"
EXECUTION_FAILED = "EXECUTION_FAILED"
INVALID_RESULT = "INVALID_RESULT"
RESULT_TOO_LARGE = "RESULT_TOO_LARGE"
WORKER_CRASHED = "WORKER_CRASHED"

_RFD = -1
_WFD = -1


# -- what user code sees ------------------------------------------------------------------


class BusCallError(Exception):
    """The daemon refused or failed a bus request made by user code."""


class Record(dict):  # type: ignore[type-arg]
    """A command or event as a dict that also allows ``command.parameters``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class SandboxBus:
    """The global ``bus`` in user code: each method is one request to the daemon.

    Requests are synchronous round trips on the call's pipe (the child runs one call, so
    nothing else can be waiting on it); the methods are ``async`` to match LLMGine's bus.
    """

    def __init__(self) -> None:
        self._next_id = 0

    def _request(self, op: str, args: dict[str, Any]) -> Any:
        try:
            payload = json.dumps(args).encode()
        except (TypeError, ValueError) as exc:
            raise TypeError(f"bus.{op}: arguments must be JSON-serialisable: {exc}") from None
        self._next_id += 1
        frames.write_frame(_WFD, frames.BusRequest(req_id=self._next_id, op=op, args=payload))
        reply = frames.read_frame(_RFD)
        if not isinstance(reply, frames.BusReply) or reply.req_id != self._next_id:
            raise BusCallError(f"bus.{op}: unexpected reply from the daemon")
        if not reply.ok:
            raise BusCallError(reply.error)
        return json.loads(reply.value)

    async def publish(
        self,
        event_type: str,
        data: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Any:
        """Publish an event in this session; returns the stored event."""
        return Record(
            self._request("publish", {"event_type": event_type, "data": data or {}, "metadata": metadata or {}})
        )

    async def execute(
        self,
        command_type: str,
        parameters: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Any:
        """Run a command in this session and return its result (raises if it failed)."""
        return self._request(
            "execute",
            {"command_type": command_type, "parameters": parameters or {}, "metadata": metadata or {}},
        )

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one of this session's tools and return its result (raises if it failed)."""
        return self._request("call_tool", {"name": name, "arguments": arguments or {}})

    def log(self, level: str, message: str) -> None:
        frames.write_frame(_WFD, frames.Log(level=str(level), message=str(message)[:8192]))


class CappedOutput(io.TextIOBase):
    """stdout and stderr of user code: the first ``cap`` characters are kept, the rest counted
    and dropped, so printing a gigabyte costs time but no memory."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.parts: list[str] = []
        self.size = 0
        self.truncated = False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:  # type: ignore[override]
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        room = self.cap - self.size
        if room > 0:
            piece = text[:room]
            self.parts.append(piece)
            self.size += len(piece)
        if len(text) > max(room, 0):
            self.truncated = True
        return len(text)

    def value(self) -> str:
        return "".join(self.parts)


# -- one call, in the child ---------------------------------------------------------------


def _last_function(tree: ast.Module) -> str | None:
    names = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return names[-1] if names else None


def _user_traceback(exc: BaseException, filename: str) -> str:
    """The traceback from the first frame of user code on (the worker's frames are noise)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def _text_cap(run: frames.Run) -> int:
    """The characters a failure's message keeps: it goes twice (the message and the details),
    beside the traceback, at most 4 bytes a character, in the frame the zygote takes beside the
    output (a longer one was a frame over its limit: the call failed as a protocol violation,
    the user's error lost). 69,632 by default; the daemon cuts the details further
    (``sandbox.max_output``)."""
    return max((run.max_result + 65536) // 16, 1000)


def _cut(text: str, cap: int) -> str:
    return text if len(text) <= cap else f"{text[:cap]}... ({len(text)} characters)"


# A type's name in an error (``details.type``): user code may make a class of any name.
TYPE_CAP = 256


def _bounded(error: dict[str, Any], cap: int) -> dict[str, Any]:
    """``error`` with its message and its details' strings cut to about ``cap`` characters (a
    type's name to about TYPE_CAP): user code chooses them all (an exception class, or a
    result's type, named with megabytes), and a longer one made the frame over its limit, the
    call a protocol violation. (``_failure``'s, cut already, stay as they are.)"""
    limit = cap + TYPE_CAP + 64
    error["message"] = _cut(str(error.get("message", "")), limit)
    details = error.get("details") or {}
    for key, value in details.items():
        if isinstance(value, str):
            details[key] = _cut(value, TYPE_CAP + 64 if key == "type" else limit)
    return error


def _failure(exc: BaseException, filename: str, cap: int) -> dict[str, Any]:
    kind = _cut(type(exc).__name__, TYPE_CAP)
    try:
        message = str(exc)
    except BaseException:  # noqa: BLE001 - user code's __str__ may raise anything
        message = f"<str() of the {kind} failed>"
    message = _cut(message, cap)
    return call_error(
        EXECUTION_FAILED,
        f"{kind}: {message}" if message else kind,
        type=kind,
        message=message,
        traceback=_user_traceback(exc, filename)[-min(cap, 20000) :],
    )


def _load(run: frames.Run, filename: str) -> tuple[Any, str] | dict[str, Any]:
    """Compile and execute the module, find the function: (function, name) or an error."""
    linecache.cache[filename] = (len(run.code), None, run.code.splitlines(True), filename)
    try:
        tree = ast.parse(run.code, filename)
        code = compile(tree, filename, "exec")
    except SyntaxError as exc:
        return call_error(
            SYNTAX_ERROR,
            f"syntax error at line {exc.lineno}, column {exc.offset}: {exc.msg}",
            line=exc.lineno,
            column=exc.offset,
            text=(exc.text or "").rstrip("\n"),
        )
    except (ValueError, RecursionError, MemoryError) as exc:
        return call_error(SYNTAX_ERROR, f"cannot compile: {type(exc).__name__}: {exc}")
    name = run.function or _last_function(tree)
    if name is None:
        return call_error(FUNCTION_NOT_FOUND, "the code defines no function")
    namespace: dict[str, Any] = {
        "__name__": "__sandbox__",
        "__builtins__": builtins,
        "bus": SandboxBus(),
    }
    try:
        exec(code, namespace)
    except BaseException as exc:  # noqa: BLE001 - user code may raise anything, SystemExit too
        error = _failure(exc, filename, _text_cap(run))
        error["code"] = CODE_ERROR
        error["message"] = f"running the module failed: {error['message']}"
        return error
    fn = namespace.get(name)
    if not inspect.isfunction(fn):
        return call_error(
            FUNCTION_NOT_FOUND,
            f"the code defines no function named {name!r}"
            if fn is None
            else f"{name!r} is a {type(fn).__name__}, not a function",
            function=name,
        )
    return fn, name


async def _await(value: Any) -> Any:
    return await value


def _call(run: frames.Run, fn: Any) -> Any:
    payload = json.loads(run.payload)
    result = fn(**payload) if run.kind == "tool" else fn(Record(payload))
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return result


def run_in_child(run: frames.Run, output: CappedOutput) -> frames.Done:
    done = _run_in_child(run, output)
    if done.error is not None:
        done.error = _bounded(done.error, _text_cap(run))
    return done


def _run_in_child(run: frames.Run, output: CappedOutput) -> frames.Done:
    filename = f"<{run.kind}:{run.function or 'handler'}>"
    sys.stdout = sys.stderr = output  # type: ignore[assignment]
    try:
        loaded = _load(run, filename)
        if isinstance(loaded, dict):
            return frames.Done(run.call_id, ok=False, error=loaded)
        fn, name = loaded
        if run.op == "inspect":
            value: Any = describe_function(fn)
            value["function"] = name
        else:
            try:
                value = _call(run, fn)
            except BaseException as exc:  # noqa: BLE001 - SystemExit and MemoryError fail the call
                return frames.Done(run.call_id, ok=False, error=_failure(exc, filename, _text_cap(run)))
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            return frames.Done(
                run.call_id,
                ok=False,
                error=call_error(
                    INVALID_RESULT,
                    f"the result is not JSON-serialisable: {exc}",
                    type=type(value).__name__,
                ),
            )
        if len(text) > run.max_result:
            return frames.Done(
                run.call_id,
                ok=False,
                error=call_error(
                    RESULT_TOO_LARGE,
                    f"the result is {len(text)} bytes of JSON, over the {run.max_result} byte limit",
                    size=len(text),
                    limit=run.max_result,
                ),
            )
        return frames.Done(run.call_id, ok=True, result=text.encode())
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__


def child_main(run: frames.Run, channel: int) -> None:
    """Runs in the forked child; never returns. ``channel``: its own socket to the zygote (the
    pool's pipes are closed before this runs: user code never holds them)."""
    global _RFD, _WFD
    _RFD = _WFD = channel
    try:
        os.setpgid(0, 0)  # its own group: the zygote kills the group afterwards
        set_dumpable(True)  # the zygote is not; user code's own processes may be
        try:  # if memory runs out, the kernel picks user code, not the zygote
            with open("/proc/self/oom_score_adj", "w") as fh:
                fh.write("1000")
        except OSError:
            pass
        cpu = math.ceil(run.deadline) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        output = CappedOutput(run.max_output)
        done = run_in_child(run, output)
        done.output, done.output_truncated = output.value(), output.truncated
        frames.write_frame(_WFD, done)
    except BaseException as exc:  # noqa: BLE001 - a bug here, or no memory left to report
        try:
            frames.write_frame(
                _WFD,
                frames.Done(
                    run.call_id,
                    ok=False,
                    error=call_error("WORKER_CRASHED", f"the sandbox failed: {type(exc).__name__}: {exc}"),
                ),
            )
        finally:
            os._exit(70)
    os._exit(0)


def set_dumpable(on: bool) -> None:
    """PR_SET_DUMPABLE: a process that is not dumpable cannot be traced, nor its /proc files
    (memory, descriptors) opened, by another process of the same uid (user code)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 1 if on else 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass
