"""Shared pieces of the reference zoo: the entry record and precision profiles.

A :class:`Precision` bundles every per-layer choice of one quantization recipe (weights,
activations, norm, Double Quantization format) so that one network geometry (MobileNetV1, the
tiny nets) can be instantiated as float, w8a8, w4a4, binary or PikeLPN-style without repeating
the spec plumbing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pikenas.space.arch import (
    ActivationKind,
    ArchConfig,
    ConvQuantSpec,
    ConvStemSpec,
    HeadSpec,
    NormKind,
    PikeBlockSpec,
    ScaleFormat,
)

__all__ = [
    "ZooFactory",
    "ZooEntry",
    "Precision",
    "FLOAT_CONV",
    "build_arch",
    "separable_arch",
]

# ``factory(resolution=None, input_channels=None, num_classes=None) -> ArchConfig``
ZooFactory = Callable[..., ArchConfig]

FLOAT_CONV = ConvQuantSpec(
    weight_bits=32, weight_quantizer="float", weight_granularity="per_tensor"
)


@dataclass(frozen=True)
class ZooEntry:
    """One reference network: its name, a one-line description and its factory."""

    name: str
    description: str
    factory: ZooFactory

    def build(
        self,
        resolution: int | None = None,
        input_channels: int | None = None,
        num_classes: int | None = None,
    ) -> ArchConfig:
        return self.factory(
            resolution=resolution, input_channels=input_channels, num_classes=num_classes
        )


@dataclass(frozen=True)
class Precision:
    """A quantization recipe for a stem + separable blocks + head network.

    ``stem_conv`` / ``head_linear``: weight quantizers of the first and last layer;
    ``input_bits``: bits of the image pixels fed to the stem; ``stem_activation_bits``: width of
    the stem's requantized output (the first block's input); ``depthwise`` / ``pointwise``: the
    DHQ pair of every block; ``activation_bits``: width of every block output;
    ``head_input_bits``: width of the pooled features fed to the classifier.
    """

    stem_conv: ConvQuantSpec
    input_bits: int
    stem_activation_bits: int
    depthwise: ConvQuantSpec
    pointwise: ConvQuantSpec
    activation_bits: int
    head_linear: ConvQuantSpec
    head_input_bits: int
    activation: ActivationKind = "relu"
    stem_activation: ActivationKind = "relu"
    norm: NormKind = "batchnorm"
    scale_format: ScaleFormat = "float32"

    def stem(self, out_channels: int, stride: int) -> ConvStemSpec:
        return ConvStemSpec(
            out_channels=out_channels,
            kernel_size=3,
            stride=stride,
            input_bits=self.input_bits,
            conv=self.stem_conv,
            activation_bits=self.stem_activation_bits,
            activation=self.stem_activation,
            norm=self.norm,
            scale_format=self.scale_format,
        )

    def block(self, out_channels: int, stride: int, residual: bool = False) -> PikeBlockSpec:
        return PikeBlockSpec(
            out_channels=out_channels,
            stride=stride,
            kernel_size=3,
            residual=residual,
            depthwise=self.depthwise,
            pointwise=self.pointwise,
            activation_bits=self.activation_bits,
            activation=self.activation,
            norm=self.norm,
            scale_format=self.scale_format,
        )

    def head(self) -> HeadSpec:
        return HeadSpec(input_bits=self.head_input_bits, linear=self.head_linear)


def build_arch(
    *,
    name: str,
    resolution: int,
    input_channels: int,
    num_classes: int,
    stem: Any,
    blocks: Sequence[Any],
    head: HeadSpec,
) -> ArchConfig:
    """Validate through :meth:`ArchConfig.from_dict`, so a bad geometry (e.g. a resolution too
    small for the strides) raises one-line :class:`~space.errors.ArchConfigError`."""
    return ArchConfig.from_dict(
        {
            "name": name,
            "resolution": resolution,
            "input_channels": input_channels,
            "num_classes": num_classes,
            "stem": stem,
            "blocks": tuple(blocks),
            "head": head,
        }
    )


def separable_arch(
    *,
    name: str,
    precision: Precision,
    stem_channels: int,
    stem_stride: int,
    layout: Sequence[tuple[int, int, bool]],
    resolution: int,
    input_channels: int,
    num_classes: int,
) -> ArchConfig:
    """A stem + depthwise-separable blocks + head network.

    ``layout``: ``(out_channels, stride, residual)`` per block.
    """
    return build_arch(
        name=name,
        resolution=resolution,
        input_channels=input_channels,
        num_classes=num_classes,
        stem=precision.stem(stem_channels, stem_stride),
        blocks=[precision.block(c, s, r) for c, s, r in layout],
        head=precision.head(),
    )
