"""``build_model(arch) -> PikeNet``: the trainable network an ``ArchConfig`` describes.

Stems and blocks are built through the registries in :mod:`space._builders` (filled by
:mod:`space.blocks` and, when present, :mod:`space.pokebnn`), so a new block kind only
registers a builder. Each built part reports ``output_bits`` / ``output_signed``; a block
builder whose signature has an ``input_bits`` keyword receives the previous part's
``output_bits``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
from typing import Any

import torch
from torch import Tensor, nn

from space import blocks as _blocks  # noqa: F401  (registers "conv" and "pikelpn")
from space._builders import BLOCK_BUILDERS, STEM_BUILDERS
from space.arch import ArchConfig
from space.blocks import Head
from space.costs import FLOAT_BITS, CostContainer

if importlib.util.find_spec("space.pokebnn") is not None:
    from space import pokebnn  # noqa: F401  (registers the PokeBNN stem and bottleneck)

__all__ = ["PikeNet", "build_model"]


def _output_bits(module: nn.Module, spec: Any) -> int:
    return int(getattr(module, "output_bits", getattr(spec, "activation_bits", FLOAT_BITS)))


def _takes_input_bits(builder: Any) -> bool:
    try:
        parameters = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.name == "input_bits" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters
    )


class PikeNet(nn.Module, CostContainer):
    """Stem -> blocks -> head. Input ``(N, input_channels, resolution, resolution)`` float
    (normalised pixels), output ``(N, num_classes)`` float logits. ``arch`` is its config."""

    def __init__(self, arch: ArchConfig) -> None:
        super().__init__()
        self.arch = arch
        self.stem = STEM_BUILDERS.get(arch.stem.kind)(arch.stem, arch.input_channels)
        bits = _output_bits(self.stem, arch.stem)
        signed = bool(getattr(self.stem, "output_signed", True))
        channels = arch.stem.out_channels
        blocks = []
        for spec in arch.blocks:
            builder = BLOCK_BUILDERS.get(spec.kind)
            if _takes_input_bits(builder):
                block = builder(spec, channels, input_bits=bits)
            else:
                block = builder(spec, channels)
            blocks.append(block)
            bits = _output_bits(block, spec)
            signed = bool(getattr(block, "output_signed", True))
            channels = spec.out_channels
        self.blocks = nn.ModuleList(blocks)
        self.head = Head(arch.head, channels, arch.num_classes, feature_bits=bits, signed=signed)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def build_model(
    arch: ArchConfig, *, seed: int = 0, device: torch.device | str | None = None
) -> PikeNet:
    """Build the network for ``arch`` with deterministic initial weights (``seed``).

    ``device="meta"`` (or an enclosing ``with torch.device("meta")``) builds it without
    allocating memory, as the ACE counter does. The global RNG state is left untouched.
    """
    device_context = torch.device(device) if device is not None else contextlib.nullcontext()
    with torch.random.fork_rng(devices=[]), device_context:
        torch.manual_seed(seed)
        return PikeNet(arch)
