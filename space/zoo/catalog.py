"""The reference zoo: named baseline architectures built from the same parts as the search.

Families (see each ``describe(name)``):

* ``mobilenet_v1-{0.25,0.5,0.75,1.0}-{float,w8a8,w4a4}``: MobileNetV1, any resolution;
* ``pokebnn-{0.5x,0.75x,1.0x,2.0x}``: PokeBNN as in the google/aqt reference implementation;
* ``pikelpn-{1x,2x,3x}``: PikeLPN-style reconstructions on MobileNetV1 geometry;
* ``tiny-{float,w8a8,w4a4,binary,pikelpn}``: small nets for digits / CIFAR;
* ``fmnist-{float,w8a8,w4a4,binary,pikelpn}``: Fashion-MNIST's geometry (28x28x1), the
  benchmark's baselines (``binary`` in FINN's W1A1 style).

Every entry is a factory ``(resolution=None, input_channels=None, num_classes=None) ->
ArchConfig``; ``None`` keeps the family default (224x224x3 and 1000 classes for the ImageNet
models, 8x8x1 and 10 classes for the tiny ones).
"""

from __future__ import annotations

from pikenas.space.arch import ArchConfig
from pikenas.space.registry import Registry
from pikenas.space.zoo._parts import ZooEntry
from pikenas.space.zoo.fmnist import fmnist_entries
from pikenas.space.zoo.mobilenet import mobilenet_entries, pikelpn_entries
from pikenas.space.zoo.pokebnn import pokebnn_entries
from pikenas.space.zoo.tiny import tiny_entries

__all__ = ["ZOO", "ZooEntry", "zoo_names", "get_zoo_arch", "describe"]

ZOO: Registry[ZooEntry] = Registry("zoo model")
_ENTRIES = mobilenet_entries() + pokebnn_entries() + pikelpn_entries() + tiny_entries()
for _entry in _ENTRIES + fmnist_entries():
    ZOO.add(_entry.name, _entry)
del _entry


def zoo_names() -> list[str]:
    """Every zoo name, in listing order (family by family)."""
    return ZOO.names()


def get_zoo_arch(
    name: str,
    resolution: int | None = None,
    input_channels: int | None = None,
    num_classes: int | None = None,
) -> ArchConfig:
    """The :class:`ArchConfig` of zoo model ``name``.

    ``resolution`` (pixels, square input), ``input_channels`` and ``num_classes`` override the
    family defaults; a resolution too small for the network's strides raises
    :class:`~space.errors.ArchConfigError` with one line.
    """
    return ZOO.get(name).build(
        resolution=resolution, input_channels=input_channels, num_classes=num_classes
    )


def describe(name: str) -> str:
    """The one-line description of zoo model ``name``."""
    return ZOO.get(name).description
