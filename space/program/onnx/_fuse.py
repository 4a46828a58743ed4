"""Float stages in front of an activation ``Quant``, priced in their cheapest correct form.

A foreign graph (Brevitas, for one) writes ``BatchNormalization -> Relu -> Quant`` as three
nodes; executed as written that is a multiply and an add, a compare, then the quantizer's own
multiply by ``1 / s``, two compares and a rounding: 2,208 bit-ops an element at fp32. The same
arithmetic in its cheapest form, as our own lowering emits it for a float batch norm, is one
per-channel multiply by ``M / s`` and one add of ``H / s`` (the batch norm and the quantizer's
scale folded together), one clip to the intersection of the ReLU's and the quantizer's bounds
and the rounding: 1,152 bit-ops an element. Likewise ``Add(a * s_a, b * s_b) -> Quant(s)``
folds ``1 / s`` into the two dequantizing multiplies.

So the importer keeps these stages pending (``Entry.affine``, ``Entry.clamp``, a scale equal to
the quantizer's) when the value's only consumer is such a chain, and the ``Quant`` emits them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pikenas.space.program.builder import ProgramBuilder
from pikenas.space.program.onnx._graph import Entry, GraphReader, float_constant, per_sample

__all__ = ["CLAMPS", "quant_ahead", "pending_clamp", "emit_pending"]

#: nodes that only bound a float value (kept pending in front of a Quant)
CLAMPS = ("Relu", "Clip", "Max", "Min")


def quant_ahead(reader: GraphReader, name: str) -> np.ndarray | None:
    """The (positive) scale of the activation ``Quant`` that alone consumes ``name``, directly
    or through a chain of ``CLAMPS`` nodes each consumed alone; else ``None``."""
    node = reader.only_consumer(name)
    while node is not None and node.op_type in CLAMPS and node.input[0] == name:
        if node.op_type in ("Max", "Min") and len(node.input) != 2:
            return None
        name = node.output[0]
        node = reader.only_consumer(name)
    if node is None or node.op_type != "Quant" or node.input[0] != name:
        return None
    if any(n not in reader.initializers for n in node.input[1:4]):
        return None
    scale = np.asarray(reader.initializers[node.input[1]], np.float64)
    zero = np.asarray(reader.initializers[node.input[2]])
    bits = float(np.asarray(reader.initializers[node.input[3]]).reshape(-1)[0])
    if np.any(scale <= 0) or np.any(zero != 0) or bits < 2:
        return None
    return scale


def pending_clamp(
    x: Entry, lo: float | None, hi: float | None
) -> tuple[float | None, float | None]:
    """The bounds of ``x``'s pending clamp narrowed by ``[lo, hi]`` (real units)."""
    old_lo, old_hi = x.clamp or (None, None)
    if lo is not None and old_lo is not None:
        lo = max(lo, old_lo)
    if hi is not None and old_hi is not None:
        hi = min(hi, old_hi)
    return (old_lo if lo is None else lo, old_hi if hi is None else hi)


def emit_pending(
    builder: ProgramBuilder,
    x: Entry,
    scale: np.ndarray,
    lo: int,
    hi: int,
    kind: str,
) -> tuple[Any, float, float]:
    """``x``'s pending stages in code units of a quantizer of ``scale`` and range ``[lo, hi]``:
    one multiply (``M / s`` or ``x.scale / s``, skipped when 1), the add of ``H / s``; returns
    the value and the clip bounds (the quantizer's narrowed by the pending clamp)."""
    value = x.item
    rank = len(value.shape)  # type: ignore[union-attr]
    per_sample_scale = per_sample(scale, rank)
    if x.affine is not None:
        factor = np.asarray(x.affine[0] / per_sample_scale)
    else:
        factor = np.asarray((1.0 if x.scale is None else x.scale) / per_sample_scale)
    if not np.all(factor == 1.0):
        constant = float_constant(builder, "M", per_sample(factor, rank))
        value = builder.mul(value, constant, kind=kind)  # type: ignore[arg-type]
    if x.affine is not None:
        offset = per_sample(np.asarray(x.affine[1] / per_sample_scale), rank)
        value = builder.add(value, float_constant(builder, "B", offset), kind=kind)  # type: ignore[arg-type]
    low, high = float(lo), float(hi)
    clamp_lo, clamp_hi = x.clamp or (None, None)
    if clamp_lo is not None:
        low = max(low, _in_codes(clamp_lo, scale, low))
    if clamp_hi is not None:
        high = min(high, _in_codes(clamp_hi, scale, high))
    return value, low, high


def _in_codes(bound: float, scale: np.ndarray, default: float) -> float:
    """A real-valued bound in code units (a per-channel scale keeps only a zero bound)."""
    if bound == 0.0:
        return 0.0
    if scale.size == 1:
        return bound / float(scale.reshape(-1)[0])
    return default
