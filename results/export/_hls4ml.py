"""An hls4ml project of a bundle's integer program, compiled for C simulation and checked
bit for bit against the program.

hls4ml's front ends (QONNX, PyTorch) rebuild a network from float layers and guess fixed-point
types; pikenas already has the exact arithmetic, so the project is built from the program's
operations directly as hls4ml layers (``ModelGraph.from_layer_list``, what every front end
produces), each value typed with its declared range: ``ap_int`` / ``ap_uint`` of its width.

What maps (the hls4ml part runs from the input codes to the classifier's integer accumulator;
the float ends around it, pixels -> input codes and accumulator -> logits, are the program's own
operations run by the numpy runner):

* integer ``conv`` -> ``Conv2D`` (groups 1) or ``DepthwiseConv2D``; integer ``linear`` ->
  ``Dense``; weights are integer codes (pow2 codes too: a multiply by ``+-2^k``, not a shift);
* integer ``add`` / ``mul`` / ``shift`` by a constant -> ``BatchNormalization`` with scale
  ``k`` or ``2^a`` and bias ``c`` (exact in ``ap_fixed``; a right shift is the cast to
  ``ap_int`` with ``AP_TRN``, which floors); ``clip`` -> the cast with ``AP_SAT`` when its bounds
  are those of a two's-complement / unsigned width (the producing layer's cast: hls4ml drops a
  scale-1 ``BatchNormalization`` as a no-op, so an add of 0, a multiply by 1 or a shift by 0
  makes no layer at all and a clip after it saturates the real producer); ``add`` of two
  values -> ``Add``;
* ``sum`` over the whole image -> ``DepthwiseConv2D`` with a kernel of ones;
* ``select(t >= 0, a, b)`` read as ``t``'s multiplier (PReLU / DPReLU with int8 or pow2 slopes)
  -> ``a * relu(t) - b * relu(-t)``: ReLU ``Activation`` layers, per-channel scales, an ``Add``;
* ``sign`` (1-bit activations, +-1) -> ``2 * clip(t + 1, 0, 1) - 1``: a saturating 1-bit cast
  and a scale (hls4ml's ``binary_tanh`` would be merged with the batch norm before it into a
  {0, 1} threshold that its XNOR layers read differently);
* the head's float ``mul`` by one scalar, ``clip``, ``round`` -> one ``BatchNormalization``
  (bias 0.5, ``AP_TRN``, ``AP_SAT``): exact for a power of two; otherwise the fixed-point
  product is exact where the program's float32 one is rounded, which can move a value across a
  half (noted; the C simulation checks it).

Everything else is refused with one line saying which operation and why
(:func:`hls4ml_refusals`): float requantization multipliers (float batch norm: a float32
multiply-add has no exact fixed-point form), float convs, float slopes, grouped convs, windows.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pikenas.space.program.ir import IntegerProgram, Operation, Value, execute_operation, range_bits

__all__ = [
    "HLS4ML_DIR",
    "HLS4ML_IMAGES",
    "Hls4mlCheck",
    "hls4ml_available",
    "hls4ml_refusals",
    "hls4ml_notes",
    "export_hls4ml",
]

logger = logging.getLogger(__name__)

HLS4ML_DIR = "hls4ml"
CHECK_FILE = "check.json"
#: images run through the C simulation at export.
HLS4ML_IMAGES = 16


@dataclass(frozen=True)
class Hls4mlCheck:
    """The C simulation against the program: ``exact`` when every image's integer accumulator
    (the hls4ml output) equals the program's; ``refusals``: why a program was not converted."""

    images: int
    compiled: bool
    exact: bool
    mismatching_images: int = 0
    predictions_equal: int = 0
    refusals: list[str] = field(default_factory=list)
    output: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        if self.refusals:
            return f"not converted: {self.refusals[0]}"
        if not self.compiled:
            return "not compiled (hls4ml or g++ missing)"
        verdict = "bit-exact" if self.exact else f"{self.mismatching_images} images differ"
        return (f"{verdict} on {self.images} images (integer accumulator {self.output}; "
                f"{self.predictions_equal}/{self.images} predictions equal)")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary}


def hls4ml_available() -> str | None:
    """None when hls4ml and g++ are there, else why not (one line)."""
    try:
        import hls4ml  # noqa: F401
    except ImportError:
        return "hls4ml is not installed (pip install 'pikenas[dev]')"
    if shutil.which("g++") is None:
        return "g++ is not installed (the C simulation compiles with it)"
    return None


def _range_type(lo: int, hi: int) -> str:
    return f"ap_{'int' if lo < 0 else 'uint'}<{range_bits(lo, hi)}>"


def _int_type(value: Value, *, saturate: bool = False, floor: bool = False) -> str:
    bits = range_bits(value.lo, value.hi)  # type: ignore[arg-type]
    kind = "fixed" if value.lo < 0 else "ufixed"  # type: ignore[operator]
    if saturate or floor:
        return f"ap_{kind}<{bits},{bits},AP_TRN,{'AP_SAT' if saturate else 'AP_WRAP'}>"
    return _range_type(value.lo, value.hi)  # type: ignore[arg-type]


def _full_range(lo: int, hi: int) -> bool:
    """``[lo, hi]`` is exactly what a signed or unsigned width holds (a saturating cast)."""
    bits = range_bits(lo, hi)
    return (lo, hi) == ((-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if lo < 0 else (0, 2**bits - 1))


@dataclass
class _Graph:
    """hls4ml layers under construction; ``names``: program value -> hls4ml layer."""

    program: IntegerProgram
    layers: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    refusals: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: value -> the value it equals (an add of 0, a multiply by 1, a shift by 0: no layer, since
    #: hls4ml deletes a scale-1, bias-0 BatchNormalization and with it a clip folded into it)
    same_as: dict[str, str] = field(default_factory=dict)
    #: outputs already built with an earlier operation (the multiply / shift of a slope select)
    done: set[str] = field(default_factory=set)

    def root(self, name: str) -> str:
        while name in self.same_as:
            name = self.same_as[name]
        return name

    def append(self, tag: str, layer: dict[str, Any], precision: dict[str, str]) -> str:
        """Add ``layer`` (named from ``tag``) with its types; returns its name."""
        name = f"l{len(self.layers)}_{tag}"
        layer["name"] = name
        self.layers.append(layer)
        self.config[name] = {"Precision": precision}
        return name

    def add(self, operation: Operation, layer: dict[str, Any], precision: dict[str, str]) -> None:
        self.names[operation.output] = self.append(operation.op, layer, precision)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.program.values[name].shape

    def refuse(self, operation: Operation, why: str) -> None:
        self.refusals.append(f"{operation.layer}: {operation.op} -> {why}")


def _scale_layer(graph: _Graph, tag: str, source: str, shape: tuple[int, ...],
                 scale: np.ndarray, bias: np.ndarray, result: str) -> str:
    """``source * scale + bias`` per channel (a ``BatchNormalization``: exact in ap_fixed)."""
    channels = shape[0]
    return graph.append(tag, {
        "class_name": "BatchNormalization", "inputs": [source],
        "n_in": int(np.prod(shape)), "n_filt": channels, "data_format": "channels_last",
        "scale_data": np.broadcast_to(scale.reshape(-1), (channels,)).astype(np.float64).copy(),
        "bias_data": np.broadcast_to(bias.reshape(-1), (channels,)).astype(np.float64).copy(),
    }, {"scale": "ap_fixed<72,36>", "bias": "ap_fixed<72,36>", "result": result})


def _affine(graph: _Graph, operation: Operation, scale: np.ndarray, bias: np.ndarray,
            result: str) -> None:
    source = operation.inputs[0]
    graph.names[operation.output] = _scale_layer(
        graph, operation.op, graph.names[source], graph.shape(source), scale, bias, result
    )


def _slopes(graph: _Graph, operation: Operation) -> None:
    """``select(t >= 0, a, b)`` read only as ``t``'s multiplier (PReLU / DPReLU: a multiply by
    int8 slope codes or a shift by pow2 amounts) -> ``a * relu(t) - b * relu(-t)``: two ReLU
    ``Activation`` layers, per-channel scales and an ``Add``. Exact on integers: for ``t >= 0``
    the second term is 0, for ``t < 0`` the first."""
    program = graph.program
    t, a, b = operation.inputs
    readers = [o for o in program.ops if operation.output in o.inputs]
    reader = readers[0] if len(readers) == 1 else None
    if (reader is None or reader.op not in ("mul", "shift")
            or list(reader.inputs) != [t, operation.output]
            or a not in program.arrays or b not in program.arrays):
        graph.refuse(operation, "a per-sign slope read other than as its input's multiplier "
                     "has no hls4ml layer")
        return
    factors = [program.arrays[n].astype(np.float64) for n in (a, b)]
    if reader.op == "shift":
        factors = [np.exp2(f) for f in factors]
    if any(np.any(f != np.round(f)) for f in factors):
        graph.refuse(operation, "a slope that shifts right (a fraction) has no exact layer")
        return
    value = program.values[t]
    lo, hi = int(value.lo), int(value.hi)  # type: ignore[arg-type]
    shape = graph.shape(t)
    terms = []
    for sign, factor, (low, high) in ((1, factors[0], (0, max(hi, 0))),
                                      (-1, -factors[1], (0, max(-lo, 0)))):
        source = graph.names[t]
        if sign < 0:  # -t
            source = _scale_layer(graph, "negate", source, shape, -np.ones(1), np.zeros(1),
                                  _range_type(-hi, -lo))
        part = graph.append("relu", {"class_name": "Activation", "activation": "relu",
                                     "inputs": [source]}, {"result": _range_type(low, high)})
        if np.any(factor != 1):
            ends = [int(v) for v in (factor.min() * high, factor.max() * high, 0)]
            part = _scale_layer(graph, "slope", part, shape, factor, np.zeros(1),
                                _range_type(min(ends), max(ends)))
        terms.append(part)
    graph.names[reader.output] = graph.append(
        "select", {"class_name": "Merge", "op": "add", "inputs": terms},
        {"result": _int_type(program.values[reader.output])},
    )
    graph.done.add(reader.output)


def _conv(graph: _Graph, operation: Operation) -> None:
    program = graph.program
    weights = program.arrays[operation.inputs[1]]
    out = program.values[operation.output]
    channels_in = graph.shape(operation.inputs[0])[0]
    out_channels, _, k_h, k_w = weights.shape
    top, bottom, left, right = operation.attrs["padding"]
    groups, stride = operation.attrs["groups"], operation.attrs["stride"]
    layer = {
        "inputs": [graph.names[operation.inputs[0]]], "data_format": "channels_last",
        "in_height": graph.shape(operation.inputs[0])[1],
        "in_width": graph.shape(operation.inputs[0])[2], "n_chan": channels_in,
        "n_filt": out_channels, "filt_height": k_h, "filt_width": k_w,
        "stride_height": stride, "stride_width": stride, "pad_top": top, "pad_bottom": bottom,
        "pad_left": left, "pad_right": right, "out_height": out.shape[1],
        "out_width": out.shape[2], "dilation": 1, "bias_data": np.zeros(out_channels),
    }
    if groups == 1:
        layer.update(class_name="Conv2D", weight_data=weights.transpose(2, 3, 1, 0) * 1.0)
    elif groups == channels_in == out_channels:
        layer.update(class_name="DepthwiseConv2D", depth_multiplier=1,
                     depthwise_data=weights.transpose(2, 3, 0, 1) * 1.0)
    else:
        graph.refuse(operation, f"grouped conv ({groups} groups) has no hls4ml layer")
        return
    width = max(2, range_bits(min(int(weights.min()), 0), max(int(weights.max()), 0)))
    graph.add(operation, layer, {"weight": f"ap_int<{width}>", "bias": "ap_int<2>",
                                 "accum": _int_type(out), "result": _int_type(out)})


def _global_sum(graph: _Graph, operation: Operation) -> None:
    channels, height, width = graph.shape(operation.inputs[0])
    ones = np.ones((height, width, channels, 1))
    out = graph.program.values[operation.output]
    graph.add(operation, {
        "class_name": "DepthwiseConv2D", "inputs": [graph.names[operation.inputs[0]]],
        "data_format": "channels_last", "in_height": height, "in_width": width,
        "n_chan": channels, "n_filt": channels, "depth_multiplier": 1, "filt_height": height,
        "filt_width": width, "stride_height": 1, "stride_width": 1, "pad_top": 0,
        "pad_bottom": 0, "pad_left": 0, "pad_right": 0, "out_height": 1, "out_width": 1,
        "dilation": 1, "depthwise_data": ones, "bias_data": np.zeros(channels),
    }, {"weight": "ap_uint<1>", "bias": "ap_int<2>", "accum": _int_type(out),
        "result": _int_type(out)})


def _power_of_two(array: np.ndarray) -> bool:
    mantissa, _ = np.frexp(np.asarray(array, dtype=np.float64))
    return bool(np.all(np.abs(mantissa) == 0.5))


def _integer_op(graph: _Graph, operation: Operation) -> None:
    """One integer operation as an hls4ml layer (or a refusal)."""
    program = graph.program
    out = program.values[operation.output]
    op, inputs = operation.op, operation.inputs
    constant = program.arrays.get(inputs[1]) if len(inputs) > 1 else None
    if op == "conv":
        _conv(graph, operation)
    elif op == "linear":
        weights = program.arrays[inputs[1]]
        width = max(2, range_bits(min(int(weights.min()), 0), max(int(weights.max()), 0)))
        graph.add(operation, {
            "class_name": "Dense", "inputs": [graph.names[inputs[0]]],
            "n_in": weights.shape[1], "n_out": weights.shape[0],
            "weight_data": weights.T * 1.0, "bias_data": np.zeros(weights.shape[0]),
        }, {"weight": f"ap_int<{width}>", "bias": "ap_int<2>", "accum": _int_type(out),
            "result": _int_type(out)})
    elif op == "add" and constant is None and not operation.attrs.get("prefix"):
        graph.add(operation, {"class_name": "Merge", "op": "add",
                              "inputs": [graph.names[inputs[0]], graph.names[inputs[1]]]},
                  {"result": _int_type(out)})
    elif op in ("add", "mul", "shift") and constant is not None:
        scale = np.ones(1) if op == "add" else constant if op == "mul" else np.exp2(constant * 1.0)
        bias = constant * 1.0 if op == "add" else np.zeros(1)
        if np.all(np.asarray(scale) == 1) and np.all(bias == 0):  # the identity: no layer
            graph.names[operation.output] = graph.names[inputs[0]]
            graph.same_as[operation.output] = inputs[0]
            return
        _affine(graph, operation, np.asarray(scale, dtype=np.float64), bias,
                _int_type(out, floor=op == "shift"))
    elif op == "clip" and _full_range(int(operation.attrs["lo"]), int(operation.attrs["hi"])):
        # the producer's cast saturates (hls4ml removes a scale-1, bias-0 layer as a no-op)
        group = {name for name in program.values if graph.root(name) == graph.root(inputs[0])}
        readers = [o for o in program.ops if group & set(o.inputs) and o.output not in group]
        if len(readers) > 1:
            graph.refuse(operation, "a clip of a value that is also used unclipped")
            return
        producer = graph.names[inputs[0]]
        graph.config[producer]["Precision"]["result"] = _int_type(out, saturate=True)
        graph.names[operation.output] = producer
    elif op == "sum" and operation.attrs["mode"] == "global":
        _global_sum(graph, operation)
    elif op == "clip":
        graph.refuse(operation, "a clip to a range that is not a whole integer width")
    elif op == "sign":
        # sign(t) = 2 * clip(t + 1, 0, 1) - 1 on integers (the clip: a saturating 1-bit cast).
        # Not hls4ml's binary_tanh: after a batch norm, hls4ml merges the two into a {0, 1}
        # thresholding whose XNOR consumers differ from the program's +-1 products.
        shape = graph.shape(inputs[0])
        step = _scale_layer(graph, "step", graph.names[inputs[0]], shape, np.ones(1),
                            np.ones(1), "ap_ufixed<1,1,AP_TRN,AP_SAT>")
        graph.names[operation.output] = _scale_layer(graph, "sign", step, shape, np.full(1, 2.0),
                                                     -np.ones(1), _int_type(out))
    elif op == "select":
        _slopes(graph, operation)
    else:
        graph.refuse(operation, f"integer {op} ({operation.attrs or 'no attributes'}) has no "
                     "exact hls4ml layer")


def _head_requantize(graph: _Graph, ops: list[Operation], k: int) -> int:
    """``mul(int, 2^a)`` [``flatten``] ``clip`` ``round``: one saturating, flooring affine of
    bias 0.5 (exact: the float32 product by a power of two is). Returns the next op index."""
    program = graph.program
    operation = ops[k]
    chain = [operation]
    for expected in ("flatten", "clip", "round"):
        if len(chain) + k < len(ops) and ops[k + len(chain)].op == expected:
            chain.append(ops[k + len(chain)])
        elif expected != "flatten":
            graph.refuse(operation, "a float multiply not followed by clip and round")
            return len(ops)
    factor = program.arrays[operation.inputs[1]]
    clip, rounding = chain[-2], chain[-1]
    out = program.values[rounding.output]
    if factor.size != 1:
        graph.refuse(operation, "a per-channel float multiplier before the classifier")
        return len(ops)
    if not _power_of_two(factor):  # exact in ap_fixed; float32 rounds the product
        graph.notes.append(f"{operation.layer}: the float multiplier {float(factor):.6g} is "
                           "applied exactly (the program's float32 product can round across a "
                           "half: the C simulation checks it)")
    if not _full_range(int(clip.attrs["lo"]), int(clip.attrs["hi"])) or (
        (out.lo, out.hi) != (int(clip.attrs["lo"]), int(clip.attrs["hi"]))
    ):
        graph.refuse(clip, "a clip to a range that is not a whole integer width")
        return len(ops)
    _affine(graph, operation, factor.reshape(1) * 1.0, np.full(1, 0.5),
            _int_type(out, saturate=True))
    name = graph.names[operation.output]
    source = program.values[operation.inputs[0]]
    if len(source.shape) == 3 and source.shape[1:] != (1, 1):
        graph.refuse(chain[1], "flattening a C x H x W map (hls4ml flattens channels last)")
        return len(ops)
    if len(source.shape) == 3:
        graph.add(rounding, {"class_name": "Reshape", "inputs": [name],
                             "target_shape": [source.shape[0]]}, {"result": _int_type(out)})
    else:
        graph.names[rounding.output] = name
    return k + len(chain)


def _build(program: IntegerProgram, start: int | None = None) -> tuple[_Graph, str, int]:
    """The hls4ml layers from the codes ``ops[start]`` emits (default: the input codes);
    ``(graph, the program value hls4ml starts from, index of the first op after it)``."""
    graph = _Graph(program)
    ops = program.ops
    if start is None:
        start = next((k for k, o in enumerate(ops) if program.values[o.output].dtype == "int"),
                     None)
    if start is None or ops[start].op != "round":
        graph.refusals.append("the program has no integer input codes (a float network): "
                              "float32 arithmetic has no exact fixed-point form")
        return graph, "", len(ops)
    codes = program.values[ops[start].output]
    if len(codes.shape) != 3:
        graph.refusals.append(f"{ops[start].layer}: codes of shape {codes.shape} as an input")
        return graph, "", len(ops)
    channels, height, width = codes.shape
    graph.layers.append({"class_name": "InputLayer", "name": "codes",
                         "input_shape": [height, width, channels]})
    graph.config["codes"] = {"Precision": {"result": _int_type(codes)}}
    graph.names[codes.name] = "codes"
    k = start + 1
    while k < len(ops) and not graph.refusals:
        operation = ops[k]
        if operation.output in graph.done:
            k += 1
            continue
        out = program.values[operation.output]
        sources = [n for n in operation.inputs if n in program.values]
        if any(n not in graph.names for n in sources):
            graph.refuse(operation, "it reads a value computed before the hls4ml part")
            break
        scalar = operation.op == "mul" and program.arrays.get(operation.inputs[-1], ()).size == 1
        if out.dtype == "float" and operation.op == "mul" and len(sources) == 1:
            if not any(o.op in ("conv", "linear") for o in ops[k + 1:]):
                break  # the logits' dequantize multiply and bias: the float tail
            if scalar and program.values[sources[0]].dtype == "int":
                k = _head_requantize(graph, ops, k)
                continue
        if out.dtype == "float" or any(program.values[n].dtype == "float" for n in sources):
            graph.refuse(operation, "float32 requantization (float batch norm fused into a "
                         "float multiply-add, or a float conv): no exact fixed-point form")
            break
        _integer_op(graph, operation)
        k += 1
    return graph, codes.name, k


def _best_build(program: IntegerProgram) -> tuple[_Graph, str, int]:
    """The whole integer part when it maps; else the longest integer tail that does (a float
    stem, say, stays in the program: noted with the reason), else the refusal."""
    whole = _build(program)
    if not whole[0].refusals:
        return whole
    rounds = [k for k, o in enumerate(program.ops) if o.op == "round"]
    for k in rounds[1:]:
        tail = _build(program, k)
        if not tail[0].refusals and any(o.op == "conv" for o in program.ops[k:tail[2]]):
            layer = program.ops[k].layer
            tail[0].notes.insert(0, f"hls4ml runs from the codes {layer} emits; before them "
                                 f"the program runs ({whole[0].refusals[0]})")
            return tail
    return whole


def hls4ml_refusals(program: IntegerProgram) -> list[str]:
    """Why ``program`` does not convert (one line per refused operation; empty: it does, maybe
    from a later layer on: see :func:`hls4ml_notes`)."""
    return _best_build(program)[0].refusals


def hls4ml_notes(program: IntegerProgram) -> list[str]:
    """What a converted program's hls4ml part leaves out or computes differently."""
    return _best_build(program)[0].notes


def export_hls4ml(
    program: IntegerProgram, folder: Path, images: np.ndarray, *, compile_project: bool = True
) -> Hls4mlCheck:
    """Write ``folder/hls4ml/`` (the project and ``check.json``), compile it for C simulation
    and compare it with the program on ``images`` ``(N, *program.input.shape)``."""
    graph, start, end = _best_build(program)
    target = Path(folder) / HLS4ML_DIR
    target.mkdir(parents=True, exist_ok=True)
    last = program.ops[end - 1].output if end else ""
    if graph.refusals:
        check = Hls4mlCheck(len(images), False, False, refusals=graph.refusals)
    elif not compile_project or hls4ml_available() is not None:
        check = Hls4mlCheck(len(images), False, False, output=last, notes=graph.notes)
    else:
        check = _simulate(graph, program, start, end, images, target)
    (target / CHECK_FILE).write_text(json.dumps(check.to_dict(), indent=2) + "\n", "utf-8")
    return check


def _simulate(graph: _Graph, program: IntegerProgram, start: str, end: int,
              images: np.ndarray, target: Path) -> Hls4mlCheck:
    from hls4ml.converters import create_config
    from hls4ml.model import ModelGraph

    config = create_config(output_dir=str(target / "project"), project_name="pikenas",
                           backend="Vivado", io_type="io_parallel")
    config["HLSConfig"] = {
        "Model": {"Precision": "ap_fixed<32,16>", "ReuseFactor": 1, "Strategy": "Latency"},
        "LayerName": graph.config,
    }
    with contextlib.redirect_stdout(io.StringIO()):  # hls4ml prints its progress
        model = ModelGraph.from_layer_list(config, graph.layers)
        model.compile()
    reference = program.run(images, keep=True).values
    codes = reference[start].transpose(0, 2, 3, 1).reshape(len(images), -1)
    predicted = np.asarray(model.predict(np.ascontiguousarray(codes, dtype=np.float64)))
    last = program.ops[end - 1].output
    expected = reference[last].reshape(len(images), -1)
    got = predicted.reshape(expected.shape)
    wrong = int(np.count_nonzero(np.any(got != expected, axis=1)))
    env = {**reference, last: np.rint(got).astype(np.int64).reshape(reference[last].shape)}
    for operation in program.ops[end:]:  # the float tail: dequantize, bias
        env[operation.output] = execute_operation(operation, env, program.arrays,
                                                  program.values)
    logits = env[program.output]
    same = int(np.count_nonzero(logits.argmax(1) == reference[program.output].argmax(1)))
    return Hls4mlCheck(len(images), True, wrong == 0, wrong, same, output=last,
                       notes=graph.notes)
