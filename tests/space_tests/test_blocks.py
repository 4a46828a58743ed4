"""PikeLPN blocks, output stages and build_model: what each part lowers to (operation by
operation), training forward/backward for every block configuration, determinism, the meta
device, channels_last, QuantNorm's statistics and quantized multiplier, activations."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from pikenas.space.arch import ArchConfig, ConvQuantSpec, ConvStemSpec, HeadSpec, PikeBlockSpec
from pikenas.space.nn.activations import ACTIVATIONS, DPReLU, PReLU, make_activation
from pikenas.space.nn.blocks import PikeBlock
from pikenas.space.nn.build import build_model
from pikenas.space.nn.norms import QuantNormStage
from pikenas.space.program.builder import lower

torch.set_num_threads(1)


def _net(*blocks: PikeBlockSpec, stem: ConvStemSpec | None = None) -> ArchConfig:
    return ArchConfig(
        input_channels=1,
        resolution=4,
        num_classes=3,
        stem=stem or ConvStemSpec(out_channels=4, stride=1, activation_bits=8),
        blocks=blocks,
        head=HeadSpec(),
    )


def _block(**changes: object) -> PikeBlockSpec:
    base = {
        "out_channels": 4,
        "depthwise": ConvQuantSpec(weight_bits=4),
        "pointwise": ConvQuantSpec(weight_bits=4),
        "activation_bits": 4,
    }
    return PikeBlockSpec(**{**base, **changes})


def _ops(arch: ArchConfig, layer: str) -> list[tuple[str, str]]:
    """``(op, int | float)`` of one layer's operations, in order (shape-only lowering)."""
    program = lower(build_model(arch, device="meta"))
    return [(op.op, program.values[op.output].dtype) for op in program.ops if op.layer == layer]


# ---- what each part lowers to ---------------------------------------------------------------
def test_input_quantizer_is_a_float_multiply_clip_and_round() -> None:
    assert _ops(_net(_block()), "stem.input_quantizer") == [
        ("mul", "float"),
        ("clip", "float"),
        ("round", "int"),
    ]


def test_float_batch_norm_is_fused_into_one_multiply_and_add() -> None:
    # ReLU is the clip's lower bound; dequantize, BN and requantize scales are one multiply
    assert _ops(_net(_block()), "blocks.0.depthwise_stage") == [
        ("mul", "float"),
        ("add", "float"),
        ("clip", "float"),
        ("round", "int"),
    ]
    binary_prelu = _net(_block(activation="prelu", activation_bits=1))
    assert _ops(binary_prelu, "blocks.0.depthwise_stage") == [
        ("mul", "float"),
        ("add", "float"),
        ("select", "float"),
        ("mul", "float"),
        ("sign", "int"),
    ]
    dprelu = _net(_block(activation="dprelu"))
    assert _ops(dprelu, "blocks.0.pointwise_stage") == [
        ("mul", "float"),
        ("add", "float"),
        ("add", "float"),
        ("select", "float"),
        ("mul", "float"),
        ("add", "float"),
        ("clip", "float"),
        ("round", "int"),
    ]


def test_quantnorm_pow2_is_add_shift_clip() -> None:
    arch = _net(_block(norm="quantnorm", scale_format="pow2"))
    assert _ops(arch, "blocks.0.depthwise_stage") == [
        ("add", "int"),
        ("shift", "int"),
        ("clip", "int"),
    ]
    prelu = _net(_block(norm="quantnorm", scale_format="pow2", activation="prelu"))
    # the slope is a selected shift amount; bias_y and the rounding constant one add
    assert _ops(prelu, "blocks.0.depthwise_stage") == [
        ("add", "int"),
        ("select", "int"),
        ("shift", "int"),
        ("add", "int"),
        ("shift", "int"),
        ("clip", "int"),
    ]


def test_quantnorm_int8_multiplies_once_per_element() -> None:
    arch = _net(_block(norm="quantnorm", scale_format="int8", activation="dprelu"))
    assert _ops(arch, "blocks.0.pointwise_stage") == [
        ("mul", "int"),
        ("add", "int"),
        ("select", "int"),
        ("mul", "int"),
        ("add", "int"),
        ("shift", "int"),
        ("clip", "int"),
    ]


def test_quantnorm_float32_is_the_fused_float_form() -> None:
    arch = _net(_block(norm="quantnorm", scale_format="float32"))
    assert _ops(arch, "blocks.0.depthwise_stage") == _ops(
        _net(_block()), "blocks.0.depthwise_stage"
    )


def test_quantnorm_binary_output_is_the_sign_before_the_shift() -> None:
    arch = _net(_block(norm="quantnorm", scale_format="pow2", activation="none", activation_bits=1))
    assert _ops(arch, "blocks.0.depthwise_stage") == [("add", "int"), ("sign", "int")]


@pytest.mark.parametrize(
    ("scale_format", "expected"),
    [
        ("pow2", ["shift", "shift", "add", "add", "shift", "clip"]),
        ("int8", ["mul", "mul", "add", "add", "shift", "clip"]),
        ("float32", ["mul", "mul", "add", "clip", "round"]),
    ],
)
def test_residual_rescales_both_operands(scale_format: str, expected: list[str]) -> None:
    arch = _net(_block(residual=True, scale_format=scale_format, norm="quantnorm"))
    assert [op for op, _ in _ops(arch, "blocks.0.residual")] == expected


def test_residual_of_two_signs_is_an_integer_add_and_a_sign() -> None:
    stem = ConvStemSpec(out_channels=4, stride=1, activation_bits=1, activation="prelu")
    arch = _net(_block(residual=True, activation_bits=1, activation="prelu"), stem=stem)
    assert _ops(arch, "blocks.0.residual") == [("add", "int"), ("sign", "int")]


def test_head_sums_codes_then_requantizes_and_dequantizes_the_logits() -> None:
    arch = _net(_block())
    assert _ops(arch, "head.pool") == [
        ("sum", "int"),
        ("mul", "float"),
        ("flatten", "float"),
        ("clip", "float"),
        ("round", "int"),
    ]
    assert _ops(arch, "head.linear") == [("linear", "int"), ("mul", "float"), ("add", "float")]


def test_float_network_runs_float_convs() -> None:
    float_conv = ConvQuantSpec(
        weight_bits=32, weight_quantizer="float", weight_granularity="per_tensor"
    )
    arch = _net(
        _block(depthwise=float_conv, pointwise=float_conv, activation_bits=32),
        stem=ConvStemSpec(
            out_channels=4, stride=1, input_bits=32, conv=float_conv, activation_bits=32
        ),
    )
    program = lower(build_model(arch, device="meta"))
    convs = [op for op in program.ops if op.op == "conv"]
    assert convs and all(program.values[op.output].dtype == "float" for op in convs)
    assert all(not program.values[op.output].exact for op in convs)


# ---- every block configuration trains --------------------------------------------------------
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
    block = PikeBlock(spec, 4)
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    y, step = block(x, torch.tensor(0.05))
    size = math.ceil(6 / spec.stride)
    assert y.shape == (2, 4, size, size)
    assert (step is None) == (spec.activation_bits == 32)
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    grads = [p.grad for p in block.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert block.depthwise.weight.grad is not None and block.pointwise.weight.grad is not None
    if spec.activation_bits < 32:
        assert len(torch.unique(y.detach())) <= 2**spec.activation_bits
    # DHQ: the two convs carry their own quantizers
    assert block.depthwise.weight_quantizer.family == spec.depthwise.weight_quantizer
    assert block.pointwise.weight_quantizer.family == spec.pointwise.weight_quantizer


def _arch(index: int = 0, resolution: int = 8) -> ArchConfig:
    blocks = [
        _block_spec(norm, fmt, act, i).model_copy(update={"residual": False})
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


@pytest.mark.parametrize("index", [0, 11, 25])
def test_build_model_forward_backward_and_eval(index: int) -> None:
    arch = _arch(index)
    model = build_model(arch)
    x = torch.randn(3, 3, 8, 8)
    logits = model(x)
    assert logits.shape == (3, 5) and logits.dtype == torch.float32
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    assert model.stem.conv.weight.grad is not None
    model.eval()
    program_logits = model(x)
    assert program_logits.shape == (3, 5) and not program_logits.requires_grad
    expected = model.program().run(x.numpy()).output
    assert torch.equal(program_logits, torch.from_numpy(expected))


def test_eval_forward_follows_the_weights() -> None:
    model = build_model(_arch(3)).eval()
    x = torch.randn(2, 3, 8, 8)
    before = model(x)
    with torch.no_grad():
        model.head.linear.bias.add_(1.0)
    torch.testing.assert_close(model(x), before + 1.0)


def test_build_model_on_the_meta_device_lowers_without_constants() -> None:
    arch = _arch(2, resolution=224)
    model = build_model(arch, device="meta")
    assert all(p.device.type == "meta" for p in model.parameters())
    program = lower(model)
    assert program.constants and not program.arrays
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
    model = build_model(_arch(9))
    x = torch.randn(2, 3, 8, 8)
    expected_train = model(x)
    model.eval()
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    assert torch.equal(model(x.to(memory_format=torch.channels_last)), expected)
    model.train()
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected_train)


# ---- QuantNorm ---------------------------------------------------------------------------------
def test_quantnorm_float32_matches_batchnorm_statistics() -> None:
    torch.manual_seed(0)
    quantnorm = QuantNormStage(3, activation="none", activation_bits=32, scale_format="float32")
    batchnorm = nn.BatchNorm2d(3)
    x = torch.randn(4, 3, 5, 5) * 2 + 1
    torch.testing.assert_close(quantnorm(x), batchnorm(x))
    torch.testing.assert_close(quantnorm.running_mean, batchnorm.running_mean)
    torch.testing.assert_close(quantnorm.running_var, batchnorm.running_var)
    quantnorm.eval(), batchnorm.eval()
    torch.testing.assert_close(quantnorm(x), batchnorm(x))


@pytest.mark.parametrize("scale_format", ["pow2", "int4"])
def test_quantnorm_training_forward_is_the_quantized_affine(scale_format: str) -> None:
    """Training goes through the fused BN kernel; its output must be ``x * m_eff + b_q`` with
    the program's multiplier (pow2: a power of two per channel, int4: 4-bit integers times one
    power of two, in units of the accumulator) and its bias on the accumulator grid."""
    from pikenas.space.nn._requant import integer_plan

    torch.manual_seed(1)
    stage = QuantNormStage(
        3, activation="none", activation_bits=8, scale_format=scale_format, accumulator_bound=2**12
    )
    with torch.no_grad():
        stage.weight.uniform_(0.5, 2.0)
        stage.bias.uniform_(-1.0, 1.0)
        stage.requantizer.scale.fill_(0.1)
    acc_scale = torch.tensor([0.01, 0.02, 0.03], dtype=torch.float64)
    x = (torch.randint(-300, 300, (4, 3, 5, 5)) * acc_scale.view(1, 3, 1, 1)).float()
    mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
    m = stage.weight.detach() / torch.sqrt(var + stage.eps)
    plan = integer_plan(
        m, stage.bias.detach() - mean * m, acc_scale, stage.output_step(), stage.ranges, None
    )
    multiplier = (plan.effective_m * acc_scale / stage.output_step()).float()
    if scale_format == "pow2":
        assert torch.equal(torch.log2(multiplier), torch.round(torch.log2(multiplier)))
    else:
        k = multiplier * 2.0 ** -plan.exponent[0].item()
        assert torch.equal(k, torch.round(k)) and k.abs().max() <= 7
    expected = stage.requantizer(
        x * plan.effective_m.float().view(1, 3, 1, 1)
        + (plan.bias * plan.grid).float().view(1, 3, 1, 1)
    )
    y = stage(x.requires_grad_(True), acc_scale)
    steps = ((y - expected) / 0.1).detach().round()  # one code apart at a rounding tie at most
    assert steps.abs().max() <= 1 and int(steps.abs().sum()) <= 0.01 * y.numel()
    y.sum().backward()
    assert stage.weight.grad is not None and stage.bias.grad is not None


# ---- activations ------------------------------------------------------------------------------
def test_dprelu_function() -> None:
    act = DPReLU(1)
    with torch.no_grad():
        act.bias_x.fill_(1.0)
        act.bias_y.fill_(0.5)
        act.pos_slope.fill_(2.0)
        act.neg_slope.fill_(0.25)
    x = torch.tensor([[3.0], [-1.0]])
    assert act(x).flatten().tolist() == [2 * 2 - 0.5, 0.25 * -2 - 0.5]


def test_pow2_and_int8_slopes_are_what_the_program_holds() -> None:
    prelu = PReLU(4, slope_format="pow2")
    with torch.no_grad():
        prelu.slope.copy_(torch.tensor([0.3, 0.02, 1.6, 0.0]))
    slopes = prelu.slopes()
    assert slopes.neg.tolist() == [0.25, 2.0**-6, 2.0, 2.0**-7]  # positive powers, e in [-7, 7]
    assert slopes.shift == 7 and slopes.neg_code.tolist() == [5, 1, 8, 0]
    int8 = PReLU(2, slope_format="int8")
    with torch.no_grad():
        int8.slope.copy_(torch.tensor([0.3, -0.7]))
    slopes = int8.slopes()
    # shared shift: the largest |slope| (1, the positive branch) times 2^6 fits 127
    assert slopes.shift == 6 and slopes.neg_code.tolist() == [19, -45]
    assert slopes.neg.tolist() == pytest.approx([19 / 64, -45 / 64])


@pytest.mark.parametrize("kind", ACTIVATIONS.names())
def test_every_activation_runs_and_passes_gradient(kind: str) -> None:
    act = make_activation(kind, 3)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    act(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
