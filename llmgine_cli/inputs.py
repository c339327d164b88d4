"""Values from the command line: KEY=VALUE pairs, JSON objects, files (no Typer here: the
fast path uses these too; the Typer commands turn InputError into a usage error, exit 2).

Pairs follow httpie: ``key=value`` is the string "value" (``-p prompt=123`` sends "123"),
``key:=json`` is a JSON value (``-p n:=3``, ``-p tags:='["a"]'``, ``-p on:=true``). A value
(or a whole JSON option) that starts with ``@`` is read from that file, ``@-`` from stdin.
"""

from __future__ import annotations

import json
import sys

TYPE_CHECKING = False  # typing costs a few ms to import: annotations only
if TYPE_CHECKING:
    from typing import Any


class InputError(Exception):
    """A bad value on the command line; ``option`` names where it was given."""

    def __init__(self, message: str, option: str) -> None:
        super().__init__(message)
        self.option = option


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number out of range: {text}")
    return value


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (a JSON number is finite)")


def loads(text: str) -> Any:
    """JSON as the daemon reads it (ValueError otherwise): Python's json also takes NaN,
    Infinity and numbers too big for a float (inf), which the request then carried as null;
    and it raises RecursionError for a document nested thousands deep (an internal error)."""
    try:
        return json.loads(text, parse_float=_finite, parse_constant=_not_json)
    except RecursionError:
        raise ValueError("nested too deeply (the daemon takes 64 levels)") from None


# stdin, read once per stream: when the fast path (hot.py) has read `--data -` and leaves the
# command to Typer (to report a usage error in its words), Typer reads it again, and found it
# empty ("not JSON" for `echo '[1]' | llmgine event publish T --data -`, not "a JSON object").
_stdin_read: tuple[object, str | None] | None = None  # None: it was not UTF-8 (NotText again)


class NotText(ValueError):
    """stdin held bytes that are not UTF-8 text."""


def read_stdin() -> str:
    """All of stdin's text; the same text again when asked again for the same stream.
    NotText if it is not UTF-8: a strict stdin fails to decode, and one with surrogateescape
    (the C locale) gave lone surrogates that failed later, as an internal error."""
    global _stdin_read
    if _stdin_read is None or _stdin_read[0] is not sys.stdin:
        text: str | None
        try:
            text = sys.stdin.read()
            text.encode("utf-8")
        except (UnicodeDecodeError, UnicodeEncodeError):
            text = None
        _stdin_read = (sys.stdin, text)
    if _stdin_read[1] is None:
        raise NotText("stdin is not UTF-8 text")
    return _stdin_read[1]


def source_name(ref: str) -> str:
    """Where ``@file`` or ``@-`` is read from, as an error names it: the file, or stdin."""
    return "stdin" if ref == "@-" else ref[1:]


def read_text(ref: str, option: str) -> str:
    """The text of ``@file`` or ``@-`` (stdin)."""
    path = ref[1:]
    if path == "-":
        try:
            return read_stdin()
        except NotText as exc:
            raise InputError(str(exc), option) from None
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}", option) from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text", option) from None


def parse_pairs(pairs: list[str] | None, option: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        raw_json = key.endswith(":")
        key = key[:-1] if raw_json else key
        if not sep or not key:
            raise InputError(f"{pair!r} is not KEY=VALUE (a string) or KEY:=JSON", option)
        if value.startswith("@") and len(value) > 1:
            value = read_text(value, option)
            if not raw_json:
                value = value.removesuffix("\n")
        if raw_json:
            try:
                out[key] = loads(value)
            except ValueError as exc:
                raise InputError(f"{key}:= needs JSON ({exc}); for a string use {key}=...", option) from None
        else:
            out[key] = value
    return out


def parse_object(text: str | None, option: str) -> dict[str, Any]:
    """A JSON object given inline, as ``@file`` or as ``-``/``@-`` (stdin)."""
    if text is None:
        return {}
    if text == "-":
        text = "@-"
    source = None
    if text.startswith("@") and len(text) > 1:
        source = source_name(text)
        text = read_text(text, option)
    try:
        value = loads(text)
    except ValueError as exc:  # of a file or stdin: named (a stray comma in a.json said only "not JSON")
        raise InputError(f"{source} is not JSON: {exc}" if source else f"not JSON: {exc}", option) from None
    if not isinstance(value, dict):
        raise InputError("must be a JSON object", option)
    return value


def command_metadata(priority: str | None, timeout: float | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if priority:
        metadata["priority"] = priority
    if timeout is not None:
        metadata["timeout"] = timeout
    return metadata
