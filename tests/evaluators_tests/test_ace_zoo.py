"""ACE of the zoo models against independent calculations and the reference numbers.

References: MobileNetV1-1.0-224 has 568,740,352 MACs (the paper's 569M); PokeBNN-1.0x at 224
reproduces google/aqt's regression test (conv ACE 4,091,469,824 + dense ACE 131,072,000,
batch-norm elements 17,912,832, DPReLU elements 9,106,944).
"""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

from pikenas.evaluators.cost import count_ace
from pikenas.search.cli import app
from pikenas.space.arch import ArchConfig
from pikenas.space.zoo.catalog import get_zoo_arch, zoo_names

torch.set_num_threads(1)

# (pointwise out_channels, depthwise stride) of MobileNetV1's 13 separable blocks (paper Table 1)
MOBILENET_LAYOUT = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)]
MOBILENET_LAYOUT += [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def mobilenet_macs(width: float, resolution: int, classes: int = 1000) -> dict[str, int]:
    """MACs of MobileNetV1 by part, written from the paper: stem 3x3/2 conv, then per block a
    3x3 depthwise (stride s) and a 1x1 pointwise conv, 'same' padding (size ceil(R / s)),
    channels int(c * width), global pool, linear classifier."""

    def channels(c: int) -> int:
        return max(1, int(c * width))

    size = math.ceil(resolution / 2)
    in_channels = channels(32)
    parts = {"stem": size * size * in_channels * 3 * 9, "depthwise": 0, "pointwise": 0}
    for out, stride in MOBILENET_LAYOUT:
        size = math.ceil(size / stride)
        out = channels(out)
        parts["depthwise"] += size * size * in_channels * 9
        parts["pointwise"] += size * size * in_channels * out
        in_channels = out
    parts["head"] = in_channels * classes
    return parts


def test_mobilenet_v1_224_reference() -> None:
    report = count_ace(get_zoo_arch("mobilenet_v1-1.0-w8a8"))
    assert report.macs == 568_740_352
    assert report.ace_v1 == 64 * 568_740_352
    assert sum(mobilenet_macs(1.0, 224).values()) == 568_740_352  # the formula itself


# ACE v1 bits per part (weight bits x input bits) of each precision in the zoo:
#   float: 32 x 32 everywhere; w8a8: 8 x 8 everywhere;
#   w4a4: stem 8-bit weights on 8-bit pixels, blocks 4 x 4, head 8-bit weights on 8-bit input;
#   pikelpn: stem 8 x 8, depthwise 8-bit weights on 4-bit inputs, pointwise 4 x 4, head 8 x 8;
#   its pow2 QuantNorm stages fold their signs into the 8-bit uniform codes of the stem and
#   depthwise convs (-128 -> +128): those are charged 9 bits (4-bit pow2 codes keep 4).
V1_BITS = {
    "float": {"stem": 1024, "depthwise": 1024, "pointwise": 1024, "head": 1024},
    "w8a8": {"stem": 64, "depthwise": 64, "pointwise": 64, "head": 64},
    "w4a4": {"stem": 64, "depthwise": 16, "pointwise": 16, "head": 64},
}


@pytest.mark.parametrize(("width", "resolution"), [("0.75", 160), ("0.25", 97), ("0.5", 192)])
@pytest.mark.parametrize("precision", ["float", "w8a8", "w4a4"])
def test_mobilenet_other_widths_and_resolutions(
    width: str, resolution: int, precision: str
) -> None:
    report = count_ace(get_zoo_arch(f"mobilenet_v1-{width}-{precision}", resolution=resolution))
    parts = mobilenet_macs(float(width), resolution)
    assert report.macs == sum(parts.values())
    assert report.ace_v1 == sum(parts[p] * V1_BITS[precision][p] for p in parts)


@pytest.mark.parametrize(("tag", "width"), [("1x", 1.0), ("2x", 1.5), ("3x", 2.0)])
def test_pikelpn_macs_and_ace_v1(tag: str, width: float) -> None:
    report = count_ace(get_zoo_arch(f"pikelpn-{tag}", resolution=128))
    parts = mobilenet_macs(width, 128)
    assert report.macs == sum(parts.values())
    bits = {"stem": 72, "depthwise": 36, "pointwise": 16, "head": 64}
    assert report.ace_v1 == sum(parts[p] * bits[p] for p in parts)


def test_pokebnn_1x_reference_numbers() -> None:
    report = count_ace(get_zoo_arch("pokebnn-1.0x"))
    assert report.ace_v1 == 4_091_469_824 + 131_072_000
    dense = sum(row.ace_v1 for row in report.breakdown if row.layer.startswith("head."))
    assert dense == 131_072_000  # 2048 inputs x 1000 classes x 8 x 8 bits
    assert report.ace_v1 - dense == 4_091_469_824
    assert report.elementwise_elements["batchnorm"] == 17_912_832
    assert report.elementwise_elements["dprelu"] == 9_106_944


def test_every_zoo_model_is_counted_and_breaks_down_exactly() -> None:
    for name in zoo_names():
        resolution = None if name.startswith("tiny-") else 64
        report = count_ace(get_zoo_arch(name, resolution=resolution))
        assert report.ace_v2 == sum(row.cost for row in report.breakdown), name
        assert isinstance(report.ace_v2, int), name
        assert report.ace_v1 == sum(row.ace_v1 for row in report.breakdown), name
        assert report.ace_v1 > 0 and report.ace_v2 > report.mac_cost >= 0, name


@pytest.mark.parametrize(
    "name", ["mobilenet_v1-0.5-w4a4", "pokebnn-0.5x", "pikelpn-1x", "tiny-binary"]
)
def test_zoo_name_and_its_zoo_json_give_the_same_ace(name: str) -> None:
    result = CliRunner().invoke(app, ["zoo", name, "--json"])
    assert result.exit_code == 0, result.output
    from_file = ArchConfig.from_json(result.stdout)
    from_name = get_zoo_arch(name)
    assert count_ace(from_file).to_dict() == count_ace(from_name).to_dict()


def test_paper_point_elementwise_share() -> None:
    """PokeBNN's float elementwise operations dominate its ACE v2; PikeLPN-style QuantNorm with
    pow2 Double Quantization cuts the elementwise share below that of the 4-bit MobileNet with
    float batch norm."""
    share = {
        name: count_ace(get_zoo_arch(name)).elementwise_share
        for name in ("pokebnn-1.0x", "mobilenet_v1-1.0-w4a4", "pikelpn-1x")
    }
    assert share["pokebnn-1.0x"] > 0.5
    assert share["pikelpn-1x"] < share["mobilenet_v1-1.0-w4a4"]


# ---- ACE v2 from docs/ace_v2_rules.md, written independently of the lowering code ---------
def _mobilenet_geometry(width: float, resolution: int) -> list[tuple[str, int, int, int]]:
    """(part, MACs, fan-in, output elements) of every conv, in order."""
    layers = []

    def channels(c: int) -> int:
        return max(1, int(c * width))

    size = math.ceil(resolution / 2)
    in_channels = channels(32)
    layers.append(("stem", size * size * in_channels * 27, 27, size * size * in_channels))
    for out, stride in MOBILENET_LAYOUT:
        size = math.ceil(size / stride)
        out = channels(out)
        elements = size * size * in_channels
        layers.append(("depthwise", elements * 9, 9, elements))
        layers.append(
            ("pointwise", size * size * out * in_channels, in_channels, size * size * out)
        )
        in_channels = out
    return [*layers, ("final", size, in_channels, 0)]


def _bits(lo: int, hi: int) -> int:
    """Two's-complement (lo < 0) or unsigned width of [lo, hi]."""
    if lo >= 0:
        return hi.bit_length()
    return max((-lo - 1).bit_length(), hi.bit_length()) + 1


def _input_quantizer(resolution: int) -> int:
    """float multiply by 1 / step, clip (2 float compares), round, per input pixel (3 channels)."""
    return 3 * resolution * resolution * (1024 + 2 * 32 + 32)


def _pool_and_head(code_max: int, size: int, channels: int, classes: int) -> int:
    """Integer sum of the H*W unsigned codes per channel (H*W - 1 adds at the sum's width), one
    float multiply, clip and round (the 8-bit head input), 8 x 8 MACs, dequantize and bias."""
    pixels = size * size
    cost = channels * (pixels - 1) * _bits(0, code_max * pixels)
    cost += channels * (1024 + 2 * 32 + 32)
    return cost + channels * classes * 64 + classes * (1024 + 32)


@pytest.mark.parametrize(("width", "resolution"), [("0.5", 96), ("0.25", 128)])
def test_mobilenet_w8a8_ace_v2_from_the_rules(width: str, resolution: int) -> None:
    # Float BN after an integer conv, fused (its cheapest correct form): one float multiply
    # (dequantize, BN and requantize scales in one), one float add, ReLU as the clip's lower
    # bound: clip (2 compares) and round: 1024 + 32 + 64 + 32 = 1,152 per element.
    *convs, (_, size, channels, _) = _mobilenet_geometry(float(width), resolution)
    expected = _input_quantizer(resolution)
    expected += sum(macs * 64 + elements * 1_152 for _, macs, _, elements in convs)
    expected += _pool_and_head(255, size, channels, 1000)
    report = count_ace(get_zoo_arch(f"mobilenet_v1-{width}-w8a8", resolution=resolution))
    assert report.ace_v2 == expected
    conv_outputs = sum(elements for *_, elements in convs)
    assert report.elementwise_elements["batchnorm"] == conv_outputs


def _pow2_quantnorm(acc_bound: int, out_bits: int) -> int:
    """Per element, pow2 QuantNorm with ReLU to unsigned ``out_bits`` codes (docs/ace_v2_rules):
    one add of the bias (rounding constant folded in), one shift, the clip (2 compares)."""
    term = acc_bound
    t_bits = _bits(-3 * term, 3 * term)
    rounding = 2**t_bits  # exponents go down to -(t_bits + 1)
    bias_bits = _bits(-2 * term, 2 * term + rounding)
    add_bits = max(_bits(-acc_bound, acc_bound), bias_bits)
    t_lo, t_hi = -acc_bound - 2 * term, acc_bound + 2 * term + rounding
    shifted_bits = _bits(t_lo << out_bits, t_hi << out_bits)  # left shifts up to out_bits
    return add_bits + _bits(t_lo, t_hi) + 2 * shifted_bits


@pytest.mark.parametrize("resolution", [96, 128])
def test_pikelpn_ace_v2_from_the_rules(resolution: int) -> None:
    # Codes: 8-bit signed pixels, 4-bit unsigned activations. Weight codes: 8-bit uniform
    # (|w| <= 128); 4-bit pow2 codes are integers up to 2^(2^3 - 2) = 64. Accumulator bound:
    # fan-in x |w| x |x|.
    weight_max = {"stem": 128, "depthwise": 128, "pointwise": 64}
    bits = {"stem": (9, 8), "depthwise": (9, 4), "pointwise": (4, 4)}  # sign-folded 8-bit
    *convs, (_, size, channels, _) = _mobilenet_geometry(1.0, resolution)
    expected = _input_quantizer(resolution)
    for part, macs, fan_in, elements in convs:
        weight_bits, input_bits = bits[part]
        code_max = 128 if part == "stem" else 15
        bound = fan_in * weight_max[part] * code_max
        expected += macs * weight_bits * input_bits + elements * _pow2_quantnorm(bound, 4)
    expected += _pool_and_head(15, size, channels, 1000)
    report = count_ace(get_zoo_arch("pikelpn-1x", resolution=resolution))
    assert report.ace_v2 == expected
