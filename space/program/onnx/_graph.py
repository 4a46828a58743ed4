"""Reading an ONNX / QONNX file for the importer: the model, its initializers, annotations,
layer names, and the :class:`Entry` each tensor becomes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pikenas.space.errors import CostModelError
from pikenas.space.program.builder import ProgramBuilder
from pikenas.space.program.ir import Constant, Value, range_bits
from pikenas.space.program.onnx._common import (
    BITS_KEY,
    DATATYPE_KEY,
    KIND_KEY,
    LAYER_KEY,
    RANGE_KEY,
    REPEAT_KEY,
)
from pikenas.space.program.onnx._validate import MAX_ELEMENTS, printable, validate_graph

__all__ = [
    "OnnxImportError",
    "Entry",
    "GraphReader",
    "entry_of",
    "per_sample",
    "float_constant",
    "declared_range",
    "int_constant",
    "is_one",
    "materialize",
    "is_integer",
]


class OnnxImportError(CostModelError):
    """An ONNX graph that cannot be read or priced (one line naming the file and the node)."""


@dataclass
class Entry:
    """What a graph tensor is in the program: ``item`` (a value or constant); ``scale``: real
    value = item x scale (``None``: 1), broadcastable per sample; ``half``: ``item + 0.5``
    still to add (half-up rounding, if a floor follows); ``compared``: ``item >= 0`` (a
    condition for ``Where``); ``pow2``: ``2^item`` (a shift amount); ``bounds``: known float
    bounds; ``array``: the data of a constant that is not yet a program constant.

    Pending float stages in front of an activation ``Quant`` (see :mod:`._fuse`), emitted by
    the ``Quant`` in their cheapest form: ``affine`` ``(M, H)``: real value = item x M + H (a
    batch norm, ``M`` holding the item's scale); ``clamp``: real-valued bounds still to apply
    (a ReLU / Clip), after ``affine`` or ``scale``."""

    item: Value | Constant | None = None
    scale: np.ndarray | None = None
    half: bool = False
    compared: bool = False
    pow2: bool = False
    bounds: tuple[float | None, float | None] = (None, None)
    array: np.ndarray | None = None
    declared: dict[str, str] = field(default_factory=dict)
    affine: tuple[np.ndarray, np.ndarray] | None = None
    clamp: tuple[float | None, float | None] | None = None

    @property
    def is_constant(self) -> bool:
        return self.array is not None


def _annotations(graph: Any) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for annotation in graph.quantization_annotation:
        entries = {e.key: e.value for e in annotation.quant_parameter_tensor_names}
        found.setdefault(annotation.tensor_name, {}).update(entries)
    return found


class GraphReader:
    """One model: ``nodes`` in order, ``initializers`` (name -> ndarray), ``annotations``,
    the single input (name, per-sample shape) and output."""

    def __init__(self, source: str | Path | Any) -> None:
        import onnx
        from onnx import numpy_helper

        if isinstance(source, str | Path):
            self.label = str(source)
            path = Path(source)
            if not path.is_file():
                raise OnnxImportError(f"{source}: no such file; pass an .onnx model")
            try:
                model = onnx.load(str(path))
            except Exception as exc:  # noqa: BLE001 - protobuf raises several kinds
                raise OnnxImportError(
                    f"{source}: not an ONNX model ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'})"
                ) from None
        else:
            model, self.label = source, getattr(source.graph, "name", "model")
        graph = model.graph
        if not graph.node:
            raise OnnxImportError(f"{self.label}: the graph has no nodes")
        self.model_name = graph.name or Path(self.label).stem
        try:
            self.initializers = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        except Exception as exc:  # noqa: BLE001
            raise OnnxImportError(f"{self.label}: unreadable initializer ({exc})") from None
        self.annotations = _annotations(graph)
        self.nodes = list(graph.node)
        for node in self.nodes:
            if node.op_type == "Constant":
                self.initializers[node.output[0]] = _constant_value(self.label, node)
        validate_graph(self, graph)  # once, before anything is priced
        inputs = [i for i in graph.input if i.name not in self.initializers]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise OnnxImportError(
                f"{self.label}: {len(inputs)} inputs and {len(graph.output)} outputs; "
                "pikenas ace prices graphs with one image input and one output"
            )
        dims = inputs[0].type.tensor_type.shape.dim
        shape = tuple(d.dim_value for d in dims)
        if len(shape) != 4 or not all(d > 0 for d in shape[1:]):
            raise OnnxImportError(
                f"{self.label}: input {inputs[0].name!r} has shape "
                f"{[d.dim_value or d.dim_param for d in dims]}; need (N, C, H, W) with fixed "
                "C, H, W"
            )
        if math.prod(shape[1:]) > MAX_ELEMENTS:
            raise OnnxImportError(
                f"{self.label}: input {printable(inputs[0].name)!r} of shape {list(shape)} holds "
                f"more than the {MAX_ELEMENTS:,} elements per sample pikenas prices"
            )
        self.input_name, self.input_shape = inputs[0].name, shape[1:]
        self.output_name = graph.output[0].name
        self.consumers: dict[str, list[Any]] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    # ---- per node -------------------------------------------------------------------------
    def layer_of(self, node: Any, index: int) -> str:
        """``pikenas.layer`` metadata, else the node name without its op (``/conv1/Conv`` ->
        ``conv1``), else ``OpType_index``."""
        meta = {e.key: e.value for e in node.metadata_props}
        if LAYER_KEY in meta:
            return printable(meta[LAYER_KEY])
        name = node.name.strip("/")
        parts = [p for p in name.split("/") if p]
        if len(parts) > 1:
            return printable(".".join(parts[:-1]))
        return printable(parts[0] if parts else f"{node.op_type}_{index}")

    def repeats(self, node: Any) -> bool:
        """Whether ``node`` only repeats part of an operation already priced (see
        :data:`._common.REPEAT_KEY`)."""
        return any(e.key == REPEAT_KEY and e.value == "1" for e in node.metadata_props)

    def kind_of(self, node: Any) -> str:
        meta = {e.key: e.value for e in node.metadata_props}
        return printable(meta.get(KIND_KEY) or node.op_type.lower())

    def describe(self, node: Any) -> str:
        return f"node {printable(node.name) or '(unnamed)'} ({printable(node.op_type)})"

    def fail(self, node: Any, why: str) -> OnnxImportError:
        return OnnxImportError(f"{self.label}: cannot price {self.describe(node)}: {why}")

    def error(self, why: str) -> OnnxImportError:
        """A graph-level refusal (``why`` already names the file)."""
        return OnnxImportError(why)

    def attrs(self, node: Any) -> dict[str, Any]:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def constant(self, node: Any, position: int) -> np.ndarray:
        """The initializer at input ``position`` of ``node`` (required)."""
        if position >= len(node.input) or node.input[position] not in self.initializers:
            raise self.fail(node, f"input {position} must be a constant (an initializer)")
        return self.initializers[node.input[position]]

    def only_consumer(self, name: str) -> Any | None:
        consumers = self.consumers.get(name, [])
        return consumers[0] if len(consumers) == 1 and name != self.output_name else None

    def floors(self, node: Any) -> bool:
        """Whether ``node`` rounds its input down (``Floor``, a FLOOR ``Quant`` / ``Trunc``)."""
        if node is None:
            return False
        if node.op_type == "Floor":
            return True
        if node.op_type in ("Quant", "Trunc"):
            default = "ROUND" if node.op_type == "Quant" else "FLOOR"
            mode = self.attrs(node).get("rounding_mode", default)
            mode = mode.decode() if isinstance(mode, bytes) else mode
            return mode.upper() == "FLOOR"
        return False


def _constant_value(label: str, node: Any) -> np.ndarray:
    from onnx import helper, numpy_helper

    for attribute in node.attribute:
        if attribute.name == "value":
            return numpy_helper.to_array(attribute.t)
        if attribute.name in ("value_float", "value_int", "value_floats", "value_ints"):
            return np.asarray(helper.get_attribute_value(attribute))
    raise OnnxImportError(f"{label}: Constant node {node.name!r} has no value this reader knows")


# ---- helpers shared by the node handlers ----------------------------------------------------
Env = dict[str, Entry]


def entry_of(reader: GraphReader, env: Env, node: Any, position: int) -> Entry:
    name = node.input[position] if position < len(node.input) else ""
    if name in env:
        return env[name]
    if name in reader.initializers:
        return Entry(array=reader.initializers[name], declared=reader.annotations.get(name, {}))
    raise reader.fail(node, f"input {position} ({name!r}) is not computed by an earlier node")


def per_sample(array: np.ndarray, rank: int) -> np.ndarray:
    """A constant shaped to broadcast against a per-sample value of ``rank`` dims."""
    array = np.asarray(array)
    while array.ndim > rank and array.shape[0] == 1:
        array = array[0]
    return array


def float_constant(builder: ProgramBuilder, hint: str, array: np.ndarray) -> Constant:
    return builder.constant(hint, None, shape=tuple(np.shape(array)), dtype="float")


def _type_range(name: str) -> tuple[int, int] | None:
    """The range of a QONNX integer data type (``INT8``, ``UINT4``, ``BIPOLAR``, ``TERNARY``)."""
    name = name.upper()
    if name in ("BIPOLAR", "TERNARY"):
        return -1, 1
    for prefix, signed in (("UINT", False), ("INT", True)):
        digits = name[len(prefix) :]
        if name.startswith(prefix) and digits.isdigit() and int(digits) > 0:
            bits = int(digits)
            return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return None


def declared_range(entry: Entry) -> tuple[int, int, int] | None:
    """``(lo, hi, bits)`` of a constant declared integer: by a ``Quant``, by our range
    annotation or by its QONNX data type (``finn_datatype``, on integer-valued data)."""
    if RANGE_KEY not in entry.declared:
        found = _type_range(entry.declared.get(DATATYPE_KEY, ""))
        data = None if entry.array is None else np.asarray(entry.array)
        if found is None or data is None or not np.array_equal(data, np.round(data)):
            return None
        if data.size and (data.min() < found[0] or data.max() > found[1]):
            return None
        lo, hi = found
        return (
            lo,
            hi,
            1 if entry.declared[DATATYPE_KEY].upper() == "BIPOLAR" else range_bits(lo, hi),
        )
    lo, hi = (int(v) for v in entry.declared[RANGE_KEY].split(","))
    bits = int(entry.declared.get(BITS_KEY, range_bits(lo, hi)))
    return lo, hi, bits


def int_constant(builder: ProgramBuilder, entry: Entry, rank: int, hint: str) -> Constant:
    lo, hi, bits = declared_range(entry)  # type: ignore[misc]
    shape = per_sample(entry.array, rank).shape  # type: ignore[arg-type]
    return builder.constant(hint, None, shape=tuple(shape), dtype="int", lo=lo, hi=hi, bits=bits)


def is_one(scale: np.ndarray | None) -> bool:
    return scale is None or bool(np.all(scale == 1.0))


def materialize(reader: GraphReader, builder: ProgramBuilder, entry: Entry, kind: str) -> Value:
    """The real value of ``entry`` as a program value: pending ``+0.5`` and dequantization
    multiplies emitted (float)."""
    if entry.compared or entry.pow2 or entry.item is None:
        raise OnnxImportError(f"{reader.label}: a comparison or shift amount is used as a number")
    value = entry.item
    if entry.half:
        value = builder.add(value, float_constant(builder, "0.5", np.array(0.5)), kind=kind)
    if entry.affine is not None:
        factor, offset = entry.affine
        value = builder.mul(value, float_constant(builder, "M", factor), kind=kind)  # type: ignore[arg-type]
        value = builder.add(value, float_constant(builder, "B", offset), kind=kind)
    if not is_one(entry.scale):
        scale = per_sample(entry.scale, len(value.shape))  # type: ignore[arg-type]
        value = builder.mul(value, float_constant(builder, "dequantize", scale), kind="dequantize")
    if entry.clamp is not None:
        value = builder.clip(value, *entry.clamp, kind=kind)  # type: ignore[arg-type]
    return value  # type: ignore[return-value]


def is_integer(entry: Entry) -> bool:
    """An integer value with nothing pending (usable by integer operations as is)."""
    item = entry.item
    return (
        item is not None
        and item.dtype == "int"
        and not (entry.half or entry.compared or entry.pow2)
        and entry.affine is None
        and entry.clamp is None
    )
