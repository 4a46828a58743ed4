"""Registries that map an ``ArchConfig`` part's ``kind`` to the function building its module.

``space.build`` fills them (from ``space.blocks`` and ``space.pokebnn``); a new block kind
registers its builder here and is then built, costed and tested like the others.
Builders: ``STEM_BUILDERS[kind](spec, input_channels) -> nn.Module`` and
``BLOCK_BUILDERS[kind](spec, in_channels) -> nn.Module``. A block builder that also takes an
``input_bits`` keyword receives the width of the tensor entering the block (the previous part's
``output_bits`` attribute, else its spec's ``activation_bits``; 32 = float).
"""

from __future__ import annotations

from typing import Any

from pikenas.space.registry import Registry

STEM_BUILDERS: Registry[Any] = Registry("stem kind")
BLOCK_BUILDERS: Registry[Any] = Registry("block kind")
