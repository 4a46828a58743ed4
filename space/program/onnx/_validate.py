"""What the importer checks once, where the graph is read (:class:`._graph.GraphReader`), so a
malformed or invalid graph is refused with one line naming the node and the problem, and is
never priced: op domains, the integer attributes of windows (strides, kernels, dilations, pads,
groups), the data of initializers (numbers, finite), the bit widths of ``Quant`` / ``Trunc``
nodes, the ``pikenas_*`` annotations and the declared tensor shapes. The sizes a node produces
are checked as it is lowered (:func:`check_value`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pikenas.space.program.onnx._common import BITS_KEY, QONNX_DOMAIN, RANGE_KEY, SHIFT_KEY

__all__ = ["MAX_ELEMENTS", "MAX_WINDOW", "validate_graph", "check_value", "printable"]

#: the most elements one tensor of one sample may hold (the importer's shape rules and its
#: window sums loop over the sizes: an absurd declared shape is refused, not counted)
MAX_ELEMENTS = 2**27
#: the largest stride, kernel, dilation or pad of a window
MAX_WINDOW = 2**16
#: the widest integer a ``Quant`` / ``Trunc`` or an annotation may declare (bits)
MAX_BITS = 64
_STANDARD_DOMAINS = ("", "ai.onnx")
#: QONNX's own domain and the names older Brevitas / FINN exports use for it
_QONNX_DOMAINS = (QONNX_DOMAIN, "onnx.brevitas", "finn.custom_op.general")
_QONNX_OPS = ("Quant", "BipolarQuant", "Trunc", "FloatQuant")
#: attribute -> (smallest value, what it is)
_WINDOW_ATTRS = {
    "strides": (1, "strides"),
    "kernel_shape": (1, "kernel sizes"),
    "dilations": (1, "dilations"),
    "pads": (0, "pads"),
    "group": (1, "group"),
}


def printable(text: str) -> str:
    """``text`` with control characters (newlines, terminal escapes) written as ``\\xNN``."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _integers(value: Any) -> list[int] | None:
    """An attribute value as integers (``None``: not integers)."""
    values = value if isinstance(value, list | tuple) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return None
    return list(values)


def _check_node(reader: Any, node: Any) -> None:
    domain = node.domain
    qonnx = node.op_type in _QONNX_OPS
    if domain not in (_QONNX_DOMAINS if qonnx else _STANDARD_DOMAINS):
        expected = QONNX_DOMAIN if qonnx else "the standard ONNX domain ''"
        raise reader.fail(node, f"its op domain {printable(domain)!r} is not {expected}")
    attrs = reader.attrs(node)
    for name, (lowest, what) in _WINDOW_ATTRS.items():
        if name not in attrs:
            continue
        values = _integers(attrs[name])
        if values is None or any(not lowest <= v <= MAX_WINDOW for v in values):
            shown = printable(repr(attrs[name]))[:60]
            raise reader.fail(
                node, f"{what} must be integers in [{lowest}, {MAX_WINDOW}], got {shown}"
            )
    if qonnx:
        _check_bits(reader, node)


def _check_bits(reader: Any, node: Any) -> None:
    """The bit-width inputs of a ``Quant`` (3) / ``Trunc`` (3 and the last): integer constants in
    ``[1, MAX_BITS]``; the scale (1): positive."""
    positions = {
        "Quant": [3], "Trunc": [3, len(node.input) - 1], "BipolarQuant": [], "FloatQuant": []
    }
    for position in positions[node.op_type]:
        bits = np.asarray(reader.constant(node, position), dtype=np.float64).reshape(-1)
        if bits.size != 1 or not (bits[0] == np.round(bits[0]) and 1 <= bits[0] <= MAX_BITS):
            shown = printable(str(bits.tolist()))[:60]
            raise reader.fail(
                node,
                f"input {position} (bit width) must be one integer in [1, {MAX_BITS}], got {shown}",
            )
    scale = np.asarray(reader.constant(node, 1), dtype=np.float64)
    if scale.size == 0 or np.any(scale <= 0):
        raise reader.fail(node, "input 1 (scale) must be positive")


def _pair(text: str, limit: int) -> tuple[int, int] | None:
    parts = text.split(",")
    try:
        lo, hi = (int(p) for p in parts) if len(parts) == 2 else (1, 0)
    except ValueError:
        return None
    return (lo, hi) if lo <= hi and max(abs(lo), abs(hi)) < limit else None


def _check_annotations(reader: Any) -> None:
    for tensor, entries in reader.annotations.items():
        where = f"{reader.label}: the annotation of tensor {printable(tensor)!r}"
        for key, limit in ((RANGE_KEY, 2**62), (SHIFT_KEY, MAX_BITS)):
            if key in entries and _pair(entries[key], limit) is None:
                raise reader.error(
                    f"{where}: {key} must be 'lo,hi', integers with lo <= hi and magnitude "
                    f"below {limit}, got {printable(entries[key])[:60]!r}"
                )
        if BITS_KEY in entries:
            text = entries[BITS_KEY]
            if not (text.isdigit() and 1 <= int(text) <= MAX_BITS):
                raise reader.error(
                    f"{where}: {BITS_KEY} must be an integer in [1, {MAX_BITS}], got "
                    f"{printable(text)[:60]!r}"
                )


def _check_initializers(reader: Any) -> None:
    for name, array in reader.initializers.items():
        data = np.asarray(array)
        if data.dtype.kind not in "biuf":
            raise reader.error(
                f"{reader.label}: initializer {printable(name)!r} holds {data.dtype} data; "
                "constants must be numbers"
            )
        if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
            raise reader.error(
                f"{reader.label}: initializer {printable(name)!r} holds NaN or infinite values"
            )


def _check_shapes(reader: Any, graph: Any) -> None:
    for info in [*graph.input, *graph.output, *graph.value_info]:
        dims = [d.dim_value for d in info.type.tensor_type.shape.dim if d.HasField("dim_value")]
        if any(d < 0 for d in dims):
            raise reader.error(
                f"{reader.label}: tensor {printable(info.name)!r} declares negative dimensions "
                f"{dims}"
            )


def validate_graph(reader: Any, graph: Any) -> None:
    """Everything about ``graph`` that can be checked before it is priced (raises
    :class:`._graph.OnnxImportError`, one line)."""
    _check_shapes(reader, graph)
    _check_initializers(reader)
    _check_annotations(reader)
    for node in reader.nodes:
        _check_node(reader, node)


def check_value(reader: Any, node: Any, shape: tuple[int, ...]) -> None:
    """A tensor of per-sample ``shape`` computed by ``node``: every size at least 1 (a window
    larger than its padded input, negative pads, an empty slice give less) and at most
    :data:`MAX_ELEMENTS` elements."""
    if any(d < 1 for d in shape):
        raise reader.fail(
            node,
            f"its output shape {tuple(shape)} is empty or negative (a kernel larger than "
            "its padded input, negative pads, an empty slice)",
        )
    if math.prod(shape) > MAX_ELEMENTS:
        raise reader.fail(
            node,
            f"its output of shape {tuple(shape)} holds {math.prod(shape):,} elements per "
            f"sample, more than the {MAX_ELEMENTS:,} pikenas prices",
        )
