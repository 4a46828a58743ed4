"""PokeBNN (Zhang et al. 2022, arXiv 2112.00133) as in the reference implementation.

Faithful to google/aqt ``aqt/jax_legacy/jax/imagenet/pokebnn.py`` with the precisions of
``configs/pokebnn/pokebnn_config.py``: stem convs (``conv_init``) 8-bit weights and inputs;
every bottleneck conv 1-bit weights and 1-bit inputs; squeeze-excite convs (``conv_se``) 4-bit
weights and inputs; dense head 8-bit weights and inputs. Stem: 4x4 stride-4 conv to 32
channels, 3x3 grouped conv (32 groups) to 64. Blocks: ResNet-50's 3-4-6-3 stages with widths
64/128/256/512 times the filter multiplier (``int(features * multiplier)``; the stem is not
scaled), each bottleneck ending at 4x its width. Global mean, linear classifier.
"""

from __future__ import annotations

import functools

from pikenas.space.arch import ArchConfig, ConvQuantSpec, HeadSpec, PokeBottleneckSpec, PokeStemSpec
from pikenas.space.zoo._parts import ZooEntry, build_arch

__all__ = ["POKEBNN_LAYOUT", "POKEBNN_MULTIPLIERS", "pokebnn", "pokebnn_entries"]

# (stride, features) of the 16 bottleneck blocks at multiplier 1.0 (ResNet-50 layout).
POKEBNN_LAYOUT: tuple[tuple[int, int], ...] = (
    (((1, 64),) * 3 + ((2, 128),) + ((1, 128),) * 3 + ((2, 256),) + ((1, 256),) * 5)
    + ((2, 512),)
    + ((1, 512),) * 2
)
POKEBNN_MULTIPLIERS: dict[str, float] = {"0.5x": 0.5, "0.75x": 0.75, "1.0x": 1.0, "2.0x": 2.0}


def pokebnn(
    *,
    name: str,
    multiplier: float,
    resolution: int | None = None,
    input_channels: int | None = None,
    num_classes: int | None = None,
) -> ArchConfig:
    """PokeBNN with block widths scaled by ``multiplier``; defaults 3x224x224, 1000 classes."""
    stem = PokeStemSpec(
        group_channels=32, out_channels=64, input_bits=8, weight_bits=8, activation_bits=8
    )
    blocks = [
        PokeBottleneckSpec(
            channels=int(features * multiplier),
            stride=stride,
            weight_bits=1,
            activation_bits=1,
            squeeze_excite_bits=4,
        )
        for stride, features in POKEBNN_LAYOUT
    ]
    head = HeadSpec(
        input_bits=8,
        linear=ConvQuantSpec(
            weight_bits=8, weight_quantizer="uniform", weight_granularity="per_channel"
        ),
    )
    return build_arch(
        name=name,
        resolution=224 if resolution is None else resolution,
        input_channels=3 if input_channels is None else input_channels,
        num_classes=1000 if num_classes is None else num_classes,
        stem=stem,
        blocks=blocks,
        head=head,
    )


def pokebnn_entries() -> list[ZooEntry]:
    entries = []
    for tag, multiplier in POKEBNN_MULTIPLIERS.items():
        name = f"pokebnn-{tag}"
        description = (
            f"PokeBNN-{tag} as in google/aqt (block widths x{multiplier}): 8-bit 4x4/s4 + "
            "grouped 3x3 stem, 16 binary (1-bit weights and inputs) bottlenecks with float BN, "
            "DPReLU, reshape-add shortcuts and 4-bit squeeze-excite, 8-bit dense head"
        )
        entries.append(
            ZooEntry(
                name, description, functools.partial(pokebnn, name=name, multiplier=multiplier)
            )
        )
    return entries
