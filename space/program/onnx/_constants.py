"""Constants the importer computes offline: a clip of constant codes (a narrower declared
range) and ``Pow(2, a)`` (a power-of-two multiplier with ``a``'s declared exponent range): how our
QONNX states the ranges the configuration declares with standard nodes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pikenas.space.program.builder import ProgramBuilder
from pikenas.space.program.ir import range_bits
from pikenas.space.program.onnx._common import BITS_KEY, RANGE_KEY, SHIFT_KEY
from pikenas.space.program.onnx._graph import Entry, Env, GraphReader, declared_range, entry_of
from pikenas.space.program.onnx._validate import MAX_BITS

__all__ = ["clipped_constant", "power_of_two"]


def clipped_constant(x: Entry, lo: float | None, hi: float | None) -> Entry:
    """A clip of a constant is a constant; on integer codes it declares their range (how our
    QONNX writes a range narrower than its ``Quant``'s type, e.g. a bias or a shift amount)."""
    real = np.asarray(x.array, np.float64) * (1.0 if x.scale is None else x.scale)
    array = np.clip(real, lo, hi)
    found = declared_range(x)
    if found is None or x.scale is not None or not np.array_equal(array, np.round(array)):
        return Entry(array=array)  # real values (codes of a scaled Quant, or fractions)
    old_lo, old_hi, bits = found
    low = old_lo if lo is None else max(old_lo, math.ceil(lo))
    high = old_hi if hi is None else min(old_hi, math.floor(hi))
    if low > high:
        return Entry(array=array)
    bits = min(bits, range_bits(low, high))
    return Entry(array=array, declared={RANGE_KEY: f"{low},{high}", BITS_KEY: str(bits)})


def power_of_two(reader: GraphReader, builder: ProgramBuilder, env: Env, node: Any) -> None:
    """``Pow(2, a)`` of an integer constant ``a``: a power-of-two multiplier whose exponent has
    ``a``'s declared range (what a ``Mul`` by it shifts by)."""
    base, exponent = entry_of(reader, env, node, 0), entry_of(reader, env, node, 1)
    found = declared_range(exponent) if exponent.is_constant and exponent.scale is None else None
    two = (
        base.is_constant
        and np.size(base.array) == 1
        and float(np.asarray(base.array, np.float64).reshape(-1)[0] * (
            1.0 if base.scale is None else np.asarray(base.scale).reshape(-1)[0]
        )) == 2.0
    )
    if not two or found is None:
        raise reader.fail(
            node, "only Pow(2, integer constant codes) is supported: a power-of-two multiplier"
        )
    lo, hi, _ = found
    if lo < -MAX_BITS or hi > MAX_BITS:
        raise reader.fail(
            node, f"its exponents are declared in [{lo}, {hi}]; a shift must stay within "
            f"+-{MAX_BITS} (Clip the exponent codes)"
        )
    array = np.exp2(np.asarray(exponent.array, np.float64))
    env[node.output[0]] = Entry(array=array, declared={SHIFT_KEY: f"{lo},{hi}"})
