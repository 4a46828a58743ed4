"""One ONNX node -> the program operations it runs (see :mod:`.importer`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pikenas.space.program.builder import ProgramBuilder
from pikenas.space.program.onnx._arith import ARITHMETIC
from pikenas.space.program.onnx._common import BITS_KEY, RANGE_KEY, quant_range
from pikenas.space.program.onnx._fuse import emit_pending
from pikenas.space.program.onnx._graph import (
    Entry,
    Env,
    GraphReader,
    entry_of,
    float_constant,
    is_integer,
    is_one,
    materialize,
    per_sample,
)
from pikenas.space.program.onnx._pools import POOLS
from pikenas.space.program.onnx._shapes import MOVERS, move

__all__ = ["lower_node", "materialize"]


# ---- quantization ---------------------------------------------------------------------------
def _round(array: np.ndarray, mode: str) -> np.ndarray:
    mode = mode.upper()
    if mode == "FLOOR":
        return np.floor(array)
    if mode == "CEIL":
        return np.ceil(array)
    if mode in ("HALF_UP", "UP"):
        return np.sign(array) * np.floor(np.abs(array) + 0.5)
    return np.round(array)


def _quant(reader: GraphReader, builder: ProgramBuilder, env: Env, node: Any) -> None:
    x = entry_of(reader, env, node, 0)
    scale = np.asarray(reader.constant(node, 1), dtype=np.float64)
    zero = reader.constant(node, 2)
    bits = int(np.asarray(reader.constant(node, 3)).reshape(-1)[0])
    attrs = reader.attrs(node)
    signed, narrow = bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0))
    mode = attrs.get("rounding_mode", b"ROUND")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if np.any(np.asarray(zero) != 0):
        raise reader.fail(node, "a non-zero zero point is not supported (use symmetric quantizers)")
    if np.any(scale <= 0):
        raise reader.fail(node, "scales must be positive")
    if bits == 1 and signed:  # qonnx executes a signed 1-bit Quant as a sign
        _sign(reader, builder, env, node, x, scale)
        return
    lo, hi = quant_range(bits, signed, narrow)
    out_scale = None if is_one(scale) else scale
    declared = reader.annotations.get(node.output[0], {})
    if x.is_constant:  # a weight: its codes, offline
        codes = np.clip(_round(np.asarray(x.array, np.float64) / scale, mode), lo, hi)
        range_ = {RANGE_KEY: f"{lo},{hi}", BITS_KEY: str(bits), **declared}
        env[node.output[0]] = Entry(array=codes, scale=out_scale, declared=range_)
        return
    kind = reader.kind_of(node)
    if (
        x.affine is not None
        or x.clamp is not None
        or (
            x.item is not None
            and x.item.dtype == "float"
            and not x.half
            and not x.compared
            and not x.pow2
            and x.scale is not None
        )
    ):  # pending float stages (see ._fuse): one multiply, one add, one clip, the rounding
        value, low, high = emit_pending(builder, x, scale, lo, hi, kind)
        clipped = builder.clip(value, low, high, kind=kind)
        rounded = builder.round(clipped, math.ceil(low), math.floor(high), kind=kind)
        env[node.output[0]] = Entry(rounded, scale=out_scale)
        return
    on_grid = x.scale is None and out_scale is None
    if not on_grid and x.scale is not None and out_scale is not None:
        on_grid = x.scale.shape == out_scale.shape and bool(np.all(x.scale == out_scale))
    if is_integer(x) and on_grid:
        value = builder.clip(x.item, lo, hi, kind=kind)  # type: ignore[arg-type]
    else:
        value = x.item
        if value is None or x.compared or x.pow2:
            raise reader.fail(node, "its input is a comparison or a shift amount")
        if x.half and not reader.floors(node):
            value = builder.add(value, float_constant(builder, "0.5", np.array(0.5)), kind=kind)
        factor = (1.0 if x.scale is None else x.scale) / scale
        if not is_one(np.asarray(factor)):
            factor = per_sample(np.asarray(factor), len(value.shape))
            value = builder.mul(value, float_constant(builder, "1/scale", factor), kind=kind)
        if value.dtype == "int":
            value = builder.clip(value, lo, hi, kind=kind)
        else:
            clipped = builder.clip(value, float(lo), float(hi), kind=kind)
            value = builder.round(clipped, lo, hi, kind=kind)
    env[node.output[0]] = Entry(value, scale=out_scale)


def _float_quant(reader: GraphReader, builder: ProgramBuilder, env: Env, node: Any) -> None:
    """``FloatQuant`` of a constant with no mantissa: power-of-two weight codes (0 and +-2^k),
    charged their width ``1 + exponent bits``, as our pow2 weights natively. Minifloats with a
    mantissa, or of computed values, have no ACE v2 rule here."""
    x = entry_of(reader, env, node, 0)
    if len(node.input) != 6:
        raise reader.fail(node, "FloatQuant takes 6 inputs (x, scale, exponent and mantissa "
                          "bits, exponent bias, max value)")
    values = []
    for position in range(1, 6):
        array = np.asarray(reader.constant(node, position), np.float64)
        if array.size != 1:
            raise reader.fail(node, f"input {position} must be a scalar")
        values.append(float(array.reshape(-1)[0]))
    scale, exponent_bits, mantissa_bits, bias, max_val = values
    if not x.is_constant or mantissa_bits != 0 or scale != 1.0:
        raise reader.fail(node, "only a FloatQuant of constant weights with scale 1 and no "
                          "mantissa (power-of-two codes) is priced")
    if exponent_bits != int(exponent_bits) or not 1 <= exponent_bits <= 6 or bias != int(bias):
        raise reader.fail(node, "its exponent width must be an integer in [1, 6] and its bias "
                          "an integer")
    low = 1 - int(bias)
    high = min(2 ** int(exponent_bits) - 1 - int(bias),
               int(np.floor(np.log2(max_val))) if max_val > 0 else -1)
    if low < 0 or high < low or high > 62 or max_val != 2.0**high:
        raise reader.fail(node, "its codes must be integers 0 and +-2^k, 0 <= k <= 62 (exponent "
                          "bias <= 1, a power-of-two max value)")
    real = np.asarray(x.array, np.float64) * (1.0 if x.scale is None else x.scale)
    with np.errstate(divide="ignore"):
        step = np.exp2(np.maximum(np.floor(np.log2(np.abs(real))), low))
    codes = np.clip(step * _round(real / step, "ROUND"), -(2.0**high), 2.0**high)
    declared = {RANGE_KEY: f"{-(2**high)},{2**high}", BITS_KEY: str(1 + int(exponent_bits))}
    env[node.output[0]] = Entry(array=codes, declared=declared)


def _sign(
    reader: GraphReader,
    builder: ProgramBuilder,
    env: Env,
    node: Any,
    x: Entry,
    scale: np.ndarray,
) -> None:
    out_scale = None if is_one(scale) else scale
    if x.is_constant:
        codes = np.where(np.asarray(x.array) >= 0, 1.0, -1.0)
        declared = {RANGE_KEY: "-1,1", BITS_KEY: "1"}
        env[node.output[0]] = Entry(array=codes, scale=out_scale, declared=declared)
        return
    value = materialize(reader, builder, x, "sign") if x.half else x.item
    if value is None or x.compared or x.pow2:
        raise reader.fail(node, "its input is a comparison or a shift amount")
    env[node.output[0]] = Entry(builder.sign(value, kind=reader.kind_of(node)), scale=out_scale)


def _bipolar(reader: GraphReader, builder: ProgramBuilder, env: Env, node: Any) -> None:
    scale = np.asarray(reader.constant(node, 1), dtype=np.float64)
    _sign(reader, builder, env, node, entry_of(reader, env, node, 0), scale)


def _trunc(reader: GraphReader, builder: ProgramBuilder, env: Env, node: Any) -> None:
    """``Trunc``: drop ``input_bits - output_bits`` low bits (a right shift)."""
    x = entry_of(reader, env, node, 0)
    if not is_integer(x):
        raise reader.fail(node, "its input must be integer codes (a Quant output or a sum)")
    scale = np.asarray(reader.constant(node, 1), dtype=np.float64)
    if np.any(np.asarray(reader.constant(node, 2)) != 0):
        raise reader.fail(node, "a non-zero zero point is not supported")
    in_bits = int(np.asarray(reader.constant(node, 3)).reshape(-1)[0])
    out_bits = int(np.asarray(reader.constant(node, len(node.input) - 1)).reshape(-1)[0])
    kind = reader.kind_of(node)
    value = x.item
    amount = -(in_bits - out_bits)
    mode = reader.attrs(node).get("rounding_mode", b"FLOOR")
    mode = (mode.decode() if isinstance(mode, bytes) else mode).upper()
    if mode != "FLOOR" and amount < 0:
        half = 2 ** (-amount - 1)
        offset = builder.constant("round", None, shape=(), dtype="int", lo=half, hi=half)
        value = builder.add(value, offset, kind=kind)  # type: ignore[arg-type]
    shift = builder.constant("shift", None, shape=(), dtype="int", lo=amount, hi=amount)
    value = builder.shift(value, shift, kind=kind)  # type: ignore[arg-type]
    if len(node.input) == 6:  # Trunc v2 clamps to the output width
        lo, hi = quant_range(out_bits, bool(reader.attrs(node).get("signed", 1)), False)
        value = builder.clip(value, lo, hi, kind=kind)
    in_scale = 1.0 if x.scale is None else x.scale
    out_scale = np.asarray(in_scale * scale * 2.0 ** (in_bits - out_bits))
    env[node.output[0]] = Entry(value, scale=None if is_one(out_scale) else out_scale)


HANDLERS: dict[str, Any] = {
    "Quant": _quant,
    "BipolarQuant": _bipolar,
    "FloatQuant": _float_quant,
    "Trunc": _trunc,
    **ARITHMETIC,
    **POOLS,
}


def lower_node(reader: GraphReader, builder: ProgramBuilder, env: Env, node: Any) -> None:
    """Append ``node``'s operations to ``builder`` and record its output entry in ``env``."""
    if node.op_type == "Constant":
        return
    if reader.repeats(node):  # a part of an operation already priced: its first input's entry
        env[node.output[0]] = entry_of(reader, env, node, 0)
        return
    if node.op_type in MOVERS:
        x = entry_of(reader, env, node, 0)
        env[node.output[0]] = move(reader, builder, env, node, x)
        return
    handler = HANDLERS.get(node.op_type)
    if handler is None:
        known = ", ".join(sorted({*HANDLERS, *MOVERS}))
        raise reader.fail(node, f"no ACE v2 rule for {node.op_type}; the priced ops are {known}")
    handler(reader, builder, env, node)
