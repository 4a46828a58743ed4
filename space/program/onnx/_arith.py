"""Arithmetic nodes for the importer: MACs, elementwise operations, comparisons, pools."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from pikenas.space.program.builder import ProgramBuilder, channel_shape
from pikenas.space.program.ir import Value
from pikenas.space.program.onnx._common import SHIFT_KEY
from pikenas.space.program.onnx._constants import clipped_constant, power_of_two
from pikenas.space.program.onnx._fuse import pending_clamp, quant_ahead
from pikenas.space.program.onnx._graph import (
    Entry,
    Env,
    GraphReader,
    declared_range,
    entry_of,
    float_constant,
    int_constant,
    is_integer,
    is_one,
    materialize,
    per_sample,
)
from pikenas.space.program.onnx._shapes import moved_value

__all__ = ["ARITHMETIC", "pads_of", "stride_of"]


def pads_of(reader: GraphReader, node: Any, attrs: dict[str, Any]) -> tuple[int, int, int, int]:
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise reader.fail(node, "auto_pad SAME is not supported; export explicit pads")
    top, left, bottom, right = (list(attrs.get("pads", [0, 0, 0, 0])) + [0] * 4)[:4]
    return int(top), int(bottom), int(left), int(right)


def stride_of(reader: GraphReader, node: Any, attrs: dict[str, Any]) -> int:
    strides = list(attrs.get("strides", [1, 1]))
    if len(set(strides)) != 1 or any(d != 1 for d in attrs.get("dilations", [1, 1])):
        raise reader.fail(node, "only equal strides and no dilation are supported")
    return int(strides[0])


def _weight(builder: ProgramBuilder, w: Entry, integer: bool) -> Any:
    """The weight as a program constant: integer codes (declared) or float values."""
    if integer:
        return int_constant(builder, w, w.array.ndim, "weight")  # type: ignore[union-attr]
    values = np.asarray(w.array, np.float64)
    if w.scale is not None:
        values = values * w.scale
    return float_constant(builder, "weight", values)


def _acc_scale(x: Entry, w: Entry, channels: int, rank: int) -> np.ndarray | None:
    scale = np.ones(channels) * (
        1.0 if x.scale is None else float(np.asarray(x.scale).reshape(-1)[0])
    )
    if w.scale is not None:
        scale = scale * np.asarray(w.scale, np.float64).reshape(-1)
    if np.all(scale == 1.0):
        return None
    return scale.reshape(channels, *([1] * (rank - 1)))


def _with_bias(
    reader: GraphReader, builder: ProgramBuilder, node: Any, acc: Entry, position: int
) -> Entry:
    if len(node.input) <= position or not node.input[position]:
        return acc
    bias = np.asarray(reader.constant(node, position), np.float64)
    real = materialize(reader, builder, acc, "dequantize")
    bias = bias.reshape(channel_shape(real.shape))
    return Entry(builder.add(real, float_constant(builder, "bias", bias), kind="bias"))


def _conv(reader: GraphReader, builder: ProgramBuilder, env: Env, node: Any) -> None:
    x, w = entry_of(reader, env, node, 0), entry_of(reader, env, node, 1)
    if not w.is_constant:
        raise reader.fail(node, "its weights must be constant")
    attrs = reader.attrs(node)
    padding, stride = pads_of(reader, node, attrs), stride_of(reader, node, attrs)
    groups = int(attrs.get("group", 1))
    kind = reader.kind_of(node)
    if x.item is None or x.compared or x.pow2:
        raise reader.fail(node, "its input is not a computed value")
    if np.ndim(w.array) != 4 or len(x.item.shape) != 3:
        raise reader.fail(node, "only 2-D convolutions of (N, C, H, W) inputs are supported")
    out_channels, per_group, k_h, k_w = w.array.shape  # type: ignore[union-attr]
    if out_channels % groups or per_group * groups != x.item.shape[0]:
        raise reader.fail(
            node, f"weights of shape {list(w.array.shape)} with group={groups} do not fit an "  # type: ignore[union-attr]
            f"input of {x.item.shape[0]} channels"
        )
    ones = declared_range(w) is None and w.scale is None and np.all(w.array == 1.0)
    plain = is_integer(x) or (x.item.dtype == "float" and not x.half and is_one(x.scale))
    if ones and groups == out_channels == x.item.shape[0] and k_h == k_w and plain:
        total = builder.sum(
            x.item, mode="window", kind=kind, kernel=k_h, stride=stride, padding=list(padding)
        )
        env[node.output[0]] = Entry(total, scale=x.scale)
        return
    scalar_input = x.scale is None or np.asarray(x.scale).size == 1
    integer = is_integer(x) and declared_range(w) is not None and scalar_input
    source = x.item if integer or x.item.dtype == "int" and is_one(x.scale) and not x.half else None
    if source is None:
        source = materialize(reader, builder, x, "dequantize")
    weight = _weight(builder, w, integer)
    acc = builder.conv(source, weight, stride=stride, padding=padding, groups=groups, kind=kind)  # type: ignore[arg-type]
    scale = _acc_scale(x, w, out_channels, len(acc.shape)) if integer else None
    env[node.output[0]] = _with_bias(reader, builder, node, Entry(acc, scale=scale), 2)


def _linear(reader: GraphReader, builder: ProgramBuilder, env: Env, node: Any) -> None:
    x, w = entry_of(reader, env, node, 0), entry_of(reader, env, node, 1)
    attrs = reader.attrs(node)
    if not w.is_constant or attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0:
        raise reader.fail(node, "only x @ W (+ C) with constant W is supported")
    if x.item is None or x.compared or x.pow2 or len(x.item.shape) != 1:
        raise reader.fail(node, "its input must be a computed (N, features) value")
    transposed = node.op_type == "MatMul" or not attrs.get("transB", 0)
    array = np.asarray(w.array)
    weight_entry = Entry(
        array=array.T if transposed else array,
        scale=None if w.scale is None else (w.scale.T if transposed else w.scale),
        declared=w.declared,
    )
    integer = (
        is_integer(x) and declared_range(w) is not None and (x.scale is None or x.scale.size == 1)
    )
    source = (
        x.item if integer or (x.item.dtype == "int" and is_one(x.scale) and not x.half) else None
    )
    if source is None:
        source = materialize(reader, builder, x, "dequantize")
    weight = _weight(builder, weight_entry, integer)
    acc = builder.linear(source, weight, kind=reader.kind_of(node))  # type: ignore[arg-type]
    scale = _acc_scale(x, weight_entry, weight.shape[0], 1) if integer else None
    if scale is not None:
        scale = scale.reshape(-1)
    if node.op_type == "Gemm" and attrs.get("beta", 1.0) != 1.0:
        raise reader.fail(node, "beta != 1 is not supported")
    env[node.output[0]] = _with_bias(reader, builder, node, Entry(acc, scale=scale), 2)


# ---- elementwise ----------------------------------------------------------------------------
def _powers_of_two(array: np.ndarray) -> np.ndarray | None:
    """``log2 |array|`` when every element is +-2^k, else None."""
    magnitude = np.abs(np.asarray(array, np.float64))
    if magnitude.size == 0 or np.any(magnitude == 0):
        return None
    exponents = np.log2(magnitude)
    if not np.all(exponents == np.round(exponents)):
        return None
    return np.round(exponents).astype(np.int64)


def _amount(builder: ProgramBuilder, entry: Entry, exponents: np.ndarray, rank: int) -> Any:
    if SHIFT_KEY in entry.declared:
        lo, hi = (int(v) for v in entry.declared[SHIFT_KEY].split(","))
    else:
        lo, hi = int(exponents.min()), int(exponents.max())
    shape = per_sample(exponents, rank).shape
    return builder.constant("shift", None, shape=tuple(shape), dtype="int", lo=lo, hi=hi)


def _mul(reader: GraphReader, builder: ProgramBuilder, env: Env, node: Any) -> None:
    a, b = entry_of(reader, env, node, 0), entry_of(reader, env, node, 1)
    if a.is_constant and not b.is_constant:
        a, b = b, a
    kind = reader.kind_of(node)
    out = node.output[0]
    if a.is_constant:
        raise reader.fail(node, "both operands are constants; fold constants first (qonnx cleanup)")
    if b.is_constant:
        array = np.asarray(b.array, np.float64) * (1.0 if b.scale is None else b.scale)
        # a constant declared float, or declared an N-bit integer multiplier, is not a shift
        declared_float = b.declared.get("finn_datatype") == "FLOAT32"
        multiplier = declared_range(b) is not None and SHIFT_KEY not in b.declared
        exponents = None if declared_float or multiplier else _powers_of_two(array)
        floors = reader.floors(reader.only_consumer(out))
        if (
            is_integer(a)
            and exponents is not None
            and (SHIFT_KEY in b.declared or bool(np.all(exponents >= 0)) or floors)
        ):
            amount = _amount(builder, b, exponents, len(a.item.shape))  # type: ignore[union-attr]
            env[out] = Entry(builder.shift(a.item, amount, kind=kind), scale=a.scale)  # type: ignore[arg-type]
            return
        if is_integer(a) and declared_range(b) is not None:
            k = int_constant(builder, b, len(a.item.shape), "k")  # type: ignore[union-attr]
            env[out] = Entry(builder.mul(a.item, k, kind=kind), scale=_times(a.scale, b.scale))  # type: ignore[arg-type]
            return
        value = a.item if not a.half else materialize(reader, builder, a, kind)
        if value is None or a.compared or a.pow2:
            raise reader.fail(node, "its input is a comparison or a shift amount")
        factor = array * (1.0 if a.scale is None else a.scale)
        factor = per_sample(factor, len(value.shape))
        env[out] = Entry(builder.mul(value, float_constant(builder, "M", factor), kind=kind))
        return
    if a.pow2 and not b.pow2:
        a, b = b, a
    if b.pow2 and is_integer(a):
        env[out] = Entry(builder.shift(a.item, b.item, kind=kind), scale=a.scale)  # type: ignore[arg-type]
        return
    if is_integer(a) and is_integer(b):
        scale = _times(a.scale, b.scale)
        env[out] = Entry(builder.mul(a.item, b.item, kind=kind), scale=scale)  # type: ignore[arg-type]
        return
    left, right = materialize(reader, builder, a, kind), materialize(reader, builder, b, kind)
    env[out] = Entry(builder.mul(left, right, kind=kind))


def _times(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    return a if b is None else a * b


def _negated(builder: ProgramBuilder, value: Value) -> Value:
    if value.dtype != "int":
        return value
    negated = moved_value(builder, value, value.shape)
    negated = negated.__class__(**{**negated.__dict__, "lo": -value.hi, "hi": -value.lo})
    builder.values[negated.name] = negated
    return negated


def _add(reader: GraphReader, builder: ProgramBuilder, env: Env, node: Any) -> None:
    a, b = entry_of(reader, env, node, 0), entry_of(reader, env, node, 1)
    subtract = node.op_type == "Sub"
    if a.is_constant and not b.is_constant and not subtract:
        a, b = b, a
    kind = reader.kind_of(node)
    out = node.output[0]
    if a.is_constant:
        raise reader.fail(node, "its first operand must be computed; fold constants first")
    if b.is_constant:
        array = np.asarray(b.array, np.float64) * (1.0 if b.scale is None else b.scale)
        array = -array if subtract else array
        half = array.size == 1 and float(array.reshape(-1)[0]) == 0.5
        if (
            half
            and a.item is not None
            and a.item.dtype == "float"
            and not a.half
            and is_one(a.scale)
        ):
            if reader.floors(reader.only_consumer(out)):
                env[out] = Entry(a.item, half=True, bounds=a.bounds)
                return
        if is_integer(a) and declared_range(b) is not None and is_one(a.scale):
            constant = int_constant(builder, b, len(a.item.shape), "bias")  # type: ignore[union-attr]
            env[out] = Entry(builder.add(a.item, constant, kind=kind))  # type: ignore[arg-type]
            return
        value = materialize(reader, builder, a, kind)
        array = per_sample(array, len(value.shape))
        env[out] = Entry(builder.add(value, float_constant(builder, "B", array), kind=kind))
        return
    same_scale = (a.scale is None and b.scale is None) or (
        a.scale is not None and b.scale is not None and np.array_equal(a.scale, b.scale)
    )
    if is_integer(a) and is_integer(b) and same_scale:
        right = _negated(builder, b.item) if subtract else b.item  # type: ignore[arg-type]
        env[out] = Entry(builder.add(a.item, right, kind=kind), scale=a.scale)  # type: ignore[arg-type]
        return
    ahead = quant_ahead(reader, out)
    if ahead is not None and ahead.size == 1:  # fold the Quant's 1 / s into both multiplies
        a, b = (
            replace(e, scale=np.asarray((1.0 if e.scale is None else e.scale) / ahead))
            for e in (a, b)
        )
        left, right = materialize(reader, builder, a, kind), materialize(reader, builder, b, kind)
        env[out] = Entry(builder.add(left, right, kind=kind), scale=ahead)
        return
    left, right = materialize(reader, builder, a, kind), materialize(reader, builder, b, kind)
    env[out] = Entry(builder.add(left, right, kind=kind))


def _div(reader: GraphReader, builder: ProgramBuilder, env: Env, node: Any) -> None:
    b = entry_of(reader, env, node, 1)
    if not b.is_constant:
        raise reader.fail(node, "only division by a constant is supported")
    inverse = Entry(array=1.0 / np.asarray(b.array, np.float64))
    env["\0" + node.output[0]] = inverse
    proxy = type(node)()
    proxy.CopyFrom(node)
    proxy.op_type = "Mul"
    proxy.input[1] = "\0" + node.output[0]
    _mul(reader, builder, env, proxy)


def _batchnorm(reader: GraphReader, builder: ProgramBuilder, env: Env, node: Any) -> None:
    x = entry_of(reader, env, node, 0)
    gamma, beta, mean, var = (np.asarray(reader.constant(node, i), np.float64) for i in range(1, 5))
    eps = float(reader.attrs(node).get("epsilon", 1e-5))
    m = gamma / np.sqrt(var + eps)
    h = beta - mean * m
    if x.item is None or x.compared or x.pow2:
        raise reader.fail(node, "its input is not a computed value")
    value = (
        x.item
        if not x.half
        else materialize(reader, builder, Entry(x.item, half=True), "batchnorm")
    )
    shape = channel_shape(value.shape)
    factor = m.reshape(shape) * (1.0 if x.scale is None else x.scale)
    kind = reader.kind_of(node)
    if not x.half and quant_ahead(reader, node.output[0]) is not None:  # folded into the Quant
        env[node.output[0]] = Entry(value, affine=(factor, h.reshape(shape)))
        return
    t = builder.mul(value, float_constant(builder, "M", factor), kind=kind)
    env[node.output[0]] = Entry(
        builder.add(t, float_constant(builder, "B", h.reshape(shape)), kind=kind)
    )


def _clip_bounds(reader: GraphReader, node: Any) -> tuple[float | None, float | None]:
    op, attrs = node.op_type, reader.attrs(node)
    if op == "Relu":
        return 0.0, None

    def bound(position: int) -> float:
        array = np.asarray(reader.constant(node, position))
        if array.size != 1:
            shape = list(array.shape)
            raise reader.fail(node, f"only scalar bounds are supported, got shape {shape}")
        return float(array.reshape(-1)[0])

    if op in ("Max", "Min"):
        return (bound(1), None) if op == "Max" else (None, bound(1))
    lo, hi = attrs.get("min"), attrs.get("max")
    if len(node.input) > 1 and node.input[1]:
        lo = bound(1)
    if len(node.input) > 2 and node.input[2]:
        hi = bound(2)
    return lo, hi


def _clip(reader: GraphReader, builder: ProgramBuilder, env: Env, node: Any) -> None:
    x = entry_of(reader, env, node, 0)
    if node.op_type in ("Max", "Min") and len(node.input) != 2:
        raise reader.fail(node, "only Max / Min of a value and one constant are supported")
    lo, hi = _clip_bounds(reader, node)
    if x.is_constant:  # offline: a constant, declared in the narrower range if integer
        env[node.output[0]] = clipped_constant(x, lo, hi)
        return
    kind = reader.kind_of(node)
    pending = x.affine is not None or x.clamp is not None
    floating = x.item is not None and x.item.dtype == "float" and not x.half
    if (pending or floating) and quant_ahead(reader, node.output[0]) is not None:
        env[node.output[0]] = replace(x, clamp=pending_clamp(x, lo, hi))  # the Quant clips
        return
    if is_integer(x):
        value = x.item
        scale = 1.0 if x.scale is None else float(np.asarray(x.scale).reshape(-1)[0])
        scalar = x.scale is None or np.asarray(x.scale).size == 1
        low = value.lo if lo is None else lo / scale  # type: ignore[union-attr]
        high = value.hi if hi is None else hi / scale  # type: ignore[union-attr]
        if scalar and float(low) == int(low) and float(high) == int(high):
            clipped = builder.clip(value, int(low), int(high), kind=kind)  # type: ignore[arg-type]
            env[node.output[0]] = Entry(clipped, scale=x.scale)
            return
    value = materialize(reader, builder, x, kind)
    if value.dtype == "int":
        raise reader.fail(node, "a clip of integers at non-integer bounds")
    old_lo, old_hi = x.bounds
    bounds = (lo if lo is not None else old_lo, hi if hi is not None else old_hi)
    env[node.output[0]] = Entry(builder.clip(value, lo, hi, kind=kind), bounds=bounds)


def _floor(reader: GraphReader, builder: ProgramBuilder, env: Env, node: Any) -> None:
    x = entry_of(reader, env, node, 0)
    if is_integer(x) and is_one(x.scale):
        env[node.output[0]] = x
        return
    lo, hi = x.bounds
    if x.item is None or lo is None or hi is None or not is_one(x.scale):
        raise reader.fail(node, "cannot bound the integers it makes; clip its input first")
    offset = 0.5 if x.half else 0.0
    low, high = math.floor(lo + offset), math.floor(hi + offset)
    env[node.output[0]] = Entry(builder.round(x.item, low, high, kind=reader.kind_of(node)))  # type: ignore[arg-type]


def _compare(reader: GraphReader, builder: ProgramBuilder, env: Env, node: Any) -> None:
    x = entry_of(reader, env, node, 0)
    threshold = reader.constant(node, 1)
    if np.any(np.asarray(threshold) != 0) or x.item is None:
        raise reader.fail(node, "only x >= 0 (feeding Where) is supported")
    value = x.item if not x.half else materialize(reader, builder, x, "select")
    env[node.output[0]] = Entry(value, compared=True)


def _is_sign(a: Entry, b: Entry) -> bool:
    """``Where(c, 1, -1)`` with scalar constants: the sign of ``c``'s value."""
    return (
        a.is_constant
        and b.is_constant
        and np.size(a.array) == 1
        and np.size(b.array) == 1
        and float(np.asarray(a.array).reshape(-1)[0]) == 1.0
        and float(np.asarray(b.array).reshape(-1)[0]) == -1.0
        and a.scale is None
        and b.scale is None
    )


def _where(reader: GraphReader, builder: ProgramBuilder, env: Env, node: Any) -> None:
    condition = entry_of(reader, env, node, 0)
    a, b = entry_of(reader, env, node, 1), entry_of(reader, env, node, 2)
    if not condition.compared:
        raise reader.fail(node, "its condition must be GreaterOrEqual(x, 0)")
    kind = reader.kind_of(node)
    if _is_sign(a, b):  # Where(x >= 0, 1, -1): a sign
        env[node.output[0]] = Entry(builder.sign(condition.item, kind=kind))  # type: ignore[arg-type]
        return
    rank = len(condition.item.shape)  # type: ignore[union-attr]
    pair = []
    pow2 = all(e.is_constant and SHIFT_KEY in e.declared for e in (a, b))
    for entry in (a, b):
        if pow2:
            exponents = _powers_of_two(entry.array)  # type: ignore[arg-type]
            pair.append(_amount(builder, entry, exponents, rank))  # type: ignore[arg-type]
        elif entry.is_constant and declared_range(entry) is not None:
            pair.append(int_constant(builder, entry, rank, "select"))
        elif entry.is_constant:
            pair.append(float_constant(builder, "select", per_sample(entry.array, rank)))  # type: ignore[arg-type]
        else:
            pair.append(materialize(reader, builder, entry, kind))
    if pair[0].dtype != pair[1].dtype:
        pair = [
            p if p.dtype == "float" else materialize(reader, builder, Entry(p), kind) for p in pair
        ]
    selected = builder.select(condition.item, pair[0], pair[1], kind=kind)  # type: ignore[arg-type]
    env[node.output[0]] = Entry(selected, pow2=pow2)


ARITHMETIC: dict[str, Any] = {
    "Conv": _conv,
    "Gemm": _linear,
    "MatMul": _linear,
    "Mul": _mul,
    "Add": _add,
    "Sub": _add,
    "Div": _div,
    "BatchNormalization": _batchnorm,
    "Relu": _clip,
    "Clip": _clip,
    "Max": _clip,
    "Min": _clip,
    "Floor": _floor,
    "Pow": power_of_two,
    "GreaterOrEqual": _compare,
    "Where": _where,
}
