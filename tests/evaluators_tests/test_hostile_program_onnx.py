"""Malformed and invalid ONNX for ``pikenas ace MODEL.onnx``: refused with exit 2 and one line
naming the node (or tensor) and the problem, never priced, never "internal error", never a
long loop or a huge allocation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pikenas.evaluators.cost import count_onnx
from pikenas.search.cli import main
from pikenas.space.program.onnx._common import QONNX_DOMAIN
from pikenas.space.program.onnx.importer import OnnxImportError, import_onnx


def _model(
    nodes: list, initializers: list, shape: tuple = (1, 1, 4, 4), notes: dict | None = None
) -> Any:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
        initializers,
    )
    for tensor, entries in (notes or {}).items():
        annotation = graph.quantization_annotation.add()
        annotation.tensor_name = tensor
        for key, value in entries.items():
            entry = annotation.quant_parameter_tensor_names.add()
            entry.key, entry.value = key, value
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(QONNX_DOMAIN, 1)]
    )


def _scalars(**values: float) -> list:
    return [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in values.items()]


def _weights(k: int = 1, channels: int = 1) -> Any:
    return numpy_helper.from_array(np.full((1, channels, k, k), 0.3, np.float32), "w")


BASE = {"s": 0.5, "z": 0.0, "b4": 4.0, "one": 1.0, "b2": 2.0}


def _quant(source: str, out: str, bits: str = "b4", domain: str = QONNX_DOMAIN) -> Any:
    return helper.make_node(
        "Quant", [source, "s", "z", bits], [out], name=f"quant_{out}", domain=domain, signed=1
    )


def _conv(weights: Any = None, scalars: dict | None = None, **attrs: Any) -> tuple[list, list]:
    """Quant(x) -> Conv(Quant(w)) named ``conv1``: integer MACs."""
    attrs.setdefault("kernel_shape", [1, 1])
    nodes = [
        _quant("x", "q"),
        helper.make_node("Quant", ["w", "one", "z", "b2"], ["wq"], domain=QONNX_DOMAIN, narrow=1),
        helper.make_node("Conv", ["q", "wq"], ["y"], name="conv1", **attrs),
    ]
    return nodes, [weights or _weights(), *_scalars(**{**BASE, **(scalars or {})})]


def _mul_by_k(notes: dict[str, str]) -> tuple[list, list, tuple, dict]:
    k = numpy_helper.from_array(np.array(2.0, np.float32), "k")
    nodes = [_quant("x", "q"), helper.make_node("Mul", ["q", "k"], ["y"], name="times_k")]
    return nodes, [*_scalars(**BASE), k], (1, 1, 4, 4), {"k": notes}


def _pow(base: float, exponent_bits: float = 4.0, clip: bool = False) -> tuple[list, list]:
    """Quant(x) * Pow(base, Quant(a)): a power-of-two multiplier only for base 2."""
    a = numpy_helper.from_array(np.array(-2.0, np.float32), "a")
    nodes = [
        _quant("x", "q"),
        helper.make_node(
            "Quant", ["a", "one", "z", "ba"], ["aq"], name="quant_a", domain=QONNX_DOMAIN, signed=1
        ),
        helper.make_node("Pow", ["two", "ac" if clip else "aq"], ["p"], name="pow2"),
        helper.make_node("Mul", ["q", "p"], ["y"], name="shift"),
    ]
    if clip:
        nodes.insert(2, helper.make_node("Clip", ["aq", "lo", "hi"], ["ac"], name="narrow"))
    scalars = _scalars(**BASE, two=base, ba=exponent_bits, lo=-3.0, hi=0.0)
    return nodes, [*scalars, a]


def _with(nodes_and_inits: tuple[list, list], **replaced: Any) -> tuple[list, list]:
    nodes, inits = nodes_and_inits
    names = {i.name for i in inits}
    inits = [i for i in inits if i.name not in replaced] + [
        v
        if isinstance(v, onnx.TensorProto)
        else numpy_helper.from_array(np.array(v, np.float32), k)
        for k, v in replaced.items()
    ]
    assert set(replaced) <= names
    return nodes, inits


CASES: dict[str, tuple[tuple, str]] = {
    "stride 0": (_conv(strides=[0, 0]), r"node conv1 \(Conv\): strides must be"),
    "negative stride": (_conv(strides=[-2, -2]), r"conv1.*strides must be"),
    "strides a string": (_conv(strides="ab"), r"conv1.*strides must be"),
    "group 0": (_conv(group=0), r"conv1.*group must be"),
    "group that does not divide": (_conv(group=3), r"conv1.*group=3 do not fit"),
    "negative pads": (_conv(pads=[-2, -2, -2, -2]), r"conv1.*pads must be"),
    "huge pads": (_conv(pads=[10**9] * 4), r"conv1.*pads must be"),
    "dilation 0": (_conv(dilations=[0, 0]), r"conv1.*dilations must be"),
    "kernel larger than its input": (
        _conv(_weights(9), kernel_shape=[9, 9]),
        r"conv1.*output shape \(1, -4, -4\) is empty",
    ),
    "string initializer": (
        _with(_conv(), b2=helper.make_tensor("b2", TensorProto.STRING, [], [b"two"])),
        r"initializer 'b2' holds object data",
    ),
    "absurd bit width": (_with(_conv(), b4=1e9), r"quant_q \(Quant\): input 3 \(bit width\)"),
    "bit width 100": (_with(_conv(), b4=100.0), r"quant_q.*bit width"),
    "negative bits": (_with(_conv(), b4=-4.0), r"quant_q.*bit width"),
    "zero bits": (_with(_conv(), b4=0.0), r"quant_q.*bit width"),
    "fractional bits": (_with(_conv(), b4=2.5), r"quant_q.*bit width"),
    "NaN bits": (_with(_conv(), b4=float("nan")), r"initializer 'b4' holds NaN"),
    "infinite scale": (_with(_conv(), s=float("inf")), r"initializer 's' holds NaN or infinite"),
    "negative scale": (_with(_conv(), s=-0.5), r"quant_q.*scale"),
    "foreign domain": (
        ([helper.make_node("Relu", ["x"], ["y"], name="r", domain="com.evil")], []),
        r"node r \(Relu\): its op domain 'com.evil'",
    ),
    "foreign domain on Quant": (
        ([_quant("x", "y", domain="com.evil")], _scalars(**BASE)),
        r"quant_y \(Quant\): its op domain 'com.evil' is not qonnx",
    ),
    "negative dims": (
        ([helper.make_node("Relu", ["x"], ["y"])], [], (1, 1, -4, 4)),
        r"tensor 'x' declares negative dimensions",
    ),
    "absurd input": (
        ([helper.make_node("Relu", ["x"], ["y"])], [], (1, 1, 10**6, 10**6)),
        r"elements per sample pikenas prices",
    ),
    "Pow of a scaled base": (
        (_pow(1.0)[0][:2] + [
            helper.make_node("Quant", ["two", "s", "z", "b4"], ["tq"], domain=QONNX_DOMAIN,
                             signed=1),
            helper.make_node("Pow", ["tq", "aq"], ["p"], name="pow2"),
            helper.make_node("Mul", ["q", "p"], ["y"], name="shift"),
        ], _pow(1.0)[1]),  # base codes 2 x scale 0.5: a real base of 1, not a shift
        r"pow2 \(Pow\)",
    ),
    "Max by a per-channel constant": (
        ([_quant("x", "q"), helper.make_node("Max", ["q", "m"], ["y"], name="mx")],
         [*_scalars(**BASE), numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "m")]),
        r"node mx \(Max\): only scalar bounds are supported",
    ),
    "Pow of base 3": (_pow(3.0), r"node pow2 \(Pow\): only Pow\(2, integer constant codes\)"),
    "Pow beyond 64-bit shifts": (
        _pow(2.0, exponent_bits=16.0),
        r"pow2.*declared in \[-32768, 32767\]",
    ),
    "garbage range annotation": (
        _mul_by_k({"pikenas_range": "garbage"}),
        r"tensor 'k': pikenas_range",
    ),
    "reversed range annotation": (_mul_by_k({"pikenas_range": "5,-5"}), r"pikenas_range must be"),
    "huge range annotation": (_mul_by_k({"pikenas_range": "0," + "9" * 40}), r"pikenas_range"),
    "negative bits annotation": (
        _mul_by_k({"pikenas_range": "0,3", "pikenas_bits": "-7"}),
        r"pikenas_bits must be",
    ),
    "pool kernel 0": (
        ([helper.make_node("MaxPool", ["x"], ["y"], name="p", kernel_shape=[0, 0])], []),
        r"node p \(MaxPool\): kernel sizes must be",
    ),
    "pool kernel larger than its input": (
        ([helper.make_node("MaxPool", ["x"], ["y"], name="p", kernel_shape=[9, 9])], []),
        r"node p \(MaxPool\): its output shape .* is empty",
    ),
    "pool stride 0": (
        (
            [
                helper.make_node(
                    "AveragePool", ["x"], ["y"], name="p", kernel_shape=[2, 2], strides=[0, 0]
                )
            ],
            [],
        ),
        r"node p \(AveragePool\): strides must be",
    ),
    "huge tile": (
        (
            [
                helper.make_node("Relu", ["x"], ["r"]),
                helper.make_node("Tile", ["r", "n"], ["y"], name="t"),
            ],
            [numpy_helper.from_array(np.array([1, 1, 10**6, 10**6], np.int64), "n")],
        ),
        r"node t \(Tile\): its output .* elements per sample",
    ),
    "reshape that cannot be": (
        (
            [
                helper.make_node("Relu", ["x"], ["r"]),
                helper.make_node("Reshape", ["r", "n"], ["y"], name="rs"),
            ],
            [numpy_helper.from_array(np.array([1, -7, 3], np.int64), "n")],
        ),
        r"node rs \(Reshape\): cannot reshape",
    ),
}


@pytest.mark.parametrize(("case", "message"), CASES.values(), ids=CASES.keys())
def test_an_invalid_graph_is_refused_naming_the_problem(case: tuple, message: str) -> None:
    with pytest.raises(OnnxImportError, match=message) as caught:
        count_onnx(_model(*case))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "name", ["stride 0", "string initializer", "absurd bit width", "huge tile"]
)
def test_the_cli_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(_model(*CASES[name][0]), str(path))
    assert main(["ace", str(path), "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "internal error" not in err, err
    assert err.startswith(f"pikenas: error: {path}: ")


def test_control_characters_in_node_names_cannot_forge_lines() -> None:
    node = helper.make_node("Softmax", ["x"], ["y"], name="a\nFORGED\x1b[2J")
    with pytest.raises(OnnxImportError) as caught:
        count_onnx(_model([node], []))
    assert "a\\x0aFORGED\\x1b[2J" in str(caught.value) and "\n" not in str(caught.value)


def test_a_valid_graph_still_prices() -> None:
    assert count_onnx(_model(*_conv())).macs == 16


def test_a_power_of_two_multiplier_is_a_shift_over_its_declared_range() -> None:
    """``Mul(q, Pow(2, a))`` is a shift; a ``Clip`` of the exponent codes narrows their range to
    [-3, 0] (no left shift: the shifted INT4 codes stay in [-8, 7]); without it the Quant's INT4
    range [-8, 7] allows left shifts by 7 (results in [-1024, 896])."""

    def shifted(clip: bool) -> tuple[int, int]:
        program = import_onnx(_model(*_pow(2.0, clip=clip)))
        (op,) = [o for o in program.ops if o.op == "shift"]
        return program.values[op.output].lo, program.values[op.output].hi  # type: ignore[return-value]

    assert shifted(clip=True) == (-8, 7)
    assert shifted(clip=False) == (-1024, 896)


def test_a_clip_of_constants_keeps_real_values() -> None:
    """A clip of a scaled Quant's codes clips the real values (0.5 here: a float weight, not an
    all-ones sum window), and fractional bounds make a float constant, not an integer one."""
    weight = numpy_helper.from_array(np.full((1, 1, 1, 1), 0.5, np.float32), "w")
    nodes = [
        _quant("x", "q"),
        helper.make_node("Quant", ["w", "s", "z", "b4"], ["wq"], domain=QONNX_DOMAIN, signed=1),
        helper.make_node("Clip", ["wq", "lo", "hi"], ["wc"]),
        helper.make_node("Conv", ["q", "wc"], ["y"], kernel_shape=[1, 1]),
    ]
    program = import_onnx(_model(nodes, [*_scalars(**BASE, lo=-4.0, hi=4.0), weight]))
    assert [op.op.value for op in program.ops][-1] == "conv"
    bias = numpy_helper.from_array(np.array(-7.0, np.float32), "c")
    nodes = [
        _quant("x", "q"),
        helper.make_node("Quant", ["c", "one", "z", "b8"], ["cq"], domain=QONNX_DOMAIN, signed=1),
        helper.make_node("Clip", ["cq", "lo", "hi"], ["cc"]),
        helper.make_node("Add", ["q", "cc"], ["y"]),
    ]
    program = import_onnx(_model(nodes, [*_scalars(**BASE, b8=8.0, lo=-2.5, hi=2.5), bias]))
    add = next(op for op in program.ops if op.op.value == "add")
    assert program.values[add.output].dtype == "float"
