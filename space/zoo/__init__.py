"""The reference zoo: MobileNetV1, PokeBNN, PikeLPN-style reconstructions and tiny nets, built
from the same parts as the search (see :mod:`.catalog`)."""

from __future__ import annotations

from pikenas.space.zoo.catalog import ZOO, ZooEntry, describe, get_zoo_arch, zoo_names

__all__ = ["ZOO", "ZooEntry", "describe", "get_zoo_arch", "zoo_names"]
