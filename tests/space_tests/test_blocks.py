"""PikeLPN blocks, output stages and build_model: forward/backward, meta device, declared
inference ops worked out by hand (docs/ace_v2_rules.md), determinism, channels_last and ONNX
export."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from space.activations import ACTIVATIONS, make_activation
from space.arch import ArchConfig, ConvQuantSpec, ConvStemSpec, HeadSpec, PikeBlockSpec
from space.blocks import GlobalAvgPoolQuant, PikeBlock, ResidualAdd
from space.build import build_model
from space.costs import CostContainer, CostDeclaration, Op
from space.layers import QuantConv2d, QuantLinear
from space.norms import BatchNormStage, QuantNormStage

torch.set_num_threads(1)

F = 32  # float width


def _ops(module: nn.Module, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> set:
    return set(module.inference_ops(input_shape, output_shape).ops)


# ---- declarations worked out by hand ---------------------------------------------------------


def test_conv_macs_and_accumulator() -> None:
    depthwise = QuantConv2d(2, 2, 3, groups=2, weight_bits=4, input_bits=8)
    # 1 * 4*4 outputs * 2 channels * (2/2) * 3*3 = 288 MACs; A = 4 + 8 + ceil(log2 9) = 16
    assert depthwise.accumulator_bits == 16
    declared = depthwise.inference_ops((1, 2, 4, 4), (1, 2, 4, 4))
    assert declared.ops == (Op("mac", 288, 4, 8, False, "conv"),)
    assert declared.params == 18
    pointwise = QuantConv2d(2, 3, 1, weight_bits=4, input_bits=4)
    assert pointwise.accumulator_bits == 9
    assert pointwise.inference_ops((2, 2, 4, 4), (2, 3, 4, 4)).ops == (
        Op("mac", 2 * 16 * 3 * 2, 4, 4, False, "conv"),
    )
    strided = QuantConv2d(3, 4, 3, stride=2, weight_bits=8, input_bits=32)
    assert strided.is_float and strided.accumulator_bits == 32
    out = strided(torch.zeros(1, 3, 5, 5))
    assert out.shape == (1, 4, 3, 3)
    assert strided.inference_ops((1, 3, 5, 5), tuple(out.shape)).ops == (
        Op("mac", 9 * 4 * 3 * 9, F, F, True, "conv"),
    )


def test_linear_macs_dequantize_and_bias() -> None:
    linear = QuantLinear(3, 5, weight_bits=8, input_bits=8)
    declared = linear.inference_ops((1, 3), (1, 5))
    assert declared.ops == (
        Op("mac", 15, 8, 8, False, "linear"),
        Op("mul", 5, F, F, True, "dequantize"),
        Op("add", 5, F, F, True, "bias"),
    )
    assert declared.params == 20
    float_linear = QuantLinear(3, 5, weight_bits=32, weight_quantizer="float", input_bits=32)
    assert float_linear.inference_ops((2, 3), (2, 5)).ops == (
        Op("mac", 30, F, F, True, "linear"),
        Op("add", 10, F, F, True, "bias"),
    )


SHAPE = (1, 2, 4, 4)  # E = 32


def test_float_bn_after_integer_conv() -> None:
    stage = BatchNormStage(2, activation="relu", activation_bits=4)
    declared = stage.inference_ops(SHAPE, SHAPE)
    assert set(declared.ops) == {
        Op("mul", 32, F, F, True, "dequantize"),
        Op("mul", 32, F, F, True, "bn_scale"),
        Op("add", 32, F, F, True, "bn_shift"),
        Op("compare", 32, F, F, True, "relu"),
        Op("mul", 32, F, F, True, "requant_scale"),
        Op("round", 32, F, F, True, "round"),
        Op("compare", 64, F, F, True, "clip"),
    }
    assert len(declared.ops) == 7
    assert declared.elements == {"batchnorm": 32, "relu": 32, "requantize": 32}


def test_float_bn_binary_output_is_a_sign() -> None:
    stage = BatchNormStage(2, activation="none", activation_bits=1)
    assert _ops(stage, SHAPE, SHAPE) == {
        Op("mul", 32, F, F, True, "dequantize"),
        Op("mul", 32, F, F, True, "bn_scale"),
        Op("add", 32, F, F, True, "bn_shift"),
        Op("compare", 32, F, F, True, "sign"),
    }


def test_float_network_stage() -> None:
    stage = BatchNormStage(2, activation="prelu", activation_bits=32, input_is_float=True)
    declared = stage.inference_ops(SHAPE, SHAPE)
    assert set(declared.ops) == {
        Op("mul", 32, F, F, True, "bn_scale"),
        Op("add", 32, F, F, True, "bn_shift"),
        Op("compare", 32, F, F, True, "select"),
        Op("mul", 32, F, F, True, "slope"),
    }
    assert declared.params == 2 * 2 + 2  # BN scale/shift + PReLU slope


def test_quantnorm_pow2() -> None:
    stage = QuantNormStage(2, activation="relu", activation_bits=4, scale_format="pow2",
                           accumulator_bits=16)  # fmt: skip
    declared = stage.inference_ops(SHAPE, SHAPE)
    assert declared.ops == (
        Op("shift", 32, 16, 16, False, "qn_shift"),
        Op("add", 32, 16, 16, False, "qn_bias"),
        Op("compare", 64, 16, 16, False, "clip"),
    )  # ReLU is the lower clip bound: free
    assert declared.elements == {"quantnorm": 32, "relu": 32, "requantize": 32}


def test_quantnorm_int8_with_prelu() -> None:
    stage = QuantNormStage(2, activation="prelu", activation_bits=4, scale_format="int8",
                           accumulator_bits=16)  # fmt: skip
    w = 24  # min(32, 16 + 8)
    assert _ops(stage, SHAPE, SHAPE) == {
        Op("mul", 32, 16, 8, False, "qn_mul"),
        Op("add", 32, w, w, False, "qn_bias"),
        Op("mul", 32, w, F, False, "rescale"),
        Op("compare", 32, w, w, False, "select"),
        Op("mul", 32, w, 8, False, "slope"),
        Op("compare", 64, w, w, False, "clip"),
    }


def test_quantnorm_float32_binary_output() -> None:
    stage = QuantNormStage(2, activation="none", activation_bits=1, scale_format="float32",
                           accumulator_bits=12)  # fmt: skip
    assert _ops(stage, SHAPE, SHAPE) == {
        Op("mul", 32, 12, F, True, "qn_mul"),
        Op("add", 32, F, F, True, "qn_bias"),
        Op("round", 32, F, F, True, "round"),
        Op("compare", 32, F, F, True, "sign"),
    }


def test_quantnorm_pow2_dprelu_uses_shifts() -> None:
    stage = QuantNormStage(2, activation="dprelu", activation_bits=8, scale_format="pow2",
                           accumulator_bits=20)  # fmt: skip
    declared = stage.inference_ops(SHAPE, SHAPE)
    assert set(declared.ops) == {
        Op("shift", 32, 20, 20, False, "qn_shift"),
        Op("add", 32, 20, 20, False, "qn_bias"),
        Op("add", 32, 20, 20, False, "bias_x"),
        Op("compare", 32, 20, 20, False, "select"),
        Op("shift", 32, 20, 20, False, "slope"),
        Op("add", 32, 20, 20, False, "bias_y"),
        Op("compare", 64, 20, 20, False, "clip"),
    }
    assert declared.params == 2 * 2 + 4 * 2


@pytest.mark.parametrize("kind", ACTIVATIONS.names())
def test_standalone_activation_declarations(kind: str) -> None:
    activation = make_activation(kind, 2)
    expected = {
        "relu": [Op("compare", 32, F, F, True, "relu")],
        "prelu": [Op("compare", 32, F, F, True, "select"), Op("mul", 32, F, F, True, "slope")],
        "dprelu": [
            Op("add", 32, F, F, True, "bias_x"),
            Op("compare", 32, F, F, True, "select"),
            Op("mul", 32, F, F, True, "slope"),
            Op("add", 32, F, F, True, "bias_y"),
        ],
        "none": [],
    }[kind]
    declared = activation.inference_ops(SHAPE, SHAPE)
    assert list(declared.ops) == expected
    assert declared.elements == ({} if kind == "none" else {kind: 32})


def test_dprelu_function() -> None:
    dprelu = make_activation("dprelu", 1)
    with torch.no_grad():
        dprelu.bias_x.fill_(1.0)
        dprelu.bias_y.fill_(0.5)
        dprelu.pos_slope.fill_(2.0)
    x = torch.tensor([[3.0], [0.0]])  # u = 2 -> 2*2 - 0.5; u = -1 -> 0.25*-1 - 0.5
    assert dprelu(x).flatten().tolist() == [3.5, -0.75]


def test_residual_and_pool_declarations() -> None:
    residual = ResidualAdd(4, signed=False)
    assert residual.inference_ops((1, 3, 4, 4), (1, 3, 4, 4)).ops == (
        Op("add", 48, 4, 4, False, "residual"),
        Op("compare", 96, 5, 5, False, "clip"),
    )
    assert ResidualAdd(32, signed=True).inference_ops((1, 3, 2, 2), (1, 3, 2, 2)).ops == (
        Op("add", 12, F, F, True, "residual"),
    )
    pool = GlobalAvgPoolQuant(4, 8)
    # 4x4 map: Ab = 4 + log2(16) = 8, the 1/16 is a shift
    assert pool.inference_ops((1, 3, 4, 4), (1, 3)).ops == (
        Op("add", 48, 8, 8, False, "pool_sum"),
        Op("shift", 3, 8, 8, False, "pool_scale"),
        Op("mul", 3, F, F, True, "requant_scale"),
        Op("round", 3, F, F, True, "round"),
        Op("compare", 6, F, F, True, "clip"),
    )
    # 3x3 map: Ab = 4 + ceil(log2 9) = 8, 1/9 is a float multiply; float head input: no quantizer
    assert GlobalAvgPoolQuant(4, 32).inference_ops((2, 3, 3, 3), (2, 3)).ops == (
        Op("add", 54, 8, 8, False, "pool_sum"),
        Op("mul", 6, F, F, True, "pool_scale"),
    )


# ---- every block configuration -------------------------------------------------------------

FAMILY_BITS = [("uniform", 4), ("pow2", 3), ("binary", 1), ("ternary", 2), ("float", 32),
               ("uniform", 8)]  # fmt: skip
ACTIVATION_BITS = [1, 2, 4, 8, 32]
BLOCK_CASES = [
    (norm, scale_format, activation, index)
    for index, (norm, scale_format, activation) in enumerate(
        itertools.product(
            ["batchnorm", "quantnorm"],
            ["float32", "int16", "int8", "int4", "pow2"],
            ["relu", "prelu", "dprelu", "none"],
        )
    )
]


def _block_spec(norm: str, scale_format: str, activation: str, index: int) -> PikeBlockSpec:
    dw_family, dw_bits = FAMILY_BITS[index % len(FAMILY_BITS)]
    pw_family, pw_bits = FAMILY_BITS[(index + 2) % len(FAMILY_BITS)]
    return PikeBlockSpec(
        out_channels=4,
        stride=1 + index % 2,
        kernel_size=(3, 5, 1, 7)[index % 4],
        residual=index % 2 == 0,
        depthwise=ConvQuantSpec(
            weight_bits=dw_bits,
            weight_quantizer=dw_family,
            weight_granularity=("per_channel", "per_tensor")[index % 2],
        ),
        pointwise=ConvQuantSpec(weight_bits=pw_bits, weight_quantizer=pw_family),
        activation_bits=ACTIVATION_BITS[index % len(ACTIVATION_BITS)],
        activation=activation,
        norm=norm,
        scale_format=scale_format,
    )


@pytest.mark.parametrize(("norm", "scale_format", "activation", "index"), BLOCK_CASES)
def test_block_forward_backward(norm: str, scale_format: str, activation: str, index: int) -> None:
    torch.manual_seed(index)
    spec = _block_spec(norm, scale_format, activation, index)
    block = PikeBlock(spec, 4, input_bits=8)
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    y = block(x)
    size = math.ceil(6 / spec.stride)
    assert y.shape == (2, 4, size, size)
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    grads = [p.grad for p in block.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert block.depthwise.weight.grad is not None and block.pointwise.weight.grad is not None
    if spec.activation_bits < 32:
        assert len(torch.unique(y.detach())) <= 2**spec.activation_bits
    block.eval()
    assert torch.isfinite(block(x)).all()
    # DHQ: the two convs carry their own quantizers
    assert block.depthwise.weight_quantizer.family == spec.depthwise.weight_quantizer
    assert block.pointwise.weight_quantizer.family == spec.pointwise.weight_quantizer


def _arch(index: int = 0, resolution: int = 8, **block_changes: object) -> ArchConfig:
    blocks = [
        _block_spec(norm, fmt, act, i).model_copy(update={"residual": False, **block_changes})
        for norm, fmt, act, i in BLOCK_CASES[index : index + 3]
    ]
    return ArchConfig(
        input_channels=3,
        resolution=resolution,
        num_classes=5,
        stem=ConvStemSpec(out_channels=4, stride=1, norm="quantnorm", scale_format="pow2"),
        blocks=blocks,
        head=HeadSpec(),
    )


def _declared_total(model: nn.Module, x: torch.Tensor) -> tuple[CostDeclaration, list[str]]:
    """Sum the declarations of the outermost declaring modules (what the ACE counter does),
    and list modules that are neither declared, inside a declaring module, nor containers."""
    shapes: dict[str, tuple] = {}
    hooks = []
    for name, module in model.named_modules():
        if hasattr(module, "inference_ops"):

            def hook(mod, args, out, name=name):  # noqa: ANN001, ANN202
                shapes[name] = (tuple(args[0].shape), tuple(out.shape))

            hooks.append(module.register_forward_hook(hook))
    model(x)
    for handle in hooks:
        handle.remove()
    total, undeclared, covered = CostDeclaration(), [], []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in covered):
            continue
        if hasattr(module, "inference_ops"):
            covered.append(name)
            total = total + module.inference_ops(*shapes[name])
        elif not isinstance(module, CostContainer | nn.ModuleList):
            undeclared.append(name)
    return total, undeclared


@pytest.mark.parametrize("index", [0, 7, 20, 33])
def test_model_is_fully_declared(index: int) -> None:
    model = build_model(_arch(index))
    total, undeclared = _declared_total(model, torch.zeros(1, 3, 8, 8))
    assert undeclared == []
    assert total.params == sum(p.numel() for n, p in model.named_parameters() if "scale" not in n)
    assert any(op.op == "mac" for op in total.ops)


def test_declarations_scale_with_batch() -> None:
    model = build_model(_arch(4))
    one, _ = _declared_total(model, torch.zeros(1, 3, 8, 8))
    three, _ = _declared_total(model, torch.zeros(3, 3, 8, 8))
    assert [3 * op.count for op in one.ops] == [op.count for op in three.ops]
    assert one.params == three.params


@pytest.mark.parametrize("index", [0, 11, 25])
def test_build_model_forward_backward(index: int) -> None:
    arch = _arch(index)
    model = build_model(arch)
    x = torch.randn(3, 3, 8, 8)
    logits = model(x)
    assert logits.shape == (3, 5) and logits.dtype == torch.float32
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    assert model.stem.conv.weight.grad is not None


def test_build_model_on_meta_device() -> None:
    arch = _arch(2, resolution=224)
    model = build_model(arch, device="meta")
    assert all(p.device.type == "meta" for p in model.parameters())
    logits = model(torch.empty(1, 3, 224, 224, device="meta"))
    assert logits.shape == (1, 5) and logits.device.type == "meta"
    with torch.device("meta"):
        other = build_model(arch)
    assert next(other.parameters()).device.type == "meta"


def test_build_model_is_deterministic_and_leaves_the_rng_alone() -> None:
    arch = _arch(5)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first, second = build_model(arch).state_dict(), build_model(arch).state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    third = build_model(arch, seed=1).state_dict()
    assert not torch.equal(first["stem.conv.weight"], third["stem.conv.weight"])


def test_channels_last_matches_contiguous() -> None:
    model = build_model(_arch(9)).eval()
    x = torch.randn(2, 3, 8, 8)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected)


def test_quantnorm_matches_batchnorm_statistics() -> None:
    torch.manual_seed(0)
    quantnorm = QuantNormStage(3, activation="none", activation_bits=32, scale_format="float32")
    batchnorm = nn.BatchNorm2d(3)
    x = torch.randn(4, 3, 5, 5) * 2 + 1
    torch.testing.assert_close(quantnorm(x), batchnorm(x), atol=1 / 256, rtol=0)
    torch.testing.assert_close(quantnorm.running_mean, batchnorm.running_mean)
    torch.testing.assert_close(quantnorm.running_var, batchnorm.running_var)
    quantnorm.eval(), batchnorm.eval()
    torch.testing.assert_close(quantnorm(x), batchnorm(x), atol=1 / 256, rtol=0)


def test_quantnorm_pow2_multiplier_is_a_power_of_two() -> None:
    stage = QuantNormStage(4, activation_bits=4, scale_format="pow2", accumulator_bits=12)
    multiplier, bias = stage.folded(torch.randn(8, 4, 3, 3) * 3)
    exponents = torch.log2(multiplier.abs())
    assert torch.equal(exponents, torch.round(exponents))
    grid = stage.requantizer.quantized_scale() / 256
    torch.testing.assert_close(bias / grid, torch.round(bias / grid))


@pytest.mark.slow
def test_onnx_export_matches_onnxruntime(tmp_path) -> None:  # noqa: ANN001
    onnxruntime = pytest.importorskip("onnxruntime")
    arch = ArchConfig(
        input_channels=3,
        resolution=8,
        num_classes=4,
        stem=ConvStemSpec(out_channels=4, stride=1, norm="quantnorm", scale_format="pow2"),
        blocks=(
            PikeBlockSpec(
                out_channels=4,
                residual=True,
                depthwise=ConvQuantSpec(weight_bits=4, weight_quantizer="pow2"),
                pointwise=ConvQuantSpec(weight_bits=4, weight_granularity="per_tensor"),
                activation_bits=4,
                activation="dprelu",
                norm="quantnorm",
                scale_format="int8",
            ),
            PikeBlockSpec(
                out_channels=6,
                stride=2,
                depthwise=ConvQuantSpec(weight_bits=2, weight_quantizer="ternary"),
                pointwise=ConvQuantSpec(weight_bits=1, weight_quantizer="binary"),
                activation_bits=3,  # 1-bit signs of near-zero sums can flip between runtimes
                activation="prelu",
                norm="batchnorm",
            ),
        ),
    )
    model = build_model(arch).eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True, verbose=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (result,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert abs(result - expected).max() <= 1e-4


@pytest.mark.parametrize("scale_format", ["pow2", "int4", "float32"])
def test_quantnorm_training_forward_is_the_folded_affine(scale_format: str) -> None:
    """Training goes through the fused BN kernel; its output must equal requant(m_q x + c_q)."""
    torch.manual_seed(1)
    stage = QuantNormStage(3, activation="none", activation_bits=32, scale_format=scale_format)
    with torch.no_grad():
        stage.weight.uniform_(0.5, 2.0)
        stage.bias.uniform_(-1.0, 1.0)
    x = torch.randn(4, 3, 5, 5) * 3 + 0.5
    multiplier, bias = stage.folded(x)
    expected = x * multiplier.view(1, 3, 1, 1) + bias.view(1, 3, 1, 1)
    y = stage(x.requires_grad_(True))
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    y.sum().backward()
    assert stage.weight.grad is not None and stage.bias.grad is not None
    torch.testing.assert_close(stage.bias.grad, torch.full((3,), 100.0))
