"""Data movement nodes for the importer: new shapes (and ranges), no operations, no cost."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from pikenas.space.program.builder import ProgramBuilder, window_terms
from pikenas.space.program.ir import Value
from pikenas.space.program.onnx._graph import Entry, Env, GraphReader, entry_of

__all__ = ["MOVERS", "move", "moved_value", "window_terms"]  # window_terms: the builder's

MOVERS = (
    "Identity",
    "Dropout",
    "Cast",
    "Flatten",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Slice",
    "Concat",
    "Pad",
    "Tile",
)


def moved_value(
    builder: ProgramBuilder, x: Value, shape: tuple[int, ...], *, with_zero: bool = False
) -> Value:
    """A value holding ``x``'s elements (or some of them, or zeros) in another shape."""
    name = builder._name("moved")  # noqa: SLF001 - the builder's naming, shared on purpose
    lo, hi = x.lo, x.hi
    if with_zero and x.dtype == "int":
        lo, hi = min(lo, 0), max(hi, 0)  # type: ignore[type-var]
    value = replace(x, name=name, shape=tuple(int(d) for d in shape), lo=lo, hi=hi)
    builder.values[name] = value
    return value


def _ints(reader: GraphReader, node: Any, position: int, attr: str) -> list[int] | None:
    attrs = reader.attrs(node)
    if attr in attrs:
        return [int(v) for v in np.asarray(attrs[attr]).reshape(-1)]
    if position < len(node.input) and node.input[position]:
        return [int(v) for v in np.asarray(reader.constant(node, position)).reshape(-1)]
    return None


def _shape_of(reader: GraphReader, node: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The per-sample output shape of a data-movement ``node`` on a per-sample ``shape``."""
    op, attrs = node.op_type, reader.attrs(node)
    probe = np.zeros((1, *shape), dtype=np.int8)
    if op in ("Identity", "Dropout", "Cast"):
        return shape
    if op == "Flatten":
        if attrs.get("axis", 1) != 1:
            raise reader.fail(node, "only axis=1 keeps the batch apart")
        return (int(np.prod(shape)),)
    if op == "Reshape":
        target = [int(v) for v in np.asarray(reader.constant(node, 1)).reshape(-1)]
        target = [(1 if i == 0 else shape[i - 1]) if d == 0 else d for i, d in enumerate(target)]
        result = probe.reshape(target).shape
    elif op == "Transpose":
        perm = attrs.get("perm") or list(range(probe.ndim))[::-1]
        if perm[0] != 0:
            raise reader.fail(node, "a transpose that moves the batch axis")
        result = probe.transpose(perm).shape
    elif op == "Squeeze":
        axes = _ints(reader, node, 1, "axes")
        result = np.squeeze(probe, axis=tuple(axes)).shape if axes else probe.shape
    elif op == "Unsqueeze":
        axes = _ints(reader, node, 1, "axes") or []
        result = np.expand_dims(probe, axis=tuple(axes)).shape
    elif op == "Slice":
        starts, ends = _ints(reader, node, 1, "starts"), _ints(reader, node, 2, "ends")
        axes = _ints(reader, node, 3, "axes") or list(range(len(starts or [])))
        steps = _ints(reader, node, 4, "steps") or [1] * len(axes)
        index = [slice(None)] * probe.ndim
        for start, end, axis, step in zip(starts or [], ends or [], axes, steps, strict=False):
            index[axis] = slice(start, end, step)
        result = probe[tuple(index)].shape
    elif op == "Pad":
        pads = _ints(reader, node, 1, "pads") or []
        half = len(pads) // 2
        result = tuple(d + pads[i] + pads[i + half] for i, d in enumerate(probe.shape))
    elif op == "Tile":
        repeats = _ints(reader, node, 1, "repeats") or []
        if len(repeats) != probe.ndim or any(r < 1 for r in repeats):
            raise reader.fail(node, f"repeats {repeats} must be {probe.ndim} integers >= 1")
        result = tuple(d * r for d, r in zip(probe.shape, repeats, strict=True))
    else:
        raise reader.fail(node, "no shape rule")
    if result[0] != 1:
        raise reader.fail(node, "it changes the batch dimension")
    return tuple(result[1:])


def _concat(reader: GraphReader, builder: ProgramBuilder, env: Env, node: Any) -> Entry:
    parts = [entry_of(reader, env, node, i) for i in range(len(node.input))]
    if any(p.item is None or p.half or p.compared or p.pow2 for p in parts):
        raise reader.fail(node, "every input must be a computed value")
    axis = reader.attrs(node).get("axis", 1)
    if axis < 0:
        axis += len(parts[0].item.shape) + 1  # type: ignore[union-attr]
    scales = [p.scale for p in parts]
    if any((s is None) != (scales[0] is None) for s in scales) or (
        scales[0] is not None and not all(np.array_equal(s, scales[0]) for s in scales)
    ):
        raise reader.fail(node, "its inputs have different scales")
    items = [p.item for p in parts]
    shape = list(items[0].shape)  # type: ignore[union-attr]
    shape[axis - 1] = sum(i.shape[axis - 1] for i in items)  # type: ignore[union-attr]
    first = items[0]
    if any(i.dtype != first.dtype for i in items):  # type: ignore[union-attr]
        raise reader.fail(node, "it joins integer and float values")
    value = moved_value(builder, first, tuple(shape))  # type: ignore[arg-type]
    if value.dtype == "int":
        lo = min(i.lo for i in items)  # type: ignore[union-attr, type-var]
        hi = max(i.hi for i in items)  # type: ignore[union-attr, type-var]
        from pikenas.space.program.ir import range_bits

        value = replace(value, lo=lo, hi=hi, bits=max(range_bits(lo, hi), value.bits))
        builder.values[value.name] = value
    return Entry(value, scale=scales[0])


def move(reader: GraphReader, builder: ProgramBuilder, env: Env, node: Any, x: Entry) -> Entry:
    """The entry of a data-movement node's output."""
    if node.op_type == "Concat":
        return _concat(reader, builder, env, node)
    if node.op_type in ("Identity", "Dropout", "Cast"):
        return x
    if x.item is None or x.half or x.compared or x.pow2:
        raise reader.fail(node, "it moves a constant or a pending value; fold constants first")
    shape = _shape_of(reader, node, x.item.shape)
    scale = x.scale
    if scale is not None and scale.size > 1:
        if node.op_type not in ("Flatten", "Reshape"):
            raise reader.fail(node, "it moves a per-channel scaled value")
        scale = np.broadcast_to(scale, (1, *x.item.shape)).reshape(shape)
    value = moved_value(builder, x.item, shape, with_zero=node.op_type == "Pad")  # type: ignore[arg-type]
    return Entry(value, scale=scale, bounds=x.bounds)
