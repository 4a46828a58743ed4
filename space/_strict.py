"""The strict pydantic base of pikenas's typed records and the one formatter of their errors.

:class:`StrictModel` is frozen and refuses unknown keys (a typo in a config or a record must
fail, not vanish), and takes booleans and numbers for what they are: ``true`` is not 1, 1 is not
``true``, ``"32"`` is not 32 (in lists too), and no float is infinite or NaN. :func:`one_line`
turns pydantic's multi-line report into the one line every pikenas error is:
``KEY.PATH: what is wrong; how to fix it (and N more problems)``.
Every typed record (``ArchConfig``, the search space and config, worker specs, trial records)
derives from it.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

__all__ = ["StrictModel", "one_line"]

_RANGE_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _members(annotation: Any) -> tuple[Any, ...]:
    """The types a field takes (the members of a union or ``Literal`` / ``Annotated`` base)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return tuple(m for arg in typing.get_args(annotation) for m in _members(arg))
    if origin is typing.Literal:
        return tuple(type(value) for value in typing.get_args(annotation))
    return (annotation,)


class StrictModel(BaseModel):
    """Frozen, ``extra="forbid"``, booleans and numbers taken literally: the base of every
    typed record that crosses a boundary."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _values_are_what_they_say(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for name, value in data.items():
            field = cls.model_fields.get(name)
            if field is not None and value is not None:
                _check_literally(name, value, field.annotation)
        return data


def _items(annotation: Any) -> Any | None:
    """The item type of a ``tuple[X, ...]`` / ``list[X]`` field (None for anything else)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _items(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        found = [_items(arg) for arg in typing.get_args(annotation)]
        return next((item for item in found if item is not None), None)
    if origin in (tuple, list):
        args = [arg for arg in typing.get_args(annotation) if arg is not Ellipsis]
        return args[0] if len(args) == 1 else None
    return None


def _check_literally(name: str, value: Any, annotation: Any) -> None:
    """Refuse a boolean for a number, text for a number and a non-boolean for a boolean, in
    ``value`` and in the items of a list or tuple field."""
    item = _items(annotation)
    if item is not None and isinstance(value, list | tuple):
        for index, element in enumerate(value):
            if element is not None:
                _check_literally(f"{name}.{index}", element, item)
        return
    members = _members(annotation)
    takes_bool = bool in members
    takes_number = any(m in (int, float) for m in members)
    takes_text = str in members
    if isinstance(value, bool):
        if not takes_bool and takes_number:
            raise ValueError(f"{name}={value!r} is a boolean; give a number")
    elif takes_bool and not (takes_number or takes_text) and members != (Any,):
        raise ValueError(f"{name}={value!r} is not a boolean; use true or false")
    elif isinstance(value, str) and takes_number and not takes_text:
        raise ValueError(f"{name}={value!r} is text; write the number unquoted")


def one_line(exc: ValidationError) -> str:
    """The first problem of ``exc`` as ``location: message``, with a count of the others."""
    problems = exc.errors()
    first = problems[0]
    location = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key; remove it or check its spelling"
    elif first["type"] == "missing":
        message = "required key is missing; add it"
    elif first["type"] in ("int_type", "int_parsing", "int_from_float"):
        message = f"{first.get('input')!r} is not a whole number; write it as one, unquoted"
    elif first["type"] == "finite_number":
        message = f"{first.get('input')!r} is not a finite number; give one"
    elif first["type"] in _RANGE_ERRORS:
        message += f" (got {first.get('input')!r}); change the value"
    more = len(problems) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{location}: {message}{suffix}" if location else f"{message}{suffix}"
