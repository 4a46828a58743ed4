"""PokeBNN modules: shortcut reshaping, pooling, squeeze-excite, and the declarations that must
reproduce the google/aqt regression test (``pokebnn_test.py``, ``size_stats`` at 224x224)."""

from __future__ import annotations

import math

import pytest
import torch

from space._builders import BLOCK_BUILDERS, STEM_BUILDERS
from space.arch import ArchConfig, PokeBottleneckSpec
from space.build import build_model
from space.costs import CostDeclaration
from space.errors import ArchConfigError
from space.pokebnn import (
    PokeBottleneck,
    PokeConv,
    SqueezeExcite,
    build_poke_bottleneck,
    build_poke_stem,
    reshape_channels,
    same_avg_pool,
)
from space.zoo import get_zoo_arch

torch.set_num_threads(1)

# The reference implementation's size_stats for PokeBNN-1.0x at 224x224 (pokebnn_test.py).
OFFICIAL_1_0X_224 = {
    "conv_ace": 4_091_469_824,
    "dense_ace": 131_072_000,
    "batchnorm": 17_912_832,
    "dprelu": 9_106_944,
    "reshape_add_ch_shrink": 5_419_008,
    "reshape_add_ch_shrink_mul": 1_705_984,
    "reshape_add_avg_pool": 7_902_720,
    "reshape_add_block_residual": 5_519_360,
    "reshape_add_local_residual": 8_805_888,
    "se_global_pool_add": 8_906_240,
    "se_global_pool_mul": 20_672,
    "se_relu": 2_584,
    "se_relu6": 22_656,
    "se_mul": 8_805_888,
}


def declared_totals(arch: ArchConfig) -> dict[str, int]:
    """Sum the stem's and the blocks' own declarations (shapes from the ArchConfig) into the
    reference's size_stats quantities; dense ACE from the head's linear layer."""
    model = build_model(arch, device="meta")
    sizes = arch.feature_sizes()
    shape = (1, arch.input_channels, arch.resolution, arch.resolution)
    total = CostDeclaration()
    for module, (channels, size) in zip([model.stem, *model.blocks], sizes, strict=True):
        out_shape = (1, channels, size, size)
        total = total + module.inference_ops(shape, out_shape)
        shape = out_shape
    dense = model.head.linear.inference_ops((1, shape[1]), (1, arch.num_classes))
    totals = dict(total.elements)
    totals["conv_ace"] = sum(op.count * op.bits_a * op.bits_b for op in total.ops if op.op == "mac")
    totals["dense_ace"] = sum(
        op.count * op.bits_a * op.bits_b for op in dense.ops if op.op == "mac"
    )
    return totals


def reference_formula(multiplier: float, resolution: int) -> dict[str, int]:
    """Independent re-derivation of size_stats from the reference model's structure."""
    stats = dict.fromkeys(OFFICIAL_1_0X_224, 0)
    size = (resolution - 4) // 4 + 1
    stats["conv_ace"] += size * size * 32 * 3 * 16 * 64 + size * size * 64 * 9 * 64
    stats["batchnorm"] += size * size * 96
    stats["dprelu"] += size * size * 96
    channels = 64
    layout = [(1, 64)] * 3 + [(2, 128)] + [(1, 128)] * 3 + [(2, 256)] + [(1, 256)] * 5
    layout += [(2, 512)] + [(1, 512)] * 2
    for stride, features in layout:
        width = int(features * multiplier)
        block_in, block_size = channels, size
        for unit, (kernel, unit_stride, out) in enumerate(
            [(1, 1, width), (3, stride, width), (1, 1, 4 * width)]
        ):
            out_size = math.ceil(size / unit_stride)
            e = out_size * out_size * out
            stats["conv_ace"] += e * channels * kernel * kernel
            stats["conv_ace"] += 16 * (channels * (channels // 8) + (channels // 8) * out)
            stats["batchnorm"] += 2 * e
            stats["dprelu"] += e
            shortcuts = [(channels, size, "local")]
            if unit == 2:
                shortcuts.append((block_in, block_size, "block"))
            for r_channels, r_size, kind in shortcuts:
                if r_channels > out:
                    group = r_channels // out
                    stats["reshape_add_ch_shrink"] += r_size * r_size * out * group
                    stats["reshape_add_ch_shrink_mul"] += r_size * r_size * out
                if r_size != out_size:
                    stats["reshape_add_avg_pool"] += 9 * e
                stats[f"reshape_add_{kind}_residual"] += e
            stats["se_global_pool_add"] += size * size * channels
            stats["se_global_pool_mul"] += channels
            stats["se_relu"] += channels // 8
            stats["se_relu6"] += out
            stats["se_mul"] += e
            size, channels = out_size, out
    stats["dense_ace"] = channels * 1000 * 64
    return stats


@pytest.fixture(scope="module")
def totals_1_0x() -> dict[str, int]:
    return declared_totals(get_zoo_arch("pokebnn-1.0x"))


def test_official_conv_and_dense_ace(totals_1_0x: dict[str, int]) -> None:
    assert totals_1_0x["conv_ace"] == 4_091_469_824
    assert totals_1_0x["dense_ace"] == 131_072_000
    assert totals_1_0x["conv_ace"] + totals_1_0x["dense_ace"] == 4_222_541_824


def test_official_elementwise_counters(totals_1_0x: dict[str, int]) -> None:
    assert totals_1_0x["batchnorm"] == 17_912_832
    assert totals_1_0x["dprelu"] == 9_106_944
    for key, expected in OFFICIAL_1_0X_224.items():
        assert totals_1_0x[key] == expected, key


def test_reference_formula_reproduces_the_official_numbers() -> None:
    assert reference_formula(1.0, 224) == OFFICIAL_1_0X_224


@pytest.mark.parametrize(
    ("tag", "multiplier", "resolution"), [("0.75x", 0.75, 160), ("2.0x", 2.0, 96)]
)
def test_other_widths_and_resolutions(tag: str, multiplier: float, resolution: int) -> None:
    totals = declared_totals(get_zoo_arch(f"pokebnn-{tag}", resolution=resolution))
    expected = reference_formula(multiplier, resolution)
    assert {key: totals.get(key, 0) for key in expected} == expected


# ---- the pieces --------------------------------------------------------------------------


def test_reshape_channels_average_shrink_zeropad_and_tile() -> None:
    r = torch.arange(6.0).view(1, 6, 1, 1)
    assert reshape_channels(r, 3, "zeropad").flatten().tolist() == [0.5, 2.5, 4.5]
    assert reshape_channels(r, 4, "zeropad").flatten().tolist() == [0.0, 1.0, 2.0, 3.0]
    small = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
    assert reshape_channels(small, 4, "zeropad").flatten().tolist() == [1.0, 2.0, 0.0, 0.0]
    assert reshape_channels(small, 4, "tile").flatten().tolist() == [1.0, 2.0, 1.0, 2.0]


def test_same_avg_pool_pads_like_tensorflow_and_counts_zeros() -> None:
    pooled = same_avg_pool(torch.ones(1, 1, 4, 4))
    # SAME on 4 -> 2 pads 0 before, 1 after: the last window holds 2x2 real pixels.
    assert pooled.flatten().tolist() == pytest.approx([1.0, 6 / 9, 6 / 9, 4 / 9])
    assert same_avg_pool(torch.ones(1, 2, 7, 7)).shape == (1, 2, 4, 4)


def test_squeeze_excite_is_a_per_channel_scale_in_unit_range() -> None:
    torch.manual_seed(0)
    se = SqueezeExcite(16, 24, bits=4)
    with torch.no_grad():
        s = se(torch.randn(3, 16, 5, 5) * 4)
    assert s.shape == (3, 24, 1, 1)
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    assert se.hidden_channels == 2


def test_poke_conv_declaration_by_hand() -> None:
    unit = PokeConv(8, 16, 3, stride=2)
    y = unit(torch.randn(2, 8, 4, 4))
    assert y.shape == (2, 16, 2, 2)
    declared = unit.inference_ops((1, 8, 4, 4), (1, 16, 2, 2))
    macs: dict[tuple[int, int], int] = {}
    for op in declared.ops:
        if op.op == "mac":
            macs[op.bits_a, op.bits_b] = macs.get((op.bits_a, op.bits_b), 0) + op.count
    assert macs == {(1, 1): 4608, (4, 4): 8 + 16}
    elements = declared.elements
    assert elements["sign"] == 128 and elements["batchnorm"] == 2 * 64 and elements["dprelu"] == 64
    assert (
        elements["reshape_add_avg_pool"] == 9 * 64 and elements["reshape_add_local_residual"] == 64
    )
    assert elements["residual_add"] == 8 * 4  # the zero-padded channels need no add
    assert (elements["se_global_pool_add"], elements["se_relu"], elements["se_relu6"]) == (
        128,
        1,
        16,
    )
    assert all(op.float_operands and op.bits_a == 32 for op in declared.ops if op.op != "mac")
    # params: binary conv, SE convs with bias, two BNs, DPReLU
    assert declared.params == 16 * 8 * 9 + (8 + 1) + (16 + 16) + 2 * 2 * 16 + 4 * 16


def test_declarations_scale_with_batch() -> None:
    block = PokeBottleneck(PokeBottleneckSpec(channels=8, stride=2), 16)
    one = block.inference_ops((1, 16, 6, 6), (1, 32, 3, 3))
    four = block.inference_ops((4, 16, 6, 6), (4, 32, 3, 3))
    assert [op.count * 4 for op in one.ops] == [op.count for op in four.ops]
    assert one.params == four.params


def test_bottleneck_forward_backward() -> None:
    torch.manual_seed(0)
    block = PokeBottleneck(PokeBottleneckSpec(channels=8, stride=2), 16)
    x = torch.randn(2, 16, 6, 6, requires_grad=True)
    y = block(x)
    assert y.shape == (2, 32, 3, 3)
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert block.unit1.conv.weight.grad is not None
    assert float(block.unit1.conv.weight.grad.abs().sum()) > 0  # straight-through reaches it


def test_builders_are_registered() -> None:
    assert STEM_BUILDERS.get("pokebnn") is build_poke_stem
    assert BLOCK_BUILDERS.get("pokebnn_bottleneck") is build_poke_bottleneck


def test_untileable_block_shortcut_is_a_one_line_error() -> None:
    with pytest.raises(ArchConfigError, match="multiple of the block's input"):
        PokeBottleneck(PokeBottleneckSpec(channels=10), 16)
