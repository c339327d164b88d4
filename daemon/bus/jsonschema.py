"""Tool parameters as JSON Schema: normalising what clients send, validating arguments.

The daemon validates arguments before it spends a worker on a call. It understands the subset
of JSON Schema that function-calling schemas use (type, enum, const, properties, required,
additionalProperties, items, min/max, minLength/maxLength, anyOf); anything else is accepted
unchecked rather than refused. A validation makes at most ``MAX_CHECKS`` checks (it runs on
the event loop, and the schema and the arguments are both a client's).
"""

from __future__ import annotations

from typing import Any

from llmgine_daemon.protocol.integral import whole

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


class SchemaError(ValueError):
    def __init__(self, field: str, issue: str) -> None:
        super().__init__(f"{field}: {issue}")
        self.field = field
        self.issue = issue


# Checks (schema nodes against values) one validation may make. ``items`` times ``anyOf``
# multiplies them: a 40 KB schema (anyOf of 2,000 options) and 150 KB of arguments (50,000
# items) were 10^8 checks, a minute of the event loop. Real tool arguments take a few dozen.
MAX_CHECKS = 200_000


class TooCostly(SchemaError):
    """The budget ran out: refused as a whole (never taken as one ``anyOf`` option failing)."""


def is_full_schema(parameters: dict[str, Any]) -> bool:
    return parameters.get("type") == "object" or "properties" in parameters


def normalise(given: dict[str, Any] | None, derived: dict[str, Any]) -> dict[str, Any]:
    """The tool's schema: a full schema as given; the spec's ``{param: {type, description}}``
    shorthand merged over what the signature says (which also knows what is required)."""
    if given is None:
        return derived
    if is_full_schema(given):
        full = dict(given)
        full.setdefault("type", "object")
        full.setdefault("properties", {})
        return full
    properties: dict[str, Any] = {}
    derived_props = derived.get("properties", {})
    for name, spec in given.items():
        if not isinstance(spec, dict):
            raise SchemaError(f"parameters.{name}", 'must be an object like {"type": "string"}')
        properties[name] = {**derived_props.get(name, {}), **spec}
    for name, spec in derived_props.items():
        properties.setdefault(name, spec)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    required = [n for n in derived.get("required", []) if n in properties]
    if required:
        schema["required"] = required
    if "additionalProperties" in derived:
        schema["additionalProperties"] = derived["additionalProperties"]
    return schema


_NUMBER_KEYWORDS = ("minimum", "maximum")
_COUNT_KEYWORDS = ("minLength", "maxLength")


def _check_keywords(schema: Any, path: str) -> None:
    """The keywords ``validate`` reads have the types it expects (a schema is user input: a
    ``"minimum": "zzz"`` must be refused at registration, not fail every call)."""
    if not isinstance(schema, dict):
        raise SchemaError(path, "must be an object")
    kind = schema.get("type")
    if kind is not None and not (
        isinstance(kind, str) or (isinstance(kind, list) and all(isinstance(k, str) for k in kind))
    ):
        raise SchemaError(f"{path}.type", "must be a type name or a list of them")
    for key in _NUMBER_KEYWORDS:
        value = schema.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise SchemaError(f"{path}.{key}", "must be a number")
    for key in _COUNT_KEYWORDS:
        value = schema.get(key)
        if value is not None and not ((count := whole(value)) is not None and count >= 0):
            raise SchemaError(f"{path}.{key}", "must be a non-negative integer")
    if "enum" in schema and not isinstance(schema["enum"], list):
        raise SchemaError(f"{path}.enum", "must be a list")
    required = schema.get("required")
    if required is not None and not (isinstance(required, list) and all(isinstance(r, str) for r in required)):
        raise SchemaError(f"{path}.required", "must be a list of names")
    extra = schema.get("additionalProperties")
    if extra is not None and not isinstance(extra, (bool, dict)):
        raise SchemaError(f"{path}.additionalProperties", "must be true, false or a schema")
    if "anyOf" in schema:
        if not isinstance(schema["anyOf"], list):
            raise SchemaError(f"{path}.anyOf", "must be a list of schemas")
        for i, option in enumerate(schema["anyOf"]):
            _check_keywords(option, f"{path}.anyOf[{i}]")
    if "items" in schema and not isinstance(schema["items"], (dict, bool)):
        raise SchemaError(f"{path}.items", "must be a schema")
    if isinstance(schema.get("items"), dict):
        _check_keywords(schema["items"], f"{path}.items")
    properties = schema.get("properties")
    if properties is not None:
        if not isinstance(properties, dict):
            raise SchemaError(f"{path}.properties", "must be an object")
        for name, spec in properties.items():
            _check_keywords(spec, f"{path}.properties.{name}")


def check_schema(schema: dict[str, Any]) -> None:
    _check_keywords(schema, "parameters")
    if schema.get("type") != "object":
        raise SchemaError("parameters.type", 'must be "object"')
    if not isinstance(schema.get("properties"), dict):
        raise SchemaError("parameters.properties", "must be an object")
    for name, spec in schema["properties"].items():
        if not isinstance(spec, dict):
            raise SchemaError(f"parameters.properties.{name}", "must be an object")
        kind = spec.get("type")
        kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
        for k in kinds:
            if k not in _TYPES:
                raise SchemaError(f"parameters.properties.{name}.type", f"unknown type {k!r}")


def _type_ok(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(kind, (object,)))


def validate(value: Any, schema: dict[str, Any], path: str, budget: list[int] | None = None) -> None:
    """Raise SchemaError naming the first offending path; TooCostly past MAX_CHECKS checks."""
    if budget is None:
        budget = [MAX_CHECKS]
    if not isinstance(schema, dict) or not schema:
        return
    kind = schema.get("type")
    # A list (type, enum, required) is looked through for each value: it costs its length.
    budget[0] -= 1 + sum(len(v) for v in (kind, schema.get("enum"), schema.get("required")) if isinstance(v, list))
    if budget[0] < 0:
        raise TooCostly(path, f"too costly to check against the tool's schema (over {MAX_CHECKS} checks)")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_type_ok(value, k) for k in kinds):
            raise SchemaError(path, f"must be of type {' or '.join(kinds)}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(path, f"must be one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        raise SchemaError(path, f"must be {schema['const']!r}")
    if "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                validate(value, option, path, budget)
                break
            except TooCostly:
                raise
            except SchemaError as exc:
                errors.append(exc.issue)
        else:
            raise SchemaError(path, " or ".join(errors[:8])[:2000] or "matches no allowed schema")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaError(path, f"must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaError(path, f"must be at most {schema['maximum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            raise SchemaError(path, f"must have at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise SchemaError(path, f"must have at most {schema['maxLength']} characters")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            validate(item, schema["items"], f"{path}[{i}]", budget)
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name in schema.get("required", []):
            if name not in value:
                raise SchemaError(f"{path}.{name}", "Field is required")
        for name, item in value.items():
            if name in properties:
                validate(item, properties[name], f"{path}.{name}", budget)
            elif schema.get("additionalProperties") is False:
                raise SchemaError(f"{path}.{name}", "Unknown argument")
