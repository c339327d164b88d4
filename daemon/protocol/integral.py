"""Integral floats as integers, as the API contract's FastAPI/pydantic takes them.

JSON Schema's ``integer`` is any number without a fractional part, ``26.0`` included, and
pydantic (lax mode, FastAPI's) takes ``26.0`` for an ``int`` field as 26. msgspec refuses it
(``Expected `int`, got `float```). ``decode`` decodes a request body as msgspec does and, only
when that failed on a float where an integer belongs, once more with every integral float that
stands where the model wants an ``int`` (and not a ``float``) made an int: nothing else changes
(a float in a free-form field, ``parameters`` or ``data``, stays a float; a string is still not
a number, as the document says). ``whole`` is the same rule for the hand-written checks of
free-form fields (an engine's configuration, ``metadata.retries``)."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from msgspec import inspect as mi

T = TypeVar("T")

_INFO: dict[Any, mi.Type] = {}


def whole(value: Any) -> int | None:
    """``value`` as an int if it is one (not a bool) or a float without a fractional part."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def decode(body: bytes, model: type[T]) -> T:
    """``msgspec.json.decode(body, type=model)``, taking integral floats for integers."""
    try:
        return msgspec.json.decode(body, type=model)
    except msgspec.ValidationError as exc:
        if "got `float`" not in str(exc):
            raise
        first = exc
    try:
        value = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        raise first from None
    info = _INFO.get(model)
    if info is None:
        info = _INFO[model] = mi.type_info(model)
    fixed = _whole_numbers(value, info)
    if fixed is value:  # no integral float where an int belongs: the first error stands
        raise first
    return msgspec.json.decode(msgspec.json.encode(fixed), type=model)


def _plain(t: mi.Type) -> mi.Type:
    while isinstance(t, mi.Metadata):
        t = t.type
    return t


def _whole_numbers(value: Any, t: mi.Type) -> Any:
    """``value`` with integral floats made ints where ``t`` wants an int; ``value`` itself
    (the same object) when nothing changed."""
    t = _plain(t)
    if isinstance(value, float):
        kinds = [_plain(x) for x in t.types] if isinstance(t, mi.UnionType) else [t]
        wants_int = any(isinstance(k, mi.IntType) for k in kinds)
        takes_float = any(isinstance(k, (mi.FloatType, mi.AnyType)) for k in kinds)
        if wants_int and not takes_float and value.is_integer():
            return int(value)
        return value
    if isinstance(t, mi.UnionType):
        for option in t.types:
            option = _plain(option)
            if _shape_fits(value, option):
                return _whole_numbers(value, option)
        return value
    if isinstance(value, list):
        if isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
            items = [_whole_numbers(v, t.item_type) for v in value]
        elif isinstance(t, mi.TupleType):
            items = [_whole_numbers(v, it) for v, it in zip(value, t.item_types, strict=False)]
            items += value[len(items) :]
        else:
            return value
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if isinstance(value, dict):
        if isinstance(t, mi.DictType):
            fixed = {k: _whole_numbers(v, t.value_type) for k, v in value.items()}
        elif isinstance(t, (mi.StructType, mi.TypedDictType, mi.DataclassType)):
            fields = {f.encode_name: f.type for f in t.fields}
            fixed = {k: _whole_numbers(v, fields[k]) if k in fields else v for k, v in value.items()}
        else:
            return value
        return fixed if any(fixed[k] is not value[k] for k in value) else value
    return value


def _shape_fits(value: Any, t: mi.Type) -> bool:
    """Whether a union's option ``t`` is the one for ``value``'s JSON shape (a tagged union's
    structs: the one of its tag)."""
    if isinstance(value, list):
        return isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType, mi.TupleType))
    if isinstance(value, dict):
        if isinstance(t, mi.StructType) and t.tag_field is not None:
            return bool(value.get(t.tag_field) == t.tag)
        return isinstance(t, (mi.DictType, mi.StructType, mi.TypedDictType, mi.DataclassType))
    return False
