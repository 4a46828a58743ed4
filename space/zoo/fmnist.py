"""Zoo baselines at Fashion-MNIST's geometry (28x28x1, 10 classes): ``fmnist-*``.

Geometry, shared by every precision (and by ``configs/fashion_mnist.yaml``'s space): a 3x3
stride-1 conv stem to 16 channels (a stride-2 stem throws away half the detail of a 28 px
garment), then :data:`FMNIST_LAYOUT`: 28 -> 14 -> 14 -> 7 -> 7, global average pool, linear
classifier. About 2.0 M MACs and 30 k weights per image (float: ~2x the "2-conv CNN under
100 k parameters" anchor's compute, a fraction of its parameters).

Precisions: ``float``, ``w8a8``, ``w4a4`` (4-bit blocks, 8-bit stem and head), ``binary``
(FINN's W1A1 style: binary weights in *every* layer including the stem and the classifier,
8-bit pixels into the stem, 1-bit activations after batch norm with no ReLU, so BN + sign is a
per-channel threshold as in FINN; double width), and ``pikelpn`` (QuantNorm + pow2 Double
Quantization, DHQ: 8-bit uniform depthwise, 4-bit pow2 pointwise, 4-bit activations).
FINN's own CNV uses plain 3x3 convs; here the geometry is the separable one of the space, so
the baselines differ from the front only in precision.

Each carries Fashion-MNIST's raw-pixel input spec (:data:`FMNIST_INPUT`), so ``pikenas ace
fmnist-w8a8`` prices exactly the network a Fashion-MNIST search trains (the input spec is not
part of the archid).
"""

from __future__ import annotations

import functools

from pikenas.space.arch import ArchConfig, ConvQuantSpec, InputSpec
from pikenas.space.zoo._parts import Precision, ZooEntry, separable_arch
from pikenas.space.zoo.mobilenet import MOBILENET_PRECISIONS, PIKELPN_PRECISION

__all__ = ["FMNIST_LAYOUT", "FMNIST_STEM_CHANNELS", "FMNIST_INPUT", "fmnist_net", "fmnist_entries"]

FMNIST_STEM_CHANNELS = 16
# (out_channels, stride, residual)
FMNIST_LAYOUT: tuple[tuple[int, int, bool], ...] = (
    (32, 2, False),
    (64, 1, False),
    (128, 2, False),
    (128, 1, True),
)
#: The training split's statistics of ``fashion_mnist`` (54,000 images, [0, 1] scale).
FMNIST_INPUT = InputSpec(mean=(0.285840,), std=(0.352928,))

_BINARY = ConvQuantSpec(weight_bits=1, weight_quantizer="binary", weight_granularity="per_channel")
FINN_BINARY_PRECISION = Precision(
    stem_conv=_BINARY,
    input_bits=8,
    stem_activation_bits=1,
    depthwise=_BINARY,
    pointwise=_BINARY,
    activation_bits=1,
    head_linear=ConvQuantSpec(
        weight_bits=1, weight_quantizer="binary", weight_granularity="per_tensor"
    ),
    head_input_bits=1,
    activation="none",
    stem_activation="none",
)

FMNIST_PRECISIONS: dict[str, tuple[Precision, int, str]] = {  # kind -> (recipe, width, text)
    "float": (MOBILENET_PRECISIONS["float"][0], 1, "32-bit float everywhere, float BN + ReLU"),
    "w8a8": (MOBILENET_PRECISIONS["w8a8"][0], 1, "8-bit weights and activations everywhere"),
    "w4a4": (
        MOBILENET_PRECISIONS["w4a4"][0],
        1,
        "blocks 4-bit weights / 4-bit activations, 8-bit stem conv and head",
    ),
    "binary": (
        FINN_BINARY_PRECISION,
        2,
        "FINN-style W1A1: binary weights in every layer (stem and classifier too), 8-bit pixels "
        "in, 1-bit activations (BN + sign, a threshold), 2x channels",
    ),
    "pikelpn": (
        PIKELPN_PRECISION,
        1,
        "PikeLPN-style: QuantNorm + pow2 DQ, DHQ (8-bit uniform depthwise, 4-bit pow2 "
        "pointwise), 4-bit activations, 8-bit stem and head",
    ),
}


def fmnist_net(
    *,
    name: str,
    precision: Precision,
    width: int = 1,
    resolution: int | None = None,
    input_channels: int | None = None,
    num_classes: int | None = None,
) -> ArchConfig:
    """The Fashion-MNIST geometry (defaults 28x28x1, 10 classes) with ``precision``;
    ``width`` multiplies every channel count. The input spec is kept for one channel."""
    arch = separable_arch(
        name=name,
        precision=precision,
        stem_channels=FMNIST_STEM_CHANNELS * width,
        stem_stride=1,
        layout=[(c * width, s, r) for c, s, r in FMNIST_LAYOUT],
        resolution=28 if resolution is None else resolution,
        input_channels=1 if input_channels is None else input_channels,
        num_classes=10 if num_classes is None else num_classes,
    )
    return arch.replace(input=FMNIST_INPUT) if arch.input_channels == 1 else arch


def fmnist_entries() -> list[ZooEntry]:
    entries = []
    for kind, (precision, width, what) in FMNIST_PRECISIONS.items():
        name = f"fmnist-{kind}"
        description = f"Fashion-MNIST 5-layer separable net (default 1x28x28, 10 classes): {what}"
        factory = functools.partial(fmnist_net, name=name, precision=precision, width=width)
        entries.append(ZooEntry(name, description, factory))
    return entries
