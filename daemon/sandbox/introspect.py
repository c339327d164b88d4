"""A function's description and JSON Schema from its signature, type hints and docstring.

Runs in the worker (it needs the live function object), never in the daemon. Mirrors what
LLMGine's ToolManager does: the docstring's first paragraph is the description, a Google-style
``Args:`` section (``name (type): text`` or ``name: text``) describes the parameters, type hints
give the JSON types, parameters without a default are required.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable
from typing import Any

_JSON_TYPES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
    tuple: "array",
    set: "array",
    type(None): "null",
}

_ARG_LINE = re.compile(r"^\s*\*{0,2}(?P<name>\w+)\s*(\([^)]*\))?\s*:\s*(?P<text>.*)$")
_SECTION = re.compile(
    r"^\s*(Args|Arguments|Parameters|Params|Returns|Return|Raises|Yields|"
    r"Examples?|Notes?)\s*:\s*$"
)


def type_schema(hint: Any) -> dict[str, Any]:
    """JSON Schema for one annotation; unknown or missing annotations accept anything."""
    if hint is inspect.Parameter.empty or hint is Any:
        return {}
    if isinstance(hint, str):
        # An unresolved forward reference: say nothing rather than guess.
        return {}
    if hint in _JSON_TYPES:
        return {"type": _JSON_TYPES[hint]}
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        options = [type_schema(a) for a in args]
        others = [o for a, o in zip(args, options, strict=True) if a is not type(None)]
        if len(others) == 1 and len(options) == 2 and isinstance(others[0].get("type"), str):
            # Optional[X]: X's schema, with null allowed.
            return {**others[0], "type": [others[0]["type"], "null"]}
        if all(set(o) == {"type"} and isinstance(o["type"], str) for o in options):
            return {"type": [o["type"] for o in options]}
        return {"anyOf": options} if all(options) else {}
    if origin is typing.Literal:
        schema: dict[str, Any] = {"enum": list(args)}
        kinds = {_JSON_TYPES.get(type(a)) for a in args}
        if len(kinds) == 1 and None not in kinds:
            schema["type"] = kinds.pop()
        return schema
    if origin in (list, set, tuple, frozenset) or origin is typing.Sequence:
        schema = {"type": "array"}
        if args and origin is not tuple:
            items = type_schema(args[0])
            if items:
                schema["items"] = items
        return schema
    if origin is dict or origin is typing.Mapping:
        return {"type": "object"}
    return {}


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description, {parameter: description}) from a Google-style docstring."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    for line in lines:
        heading = _SECTION.match(line)
        if heading:
            section = heading.group(1).lower()
            current = None
            continue
        if section is None:
            if not line.strip() and summary:
                section = "body"
            elif line.strip():
                summary.append(line.strip())
            continue
        if section in ("args", "arguments", "parameters", "params"):
            match = _ARG_LINE.match(line)
            if match and (len(line) - len(line.lstrip())) <= 4:
                current = match.group("name")
                params[current] = match.group("text").strip()
            elif current and line.strip():
                params[current] = f"{params[current]} {line.strip()}".strip()
    return " ".join(summary), params


def describe_function(fn: Callable[..., Any]) -> dict[str, Any]:
    """{description, parameters (JSON Schema), is_async, positional} for a function."""
    signature = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # a bad annotation must not make the tool unregistrable
        hints = {}
    description, docs = parse_docstring(inspect.getdoc(fn))
    properties: dict[str, Any] = {}
    required: list[str] = []
    extra = False
    for name, param in signature.parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            extra = True
            continue
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        schema = type_schema(hints.get(name, param.annotation))
        if name in docs and docs[name]:
            schema["description"] = docs[name]
        if param.default is not inspect.Parameter.empty:
            try:
                import json

                json.dumps(param.default)
                schema["default"] = param.default
            except (TypeError, ValueError):
                pass
        else:
            required.append(name)
        properties[name] = schema
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    if not extra:
        parameters["additionalProperties"] = False
    positional = sum(
        1
        for p in signature.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )
    return {
        "description": description,
        "parameters": parameters,
        "is_async": inspect.iscoroutinefunction(fn),
        "positional": positional,
        "var_positional": any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in signature.parameters.values()),
    }
