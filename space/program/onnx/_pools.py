"""Pools and sums for the importer: ``ReduceSum`` / ``ReduceMean`` / ``GlobalAveragePool`` (adds,
the division folded into the next multiply), ``AveragePool`` (a window sum), ``MaxPool`` (one
compare per window element beyond the first)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pikenas.space.program.builder import ProgramBuilder
from pikenas.space.program.onnx._arith import pads_of, stride_of
from pikenas.space.program.onnx._graph import (
    Entry,
    Env,
    GraphReader,
    entry_of,
    is_one,
    materialize,
)
from pikenas.space.program.onnx._shapes import moved_value, window_terms

__all__ = ["POOLS"]


def _axes(reader: GraphReader, node: Any) -> list[int]:
    attrs = reader.attrs(node)
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]
    if len(node.input) > 1 and node.input[1]:
        return [int(a) for a in np.asarray(reader.constant(node, 1)).reshape(-1)]
    raise reader.fail(node, "reducing over every axis (the batch too) is not supported")


def _reduce(reader: GraphReader, builder: ProgramBuilder, env: Env, node: Any) -> None:
    x = entry_of(reader, env, node, 0)
    if x.item is None or x.compared or x.pow2:
        raise reader.fail(node, "its input is not a computed value")
    value = x.item if not x.half else materialize(reader, builder, x, "pool")
    rank = len(value.shape) + 1
    if node.op_type == "GlobalAveragePool":
        axes, keep = [2, 3], 1
    else:
        axes = sorted(a % rank for a in _axes(reader, node))
        keep = int(reader.attrs(node).get("keepdims", 1))
    if 0 in axes:
        raise reader.fail(node, "it reduces over the batch")
    kind = reader.kind_of(node)
    scale = 1.0 if x.scale is None else x.scale
    if axes == [2, 3] and keep and len(value.shape) == 3:
        total = builder.sum(value, mode="global", kind=kind)
    else:
        shape = [d for i, d in enumerate(value.shape, start=1) if i not in axes or keep]
        shape = [
            1 if (i in axes) else d
            for i, d in enumerate(value.shape, start=1)
            if i not in axes or keep
        ]
        per_output = math.prod(value.shape) // max(math.prod(shape), 1)
        dtype = value.dtype
        extra = {"lo": value.lo * per_output, "hi": value.hi * per_output} if dtype == "int" else {}
        total = builder.emit(
            "sum",
            [value],
            shape=tuple(shape),
            dtype=dtype,
            kind=kind,
            attrs={"mode": "reduce", "terms": math.prod(value.shape)},
            **extra,
        )
        if np.asarray(scale).size > 1:
            raise reader.fail(node, "it sums values with per-channel scales across channels")
    if node.op_type in ("GlobalAveragePool", "ReduceMean"):
        count = math.prod(value.shape) // math.prod(total.shape)
        scale = np.asarray(scale) / count
    env[node.output[0]] = Entry(
        total, scale=None if is_one(np.asarray(scale)) else np.asarray(scale)
    )


def _pool(reader: GraphReader, builder: ProgramBuilder, env: Env, node: Any) -> None:
    x = entry_of(reader, env, node, 0)
    attrs = reader.attrs(node)
    kernel = list(attrs.get("kernel_shape", []))
    if len(kernel) != 2 or kernel[0] != kernel[1] or attrs.get("ceil_mode", 0):
        raise reader.fail(node, "only square kernels without ceil_mode are supported")
    k, stride, padding = kernel[0], stride_of(reader, node, attrs), pads_of(reader, node, attrs)
    if x.item is None or x.compared or x.pow2:
        raise reader.fail(node, "its input is not a computed value")
    value = x.item if not x.half else materialize(reader, builder, x, "pool")
    kind = reader.kind_of(node)
    if node.op_type == "AveragePool":
        if any(padding) and not attrs.get("count_include_pad", 0):
            raise reader.fail(node, "padding without count_include_pad divides unevenly")
        total = builder.sum(
            value, mode="window", kind=kind, kernel=k, stride=stride, padding=list(padding)
        )
        scale = (1.0 if x.scale is None else x.scale) / (k * k)
        env[node.output[0]] = Entry(total, scale=np.asarray(scale))
        return
    channels, height, width = value.shape
    top, bottom, left, right = padding
    out_h = (height + top + bottom - k) // stride + 1
    out_w = (width + left + right - k) // stride + 1
    pooled = moved_value(builder, value, (channels, out_h, out_w))
    terms = (
        channels
        * window_terms(height, out_h, k, stride, top)
        * window_terms(width, out_w, k, stride, left)
    )
    compares = terms - pooled.elements
    if compares > 0:  # k*k - 1 two-input maxima per output: compares, priced as selects
        scratch = moved_value(builder, value, (compares,))
        builder.emit(
            "select",
            [scratch, scratch, scratch],
            shape=(compares,),
            dtype=value.dtype,
            kind=kind,
            **({"lo": value.lo, "hi": value.hi} if value.dtype == "int" else {}),
        )
    env[node.output[0]] = Entry(pooled, scale=x.scale)


POOLS: dict[str, Any] = {
    "ReduceSum": _reduce,
    "ReduceMean": _reduce,
    "GlobalAveragePool": _reduce,
    "AveragePool": _pool,
    "MaxPool": _pool,
}
