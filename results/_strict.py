"""The strict pydantic base of pikenas's typed records and the one formatter of their errors.

:class:`StrictModel` is frozen and refuses unknown keys (a typo in a config or a record must
fail, not vanish). :func:`one_line` turns pydantic's multi-line report into the one line every
pikenas error is: ``KEY.PATH: what is wrong; how to fix it (and N more problems)``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["StrictModel", "one_line"]

_RANGE_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


class StrictModel(BaseModel):
    """Frozen, ``extra="forbid"``: the base of every typed record that crosses a boundary."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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
    elif first["type"] in _RANGE_ERRORS:
        message += f" (got {first.get('input')!r}); change the value"
    more = len(problems) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{location}: {message}{suffix}" if location else f"{message}{suffix}"
