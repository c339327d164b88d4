"""`-o/--format TEMPLATE`: docker-style output templates (`--format '{{.ID}}\\t{{.Name}}'`).

A small, safe subset of Go's text/template, the one docker and gh users write:

- ``{{.path.to.field}}``: the field of each record (each item of a listing, or the one
  object); a string as it is, other values as compact JSON, a missing or null one as nothing;
- ``{{json .path}}``: the value as JSON (``{{json .}}``: the whole record);
- ``{{.}}``: the whole record as compact JSON;
- ``\\t`` and ``\\n`` in the template are a tab and a newline (as docker);
- a leading ``table `` prints aligned columns (one per tab-separated part) under a header row
  taken from the fields' names, never cut: the way to see a column the terminal table leaves out.

A line per record; control characters in data are escaped (``\\n``, ``\\u001b``) except
inside ``{{json}}``, which is exact JSON. A top-level field no record has is a usage error
naming the fields there are (a typo must not print empty lines); below it (``.metadata.x``,
``.data.x``: free-form), a missing value prints nothing.
"""

from __future__ import annotations

import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from llmgine_cli.context import Environment

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")
_FIELD = re.compile(r"^(?:(json)\s+)?\.((?:[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)?)$")
FORMAT_HELP = (
    "table, plain, json, jsonl, or a template: '{{.name}}' prints a line per record"
    " ({{json .x}}: a value as JSON; 'table {{.a}}\\t{{.b}}': aligned columns, never cut)"
)


class Template(str):
    """An output format that is a template (a str, so it passes wherever a format does)."""

    __slots__ = ()


_MISSING = object()


def parse_format(value: str | None) -> str | None:
    """The -o/--format value: a format name (lower case) or a Template; else a usage error."""
    if value is None:
        return None
    import typer

    if "{{" in value:
        try:
            compile_template(value)  # a bad action is a usage error here, before any request
        except TemplateError as exc:
            raise typer.BadParameter(str(exc)) from None
        return Template(value)
    name = value.strip().lower()
    if name in ("table", "plain", "json", "jsonl"):
        return name
    raise typer.BadParameter(
        f"{value!r} is not one of table, plain, json, jsonl, nor a template with {{{{.field}}}}"
        " (e.g. -o '{{.name}}')"
    )


def valid_template(text: str) -> bool:
    """Whether ``text`` is a template this module can apply (the fast path's check)."""
    try:
        return "{{" in text and bool(compile_template(text))
    except TemplateError:
        return False


class TemplateError(ValueError):
    pass


def compile_template(text: str) -> tuple[bool, list[str | tuple[bool, tuple[str, ...]]]]:
    """(table?, parts): literal text, and (as_json, path) for each action."""
    table = text.startswith("table ") or text == "table"
    body = text[6:] if table else text
    body = body.replace("\\t", "\t").replace("\\n", "\n")
    parts: list[str | tuple[bool, tuple[str, ...]]] = []
    pos = 0
    for match in _ACTION.finditer(body):
        parts.append(body[pos : match.start()])
        field = _FIELD.match(match.group(1))
        if field is None:
            raise TemplateError(
                f"unsupported template action {match.group(0)!r}: use {{{{.field}}}}, {{{{.a.b}}}},"
                " {{json .field}} or {{.}}"
            )
        path = tuple(field.group(2).split(".")) if field.group(2) else ()
        parts.append((bool(field.group(1)), path))
        pos = match.end()
    parts.append(body[pos:])
    if any(isinstance(p, str) and "{{" in p for p in parts):
        raise TemplateError(f"unclosed action in {text!r}: every {{{{ needs its }}}}")
    return table, [p for p in parts if p != ""]


def _lookup(record: Any, path: tuple[str, ...]) -> Any:
    value = record
    for key in path:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return _MISSING
    return value


def _text(value: Any, as_json: bool) -> str:
    from llmgine_cli.render import json_text, visible_line

    if as_json:
        return json_text(None if value is _MISSING else value, indent=False)
    if value is _MISSING or value is None:
        return ""
    if isinstance(value, str):
        return visible_line(value)
    return json_text(value, indent=False)


def _header(part: str | tuple[bool, tuple[str, ...]]) -> str:
    if isinstance(part, str):
        return part
    return (".".join(part[1]) if part[1] else "record").upper().replace("-", "_")


def _holds_credential(record: Any) -> bool:
    """Whether an answer holds a credential the daemon shows once: a ``session_token`` (also
    under a fork's ``session``) or a new API key's ``key``."""
    if not isinstance(record, dict):
        return False
    inner = record.get("session")
    return bool(
        record.get("session_token")
        or (isinstance(record.get("key"), str) and "key_id" in record)
        or (isinstance(inner, dict) and inner.get("session_token"))
    )


def apply(env: Environment, template: str, records: list[Any], *, answer: bool = False) -> None:
    """Print ``records`` through ``template`` (see the module's docstring). ``answer``: the
    records are one answer to a request, perhaps a write that has happened: a template that
    does not fit it is still a usage error, but an answer that holds a credential shown only
    once (``session create|fork``'s session token, a new API key) is printed on stderr as JSON
    first, so that a typo does not lose it."""
    from llmgine_cli.errors import InvalidArgument

    table, parts = compile_template(template)
    # A record's own fields are always there (null when empty): one no record has is a typo.
    # Below them (metadata, data, parameters...) anything goes: missing prints nothing.
    known = {k for r in records if isinstance(r, dict) for k in r}
    for name in sorted({p[1][0] for p in parts if not isinstance(p, str) and p[1]}):
        if records and name not in known and not name.isdigit():
            if answer and any(_holds_credential(r) for r in records):
                from llmgine_cli.render import json_text

                for record in records:
                    env.err(json_text(record, indent=False))
            raise InvalidArgument(
                f"no field {name!r} in the output (its fields: {', '.join(sorted(known)) or 'none'};"
                " `-o json` shows them)"
            )
    lines = ["".join(p if isinstance(p, str) else _text(_lookup(r, p[1]), p[0]) for p in parts) for r in records]
    if not table:
        for line in lines:
            env.out(line)
        return
    from llmgine_cli.render import emit

    head = "".join(_header(p) for p in parts).split("\t")
    rows = [line.split("\t") for line in lines]
    width = max([len(head), *(len(r) for r in rows)])
    rows = [r + [""] * (width - len(r)) for r in rows]
    emit(env, "plain", head + [""] * (width - len(head)), rows, None, kv=False)
