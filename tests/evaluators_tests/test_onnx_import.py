"""``pikenas ace MODEL.onnx``: ACE v2 of graphs we did not build, hand-counted; strict refusal of
what it cannot price; our own exports priced exactly as natively (tests/results_tests/test_qonnx.py
does every zoo model and random candidates)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from pikenas.evaluators.cost import count_ace, count_onnx
from pikenas.search.cli import app
from pikenas.space.nn.build import build_model
from pikenas.space.program.onnx.export_onnx import program_to_onnx
from pikenas.space.program.onnx.export_qonnx import QONNX_DOMAIN, program_to_qonnx
from pikenas.space.program.onnx.importer import OnnxImportError, import_onnx
from pikenas.space.zoo.catalog import get_zoo_arch

torch.set_num_threads(1)


def _brevitas_net(tmp_path):  # noqa: ANN001, ANN202
    """8x8x1 input -> QuantIdentity 8 bit -> QuantConv2d 1->4 3x3 pad 1, 4-bit weights -> BN ->
    QuantReLU 4 bit -> MaxPool 2 -> flatten -> QuantLinear 64->10, 4-bit weights, bias."""
    brevitas_nn = pytest.importorskip("brevitas.nn")
    pytest.importorskip("onnxoptimizer")
    from brevitas.export import export_qonnx
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = brevitas_nn.QuantIdentity(bit_width=8, return_quant_tensor=True)
            self.conv = brevitas_nn.QuantConv2d(1, 4, 3, padding=1, bias=False, weight_bit_width=4)
            self.bn = nn.BatchNorm2d(4)
            self.relu = brevitas_nn.QuantReLU(bit_width=4, return_quant_tensor=True)
            self.pool = nn.MaxPool2d(2)
            self.fc = brevitas_nn.QuantLinear(64, 10, bias=True, weight_bit_width=4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.pool(self.relu(self.bn(self.conv(self.inp(x)))))
            return self.fc(torch.flatten(x, 1))

    torch.manual_seed(0)
    path = tmp_path / "brevitas.onnx"
    export_qonnx(Net().eval(), torch.randn(1, 1, 8, 8), export_path=str(path))
    return path


def test_a_brevitas_cnn_costs_what_a_hand_count_gives(tmp_path) -> None:  # noqa: ANN001
    report = count_onnx(_brevitas_net(tmp_path))
    # Hand count, DESIGN.md's table (float operands at 32 bits):
    # input Quant (64 px): x/s 64 x 32*32 + clip 2*64 x 32 + round 64 x 32 = 65,536 + 4,096 + 2,048
    # conv: 4 ch x 64 px x 9 taps = 2,304 MACs at 4 x 8 bits = 73,728
    # BN -> ReLU -> Quant 4 bit, in its cheapest form (as our own float BN): one multiply by
    # M / s (the conv's dequantization, the BN and the quantizer's 1 / s folded), one add of
    # H / s, one clip to [0, 15] (the ReLU's bound inside the quantizer's), the rounding:
    # 256 x (32*32 + 32 + 2 x 32 + 32) = 256 x 1,152 = 262,144 + 8,192 + 16,384 + 8,192
    # MaxPool 2x2: 64 outputs x 3 compares x 4 bits = 768
    # linear: 640 MACs x 4*4 = 10,240; dequantize 10 x 32*32 = 10,240; bias 10 x 32 = 320
    assert report.macs == 2_304 + 640
    assert report.ace_v1 == 73_728 + 10_240
    assert report.ace_v2 == 461_888
    assert report.op_totals == {
        "mac": 83_968,
        "mul": 65_536 + 262_144 + 10_240,
        "add": 8_192 + 320,
        "round": 2_048 + 8_192,
        "compare": 4_096 + 16_384 + 768,
    }


def test_the_cli_prints_the_same_report_as_json_for_a_brevitas_graph(tmp_path) -> None:  # noqa: ANN001
    path = _brevitas_net(tmp_path)
    result = CliRunner().invoke(app, ["ace", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["ace_v2"] == 461_888 and data["archid"] is None
    assert {row["op"] for row in data["breakdown"]} == {"mac", "mul", "add", "round", "compare"}
    table = CliRunner().invoke(app, ["ace", str(path)])
    assert table.exit_code == 0 and "461,888" in table.output


def _graph(nodes: list, initializers: list, shape=(1, 1, 4, 4), out=(1, 1, 4, 4)):  # noqa: ANN001, ANN202
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out))],
        initializers,
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(QONNX_DOMAIN, 1)]
    )


def _scalars(**values: float) -> list:
    return [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in values.items()]


def test_a_qonnx_graph_made_by_hand() -> None:
    """Quant(x, 0.5, 0, 4 bits) -> Conv with Quant'ed 2-bit weights -> Relu: 16 pixels.

    input Quant: 16 x (mul 32*32 + 2 compares x 32 + round 32) = 16,384 + 1,024 + 512;
    conv 1x1 1->1: 16 MACs at 2 x 4 = 128; ReLU on the integer accumulator (codes up to
    1 x 8: range +-8, 5 bits): 16 compares x 5 = 80; the output in real units: a dequantize
    multiply 16 x 32*32 = 16,384."""
    weights = numpy_helper.from_array(np.full((1, 1, 1, 1), 0.3, np.float32), "w")
    nodes = [
        helper.make_node(
            "Quant", ["x", "s", "z", "b4"], ["q"], domain=QONNX_DOMAIN, signed=1, narrow=0
        ),
        helper.make_node(
            "Quant", ["w", "one", "z", "b2"], ["wq"], domain=QONNX_DOMAIN, signed=1, narrow=1
        ),
        helper.make_node("Conv", ["q", "wq"], ["acc"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["acc"], ["y"]),
    ]
    model = _graph(nodes, [weights, *_scalars(s=0.5, z=0.0, b4=4.0, one=1.0, b2=2.0)])
    report = count_onnx(model)
    assert report.ace_v1 == 128
    assert report.ace_v2 == 16_384 + 1_024 + 512 + 128 + 80 + 16_384


def test_our_export_costs_exactly_the_native_count() -> None:
    arch = get_zoo_arch("tiny-pikelpn")
    program = build_model(arch, seed=0).eval().program()
    imported = count_ace(import_onnx(program_to_qonnx(program)))
    native = count_ace(arch)
    assert imported.to_dict()["breakdown"] and imported.ace_v2 == native.ace_v2
    assert (imported.ace_v1, imported.macs, imported.params) == (
        native.ace_v1,
        native.macs,
        native.params,
    )


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ([helper.make_node("Softmax", ["x"], ["y"])], "Softmax"),
        (
            [helper.make_node("Mul", ["x", "x"], ["y"]), helper.make_node("Erf", ["y"], ["z"])],
            "Erf",
        ),
        ([helper.make_node("Relu", ["nowhere"], ["y"])], "not computed"),
        (
            [helper.make_node("Quant", ["x", "s", "zp", "b4"], ["y"], domain=QONNX_DOMAIN)],
            "zero point",
        ),
    ],
)
def test_what_cannot_be_priced_stops_the_count(nodes: list, message: str) -> None:
    model = _graph(nodes, _scalars(s=0.5, zp=3.0, b4=4.0))
    with pytest.raises(OnnxImportError, match=message):
        count_onnx(model)


def test_malformed_files_give_one_line_and_exit_2(tmp_path) -> None:  # noqa: ANN001
    runner = CliRunner()
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not a protobuf at all\xff" * 10)
    dynamic = tmp_path / "dynamic.onnx"
    model = _graph([helper.make_node("Relu", ["x"], ["y"])], [], shape=(1, 1, 0, 4))
    onnx.save(model, str(dynamic))
    unsupported = tmp_path / "softmax.onnx"
    onnx.save(_graph([helper.make_node("Softmax", ["x"], ["y"])], []), str(unsupported))
    for path, words in (
        (garbage, "not an ONNX model"),
        (tmp_path / "missing.onnx", "no such file"),
        (dynamic, "fixed C, H, W"),
        (unsupported, "cannot price node"),
    ):
        result = runner.invoke(app, ["ace", str(path)])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], result.output
        assert "Traceback" not in result.output


def _brevitas_tiny(tmp_path, kind: str):  # noqa: ANN001, ANN202
    """Our zoo's ``tiny-<kind>`` rebuilt in Brevitas from its recipe (same geometry, same bits,
    float BN + ReLU) and exported as QONNX: the graph we did not write."""
    brevitas_nn = pytest.importorskip("brevitas.nn")
    pytest.importorskip("onnxoptimizer")
    from brevitas.export import export_qonnx
    from torch import nn

    from pikenas.space.zoo.tiny import TINY_LAYOUT, TINY_PRECISIONS, TINY_STEM_CHANNELS

    recipe = TINY_PRECISIONS[kind][0]

    def relu(bits: int) -> nn.Module:
        return brevitas_nn.QuantReLU(bit_width=bits)

    def stage(conv: nn.Module, channels: int, bits: int) -> list[nn.Module]:
        return [conv, nn.BatchNorm2d(channels), relu(bits)]

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, residual: bool) -> None:
            super().__init__()
            dw, pw, bits = (
                recipe.depthwise.weight_bits,
                recipe.pointwise.weight_bits,
                recipe.activation_bits,
            )
            depthwise = brevitas_nn.QuantConv2d(
                cin, cin, 3, stride, 1, groups=cin, bias=False, weight_bit_width=dw
            )
            pointwise = brevitas_nn.QuantConv2d(cin, cout, 1, bias=False, weight_bit_width=pw)
            self.body = nn.Sequential(*stage(depthwise, cin, bits), *stage(pointwise, cout, bits))
            self.residual = relu(bits) if residual else None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.body(x)
            return self.residual(x + y) if self.residual is not None else y

    stem = brevitas_nn.QuantConv2d(
        1, TINY_STEM_CHANNELS, 3, 1, 1, bias=False, weight_bit_width=recipe.stem_conv.weight_bits
    )
    layers: list[nn.Module] = [
        brevitas_nn.QuantIdentity(bit_width=recipe.input_bits),
        *stage(stem, TINY_STEM_CHANNELS, recipe.stem_activation_bits),
    ]
    channels = TINY_STEM_CHANNELS
    for out_channels, stride, residual in TINY_LAYOUT:
        layers.append(Block(channels, out_channels, stride, residual))
        channels = out_channels
    layers += [
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        brevitas_nn.QuantIdentity(bit_width=recipe.head_input_bits, signed=False),
        brevitas_nn.QuantLinear(
            channels, 10, bias=True, weight_bit_width=recipe.head_linear.weight_bits
        ),
    ]
    net = nn.Sequential(*layers)
    with torch.no_grad():  # distinct activation scales, as after training
        relus = [m for m in net.modules() if isinstance(m, brevitas_nn.QuantReLU)]
        for index, module in enumerate(relus):
            scaling = module.act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl
            for tensor in (scaling.value, scaling.buffer):
                tensor.fill_(1.0 + index / 8)
    torch.manual_seed(0)
    path = tmp_path / f"brevitas-tiny-{kind}.onnx"
    export_qonnx(net.eval(), torch.randn(1, 1, 8, 8), export_path=str(path))
    return path


@pytest.mark.parametrize("kind", ["w8a8", "w4a4"])
def test_a_brevitas_rebuild_of_a_zoo_model_costs_what_ours_does(tmp_path, kind: str) -> None:  # noqa: ANN001
    """Same geometry, same bits, float BN + ReLU: the same arithmetic, so the same ACE v2
    (each BN -> ReLU -> Quant priced fused, the residual's requantization folded)."""
    foreign = count_onnx(_brevitas_tiny(tmp_path, kind))
    native = count_ace(get_zoo_arch(f"tiny-{kind}"))
    assert (foreign.macs, foreign.ace_v1) == (native.macs, native.ace_v1)
    assert foreign.op_totals == native.op_totals
    assert foreign.ace_v2 == native.ace_v2


def _stripped(model):  # noqa: ANN001, ANN202
    """``model`` without any pikenas annotation or metadata (QONNX's own ``finn_datatype``
    annotations kept: they are the graph's standard data types)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for annotation in model.graph.quantization_annotation:
        kept = [
            (e.key, e.value)
            for e in annotation.quant_parameter_tensor_names
            if not e.key.startswith("pikenas")
        ]
        annotation.ClearField("quant_parameter_tensor_names")
        for key, value in kept:
            entry = annotation.quant_parameter_tensor_names.add()
            entry.key, entry.value = key, value
    for node in model.graph.node:
        node.ClearField("metadata_props")
    return model


def _one_price(program) -> None:  # noqa: ANN001
    """The program, its model.onnx and its QONNX with every pikenas annotation and node
    metadata removed: the same breakdown, row for row (layer names aside)."""
    native = count_ace(program)
    plain = count_onnx(program_to_onnx(program))
    assert plain.to_dict()["breakdown"] == native.to_dict()["breakdown"]
    qonnx = program_to_qonnx(program)
    assert not [
        e.key
        for a in qonnx.graph.quantization_annotation
        for e in a.quant_parameter_tensor_names
        if e.key.startswith("pikenas")
    ]  # every declared range is in the graph's own nodes
    stripped = count_onnx(_stripped(qonnx))

    def rows(report):  # noqa: ANN001, ANN202
        return sorted(
            (r["op"], r["count"], r["bits_a"], r["bits_b"], r["float_operands"], r["cost"])
            for r in report.to_dict()["breakdown"]
        )

    assert rows(stripped) == rows(native)
    assert (stripped.ace_v2, stripped.ace_v1, stripped.macs) == (
        native.ace_v2,
        native.ace_v1,
        native.macs,
    )


@pytest.mark.parametrize(
    "name", ["tiny-float", "tiny-w8a8", "tiny-w4a4", "tiny-binary", "tiny-pikelpn"]
)
def test_our_model_onnx_and_stripped_qonnx_cost_what_the_program_does(name: str) -> None:
    """One price for one network: QuantNorm with pow2 DQ included (the bias range narrower than
    its INTn type is a Clip, the exponent range of each power-of-two multiplier is Pow(2, Clip
    of its codes))."""
    _one_price(build_model(get_zoo_arch(name), seed=0).eval().program())


@pytest.mark.parametrize("config", [None, "configs/fashion_mnist.yaml"])
def test_random_candidates_have_one_price_without_annotations(config: str | None) -> None:
    """Random candidates of the default and Fashion-MNIST spaces (pow2 / int8 / float32 DQ,
    PReLU and DPReLU slopes, pow2 weights, residuals): one price with annotations stripped."""
    from pikenas.search.config import load_config
    from tests._random_trial import RandomTrial

    root = Path(__file__).resolve().parents[2]
    space = load_config(None if config is None else root / config).space
    for seed in range(4):
        _one_price(build_model(space.suggest(RandomTrial(seed)), seed=seed).eval().program())


def test_a_wide_accumulator_split_into_weight_digits_is_priced_once() -> None:
    """model.onnx writes an integer linear whose partial sums pass 2^24 as exact float32
    products of weight digits; pikenas ace prices the one operation of the program."""
    from pikenas.space.program.builder import ProgramBuilder

    builder = ProgramBuilder(with_constants=True)
    x = builder.input((1, 32, 32))
    codes = builder.round(builder.clip(x, 0.0, 255.0, kind="input"), 0, 255, kind="input")
    flat = builder.reshape("flatten", codes, (1024,))
    weights = np.full((3, 1024), 127, dtype=np.int64)
    weights[1] = -128
    w = builder.constant("w", weights, shape=(3, 1024), dtype="int", lo=-128, hi=127)
    program = builder.program(x, builder.linear(flat, w), "wide")
    model = program_to_onnx(program)
    assert sum(node.op_type == "Gemm" for node in model.graph.node) > 1  # split into digits
    imported, native = count_onnx(model), count_ace(program)
    assert imported.to_dict()["breakdown"] == native.to_dict()["breakdown"]
    images = np.random.default_rng(0).uniform(0, 300, (2, 1, 32, 32)).astype(np.float32)
    import onnxruntime

    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    np.testing.assert_array_equal(
        session.run(["logits"], {"input": images})[0],
        program.run(images).output.astype(np.float32),  # (float32 logits)
    )


def test_the_cli_prices_a_bundles_model_onnx(tmp_path) -> None:  # noqa: ANN001
    program = build_model(get_zoo_arch("tiny-w4a4"), seed=0).eval().program()
    path = tmp_path / "model.onnx"
    onnx.save(program_to_onnx(program), str(path))
    result = CliRunner().invoke(app, ["ace", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["ace_v2"] == count_ace(get_zoo_arch("tiny-w4a4")).ace_v2


def test_a_shift_by_a_selected_amount_in_model_onnx() -> None:
    """A shift whose amount is a select of two constant amounts (a pow2 QuantNorm multiplier
    with a sign): model.onnx runs it exactly and pikenas ace prices it as the program."""
    from pikenas.space.program.builder import ProgramBuilder

    builder = ProgramBuilder(with_constants=True)
    x = builder.input((2, 3, 3))
    codes = builder.round(builder.clip(x, -8.0, 7.0, kind="input"), -8, 7, kind="input")
    up = builder.constant("a", np.array([[[2]], [[1]]]), shape=(2, 1, 1), dtype="int", lo=-3, hi=3)
    down = builder.constant(
        "b", np.array([[[-1]], [[-2]]]), shape=(2, 1, 1), dtype="int", lo=-3, hi=3
    )
    amount = builder.select(codes, up, down, kind="t")
    program = builder.program(x, builder.shift(codes, amount, kind="t"), "selected-shift")
    model = program_to_onnx(program)
    assert "Gather" not in {node.op_type for node in model.graph.node}
    assert count_onnx(model).to_dict()["breakdown"] == count_ace(program).to_dict()["breakdown"]
    import onnxruntime

    images = np.random.default_rng(3).uniform(-9, 9, (4, 2, 3, 3)).astype(np.float32)
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    np.testing.assert_array_equal(
        session.run(["logits"], {"input": images})[0], program.run(images).output
    )


def test_the_weight_width_is_declared_not_guessed_from_the_codes() -> None:
    """pow2 weights are a FloatQuant (FLOAT<b-1,0,1>), so the width ACE charges comes from the
    graph, not from the trained codes: sign-folded 8-bit uniform codes that all happen to be
    0 or +-2^e stay 9 bits; pow2 weights that are all 0 stay b bits."""
    arch = get_zoo_arch("tiny-pikelpn")
    program = build_model(arch, seed=0).eval().program()
    by_kind = {}
    for name, constant in program.constants.items():
        if constant.dtype != "int" or name not in program.arrays or "weight" not in name:
            continue
        magnitude = max(abs(constant.lo), abs(constant.hi))
        if constant.bits >= 3 and magnitude == 2 ** (2 ** (constant.bits - 1) - 2):
            by_kind.setdefault("pow2", name)
        elif magnitude == 2 ** (constant.bits - 2):
            by_kind.setdefault("folded", name)
    assert set(by_kind) == {"pow2", "folded"}
    generator = np.random.default_rng(0)
    folded = program.arrays[by_kind["folded"]]
    program.arrays[by_kind["folded"]] = generator.choice(
        [-16, -8, -1, 0, 1, 2, 16, 128], folded.shape
    ).astype(folded.dtype)
    program.arrays[by_kind["pow2"]] = np.zeros_like(program.arrays[by_kind["pow2"]])
    _one_price(program)


def test_wide_declared_ranges_are_float32_numbers() -> None:
    """A float32 graph can state a declared range beyond 2^24 only if it is a float32 number:
    the builder rounds such bounds outward (below 2^24 nothing changes)."""
    from pikenas.space.program.builder import ProgramBuilder, float32_bounds

    assert float32_bounds(-616_934_250, 2_764_417_898) == (-616_934_272, 2_764_418_048)
    constant = ProgramBuilder(with_constants=False).constant(
        "bias", None, shape=(3, 1, 1), dtype="int", lo=-616_934_250, hi=2_764_417_898
    )
    assert (constant.lo, constant.hi) == (-616_934_272, 2_764_418_048)
    assert float32_bounds(-(2**24), 2**24 - 1) == (-(2**24), 2**24 - 1)
    lo, hi = float32_bounds(-(2**40) - 3, 2**33 + 1)
    assert lo <= -(2**40) - 3 and hi >= 2**33 + 1
    assert float(np.float32(lo)) == lo and float(np.float32(hi)) == hi


def test_a_constant_in_minus_one_to_zero_is_not_a_sign() -> None:
    """qonnx runs a signed 1-bit Quant as a sign (0 -> +1): a constant declared [-1, 0] is
    written as INT2 (clipped), and qonnx computes what the program does."""
    pytest.importorskip("qonnx")
    from pikenas.results.export._qonnx_check import run_qonnx
    from pikenas.space.program.builder import ProgramBuilder

    builder = ProgramBuilder(with_constants=True)
    x = builder.input((2, 2, 2))
    codes = builder.round(builder.clip(x, 0.0, 15.0, kind="input"), 0, 15, kind="input")
    offset = builder.constant(
        "offset", np.array([0, -1]).reshape(2, 1, 1), shape=(2, 1, 1), dtype="int", lo=-1, hi=0
    )
    program = builder.program(x, builder.add(codes, offset, kind="bias"), "offsets")
    images = np.arange(16, dtype=np.float32).reshape(2, 2, 2, 2)
    assert np.array_equal(run_qonnx(program_to_qonnx(program), images), program.run(images).output)
    _one_price(program)
