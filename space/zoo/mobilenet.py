"""MobileNetV1 (Howard et al. 2017) and PikeLPN-style reconstructions on its geometry.

Geometry (the paper's Table 1, Keras ``MobileNet``): a 3x3 stride-2 conv stem to
``int(32 * width)`` channels, 13 depthwise-separable blocks (3x3 depthwise -> BN -> ReLU ->
1x1 pointwise -> BN -> ReLU) with the channels / strides of :data:`MOBILENET_V1_LAYOUT` scaled
as ``int(c * width)`` (Keras' ``int(filters * alpha)``), global average pool, linear classifier.
At 224x224 with width 1.0 the conv + linear MACs are 568,740,352 (the paper's 569M).
"""

from __future__ import annotations

import functools

from pikenas.space.arch import ArchConfig, ConvQuantSpec
from pikenas.space.zoo._parts import FLOAT_CONV, Precision, ZooEntry, separable_arch

__all__ = [
    "MOBILENET_V1_LAYOUT",
    "MOBILENET_V1_WIDTHS",
    "MOBILENET_PRECISIONS",
    "PIKELPN_WIDTHS",
    "PIKELPN_PRECISION",
    "mobilenet_v1",
    "mobilenet_entries",
    "pikelpn_entries",
]

# (pointwise out_channels, depthwise stride) of the 13 separable blocks at width 1.0.
MOBILENET_V1_LAYOUT: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
MOBILENET_V1_STEM_CHANNELS = 32
MOBILENET_V1_WIDTHS: tuple[str, ...] = ("0.25", "0.5", "0.75", "1.0")

_U8 = ConvQuantSpec(weight_bits=8, weight_quantizer="uniform", weight_granularity="per_channel")
_U8_TENSOR = ConvQuantSpec(
    weight_bits=8, weight_quantizer="uniform", weight_granularity="per_tensor"
)
_U4 = ConvQuantSpec(weight_bits=4, weight_quantizer="uniform", weight_granularity="per_channel")
_POW2_4 = ConvQuantSpec(weight_bits=4, weight_quantizer="pow2", weight_granularity="per_channel")

MOBILENET_PRECISIONS: dict[str, tuple[Precision, str]] = {
    "float": (
        Precision(
            stem_conv=FLOAT_CONV,
            input_bits=32,
            stem_activation_bits=32,
            depthwise=FLOAT_CONV,
            pointwise=FLOAT_CONV,
            activation_bits=32,
            head_linear=FLOAT_CONV,
            head_input_bits=32,
        ),
        "32-bit float weights and activations everywhere, float BN + ReLU",
    ),
    "w8a8": (
        Precision(
            stem_conv=_U8,
            input_bits=8,
            stem_activation_bits=8,
            depthwise=_U8,
            pointwise=_U8,
            activation_bits=8,
            head_linear=_U8_TENSOR,
            head_input_bits=8,
        ),
        "8-bit uniform weights (per-channel convs, per-tensor head) and 8-bit activations in "
        "every layer incl. stem and head (ACE v1 = 64 x MACs), float BN + ReLU",
    ),
    "w4a4": (
        Precision(
            stem_conv=_U8,
            input_bits=8,
            stem_activation_bits=4,
            depthwise=_U4,
            pointwise=_U4,
            activation_bits=4,
            head_linear=_U8_TENSOR,
            head_input_bits=8,
        ),
        "blocks 4-bit uniform per-channel weights / 4-bit activations; stem conv (8-bit pixels)"
        " and head (8-bit pooled input) kept 8-bit as first/last layers are sensitive; "
        "float BN + ReLU",
    ),
}

# PikeLPN-style recipe (a reconstruction, not the authors' released model): QuantNorm with
# pow2 Double Quantization (every folded multiplier and quantizer scale a power of two, so the
# requantization is shift + add + clip), and DHQ in each separable block: depthwise weights
# 8-bit uniform per-channel (their per-channel ranges differ a lot and they hold ~3% of the
# MACs), pointwise weights 4-bit power-of-two per-channel (bell-shaped, suit log levels and
# turn the dominant MACs into shifts); 4-bit activations; 8-bit stem and head.
PIKELPN_PRECISION = Precision(
    stem_conv=_U8,
    input_bits=8,
    stem_activation_bits=4,
    depthwise=_U8,
    pointwise=_POW2_4,
    activation_bits=4,
    head_linear=_U8_TENSOR,
    head_input_bits=8,
    norm="quantnorm",
    scale_format="pow2",
)
PIKELPN_WIDTHS: dict[str, float] = {"1x": 1.0, "2x": 1.5, "3x": 2.0}


def _scaled(channels: int, width: float) -> int:
    """Keras' ``int(filters * alpha)`` (truncation), at least 1."""
    return max(1, int(channels * width))


def mobilenet_v1(
    *,
    name: str,
    width: float,
    precision: Precision,
    resolution: int | None = None,
    input_channels: int | None = None,
    num_classes: int | None = None,
) -> ArchConfig:
    """MobileNetV1 at ``width`` with a quantization recipe; defaults 3x224x224, 1000 classes."""
    return separable_arch(
        name=name,
        precision=precision,
        stem_channels=_scaled(MOBILENET_V1_STEM_CHANNELS, width),
        stem_stride=2,
        layout=[(_scaled(c, width), s, False) for c, s in MOBILENET_V1_LAYOUT],
        resolution=224 if resolution is None else resolution,
        input_channels=3 if input_channels is None else input_channels,
        num_classes=1000 if num_classes is None else num_classes,
    )


def mobilenet_entries() -> list[ZooEntry]:
    entries = []
    for width in MOBILENET_V1_WIDTHS:
        for kind, (precision, what) in MOBILENET_PRECISIONS.items():
            name = f"mobilenet_v1-{width}-{kind}"
            description = f"MobileNetV1 width {width} (default 224x224, 1000 classes): {what}"
            factory = functools.partial(
                mobilenet_v1, name=name, width=float(width), precision=precision
            )
            entries.append(ZooEntry(name, description, factory))
    return entries


def pikelpn_entries() -> list[ZooEntry]:
    entries = []
    for tag, width in PIKELPN_WIDTHS.items():
        name = f"pikelpn-{tag}"
        description = (
            f"PikeLPN-style reconstruction (not the authors' model): MobileNetV1 geometry at "
            f"width {width} ({tag} -> {width}), QuantNorm + pow2 Double Quantization, DHQ "
            "(depthwise 8-bit uniform per-channel, pointwise 4-bit pow2 per-channel), 4-bit "
            "activations, ReLU, 8-bit stem and head"
        )
        factory = functools.partial(
            mobilenet_v1, name=name, width=width, precision=PIKELPN_PRECISION
        )
        entries.append(ZooEntry(name, description, factory))
    return entries
