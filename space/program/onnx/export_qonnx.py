"""QONNX from the integer program: a graph qonnx executes to the program's exact codes, and that
FINN / hls4ml / ``qonnx.util.inference_cost`` read as quantized.

The graph runs in the *code domain*: every integer value of the program is a float32 tensor
holding its integer codes (FINN's streamlined form), so every QONNX quantization node carries
scale 1 and zero point 0, and each quantizer's real scale lives in the float ``Mul`` that
follows it (QuantNorm / batch norm fold ``M = s_w s_x m / s_y``; the input quantizer's ``1 /
step``). A graph carrying the real scales on its ``Quant`` nodes would compute in real units, and
float32 rounding would then flip codes at rounding boundaries: no longer the program.

==============  ===================================================================================
program op      QONNX nodes
==============  ===================================================================================
weights         ``Quant(codes, 1, 0, b)`` (uniform: INTb; ternary and 2-bit pow2: INT2 narrow; b-bit
                pow2 codes ``0, +-2^k`` (``k <= K = 2^(b-1) - 2``): INT(K+2) narrow, then
                ``FloatQuant(., 1, b-1, 0, 1, 2^K)``: FLOAT<b-1,0,1>, powers of two; uniform codes
                that a pow2 QuantNorm's sign fold turned into ``+2^(b-1)``: INT(b+1) narrow);
                binary: ``BipolarQuant(codes, 1)``; then ``Clip(lo, hi)`` where the declared
                range is narrower than the type (pow2: +-2^K)
int constants   ``Quant(codes, 1, 0, n)`` of the covering INTn / UINTn, then ``Clip(lo, hi)``
                where the declared range is narrower (a bias, a multiplier k, a shift amount)
conv, linear    ``Conv`` / ``Gemm`` (transB) on codes (float ops on float networks)
mul, add        ``Mul`` / ``Add`` (a prefix add: ``Slice``, ``Add``, ``Concat``)
shift           ``Mul(x, Pow(2, a))``, ``a`` an int constant as above (dynamic amounts: ``Where``
                of two such powers); a right shift
                always feeds a clip, fused into ``Quant(..., rounding_mode=FLOOR)``
clip + round    ``Add(x, 0.5)`` then ``Quant(scale 1, FLOOR)``: half up, ``floor(x + 0.5)``, as the
                program (QONNX's ``ROUND`` is half to even and its ``HALF_UP`` rounds half away
                from zero; both differ from the program at ties)
clip            ``Quant`` where the range is a QONNX integer range, else ``Max`` / ``Min`` /
                ``Relu`` / ``Clip`` for the bounds that can bind
sign, select    ``BipolarQuant(x, 1)``; ``GreaterOrEqual(c, 0)`` + ``Where``
sum             ``ReduceSum`` (global, groups); a k x k window: a depthwise ``Conv`` with all-ones
                weights (a sum pool)
pad/tile/flat   ``Pad`` / ``Tile`` / ``Flatten``
==============  ===================================================================================

Every range the configuration declares is written with standard nodes (the table), so
``pikenas ace`` prices the graph exactly as the program with no private annotation;
``graph.quantization_annotation`` holds QONNX's own ``finn_datatype``. Every node has
``metadata_props`` ``pikenas.layer`` and ``pikenas.kind`` (the module path and kind of the program
op: layer names in the report), which survive ``qonnx`` cleanup.

Float32 keeps integers exact below 2^24: the export is checked against the program on the
verification images, and refused where it differs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from pikenas.space.program.ir import (
    Constant,
    IntegerProgram,
    Op,
    Operation,
    ProgramWalk,
    Value,
    range_bits,
)
from pikenas.space.program.onnx._common import (
    DATATYPE_KEY,
    KIND_KEY,
    LAYER_KEY,
    OPSET,
    QONNX_DOMAIN,
    GraphWriter,
    prefix_add,
    quant_range,
    takes_raw_pixels,
)

__all__ = [
    "program_to_qonnx",
    "QonnxExportError",
    "QONNX_DOMAIN",
    "OPSET",
    "qonnx_range",
    "LAYER_KEY",
    "KIND_KEY",
    "QONNX_OPS",
]


class QonnxExportError(Exception):
    """The program has an operation with no QONNX form here."""


def qonnx_range(lo: int, hi: int) -> tuple[int, bool, bool] | None:
    """``(bits, signed, narrow)`` of the QONNX integer type whose range is exactly ``[lo, hi]``
    (None when no such type exists)."""
    if lo == 0 and hi > 0 and (hi + 1) & hi == 0:
        return hi.bit_length(), False, False
    if hi >= 1 and (hi + 1) & hi == 0:
        bits = hi.bit_length() + 1
        if lo == -(hi + 1):
            return bits, True, False
        if lo == -hi and bits >= 2:
            return bits, True, True
    return None


class _Graph(GraphWriter):
    """Code-domain graph: float32 initializers, QONNX quantization nodes."""

    def __init__(self, program: IntegerProgram) -> None:
        super().__init__(program, float_constants=True)

    def scalar(self, value: float) -> str:
        return self.const(np.array(value, dtype=np.float32), "s")

    def quant(self, x: str, bits: int, signed: bool, narrow: bool, rounding: str = "FLOOR") -> str:
        inputs = [x, self.scalar(1.0), self.scalar(0.0), self.scalar(float(bits))]
        return self.node(
            "Quant",
            inputs,
            domain=QONNX_DOMAIN,
            signed=int(signed),
            narrow=int(narrow),
            rounding_mode=rounding,
        )

    def bipolar(self, x: str) -> str:
        return self.node("BipolarQuant", [x, self.scalar(1.0)], domain=QONNX_DOMAIN)


def _declared(graph: _Graph, codes: str, dtype: str, type_range: tuple[int, int],
              constant: Constant) -> str:
    """``codes`` (a quantization node's output, of QONNX type ``dtype`` whose range is
    ``type_range``) declared in ``constant``'s range: a ``Clip`` where that is narrower than the
    type (qonnx keeps the type through a ``Clip``; ``pikenas ace`` reads the range)."""
    graph.annotations[codes] = {DATATYPE_KEY: dtype}
    lo, hi = int(constant.lo), int(constant.hi)  # type: ignore[arg-type]
    if (lo, hi) == type_range:
        return codes
    out = graph.node("Clip", [codes, graph.scalar(lo), graph.scalar(hi)])
    graph.annotations[out] = {DATATYPE_KEY: dtype}
    return out


def _weight(graph: _Graph, constant: Constant) -> str:
    """Integer weight codes through their QONNX quantization node (see the module table)."""
    codes = graph.program.arrays[constant.name]
    bits, magnitude = constant.bits, max(abs(constant.lo), abs(constant.hi))  # type: ignore[arg-type]
    init = graph.const(codes, "w")
    if bits == 1:
        return _declared(graph, graph.bipolar(init), "BIPOLAR", (-1, 1), constant)
    if magnitude == 2 ** (bits - 1) and codes.max(initial=0) < magnitude:
        out, width, narrow = graph.quant(init, bits, True, False, "ROUND"), bits, False
    else:
        width, narrow = range_bits(-magnitude, magnitude), True
        out = graph.quant(init, width, True, True, "ROUND")
    top = 2 ** (bits - 1) - 2  # b-bit pow2 codes: 0 and +-2^k, k <= top
    if bits >= 3 and (constant.lo, constant.hi) == (-(2**top), 2**top):
        return _powers_of_two(graph, out, bits, top)
    return _declared(graph, out, f"INT{width}", quant_range(width, True, narrow), constant)


def _powers_of_two(graph: _Graph, codes: str, bits: int, top: int) -> str:
    """b-bit pow2 weight codes (0 and +-2^k, k <= top): a minifloat with no mantissa,
    ``FloatQuant(codes, 1, b - 1, 0, 1, 2^top)``: a sign, a (b-1)-bit exponent field with bias 1
    (field 0: zero), QONNX type ``FLOAT<b-1,0,1>``. It follows the integer ``Quant`` (kept by
    qonnx cleanup, so the ``FloatQuant`` is not folded away)."""
    inputs = [codes, graph.scalar(1.0), graph.scalar(float(bits - 1)), graph.scalar(0.0),
              graph.scalar(1.0), graph.scalar(float(2**top))]
    out = graph.node("FloatQuant", inputs, domain=QONNX_DOMAIN, has_inf=0, has_nan=0,
                     has_subnormal=0, saturation=1, rounding_mode="ROUND")
    graph.annotations[out] = {DATATYPE_KEY: f"FLOAT<{bits - 1},0,1>"}
    return out


def _integer(graph: _Graph, constant: Constant) -> str:
    """An integer constant (a bias, a multiplier, a shift amount) as its codes through a
    ``Quant`` of the covering QONNX type, then a ``Clip`` to its declared range if narrower."""
    lo, hi = int(constant.lo), int(constant.hi)  # type: ignore[arg-type]
    signed = lo < 0
    bits = max(range_bits(lo, hi), 2 if signed else 1)  # a signed 1-bit Quant is a sign in qonnx
    codes = graph.quant(graph.const(graph.program.arrays[constant.name], "k"), bits, signed,
                        False, "ROUND")
    return _declared(graph, codes, f"{'INT' if signed else 'UINT'}{bits}",
                     quant_range(bits, signed, False), constant)


def _operand(graph: _Graph, env: dict[str, str], name: str) -> str:
    if name in env:
        return env[name]
    constant = graph.program.constants[name]
    if constant.dtype == "int":
        return _integer(graph, constant)
    return graph.const(graph.program.arrays[name], "f", **{DATATYPE_KEY: "FLOAT32"})


def _pow2(graph: _Graph, constant: Constant) -> str:
    """``2^a`` of an integer constant ``a`` (a shift amount): ``Pow(2, a)``, ``a`` declared as
    :func:`_integer` declares it (its range is the shift's)."""
    return graph.node("Pow", [graph.scalar(2.0), _integer(graph, constant)])


class _Emitter(ProgramWalk):
    """The walk writing each program op as QONNX nodes (:data:`QONNX_OPS`); a function returns
    ``None`` where it fused the op's consumer (whose output it then set itself)."""

    purpose = "the QONNX export"

    def __init__(self, program: IntegerProgram) -> None:
        super().__init__(program)
        self.graph = _Graph(program)
        self.env: dict[str, str] = {program.input.name: "input"}
        self.uses = Counter(name for op in program.ops for name in op.inputs)
        self.consumer: dict[str, int] = {}
        for index, operation in enumerate(program.ops):
            for name in operation.inputs:
                self.consumer.setdefault(name, index)
        self.fused: set[int] = set()
        self.pow2_values: dict[str, str] = {}

    def value(self, name: str) -> Value:
        return self.program.values[name]

    def item(self, name: str) -> Value | Constant:
        return self.program.values.get(name) or self.program.constants[name]

    def only_consumer(self, name: str) -> Operation | None:
        if self.uses[name] != 1 or name == self.program.output:
            return None
        return self.program.ops[self.consumer[name]]

    def skip(self, index: int) -> bool:
        return index in self.fused

    def apply(self, function: Callable[..., Any], operation: Operation, env: dict[str, Any]) -> Any:
        self.graph.layer, self.graph.kind = operation.layer, operation.kind
        return function(self, operation)

    # ---- fusions -------------------------------------------------------------------------
    def _fuse_clip(self, name: str) -> tuple[Operation, tuple[int, bool, bool]] | None:
        """The integer clip consuming ``name`` alone, when its bounds are a QONNX range."""
        clip = self.only_consumer(name)
        if clip is None or clip.op != "clip" or self.value(clip.output).dtype != "int":
            return None
        lo, hi = clip.attrs["lo"], clip.attrs["hi"]
        if lo is None or hi is None or lo != int(lo) or hi != int(hi):
            return None
        found = qonnx_range(int(lo), int(hi))
        return None if found is None else (clip, found)

    def _mark(self, operation: Operation) -> None:
        self.fused.add(self.program.ops.index(operation))

    # ---- one function per op (QONNX_OPS) ----------------------------------------------
    def _mac(self, operation: Operation) -> str:
        graph, program, env = self.graph, self.program, self.env
        attrs, inputs = operation.attrs, operation.inputs
        out = self.value(operation.output)
        x = env[inputs[0]]
        weight = program.constants[inputs[1]]
        w = _weight(graph, weight) if out.dtype == "int" else _operand(graph, env, inputs[1])
        if operation.op is Op.LINEAR:
            return graph.node("Gemm", [x, w], transB=1)
        top, bottom, left, right = attrs["padding"]
        return graph.node(
            "Conv",
            [x, w],
            strides=[attrs["stride"]] * 2,
            pads=[top, left, bottom, right],
            group=attrs["groups"],
            kernel_shape=list(weight.shape[2:]),
        )

    def _mul(self, operation: Operation) -> str:
        a, b = operation.inputs
        return self.graph.node("Mul", [self.env[a], _operand(self.graph, self.env, b)])

    def _add(self, operation: Operation) -> str:
        graph, inputs = self.graph, operation.inputs
        a, b = self.env[inputs[0]], _operand(graph, self.env, inputs[1])
        if operation.attrs.get("prefix"):
            return prefix_add(graph, a, b, self.item(inputs[1]).shape[0])
        return graph.node("Add", [a, b])

    def _clip(self, operation: Operation) -> str | None:
        graph, env, attrs, inputs = self.graph, self.env, operation.attrs, operation.inputs
        x = self.item(inputs[0])
        if x.dtype == "float":
            found = self._fuse_clip_round(operation)
            if found is not None:
                rounding, (bits, signed, narrow) = found
                self._mark(rounding)
                half = graph.node("Add", [env[inputs[0]], graph.scalar(0.5)])
                env[rounding.output] = graph.quant(half, bits, signed, narrow)
                return None
            return _float_clip(graph, env[inputs[0]], attrs["lo"], attrs["hi"])
        return self._int_clip(env[inputs[0]], x, attrs["lo"], attrs["hi"])

    def _round(self, operation: Operation) -> str:  # not fused: Floor(x + 0.5)
        half = self.graph.node("Add", [self.env[operation.inputs[0]], self.graph.scalar(0.5)])
        return self.graph.node("Floor", [half])

    def _sign(self, operation: Operation) -> str:
        return self.graph.bipolar(self.env[operation.inputs[0]])

    def _pad(self, operation: Operation) -> str:
        extra = operation.attrs["out_channels"] - self.item(operation.inputs[0]).shape[0]
        pads = self.graph.int64(np.array([0, 0, 0, 0, 0, extra, 0, 0]))
        return self.graph.node("Pad", [self.env[operation.inputs[0]], pads])

    def _tile(self, operation: Operation) -> str:
        repeats = self.graph.int64(np.array([1, operation.attrs["repeats"], 1, 1]))
        return self.graph.node("Tile", [self.env[operation.inputs[0]], repeats])

    def _flatten(self, operation: Operation) -> str:
        return self.graph.node("Flatten", [self.env[operation.inputs[0]]], axis=1)

    def _fuse_clip_round(self, clip: Operation) -> tuple[Operation, tuple[int, bool, bool]] | None:
        lo, hi = clip.attrs["lo"], clip.attrs["hi"]
        if lo is None or hi is None or lo != int(lo) or hi != int(hi):
            return None
        found = qonnx_range(int(lo), int(hi))
        rounding = self.only_consumer(clip.output)
        if found is None or rounding is None or rounding.op != "round":
            return None
        result = self.value(rounding.output)
        if (result.lo, result.hi) != (int(lo), int(hi)):
            return None
        return rounding, found

    def _int_clip(self, x: str, value: Value | Constant, lo: Any, hi: Any) -> str:
        graph = self.graph
        found = qonnx_range(int(lo), int(hi))
        if found is not None:
            return graph.quant(x, *found)
        if lo > value.lo:  # type: ignore[operator]
            x = graph.node("Relu", [x]) if lo == 0 else graph.node("Max", [x, graph.scalar(lo)])
        if hi < value.hi:  # type: ignore[operator]
            x = graph.node("Min", [x, graph.scalar(hi)])
        return x

    def _shift(self, operation: Operation) -> str | None:
        graph, env = self.graph, self.env
        x_name, amount_name = operation.inputs
        if amount_name in self.program.constants:
            factor = _pow2(graph, self.program.constants[amount_name])
        elif amount_name in self.pow2_values:
            factor = self.pow2_values[amount_name]
        else:
            raise QonnxExportError(
                f"{operation.layer}: a shift by a computed amount that is not a select of "
                "constants has no QONNX form here"
            )
        product = graph.node("Mul", [env[x_name], factor])
        fused = self._fuse_clip(operation.output)
        if fused is not None:
            clip, (bits, signed, narrow) = fused
            self._mark(clip)
            graph.layer, graph.kind = clip.layer, clip.kind
            self.env[clip.output] = graph.quant(product, bits, signed, narrow)
            return None
        amount = self.item(amount_name)
        if amount.lo < 0:  # type: ignore[operator]
            return graph.node("Floor", [product])
        return product

    def _select(self, operation: Operation) -> str | None:
        graph, env, program = self.graph, self.env, self.program
        c, a, b = operation.inputs
        positive = graph.node("GreaterOrEqual", [env[c], graph.scalar(0.0)])
        consumers = [op for op in program.ops if operation.output in op.inputs]
        as_amount = consumers and all(
            op.op == "shift" and op.inputs[1] == operation.output for op in consumers
        )
        if as_amount and a in program.constants and b in program.constants:
            pos, neg = _pow2(graph, program.constants[a]), _pow2(graph, program.constants[b])
            self.pow2_values[operation.output] = graph.node("Where", [positive, pos, neg])
            return None
        return graph.node("Where", [positive, _operand(graph, env, a), _operand(graph, env, b)])

    def _sum(self, operation: Operation) -> str:
        graph, attrs = self.graph, operation.attrs
        x = self.env[operation.inputs[0]]
        source = self.item(operation.inputs[0])
        mode = attrs["mode"]
        if mode == "global":
            return graph.node("ReduceSum", [x, graph.int64(np.array([2, 3]))], keepdims=1)
        if mode == "groups":
            out, group = attrs["out_channels"], attrs["group"]
            _, height, width = source.shape
            starts, ends = graph.int64(np.array([0])), graph.int64(np.array([out * group]))
            x = graph.node("Slice", [x, starts, ends, graph.int64(np.array([1]))])
            shape = graph.int64(np.array([-1, out, group, height, width]))
            x = graph.node("Reshape", [x, shape])
            return graph.node("ReduceSum", [x, graph.int64(np.array([2]))], keepdims=0)
        k, stride = attrs["kernel"], attrs["stride"]
        top, bottom, left, right = attrs["padding"]
        channels = source.shape[0]
        ones = graph.const(np.ones((channels, 1, k, k), np.float32), "ones")
        return graph.node(
            "Conv",
            [x, ones],
            strides=[stride, stride],
            pads=[top, left, bottom, right],
            group=channels,
            kernel_shape=[k, k],
        )


def _float_clip(graph: _Graph, x: str, lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return graph.node("Clip", [x, graph.scalar(lo), graph.scalar(hi)])
    if lo is not None:
        return graph.node("Relu", [x]) if lo == 0 else graph.node("Max", [x, graph.scalar(lo)])
    if hi is not None:
        return graph.node("Min", [x, graph.scalar(hi)])
    return graph.node("Identity", [x])


#: the QONNX export: one function per :class:`Op` ``(emitter, operation) -> tensor name | None``.
QONNX_OPS: dict[Op, Callable[[_Emitter, Operation], str | None]] = {
    Op.CONV: _Emitter._mac,
    Op.LINEAR: _Emitter._mac,
    Op.MUL: _Emitter._mul,
    Op.ADD: _Emitter._add,
    Op.SHIFT: _Emitter._shift,
    Op.ROUND: _Emitter._round,
    Op.CLIP: _Emitter._clip,
    Op.SIGN: _Emitter._sign,
    Op.SELECT: _Emitter._select,
    Op.SUM: _Emitter._sum,
    Op.PAD: _Emitter._pad,
    Op.TILE: _Emitter._tile,
    Op.FLATTEN: _Emitter._flatten,
}
_Emitter.table = QONNX_OPS


def program_to_qonnx(program: IntegerProgram) -> Any:
    """The QONNX ``onnx.ModelProto`` of ``program`` (which must carry its constants); input
    ``input`` ``(1, C, H, W)`` float32, output ``logits``."""
    from onnx import TensorProto, helper

    if not program.arrays and program.constants:
        raise QonnxExportError("this program has no constants (shape-only lowering)")
    emitter = _Emitter(program)
    emitter.env = emitter.walk(emitter.env)
    graph = emitter.graph
    if takes_raw_pixels(program):  # FINN's convention: float container, integer data type
        graph.annotations.setdefault("input", {})[DATATYPE_KEY] = "UINT8"
    graph.layer, graph.kind = "(model)", "output"
    last = graph.node("Identity", [emitter.env[program.output]])
    graph.nodes[-1].output[0] = "logits"
    del last
    channels, height, width = program.input.shape
    inputs = [
        helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, channels, height, width])
    ]
    classes = program.values[program.output].shape
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, *classes])]
    return helper.make_model(
        graph.graph(inputs, outputs),
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(QONNX_DOMAIN, 1)],
        producer_name="pikenas",
    )
