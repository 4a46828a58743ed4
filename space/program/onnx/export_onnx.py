"""ONNX from the integer program: a graph onnxruntime runs to the program's exact codes.

Integer values travel as float64 tensors holding exact integers (every program integer is below
2^53 in magnitude, checked here); float values as float32 with the program's operations in its
order. Each program operation becomes a few standard nodes:

==========  =====================================================================================
conv        ``Conv`` in float32 on integer-valued tensors: exact while every partial sum stays
            below 2^24; wider accumulators split the weight codes into base-``2^s`` digits, one
            exact float32 ``Conv`` per digit, recombined in float64
linear      the same with ``MatMul``
shift       ``Floor(x * 2^a)`` in float64 (a power-of-two multiply is exact); a select of two
            constant amounts is written ``Where(c >= 0, 2^a, 2^b)``, other computed amounts
            index a table of powers of two (``Gather``)
round       ``Floor(x + 0.5)`` in float32, as the program
clip/sign   ``Clip`` (or ``Max`` / ``Min``), ``Where(x >= 0, 1, -1)``
select      ``Where(c >= 0, a, b)``
sum         ``ReduceSum`` (integers: exact in any order; float sums of float networks are the one
            place besides float convs where onnxruntime may round differently)
==========  =====================================================================================

Input ``input`` ``(N, C, H, W)`` (any batch): uint8 raw pixels for a raw-pixel program (cast to
float32 inside), float32 otherwise; output ``logits`` ``(N, classes)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pikenas.space.errors import EvaluationError
from pikenas.space.program.ir import IntegerProgram, Op, Operation, ProgramWalk, Value
from pikenas.space.program.onnx._common import (
    OPSET,
    SHIFT_KEY,
    GraphWriter,
    constant_annotation,
    prefix_add,
    raw_pixels,
    takes_raw_pixels,
)

__all__ = [
    "program_to_onnx",
    "check_onnx_file",
    "export_onnx",
    "OnnxCheck",
    "OnnxExportError",
    "ONNX_OPS",
    "OPSET",
]

_EXACT_FLOAT32 = 2**24
_EXACT_FLOAT64 = 2**53


class OnnxExportError(Exception):
    """The program cannot be written as an exact ONNX graph."""


class _Graph(GraphWriter):
    def __init__(self, program: IntegerProgram) -> None:
        super().__init__(program, float_constants=False)

    def scalar(self, value: float, dtype: type) -> str:
        return self.const(np.array(value, dtype=dtype), "s")


def _is_int(value: Value) -> bool:
    return value.dtype == "int"


def _constant(graph: _Graph, name: str, dtype: type) -> str:
    """A program constant in ``dtype``, annotated with its type and declared range (so that
    ``pikenas ace model.onnx`` prices it as the program does)."""
    annotation = constant_annotation(graph.program.constants[name])
    return graph.const(graph.program.arrays[name].astype(dtype), "w", **annotation)


def _operand(graph: _Graph, env: dict[str, str], name: str, dtype: type) -> str:
    """A value (cast when its representation differs) or a constant in ``dtype``."""
    if name in env:
        value = graph.program.values[name]
        have = np.float64 if _is_int(value) else np.float32
        if have is dtype:
            return env[name]
        to = 11 if dtype is np.float64 else 1  # onnx TensorProto DOUBLE / FLOAT
        return graph.node("Cast", [env[name]], to=to)
    return _constant(graph, name, dtype)


def _digits(weights: np.ndarray, base_bits: int) -> list[tuple[np.ndarray, int]]:
    """Signed base-``2^base_bits`` digits of integer weights: ``sum(d * 2^(k * base_bits))``."""
    digits, rest, power = [], weights.astype(np.int64), 0
    base = 1 << base_bits
    while np.any(rest):
        low = rest - np.round(rest / base).astype(np.int64) * base
        digits.append((low, power))
        rest = (rest - low) // base
        power += base_bits
    return digits or [(np.zeros_like(weights, dtype=np.int64), 0)]


def _exact_products(graph: _Graph, x: str, operation: Operation, make: Any) -> str:
    """An integer conv / matmul as exact float32 products of weight digits, summed in float64."""
    program = graph.program
    weight = program.constants[operation.inputs[1]]
    source = program.values[operation.inputs[0]]
    fan_in = math.prod(weight.shape[1:])
    x_max = max(abs(source.lo), abs(source.hi))  # type: ignore[arg-type]
    codes = program.arrays[weight.name]
    w_max = int(np.abs(codes).max(initial=0))
    if fan_in * w_max * x_max < _EXACT_FLOAT32:
        return graph.node("Cast", [make(x, _constant(graph, weight.name, np.float32))], to=11)
    base_bits = max(1, int(math.log2(_EXACT_FLOAT32 / (fan_in * x_max))))
    total = None
    for index, (digit, power) in enumerate(_digits(codes, base_bits)):
        # the first digit's product stands for the whole one (annotated with the weight's
        # declared range); the others are tagged as repeats of it, free for pikenas ace
        graph.repeat = index > 0
        declared = {} if index else constant_annotation(weight)
        w = graph.const(digit.astype(np.float32), "w", **declared)
        part = graph.node("Cast", [make(x, w)], to=11)
        if power:
            part = graph.node("Mul", [part, graph.scalar(2.0**power, np.float64)])
        total = part if total is None else graph.node("Add", [total, part])
    graph.repeat = False
    return total  # type: ignore[return-value]


class _Emitter(ProgramWalk):
    """The walk writing each program op as ONNX nodes (:data:`ONNX_OPS`); the environment maps
    value names to graph tensor names."""

    purpose = "the ONNX export"

    def __init__(self, program: IntegerProgram) -> None:
        super().__init__(program)
        self.graph = _Graph(program)
        self.env: dict[str, str] = {}
        self.pow2_values: set[str] = set()  # selects of shift amounts, written as 2^amount

    def apply(self, function: Callable[..., Any], operation: Operation, env: dict[str, Any]) -> Any:
        self.env = env
        self.graph.layer, self.graph.kind = operation.layer, operation.kind
        return function(self, operation, self.program.values[operation.output])

    def operand_as(self, name: str, dtype: type) -> str:
        return _operand(self.graph, self.env, name, dtype)


def _out_dtype(out: Value) -> type:
    return np.float64 if _is_int(out) else np.float32


def _mac(e: _Emitter, operation: Operation, out: Value) -> str:
    graph, attrs, inputs = e.graph, operation.attrs, operation.inputs
    x = e.operand_as(inputs[0], np.float32)
    if operation.op is Op.CONV:
        top, bottom, left, right = attrs["padding"]

        def make(a: str, w: str) -> str:
            return graph.node(
                "Conv",
                [a, w],
                strides=[attrs["stride"]] * 2,
                pads=[top, left, bottom, right],
                group=attrs["groups"],
            )
    else:

        def make(a: str, w: str) -> str:
            return graph.node("Gemm", [a, w], transB=1)

    if not _is_int(out):
        return make(x, _constant(graph, inputs[1], np.float32))
    return _exact_products(graph, x, operation, make)


def _elementwise(e: _Emitter, operation: Operation, out: Value) -> str:
    a = e.operand_as(operation.inputs[0], _out_dtype(out))
    b = e.operand_as(operation.inputs[1], _out_dtype(out))
    if operation.attrs.get("prefix"):
        return prefix_add(e.graph, a, b, e.program.values[operation.inputs[1]].shape[0])
    return e.graph.node("Mul" if operation.op is Op.MUL else "Add", [a, b])


def _shift(e: _Emitter, operation: Operation, out: Value) -> str:
    graph, program, inputs = e.graph, e.program, operation.inputs
    x = e.operand_as(inputs[0], np.float64)
    amount = program.values.get(inputs[1]) or program.constants[inputs[1]]
    if inputs[1] in e.pow2_values:
        factor = e.env[inputs[1]]
    elif inputs[1] in program.arrays:
        exponents = program.arrays[inputs[1]].astype(np.float64)
        declared = {SHIFT_KEY: f"{amount.lo},{amount.hi}"}
        factor = graph.const(np.exp2(exponents), "pow2", **declared)
    else:
        table = graph.const(np.exp2(np.arange(amount.lo, amount.hi + 1, dtype=np.float64)))
        index = graph.node("Sub", [e.env[inputs[1]], graph.scalar(amount.lo, np.float64)])
        index = graph.node("Cast", [index], to=7)  # INT64
        factor = graph.node("Gather", [table, index], axis=0)
    return graph.node("Floor", [graph.node("Mul", [x, factor])])


def _round(e: _Emitter, operation: Operation, out: Value) -> str:
    graph = e.graph
    x = e.operand_as(operation.inputs[0], np.float32)
    rounded = graph.node("Floor", [graph.node("Add", [x, graph.scalar(0.5, np.float32)])])
    return graph.node("Cast", [rounded], to=11)


def _clip(e: _Emitter, operation: Operation, out: Value) -> str:
    graph, dtype = e.graph, _out_dtype(out)
    x = e.operand_as(operation.inputs[0], dtype)
    lo, hi = operation.attrs["lo"], operation.attrs["hi"]
    if lo is not None and hi is not None:  # one node, as the program's one clip
        return graph.node("Clip", [x, graph.scalar(lo, dtype), graph.scalar(hi, dtype)])
    if lo is not None:
        x = graph.node("Max", [x, graph.scalar(lo, dtype)])
    if hi is not None:
        x = graph.node("Min", [x, graph.scalar(hi, dtype)])
    return x


def _positive(e: _Emitter, name: str) -> str:
    """``name >= 0`` as a boolean tensor."""
    kind = np.float64 if _is_int(e.program.values[name]) else np.float32
    x = e.operand_as(name, kind)
    return e.graph.node("GreaterOrEqual", [x, e.graph.scalar(0, kind)])


def _sign(e: _Emitter, operation: Operation, out: Value) -> str:
    graph = e.graph
    positive = _positive(e, operation.inputs[0])
    one, minus = graph.scalar(1, np.float64), graph.scalar(-1, np.float64)
    return graph.node("Where", [positive, one, minus])


def _select(e: _Emitter, operation: Operation, out: Value) -> str:
    positive = _positive(e, operation.inputs[0])
    program, (_, a, b) = e.program, operation.inputs
    consumers = [op for op in program.ops if operation.output in op.inputs]
    as_amount = consumers and all(
        op.op is Op.SHIFT and op.inputs[1] == operation.output for op in consumers
    )
    if as_amount and a in program.constants and b in program.constants:  # 2^a or 2^b
        factors = []
        for name in (a, b):
            constant = program.constants[name]
            declared = {SHIFT_KEY: f"{constant.lo},{constant.hi}"}
            exponents = program.arrays[name].astype(np.float64)
            factors.append(e.graph.const(np.exp2(exponents), "pow2", **declared))
        e.pow2_values.add(operation.output)
        return e.graph.node("Where", [positive, *factors])
    a = e.operand_as(operation.inputs[1], _out_dtype(out))
    b = e.operand_as(operation.inputs[2], _out_dtype(out))
    return e.graph.node("Where", [positive, a, b])


def _sum_op(e: _Emitter, operation: Operation, out: Value) -> str:
    dtype = _out_dtype(out)
    source = e.program.values[operation.inputs[0]]
    x = e.operand_as(operation.inputs[0], dtype)
    return _sum(e.graph, x, operation.attrs, source, dtype)


def _pad(e: _Emitter, operation: Operation, out: Value) -> str:
    x = e.operand_as(operation.inputs[0], _out_dtype(out))
    extra = operation.attrs["out_channels"] - e.program.values[operation.inputs[0]].shape[0]
    return e.graph.node("Pad", [x, e.graph.int64(np.array([0, 0, 0, 0, 0, extra, 0, 0]))])


def _tile(e: _Emitter, operation: Operation, out: Value) -> str:
    repeats = e.graph.int64(np.array([1, operation.attrs["repeats"], 1, 1]))
    return e.graph.node("Tile", [e.operand_as(operation.inputs[0], _out_dtype(out)), repeats])


def _flatten(e: _Emitter, operation: Operation, out: Value) -> str:
    return e.graph.node("Flatten", [e.operand_as(operation.inputs[0], _out_dtype(out))], axis=1)


#: the ONNX export: one function per :class:`Op` ``(emitter, operation, out) -> tensor name``.
ONNX_OPS: dict[Op, Callable[[_Emitter, Operation, Value], str]] = {
    Op.CONV: _mac,
    Op.LINEAR: _mac,
    Op.MUL: _elementwise,
    Op.ADD: _elementwise,
    Op.SHIFT: _shift,
    Op.ROUND: _round,
    Op.CLIP: _clip,
    Op.SIGN: _sign,
    Op.SELECT: _select,
    Op.SUM: _sum_op,
    Op.PAD: _pad,
    Op.TILE: _tile,
    Op.FLATTEN: _flatten,
}
_Emitter.table = ONNX_OPS


def _sum(graph: _Graph, x: str, attrs: dict[str, Any], source: Value, dtype: type) -> str:
    mode = attrs["mode"]
    if mode == "global":
        return graph.node("ReduceSum", [x, graph.const(np.array([2, 3], np.int64))], keepdims=1)
    if mode == "groups":
        out, group = attrs["out_channels"], attrs["group"]
        channels, height, width = source.shape
        starts, ends = graph.const(np.array([0], np.int64)), graph.const(np.array([out * group]))
        axis = graph.const(np.array([1], np.int64))
        x = graph.node("Slice", [x, starts, ends, axis])
        shape = graph.const(np.array([-1, out, group, height, width], np.int64))
        x = graph.node("Reshape", [x, shape])
        return graph.node("ReduceSum", [x, graph.const(np.array([2], np.int64))], keepdims=0)
    k, stride = attrs["kernel"], attrs["stride"]
    top, bottom, left, right = attrs["padding"]
    channels = source.shape[0]
    ones = graph.const(np.ones((channels, 1, k, k), np.float32), "ones")
    x32 = graph.node("Cast", [x], to=1) if dtype is np.float64 else x
    total = graph.node(
        "Conv",
        [x32, ones],
        strides=[stride, stride],
        pads=[top, left, bottom, right],
        group=channels,
    )
    return graph.node("Cast", [total], to=11) if dtype is np.float64 else total


def program_to_onnx(program: IntegerProgram) -> Any:
    """The ``onnx.ModelProto`` of ``program`` (which must carry its constants)."""
    from onnx import TensorProto, helper

    for value in program.values.values():
        if _is_int(value) and max(abs(value.lo), abs(value.hi)) >= _EXACT_FLOAT64:  # type: ignore[arg-type]
            raise OnnxExportError(
                f"value {value.name} needs {value.bits} bits, beyond float64's exact integers; "
                "no exact ONNX graph"
            )
    emitter = _Emitter(program)
    raw = takes_raw_pixels(program)
    start = "input"
    if raw:  # uint8 pixels in, float32 values inside (exact: 0..255)
        emitter.graph.layer, emitter.graph.kind = "(model)", "input"
        start = emitter.graph.node("Cast", ["input"], to=TensorProto.FLOAT)
    env = emitter.walk({program.input.name: start})
    graph = emitter.graph
    graph.layer, graph.kind = "(model)", "output"
    last = env[program.output]
    if _is_int(program.values[program.output]):
        last = graph.node("Cast", [last], to=1)
    graph.node("Identity", [last])
    graph.nodes[-1].output[0] = "logits"
    channels, height, width = program.input.shape
    inputs = [
        helper.make_tensor_value_info(
            "input",
            TensorProto.UINT8 if raw else TensorProto.FLOAT,
            ["batch", channels, height, width],
        )
    ]
    classes = program.values[program.output].shape
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", *classes])]
    opsets = [helper.make_opsetid("", OPSET)]
    return helper.make_model(
        graph.graph(inputs, outputs), opset_imports=opsets, producer_name="pikenas"
    )


@dataclass(frozen=True)
class OnnxCheck:
    """How ``model.onnx`` compared with the numpy runner of the program on ``images`` inputs:
    ``code_mismatches`` integer codes that differ (0 expected), ``max_difference`` the largest
    |onnxruntime - program| on the logits (0 on integer networks)."""

    images: int
    max_difference: float
    exact: bool
    code_mismatches: int = 0
    notes: list[str] = field(default_factory=list)


def export_onnx(program: object, path: Path, images: np.ndarray) -> OnnxCheck:
    """Write ``program`` as ONNX to ``path`` and check the file (:func:`check_onnx_file`)."""
    import onnx

    try:
        model = program_to_onnx(program)
    except OnnxExportError as exc:
        raise EvaluationError(f"ONNX export failed: {exc}") from None
    onnx.save(model, str(path))
    return check_onnx_file(program, path, images)


def check_onnx_file(program: object, path: Path, images: np.ndarray) -> OnnxCheck:
    """Check the ONNX file ``path`` with ``onnx.checker`` and compare onnxruntime with the
    program's numpy runner on ``images`` ``(N, C, H, W)``.

    A network whose logits come from exact arithmetic must match bit for bit; a float network
    (float convs, whose summation order differs between runtimes) within 1e-4 relative.
    Anything else raises :class:`EvaluationError`.
    """
    import onnx
    import onnxruntime

    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    except (onnx.checker.ValidationError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EvaluationError(f"the ONNX graph is invalid: {first}") from None
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        uint8 = session.get_inputs()[0].type == "tensor(uint8)"  # raw-pixel graphs since 0.2
        feed = raw_pixels(images) if uint8 else np.asarray(images, dtype=np.float32)
        actual = session.run(["logits"], {"input": feed})[0]
    except Exception as exc:  # onnxruntime's own errors: a graph it cannot run
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EvaluationError(f"onnxruntime cannot run {path.name}: {first}") from None
    expected = program.run(images).output  # type: ignore[attr-defined]
    output = program.values[program.output]  # type: ignore[attr-defined]
    difference = float(np.max(np.abs(actual - expected), initial=0.0))
    if output.exact:
        if difference != 0.0:
            raise EvaluationError(
                f"onnxruntime differs from the integer program by {difference:.3g} on exact "
                "logits; the exported graph is wrong"
            )
        return OnnxCheck(len(images), 0.0, True)
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-30)
    if difference > 1e-4 * scale:
        raise EvaluationError(
            f"onnxruntime differs from the program by {difference:.3g} on float logits "
            f"(largest logit {scale:.3g}); the exported graph is wrong"
        )
    return OnnxCheck(
        len(images), difference, False, notes=["float convs: onnxruntime sums in its own order"]
    )
