"""The reference zoo: every name round-trips, has the right geometry and the published counts."""

from __future__ import annotations

import math

import pytest

from pikenas.space.arch import ArchConfig, PikeBlockSpec, PokeBottleneckSpec, PokeStemSpec
from pikenas.space.errors import ArchConfigError, UnknownNameError
from pikenas.space.zoo.catalog import ZOO, describe, get_zoo_arch, zoo_names

EXPECTED_NAMES = (
    [
        f"mobilenet_v1-{w}-{p}"
        for w in ("0.25", "0.5", "0.75", "1.0")
        for p in ("float", "w8a8", "w4a4")
    ]
    + [f"pokebnn-{m}" for m in ("0.5x", "0.75x", "1.0x", "2.0x")]
    + [f"pikelpn-{m}" for m in ("1x", "2x", "3x")]
    + [f"tiny-{p}" for p in ("float", "w8a8", "w4a4", "binary", "pikelpn")]
    + [f"fmnist-{p}" for p in ("float", "w8a8", "w4a4", "binary", "pikelpn")]
)


def test_the_zoo_holds_exactly_the_documented_names() -> None:
    assert sorted(zoo_names()) == sorted(EXPECTED_NAMES)


@pytest.mark.parametrize("name", zoo_names())
def test_json_round_trip_and_name(name: str) -> None:
    arch = get_zoo_arch(name)
    assert arch.name == name
    again = ArchConfig.from_json(arch.to_json())
    assert again == arch and again.archid == arch.archid
    description = describe(name)
    assert description and "\n" not in description


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_zoo_arch("resnet50")
    message = str(info.value)
    assert "resnet50" in message and "tiny-w8a8" in message and "\n" not in message
    with pytest.raises(UnknownNameError):
        describe("pokebnn-3.0x")


def test_too_small_resolution_is_one_line_arch_error() -> None:
    with pytest.raises(ArchConfigError, match="blocks.11.stride"):
        get_zoo_arch("mobilenet_v1-1.0-w8a8", resolution=16)


# ---- MobileNetV1 -------------------------------------------------------------------------


def mobilenet_macs_by_hand(width: float, resolution: int, classes: int = 1000) -> int:
    """Conv + linear MACs of MobileNetV1 from the paper's table (Keras int(c*alpha) widths)."""
    layout = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)]
    layout += [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    size = math.ceil(resolution / 2)
    channels = int(32 * width)
    macs = size * size * channels * 3 * 9
    for out, stride in layout:
        out = int(out * width)
        size = math.ceil(size / stride)
        macs += size * size * channels * 9 + size * size * channels * out
        channels = out
    return macs + channels * classes


def arch_macs(arch: ArchConfig) -> int:
    """MACs of a stem + separable-block network, read off the ArchConfig."""
    stem = arch.stem
    size = stem.output_size(arch.resolution)
    channels = stem.out_channels
    macs = size * size * channels * arch.input_channels * stem.kernel_size**2
    for block in arch.blocks:
        assert isinstance(block, PikeBlockSpec)
        size = block.output_size(size)
        macs += size * size * channels * block.kernel_size**2
        macs += size * size * channels * block.out_channels
        channels = block.out_channels
    return macs + channels * arch.num_classes


def test_mobilenet_v1_1_0_224_has_the_papers_569m_macs() -> None:
    assert arch_macs(get_zoo_arch("mobilenet_v1-1.0-float")) == 568_740_352
    assert mobilenet_macs_by_hand(1.0, 224) == 568_740_352


@pytest.mark.parametrize(
    ("name", "width", "resolution"),
    [
        ("mobilenet_v1-0.75-w4a4", 0.75, 160),
        ("mobilenet_v1-0.25-w8a8", 0.25, 128),
        ("mobilenet_v1-0.5-float", 0.5, 97),
        ("pikelpn-2x", 1.5, 192),
    ],
)
def test_mobilenet_macs_at_other_widths_and_resolutions(
    name: str, width: float, resolution: int
) -> None:
    expected = mobilenet_macs_by_hand(width, resolution)
    assert arch_macs(get_zoo_arch(name, resolution=resolution)) == expected


def test_mobilenet_channels_follow_keras_truncation() -> None:
    arch = get_zoo_arch("mobilenet_v1-0.75-float")
    assert arch.stem.out_channels == 24
    assert [b.out_channels for b in arch.blocks][:3] == [48, 96, 96]
    assert arch.blocks[-1].out_channels == 768
    assert get_zoo_arch("mobilenet_v1-0.25-float").blocks[-1].out_channels == 256


def test_mobilenet_precisions() -> None:
    w8a8 = get_zoo_arch("mobilenet_v1-1.0-w8a8")
    assert w8a8.stem.input_bits == w8a8.stem.conv.weight_bits == w8a8.stem.activation_bits == 8
    assert all(
        b.depthwise.weight_bits == b.pointwise.weight_bits == b.activation_bits == 8
        for b in w8a8.blocks
    )
    assert w8a8.head.input_bits == w8a8.head.linear.weight_bits == 8
    w4a4 = get_zoo_arch("mobilenet_v1-0.5-w4a4")
    assert (w4a4.stem.input_bits, w4a4.stem.conv.weight_bits, w4a4.stem.activation_bits) == (
        8,
        8,
        4,
    )
    assert {
        (b.depthwise.weight_bits, b.pointwise.weight_bits, b.activation_bits) for b in w4a4.blocks
    } == {(4, 4, 4)}
    assert (w4a4.head.input_bits, w4a4.head.linear.weight_bits) == (8, 8)
    flt = get_zoo_arch("mobilenet_v1-0.25-float")
    assert flt.stem.input_bits == flt.blocks[0].activation_bits == flt.head.input_bits == 32
    assert flt.blocks[0].depthwise.weight_quantizer == "float"


def test_pikelpn_reconstruction_uses_quantnorm_pow2_and_dhq() -> None:
    for name, width in (("pikelpn-1x", 1.0), ("pikelpn-2x", 1.5), ("pikelpn-3x", 2.0)):
        arch = get_zoo_arch(name)
        assert "reconstruction" in describe(name)
        assert arch.stem.out_channels == int(32 * width)
        assert arch.blocks[-1].out_channels == int(1024 * width)
        for block in arch.blocks:
            assert block.norm == "quantnorm" and block.scale_format == "pow2"
            assert block.depthwise.weight_quantizer != block.pointwise.weight_quantizer
        assert arch.stem.conv.weight_bits == arch.head.linear.weight_bits == 8


# ---- tiny --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in zoo_names() if n.startswith("tiny-")])
def test_tiny_defaults_to_digits_and_adapts_to_cifar(name: str) -> None:
    digits = get_zoo_arch(name)
    assert (digits.input_channels, digits.resolution, digits.num_classes) == (1, 8, 10)
    assert digits.feature_sizes()[-1][1] == 2
    cifar = get_zoo_arch(name, resolution=32, input_channels=3, num_classes=100)
    assert (cifar.input_channels, cifar.resolution, cifar.num_classes) == (3, 32, 100)
    assert cifar.feature_sizes()[-1][1] == 8
    # a training step on 128 digits must stay cheap (tiny-binary has twice the channels)
    assert arch_macs(digits) < (1_000_000 if name == "tiny-binary" else 300_000)


def test_tiny_binary_has_binary_blocks() -> None:
    arch = get_zoo_arch("tiny-binary")
    plain = get_zoo_arch("tiny-w8a8")
    assert arch.stem.out_channels == 2 * plain.stem.out_channels
    assert [b.out_channels for b in arch.blocks] == [2 * b.out_channels for b in plain.blocks]
    for block in arch.blocks:
        assert block.activation_bits == 1
        assert block.depthwise.weight_quantizer == block.pointwise.weight_quantizer == "binary"
    assert arch.stem.conv.weight_bits == arch.head.linear.weight_bits == 8


# ---- PokeBNN geometry --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "multiplier"), [("0.5x", 0.5), ("0.75x", 0.75), ("1.0x", 1.0), ("2.0x", 2.0)]
)
def test_pokebnn_geometry(tag: str, multiplier: float) -> None:
    arch = get_zoo_arch(f"pokebnn-{tag}")
    assert isinstance(arch.stem, PokeStemSpec)
    assert (arch.stem.group_channels, arch.stem.out_channels) == (32, 64)  # not scaled
    blocks = arch.blocks
    assert len(blocks) == 16 and all(isinstance(b, PokeBottleneckSpec) for b in blocks)
    assert [b.stride for b in blocks].count(2) == 3
    assert blocks[0].channels == int(64 * multiplier)
    assert blocks[-1].out_channels == 4 * int(512 * multiplier)
    assert arch.feature_sizes()[-1][1] == 7
    assert (arch.head.input_bits, arch.head.linear.weight_bits) == (8, 8)


def test_registry_entries_build_with_overrides() -> None:
    entry = ZOO.get("pokebnn-0.5x")
    arch = entry.build(resolution=64, num_classes=10)
    assert (arch.resolution, arch.num_classes) == (64, 10)


# ---- built models ------------------------------------------------------------------------


@pytest.mark.parametrize("name", zoo_names())
def test_every_zoo_model_builds_on_meta_at_its_default_size(name: str) -> None:
    import torch

    from pikenas.space.nn.build import build_model

    arch = get_zoo_arch(name)  # 224x224 for ImageNet models, 8x8 for tiny ones
    model = build_model(arch, device="meta")
    assert all(p.device.type == "meta" for p in model.parameters())
    assert len(model.blocks) == len(arch.blocks)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert isinstance(model, torch.nn.Module)


FORWARD_CASES = [
    ("mobilenet_v1-0.25-float", 32),
    ("mobilenet_v1-0.25-w8a8", 32),
    ("mobilenet_v1-0.25-w4a4", 32),
    ("pikelpn-1x", 32),
    ("pokebnn-0.5x", 64),
    *[(name, None) for name in zoo_names() if name.startswith("tiny-")],
]


@pytest.mark.parametrize(("name", "resolution"), FORWARD_CASES)
def test_forward_and_backward_on_a_small_input(name: str, resolution: int | None) -> None:
    import torch

    from pikenas.space.nn.build import build_model

    torch.set_num_threads(1)
    arch = get_zoo_arch(name, resolution=resolution, num_classes=10)
    model = build_model(arch, seed=0)
    x = torch.randn(2, arch.input_channels, arch.resolution, arch.resolution)
    logits = model(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([1, 7])).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    first_conv = next(p for n, p in model.named_parameters() if n.endswith("weight"))
    assert torch.isfinite(first_conv.grad).all() and float(first_conv.grad.abs().sum()) > 0


# ---- counted with the ACE counter (evaluators) -------------------------------------------


def test_mobilenet_counted_macs_and_ace_v1() -> None:
    from pikenas.evaluators.cost import count_ace

    w8a8 = count_ace(get_zoo_arch("mobilenet_v1-1.0-w8a8"))
    assert w8a8.macs == 568_740_352
    assert w8a8.ace_v1 == 64 * 568_740_352
    small = get_zoo_arch("mobilenet_v1-0.5-w4a4", resolution=128)
    report = count_ace(small)
    total = mobilenet_macs_by_hand(0.5, 128)
    stem = 64 * 64 * 16 * 3 * 9
    head = 512 * 1000
    assert report.macs == total
    assert report.ace_v1 == 64 * (stem + head) + 16 * (total - stem - head)


@pytest.mark.slow
def test_pokebnn_official_numbers_through_the_counter() -> None:
    from pikenas.evaluators.cost import count_ace

    report = count_ace(get_zoo_arch("pokebnn-1.0x"))
    assert report.ace_v1 == 4_091_469_824 + 131_072_000
    head_ace = sum(
        row.count * row.bits_a * row.bits_b
        for row in report.breakdown
        if row.op == "mac" and row.layer.startswith("head")
    )
    assert head_ace == 131_072_000
    assert report.elementwise_elements["batchnorm"] == 17_912_832
    assert report.elementwise_elements["dprelu"] == 9_106_944
