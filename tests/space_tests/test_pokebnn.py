"""PokeBNN modules: shortcut reshaping, pooling, squeeze-excite, and the declarations that must
reproduce the google/aqt regression test (``pokebnn_test.py``, ``size_stats`` at 224x224)."""

from __future__ import annotations

import math

import pytest
import torch

from pikenas.evaluators.cost import count_ace
from pikenas.space.arch import ArchConfig, PokeBottleneckSpec, PokeStemSpec
from pikenas.space.errors import ArchConfigError
from pikenas.space.nn._builders import BLOCK_BUILDERS, STEM_BUILDERS
from pikenas.space.nn.build import build_model
from pikenas.space.nn.pokebnn import (
    PokeBottleneck,
    SqueezeExcite,
    build_poke_bottleneck,
    build_poke_stem,
    reshape_channels,
    same_avg_pool,
)
from pikenas.space.program.builder import lower
from pikenas.space.zoo.catalog import get_zoo_arch

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
    """The program's element annotations and ACE v1 in the reference's size_stats quantities;
    dense ACE from the head's linear layer."""
    report = count_ace(arch)
    totals = dict(report.elementwise_elements)
    dense = sum(layer.ace_v1 for layer in report.layers if layer.layer == "head.linear")
    totals["conv_ace"] = report.ace_v1 - dense
    totals["dense_ace"] = dense
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


def _unit_arch() -> ArchConfig:
    """A PokeBNN stem and one bottleneck at 16x16: 4x4 maps into the bottleneck."""
    return ArchConfig(
        input_channels=3,
        resolution=16,
        num_classes=4,
        stem=PokeStemSpec(group_channels=8, out_channels=16),
        blocks=(PokeBottleneckSpec(channels=8, stride=2),),
    )


def _unit_elements(prefix: str) -> dict[str, int]:
    elements: dict[str, int] = {}
    for layer, kind, count in lower(build_model(_unit_arch(), device="meta")).elements:
        if layer.startswith(prefix):
            elements[kind] = elements.get(kind, 0) + count
    return elements


def test_poke_conv_lowering_by_hand() -> None:
    report = count_ace(_unit_arch())
    rows = [row for row in report.breakdown if row.layer.startswith("blocks.0.unit2")]
    macs: dict[tuple[int, int], int] = {}
    for row in rows:
        if row.op == "mac":
            macs[row.bits_a, row.bits_b] = macs.get((row.bits_a, row.bits_b), 0) + row.count
    # the 3x3 stride-2 unit on 8 x 4 x 4 -> 8 x 2 x 2: 32 outputs x 72 binary MACs; SE: 8 -> 1 -> 8
    assert macs == {(1, 1): 32 * 72, (4, 4): 8 + 8}
    main = {row.op: row.count for row in rows if row.layer == "blocks.0.unit2"}
    # per output element (32): BN1 multiply + add (bias_x folded), the select, one multiply
    # (slope x SE scale x BN2 multiplier) and one add (BN2 bias - bias_y term); per channel (8):
    # the SE scale times BN2's multiplier, times the two slopes and bias_y; BN2's bias. (The
    # shortcut's add is in its own layer.)
    assert main == {"mul": 32 + 32 + 4 * 8, "add": 32 + 32 + 8, "compare": 32}
    assert all(row.float_operands for row in rows if row.op != "mac")
    elements = _unit_elements("blocks.0.unit2")
    assert elements["sign"] == 8 * 16 and elements["batchnorm"] == 2 * 32
    assert elements["reshape_add_avg_pool"] == 9 * 32
    assert elements["reshape_add_local_residual"] == 32
    assert elements["se_global_pool_add"] == 8 * 16 and elements["se_relu6"] == 8


def test_zero_padded_shortcut_adds_only_the_real_channels() -> None:
    # unit3: 8 -> 32 channels on 2x2; its local shortcut zero-pads 8 channels to 32
    report = count_ace(_unit_arch())
    adds: dict[str, int] = {}
    for row in report.breakdown:
        if row.op == "add" and row.layer.startswith("blocks.0.unit3"):
            adds[row.layer] = adds.get(row.layer, 0) + row.count
    assert adds["blocks.0.unit3.local_shortcut"] == 8 * 4  # not 32 * 4
    # the block shortcut: 16 channels tiled to 32, then the 3x3/2 SAME pool of 4x4 -> 2x2 sums
    # 5 x 5 in-bounds terms per channel (25 * 32 - 128 adds), then the add (128)
    assert adds["blocks.0.unit3.block_shortcut"] == 25 * 32 - 128 + 128
    # BN1's add, BN2's add (per element), BN2's bias term per channel
    assert adds["blocks.0.unit3"] == 128 + 128 + 32
    assert _unit_elements("blocks.0.unit3")["residual_add"] == 32 + 128


def test_bottleneck_forward_backward() -> None:
    torch.manual_seed(0)
    block = PokeBottleneck(PokeBottleneckSpec(channels=8, stride=2), 16)
    x = torch.randn(2, 16, 6, 6, requires_grad=True)
    y, step = block(x)
    assert y.shape == (2, 32, 3, 3) and step is None
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
