"""The ACE primitives of each integer-program operation: what one operation costs.

``primitives(program, operation)`` lists ``(kind, count, bits_a, bits_b, float)`` with ``kind``
one of :data:`~pikenas.space.program.ir.OP_KINDS` (mac, mul, add, round, compare, shift), for one
sample; the cost table prices them (:mod:`pikenas.evaluators.cost`). :data:`PRICES` holds one
function per :class:`~pikenas.space.program.ir.Op`; an op without one raises (never a silent
zero), and data movement is priced free explicitly. The rules in prose: ``docs/ace_v2_rules.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pikenas.space.program.ir import (
    FLOAT_BITS,
    OP_SPECS,
    Constant,
    IntegerProgram,
    Op,
    Operation,
    ProgramError,
    Value,
    op_function,
)

__all__ = ["primitives", "PRICES", "Primitive"]

#: ``(kind, count, bits_a, bits_b, float operands)`` for one sample
Primitive = tuple[str, int, int, int, bool]
Item = Value | Constant


def primitives(program: IntegerProgram, operation: Operation) -> list[Primitive]:
    """What ``operation`` costs for one sample: ``[(kind, count, bits_a, bits_b, float), ...]``
    with ``kind`` an ACE op kind (mac, mul, add, round, compare, shift)."""
    price = op_function(PRICES, operation.op, "the ACE pricing")
    out = program.values[operation.output]
    inputs = [program.values.get(n) or program.constants[n] for n in operation.inputs]
    found = price(operation, inputs, out)
    expected = OP_SPECS[operation.op].priced_as
    if any(kind != expected for kind, *_ in found):  # the table and the spec agree
        raise ProgramError(f"{operation.op.value} priced as {found}; its spec says {expected}")
    return found


def _is_float(inputs: list[Item], out: Value) -> bool:
    return out.dtype == "float" or any(i.dtype == "float" for i in inputs)


def _mac(operation: Operation, inputs: list[Item], out: Value) -> list[Primitive]:
    x, w = inputs
    count = out.elements * math.prod(w.shape[1:])
    if _is_float(inputs, out):
        return [("mac", count, FLOAT_BITS, FLOAT_BITS, True)]
    return [("mac", count, w.bits, x.bits, False)]


def _elementwise(operation: Operation, inputs: list[Item], out: Value) -> list[Primitive]:
    x, y = inputs
    e = y.elements if operation.attrs.get("prefix") else out.elements
    kind = OP_SPECS[operation.op].priced_as
    if _is_float(inputs, out):
        return [(kind, e, FLOAT_BITS, FLOAT_BITS, True)]  # type: ignore[list-item]
    if operation.op is Op.MUL:
        return [("mul", e, x.bits, y.bits, False)]
    return [("add", e, max(x.bits, y.bits), max(x.bits, y.bits), False)]


def _shift(operation: Operation, inputs: list[Item], out: Value) -> list[Primitive]:
    return [("shift", out.elements, inputs[0].bits, inputs[0].bits, False)]


def _round(operation: Operation, inputs: list[Item], out: Value) -> list[Primitive]:
    return [("round", out.elements, FLOAT_BITS, FLOAT_BITS, True)]


def _clip(operation: Operation, inputs: list[Item], out: Value) -> list[Primitive]:
    x = inputs[0]
    bounds = _binding_bounds(x, operation.attrs)
    if not bounds:
        return []
    is_float = _is_float(inputs, out)
    width = FLOAT_BITS if is_float else x.bits
    return [("compare", bounds * out.elements, width, width, is_float)]


def _compare(operation: Operation, inputs: list[Item], out: Value) -> list[Primitive]:
    """``sign`` and ``select``: one compare of the first input with zero per element."""
    x = inputs[0]
    width = FLOAT_BITS if x.dtype == "float" else x.bits
    return [("compare", out.elements, width, width, x.dtype == "float")]


def _sum(operation: Operation, inputs: list[Item], out: Value) -> list[Primitive]:
    terms = int(operation.attrs["terms"])
    if terms <= out.elements:
        return []
    is_float = _is_float(inputs, out)
    width = FLOAT_BITS if is_float else out.bits
    return [("add", terms - out.elements, width, width, is_float)]


def _free(operation: Operation, inputs: list[Item], out: Value) -> list[Primitive]:
    """Data movement (``pad``, ``tile``, ``flatten``): free, by the spec (``priced_as`` None)."""
    return []


#: the pricing: one function per :class:`Op` ``(operation, inputs, out) -> primitives``.
PRICES: dict[Op, Callable[[Operation, list[Item], Value], list[Primitive]]] = {
    Op.CONV: _mac,
    Op.LINEAR: _mac,
    Op.MUL: _elementwise,
    Op.ADD: _elementwise,
    Op.SHIFT: _shift,
    Op.ROUND: _round,
    Op.CLIP: _clip,
    Op.SIGN: _compare,
    Op.SELECT: _compare,
    Op.SUM: _sum,
    Op.PAD: _free,
    Op.TILE: _free,
    Op.FLATTEN: _free,
}


def _binding_bounds(x: Item, attrs: dict[str, Any]) -> int:
    """How many of ``clip``'s two bounds can change a value in ``x``'s declared range."""
    if x.dtype == "float":
        return int(attrs["lo"] is not None) + int(attrs["hi"] is not None)
    return int(attrs["lo"] > x.lo) + int(attrs["hi"] < x.hi)  # type: ignore[operator]
