"""The ACE primitives of each integer-program operation: what one operation costs.

``primitives(program, operation)`` lists ``(kind, count, bits_a, bits_b, float)`` with ``kind``
one of :data:`space.program.OP_KINDS` (mac, mul, add, round, compare, shift), for one sample; the
cost table prices them (:mod:`evaluators._counter`). The op semantics are in
:mod:`space.program`; the rules in prose in ``docs/ace_v2_rules.md``.
"""

from __future__ import annotations

import math
from typing import Any

from pikenas.space.program.ir import FLOAT_BITS, Constant, IntegerProgram, Operation, Value

__all__ = ["primitives"]


def primitives(
    program: IntegerProgram, operation: Operation
) -> list[tuple[str, int, int, int, bool]]:
    """What ``operation`` costs for one sample: ``[(kind, count, bits_a, bits_b, float), ...]``
    with ``kind`` an ACE op kind (mac, mul, add, round, compare, shift)."""
    out = program.values[operation.output]
    inputs = [program.values.get(n) or program.constants[n] for n in operation.inputs]
    x = inputs[0]
    is_float = out.dtype == "float" or any(i.dtype == "float" for i in inputs)
    e = out.elements
    op = operation.op
    if op in ("conv", "linear"):
        w = inputs[1]
        fan_in = math.prod(w.shape[1:])
        if is_float:
            return [("mac", e * fan_in, FLOAT_BITS, FLOAT_BITS, True)]
        return [("mac", e * fan_in, w.bits, x.bits, False)]
    if op in ("mul", "add"):
        y = inputs[1]
        if operation.attrs.get("prefix"):
            e = y.elements
        if is_float:
            return [(op, e, FLOAT_BITS, FLOAT_BITS, True)]
        if op == "mul":
            return [("mul", e, x.bits, y.bits, False)]
        return [("add", e, max(x.bits, y.bits), max(x.bits, y.bits), False)]
    if op == "shift":
        return [("shift", e, x.bits, x.bits, False)]
    if op == "round":
        return [("round", e, FLOAT_BITS, FLOAT_BITS, True)]
    if op == "clip":
        bounds = _binding_bounds(x, operation.attrs)
        if not bounds:
            return []
        width = FLOAT_BITS if is_float else x.bits
        return [("compare", bounds * e, width, width, is_float)]
    if op in ("sign", "select"):
        width = FLOAT_BITS if x.dtype == "float" else x.bits
        return [("compare", e, width, width, x.dtype == "float")]
    if op == "sum":
        terms = int(operation.attrs["terms"])
        if terms <= e:
            return []
        width = FLOAT_BITS if is_float else out.bits
        return [("add", terms - e, width, width, is_float)]
    return []  # data movement


def _binding_bounds(x: Value | Constant, attrs: dict[str, Any]) -> int:
    """How many of ``clip``'s two bounds can change a value in ``x``'s declared range."""
    if x.dtype == "float":
        return int(attrs["lo"] is not None) + int(attrs["hi"] is not None)
    return int(attrs["lo"] > x.lo) + int(attrs["hi"] < x.hi)  # type: ignore[operator]
