"""Per-layer bit-widths and one-line summaries of an :class:`~space.arch.ArchConfig`.

A "layer" here is one conv or linear that executes MACs, in forward order. Its bits are
``weight_bits / input_activation_bits``: the two operand widths of its MACs, i.e. what
ACE v1 multiplies. Names: ``stem`` (``stem.conv1`` / ``stem.conv2`` for the PokeBNN stem),
``b<i>.dw`` / ``b<i>.pw`` for the depthwise / pointwise conv of PikeLPN block ``i``,
``b<i>.conv1..3`` for the three binary convs of a PokeBNN bottleneck, and ``head``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pikenas.space.arch import ArchConfig, ConvStemSpec, PikeBlockSpec, PokeBottleneckSpec

__all__ = ["LayerBits", "layer_bits", "bits_string", "arch_summary"]


@dataclass(frozen=True)
class LayerBits:
    """Operand widths (bits) of one MAC layer; 32 means float."""

    layer: str
    weight_bits: int
    activation_bits: int

    @property
    def label(self) -> str:
        """``"w/a"``, e.g. ``"4/8"``."""
        return f"{self.weight_bits}/{self.activation_bits}"


def layer_bits(arch: ArchConfig) -> list[LayerBits]:
    """The MAC layers of ``arch`` in forward order with their weight / input-activation bits."""
    layers: list[LayerBits] = []
    stem = arch.stem
    if isinstance(stem, ConvStemSpec):
        layers.append(LayerBits("stem", stem.conv.weight_bits, stem.input_bits))
    else:  # PokeBNN stem: 4x4 conv on the input, then a grouped 3x3 conv
        layers.append(LayerBits("stem.conv1", stem.weight_bits, stem.input_bits))
        layers.append(LayerBits("stem.conv2", stem.weight_bits, stem.activation_bits))
    incoming_bits = stem.activation_bits
    for index, block in enumerate(arch.blocks):
        if isinstance(block, PikeBlockSpec):
            layers.append(LayerBits(f"b{index}.dw", block.depthwise.weight_bits, incoming_bits))
            layers.append(
                LayerBits(f"b{index}.pw", block.pointwise.weight_bits, block.activation_bits)
            )
        elif isinstance(block, PokeBottleneckSpec):
            for unit in (1, 2, 3):
                layers.append(
                    LayerBits(f"b{index}.conv{unit}", block.weight_bits, block.activation_bits)
                )
        else:  # a new block kind must say how its bits are shown
            raise TypeError(f"layer_bits does not know block kind {block.kind!r}")
        incoming_bits = block.activation_bits
    layers.append(LayerBits("head", arch.head.linear.weight_bits, arch.head.input_bits))
    return layers


def bits_string(arch: ArchConfig) -> str:
    """The per-layer bits as one compact string, e.g. ``"8/8 4/8 4/4 8/4"``."""
    return " ".join(layer.label for layer in layer_bits(arch))


def arch_summary(arch: ArchConfig) -> str:
    """One line describing ``arch``: resolution, blocks, channel range, norms, bits."""
    channels = [arch.stem.out_channels] + [block.out_channels for block in arch.blocks]
    norms = sorted({getattr(block, "norm", "batchnorm") for block in arch.blocks})
    name = f"{arch.name}: " if arch.name else ""
    return (
        f"{name}{arch.resolution}px, {len(arch.blocks)} blocks, channels "
        f"{min(channels)}-{max(channels)}, {'/'.join(norms)}, bits w/a {bits_string(arch)}"
    )
