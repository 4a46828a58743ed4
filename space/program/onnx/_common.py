"""What the ONNX export, the QONNX export and the importer share: the annotation keys, the opset
and QONNX domain, and the one graph-building helper (:class:`GraphWriter`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pikenas.space.program.ir import Constant, IntegerProgram, range_bits

__all__ = [
    "OPSET",
    "QONNX_DOMAIN",
    "RANGE_KEY",
    "BITS_KEY",
    "SHIFT_KEY",
    "LAYER_KEY",
    "KIND_KEY",
    "REPEAT_KEY",
    "DATATYPE_KEY",
    "GraphWriter",
    "prefix_add",
    "quant_range",
    "datatype_name",
    "constant_annotation",
    "takes_raw_pixels",
    "raw_pixels",
]

OPSET = 17
QONNX_DOMAIN = "qonnx.custom_op.general"
#: ``graph.quantization_annotation`` keys: QONNX's data type, then pikenas's own, written on
#: ``model.onnx`` only (no quantizer nodes there; QONNX declares ranges with standard nodes)
DATATYPE_KEY = "finn_datatype"
RANGE_KEY = "pikenas_range"  # "lo,hi": the declared range of an integer constant
BITS_KEY = "pikenas_bits"  # the width ACE charges, where it differs from the QONNX type
SHIFT_KEY = "pikenas_shift"  # "lo,hi": the declared range of a power-of-two multiplier's exponent
#: node ``metadata_props`` keys: the program op's layer (module path) and kind
LAYER_KEY = "pikenas.layer"
KIND_KEY = "pikenas.kind"
#: on the nodes that repeat part of an operation already written (the weight digits of a wide
#: integer conv in model.onnx, recombined): its output is its first input's, at no cost
REPEAT_KEY = "pikenas.repeat"


def takes_raw_pixels(program: IntegerProgram) -> bool:
    """Whether ``program`` runs from raw pixels (its input declared 8-bit: values 0..255, the
    normalization folded into its input quantizer): its ONNX graph then takes uint8 and its
    QONNX graph declares the input ``UINT8``."""
    return program.input.bits == 8


def raw_pixels(images: np.ndarray) -> np.ndarray:
    """``images`` as uint8 raw pixels (what a raw-pixel ``model.onnx`` takes): integers 0..255,
    else ``ValueError``."""
    pixels = np.asarray(images)
    if pixels.dtype == np.uint8:
        return pixels
    with np.errstate(invalid="ignore"):
        whole = np.array_equal(pixels, np.round(pixels))
    if not whole or pixels.size and (pixels.min() < 0 or pixels.max() > 255):
        raise ValueError(
            "this network takes raw pixels: integers 0..255 (uint8), not normalized values"
        )
    return pixels.astype(np.uint8)


def quant_range(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    """The codes a QONNX ``Quant`` of ``bits`` makes (signed / narrow as its attributes)."""
    if signed:
        return -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1 - int(narrow)


def datatype_name(lo: int, hi: int) -> str:
    """The narrowest QONNX integer type holding ``[lo, hi]`` (INTn / UINTn)."""
    bits = range_bits(lo, hi)
    return f"INT{bits}" if lo < 0 else f"UINT{bits}"


def constant_annotation(constant: Constant) -> dict[str, str]:
    """What a program constant is, for the annotation of its initializer: the QONNX type and,
    on an integer, its declared range (and the width ACE charges where it is not the range's)."""
    if constant.dtype != "int":
        return {DATATYPE_KEY: "FLOAT32"}
    lo, hi = constant.lo, constant.hi
    found = {DATATYPE_KEY: datatype_name(lo, hi), RANGE_KEY: f"{lo},{hi}"}  # type: ignore[arg-type]
    if constant.bits != range_bits(lo, hi):  # type: ignore[arg-type]
        found[BITS_KEY] = str(constant.bits)
    return found


class GraphWriter:
    """Nodes, initializers and annotations of one graph being written from ``program``.

    ``float_constants``: every initializer written as float32 (QONNX's code domain), else in
    the array's own dtype. Every node is named ``layer/Op_n`` and tagged with ``layer`` and
    ``kind`` (set them before each program op)."""

    def __init__(self, program: IntegerProgram, *, float_constants: bool) -> None:
        from onnx import helper

        self.helper = helper
        self.program = program
        self.float_constants = float_constants
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.annotations: dict[str, dict[str, str]] = {}
        self.count = 0
        self.layer = ""
        self.kind = ""
        self.repeat = False

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, array: np.ndarray, hint: str = "c", **annotation: str) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        if self.float_constants:  # (np.ascontiguousarray would make a scalar 1-d)
            data = np.array(array, dtype=np.float32, order="C")
        else:
            data = np.ascontiguousarray(array)
        self.initializers.append(numpy_helper.from_array(data, name))
        if annotation:
            self.annotations[name] = dict(annotation)
        return name

    def int64(self, array: np.ndarray) -> str:
        """An int64 initializer (shapes, axes, pads, repeats)."""
        from onnx import numpy_helper

        name = self.name("i")
        self.initializers.append(numpy_helper.from_array(np.asarray(array, np.int64), name))
        return name

    def node(self, op: str, inputs: list[str], *, domain: str = "", **attrs: Any) -> str:
        output = self.name(op.lower())
        node = self.helper.make_node(
            op, inputs, [output], name=f"{self.layer}/{op}_{self.count}", domain=domain, **attrs
        )
        tags = [(LAYER_KEY, self.layer), (KIND_KEY, self.kind)]
        for key, value in tags + ([(REPEAT_KEY, "1")] if self.repeat else []):
            entry = node.metadata_props.add()
            entry.key, entry.value = key, value
        self.nodes.append(node)
        return output

    def graph(self, inputs: list[Any], outputs: list[Any]) -> Any:
        """The ``onnx.GraphProto`` with the annotations written."""
        body = self.helper.make_graph(
            self.nodes, self.program.name or "pikenas", inputs, outputs, self.initializers
        )
        for tensor, entries in self.annotations.items():
            annotation = body.quantization_annotation.add()
            annotation.tensor_name = tensor
            for key, value in entries.items():
                entry = annotation.quant_parameter_tensor_names.add()
                entry.key, entry.value = key, value
        return body


def prefix_add(writer: GraphWriter, a: str, b: str, channels: int) -> str:
    """``a`` with ``b`` added to its first ``channels`` channels."""
    starts, mid = writer.int64(np.array([0])), writer.int64(np.array([channels]))
    end, axis = writer.int64(np.array([2**62])), writer.int64(np.array([1]))
    head = writer.node("Slice", [a, starts, mid, axis])
    tail = writer.node("Slice", [a, mid, end, axis])
    return writer.node("Concat", [writer.node("Add", [head, b]), tail], axis=1)
