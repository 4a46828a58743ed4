"""Tiny PikeLPN-block networks for the embedded data sets (digits 8x8x1, CIFAR 32x32x3).

Geometry: a 3x3 stride-1 conv stem to 16 channels, then four separable blocks
:data:`TINY_LAYOUT` (two of them stride 2: 8x8 -> 8 -> 4 -> 4 -> 2, 32x32 -> 32 -> 16 -> 16 ->
8), global average pool, linear classifier. About 0.2 M MACs per 8x8 image, so a training
step on a batch of 128 digits takes a few milliseconds. Input channels, resolution and classes
come from the factory arguments (defaults: digits, 1x8x8, 10 classes).
"""

from __future__ import annotations

import functools

from pikenas.space.arch import ArchConfig, ConvQuantSpec
from pikenas.space.zoo._parts import Precision, ZooEntry, separable_arch
from pikenas.space.zoo.mobilenet import MOBILENET_PRECISIONS, PIKELPN_PRECISION

__all__ = [
    "TINY_LAYOUT",
    "TINY_STEM_CHANNELS",
    "TINY_PRECISIONS",
    "tiny_net",
    "tiny_entries",
    "TINY_BINARY_WIDTH",
]

TINY_STEM_CHANNELS = 16
# (out_channels, stride, residual)
TINY_LAYOUT: tuple[tuple[int, int, bool], ...] = (
    (32, 1, False),
    (64, 2, False),
    (64, 1, True),
    (128, 2, False),
)
# Binary nets need width to match the accuracy of multi-bit ones (Bi-Real Net, ReActNet):
# tiny-binary doubles every channel count (binary MACs are cheap: 1x1 bits each).
TINY_BINARY_WIDTH = 2

_U8 = ConvQuantSpec(weight_bits=8, weight_quantizer="uniform", weight_granularity="per_channel")
_U8_TENSOR = ConvQuantSpec(
    weight_bits=8, weight_quantizer="uniform", weight_granularity="per_tensor"
)
_BINARY = ConvQuantSpec(weight_bits=1, weight_quantizer="binary", weight_granularity="per_channel")

TINY_BINARY_PRECISION = Precision(
    stem_conv=_U8,
    input_bits=8,
    stem_activation_bits=8,
    depthwise=_BINARY,
    pointwise=_BINARY,
    activation_bits=1,
    head_linear=_U8_TENSOR,
    head_input_bits=8,
    activation="prelu",
    stem_activation="prelu",
)

TINY_PRECISIONS: dict[str, tuple[Precision, str]] = {  # kind -> (recipe, description)
    "float": (MOBILENET_PRECISIONS["float"][0], "32-bit float everywhere, float BN + ReLU"),
    "w8a8": (
        MOBILENET_PRECISIONS["w8a8"][0],
        "8-bit uniform weights and activations in every layer, float BN + ReLU",
    ),
    "w4a4": (
        MOBILENET_PRECISIONS["w4a4"][0],
        "blocks 4-bit weights / 4-bit activations, 8-bit stem conv and head, float BN + ReLU",
    ),
    "binary": (
        TINY_BINARY_PRECISION,
        "2x channels (32 stem, 64-256 blocks) with binary (sign x per-channel scale) weights "
        "and 1-bit activations, float BN + PReLU before the sign; 8-bit stem (8-bit output) "
        "and head",
    ),
    "pikelpn": (
        PIKELPN_PRECISION,
        "QuantNorm + pow2 Double Quantization, DHQ (depthwise 8-bit uniform, pointwise 4-bit "
        "pow2, per-channel), 4-bit activations, 8-bit stem and head",
    ),
}


def tiny_net(
    *,
    name: str,
    precision: Precision,
    width: int = 1,
    resolution: int | None = None,
    input_channels: int | None = None,
    num_classes: int | None = None,
) -> ArchConfig:
    """A tiny separable net; defaults fit scikit-learn's digits (1x8x8, 10 classes).

    ``width``: channel multiplier of the stem and every block.
    """
    return separable_arch(
        name=name,
        precision=precision,
        stem_channels=TINY_STEM_CHANNELS * width,
        stem_stride=1,
        layout=[(c * width, s, r) for c, s, r in TINY_LAYOUT],
        resolution=8 if resolution is None else resolution,
        input_channels=1 if input_channels is None else input_channels,
        num_classes=10 if num_classes is None else num_classes,
    )


def tiny_entries() -> list[ZooEntry]:
    entries = []
    for kind, (precision, what) in TINY_PRECISIONS.items():
        name = f"tiny-{kind}"
        description = (
            "tiny 4-block PikeLPN-block net for digits / CIFAR (default 1x8x8, 10 classes): " + what
        )
        width = TINY_BINARY_WIDTH if kind == "binary" else 1
        factory = functools.partial(tiny_net, name=name, precision=precision, width=width)
        entries.append(ZooEntry(name, description, factory))
    return entries
