"""``ArchConfig``: the frozen, validated, versioned description of one candidate network.

Everything that decides the network's function and cost is a field here: per block the
depthwise and pointwise weight quantizers (family, bits, granularity: DHQ), the activation
bits, the norm (float batch norm or QuantNorm), the scale format of every quantizer scale and
folded multiplier (Double Quantization), the activation function, channels, stride, kernel size
and residual. It round-trips through JSON exactly; :attr:`ArchConfig.archid` is a hash of its
canonical JSON (without the free-text ``name``), so identical candidates are recognised.

Conventions: bit-widths end in ``_bits``; ``32`` bits means float. Activation bits ``1`` is a
binary (sign) activation, ``2..16`` a uniform (LSQ) quantizer, ``32`` float.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, ValidationError, model_validator

from pikenas.space._parse import parse_json
from pikenas.space._strict import StrictModel, one_line
from pikenas.space.errors import ArchConfigError

__all__ = [
    "ARCH_VERSION",
    "QUANTIZER_BITS",
    "ACTIVATION_BITS",
    "SCALE_FORMATS",
    "QuantizerFamily",
    "Granularity",
    "ScaleFormat",
    "NormKind",
    "ActivationKind",
    "ConvQuantSpec",
    "ConvStemSpec",
    "PokeStemSpec",
    "PikeBlockSpec",
    "PokeBottleneckSpec",
    "HeadSpec",
    "InputSpec",
    "ArchConfig",
    "conv_output_size",
]

ARCH_VERSION = 1

QuantizerFamily = Literal["float", "uniform", "pow2", "binary", "ternary"]
Granularity = Literal["per_tensor", "per_channel"]
# Double Quantization: how quantizer scales and folded norm multipliers are stored.
# float32: plain floats; intN: N-bit integers times one shared float; pow2: powers of two (shift).
ScaleFormat = Literal["float32", "int16", "int8", "int4", "pow2"]
SCALE_FORMATS: tuple[str, ...] = get_args(ScaleFormat)
NormKind = Literal["batchnorm", "quantnorm"]
ActivationKind = Literal["relu", "prelu", "dprelu", "none"]

# Bit-widths each weight-quantizer family can take.
QUANTIZER_BITS: dict[str, tuple[int, ...]] = {
    "float": (32,),
    "uniform": (2, 3, 4, 5, 6, 7, 8, 16),
    "pow2": (2, 3, 4, 5),
    "binary": (1,),
    "ternary": (2,),
}
ACTIVATION_BITS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 16, 32)

# Sizes a description may ask for: checked before anything is built (a hostile arch.json asking
# for 10^9 channels is one line, not an allocation).
MAX_CHANNELS = 16_384
MAX_RESOLUTION = 4_096
MAX_INPUT_CHANNELS = 64
MAX_CLASSES = 100_000
MAX_BLOCKS = 256
MAX_PARAMETERS = 300_000_000

# Integers are integers: booleans, strings and floats are refused, not converted.
Int = Annotated[int, Field(strict=True)]
Channels = Annotated[int, Field(strict=True, gt=0, le=MAX_CHANNELS)]


class _Frozen(StrictModel):
    """Every spec of an architecture: frozen, strict (see :mod:`space._strict`)."""


def _check_activation_bits(value: int, field: str) -> None:
    if value not in ACTIVATION_BITS:
        raise ValueError(
            f"{field}={value} is not supported; use one of {list(ACTIVATION_BITS)} "
            "(1 = binary, 32 = float)"
        )


def _check_family_bits(family: str, bits: int, field: str) -> None:
    allowed = QUANTIZER_BITS[family]
    if bits not in allowed:
        raise ValueError(
            f"{field}={bits} is not possible for a {family!r} quantizer; "
            f"use one of {list(allowed)} or change the quantizer family"
        )


class ConvQuantSpec(_Frozen):
    """How the weights of one conv are quantized (one half of DHQ in a separable block)."""

    weight_bits: Int
    weight_quantizer: QuantizerFamily = "uniform"
    weight_granularity: Granularity = "per_channel"

    @model_validator(mode="after")
    def _bits_fit_family(self) -> ConvQuantSpec:
        _check_family_bits(self.weight_quantizer, self.weight_bits, "weight_bits")
        return self


def conv_output_size(size: int, kernel_size: int, stride: int, padding: str = "same") -> int:
    """Spatial output size of a conv / pool on a ``size`` x ``size`` input.

    ``same``: ``ceil(size / stride)`` (TF/Flax SAME, and PyTorch padding ``kernel_size // 2``
    for odd kernels); ``valid``: ``floor((size - kernel_size) / stride) + 1``.
    """
    if padding == "same":
        return math.ceil(size / stride)
    return (size - kernel_size) // stride + 1


class ConvStemSpec(_Frozen):
    """A plain k x k conv stem: conv -> norm -> activation -> requantize."""

    kind: Literal["conv"] = "conv"
    out_channels: Channels
    kernel_size: Int = Field(default=3, gt=0, le=15)
    stride: Int = Field(default=2, gt=0, le=8)
    input_bits: Int = 8
    conv: ConvQuantSpec = ConvQuantSpec(weight_bits=8)
    activation_bits: Int = 8
    activation: ActivationKind = "relu"
    norm: NormKind = "batchnorm"
    scale_format: ScaleFormat = "float32"

    @model_validator(mode="after")
    def _bits(self) -> ConvStemSpec:
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={self.kernel_size} must be odd (same padding)")
        _check_activation_bits(self.input_bits, "input_bits")
        _check_activation_bits(self.activation_bits, "activation_bits")
        return self

    def output_size(self, size: int) -> int:
        return conv_output_size(size, self.kernel_size, self.stride)


class PokeStemSpec(_Frozen):
    """PokeBNN's stem: a 4x4 stride-4 conv to ``group_channels`` (no pixel used twice), BN,
    DPReLU, then a 3x3 grouped conv (``group_channels`` groups) to ``out_channels``, BN, DPReLU.
    """

    kind: Literal["pokebnn"] = "pokebnn"
    group_channels: Channels = 32
    out_channels: Channels = 64
    input_bits: Int = 8
    weight_bits: Int = 8
    activation_bits: Int = 8

    @model_validator(mode="after")
    def _bits(self) -> PokeStemSpec:
        _check_activation_bits(self.input_bits, "input_bits")
        _check_activation_bits(self.activation_bits, "activation_bits")
        _check_family_bits("uniform", self.weight_bits, "weight_bits")
        if self.out_channels % self.group_channels:
            raise ValueError(
                f"out_channels={self.out_channels} must be a multiple of "
                f"group_channels={self.group_channels}"
            )
        return self

    def output_size(self, size: int) -> int:
        return conv_output_size(size, 4, 4, padding="valid")


class PikeBlockSpec(_Frozen):
    """A PikeLPN block: depthwise k x k conv -> norm -> activation -> requantize -> pointwise
    1x1 conv -> norm -> activation -> requantize, with an optional identity residual.

    ``depthwise`` and ``pointwise`` are quantized independently (DHQ). ``activation_bits`` is
    the width of both requantized outputs. ``scale_format`` is the Double Quantization format of
    every scale in the block (quantizer step sizes, QuantNorm multipliers).
    """

    kind: Literal["pikelpn"] = "pikelpn"
    out_channels: Channels
    stride: Literal[1, 2] = 1
    kernel_size: Literal[1, 3, 5, 7] = 3
    residual: bool = False
    depthwise: ConvQuantSpec
    pointwise: ConvQuantSpec
    activation_bits: Int
    activation: ActivationKind = "relu"
    norm: NormKind = "batchnorm"
    scale_format: ScaleFormat = "float32"

    @model_validator(mode="after")
    def _bits(self) -> PikeBlockSpec:
        _check_activation_bits(self.activation_bits, "activation_bits")
        return self

    def output_size(self, size: int) -> int:
        return conv_output_size(size, self.kernel_size, self.stride)


class PokeBottleneckSpec(_Frozen):
    """A PokeBNN bottleneck (ResNet-50 layout): three PokeConv units (1x1, 3x3 with the stage
    stride, 1x1 to ``4 * channels``), each: binary conv, BN, local shortcut (zero-pad /
    average-shrink, 3x3 stride-2 average pool when the size changes), block shortcut (tiled, on
    the third unit), DPReLU, times a ``squeeze_excite_bits`` squeeze-excite of the unit's input,
    BN.
    """

    kind: Literal["pokebnn_bottleneck"] = "pokebnn_bottleneck"
    channels: Annotated[int, Field(strict=True, gt=0, le=MAX_CHANNELS // 4)]
    stride: Literal[1, 2] = 1
    weight_bits: Literal[1] = 1
    activation_bits: Literal[1] = 1
    squeeze_excite_bits: Int = 4

    @property
    def out_channels(self) -> int:
        return 4 * self.channels

    @model_validator(mode="after")
    def _bits(self) -> PokeBottleneckSpec:
        _check_family_bits("uniform", self.squeeze_excite_bits, "squeeze_excite_bits")
        return self

    def output_size(self, size: int) -> int:
        return conv_output_size(size, 3, self.stride)


class HeadSpec(_Frozen):
    """Classifier head: global average pool -> quantize to ``input_bits`` -> linear."""

    input_bits: Int = 8
    linear: ConvQuantSpec = ConvQuantSpec(weight_bits=8, weight_granularity="per_tensor")

    @model_validator(mode="after")
    def _bits(self) -> HeadSpec:
        _check_activation_bits(self.input_bits, "input_bits")
        return self


class InputSpec(_Frozen):
    """What the network's input is: raw pixels (what a camera gives) and the per-channel
    normalization folded into the input quantizer.

    The program and the eval forward take ``(N, C, H, W)`` pixel values ``0..255`` (uint8
    values, carried as float32 where a runtime needs floats), channels in the data set's order
    (RGB for colour images, one channel for greyscale). The input quantizer computes
    ``(pixel / 255 - mean[c]) / std[c]`` as one per-channel multiply and add before rounding:
    ``mean`` and ``std`` are the training split's statistics in the ``[0, 1]`` pixel scale.
    """

    pixels: Literal["uint8"] = "uint8"
    mean: tuple[float, ...] = Field(min_length=1, max_length=MAX_INPUT_CHANNELS)
    std: tuple[float, ...] = Field(min_length=1, max_length=MAX_INPUT_CHANNELS)

    @model_validator(mode="after")
    def _statistics(self) -> InputSpec:
        if len(self.mean) != len(self.std):
            raise ValueError(
                f"input.mean has {len(self.mean)} values but input.std {len(self.std)}"
            )
        if not all(math.isfinite(value) and -1.0 <= value <= 2.0 for value in self.mean):
            raise ValueError("input.mean must be finite values in about [0, 1] (the pixel scale)")
        if not all(math.isfinite(value) and 1e-6 <= value <= 100.0 for value in self.std):
            raise ValueError("input.std must be finite values in [1e-6, 100]")
        return self


StemSpec = Annotated[ConvStemSpec | PokeStemSpec, Field(discriminator="kind")]
BlockSpec = Annotated[PikeBlockSpec | PokeBottleneckSpec, Field(discriminator="kind")]


class ArchConfig(_Frozen):
    """One candidate network: input geometry, stem, blocks, head.

    ``resolution`` is the square input size in pixels; ``input_channels`` the image channels.
    ``input``: the raw-pixel input contract (:class:`InputSpec`), set when the network is
    fitted to a data set; ``None`` (descriptions written before it existed, and unfitted ones)
    means the input is already-normalized floats. It is not part of :attr:`archid`: the same
    network trained on other data keeps its id.
    """

    version: Literal[1] = ARCH_VERSION
    name: str = ""
    input_channels: Int = Field(default=3, gt=0, le=MAX_INPUT_CHANNELS)
    resolution: Int = Field(default=224, gt=0, le=MAX_RESOLUTION)
    num_classes: Int = Field(default=1000, gt=1, le=MAX_CLASSES)
    stem: StemSpec
    blocks: tuple[BlockSpec, ...] = Field(min_length=1, max_length=MAX_BLOCKS)
    head: HeadSpec = HeadSpec()
    input: InputSpec | None = None

    @model_validator(mode="after")
    def _geometry(self) -> ArchConfig:
        if self.input is not None and len(self.input.mean) != self.input_channels:
            raise ValueError(
                f"input.mean has {len(self.input.mean)} values for {self.input_channels} input "
                "channels; give one mean and std per channel"
            )
        size = self.stem.output_size(self.resolution)
        if size < 1:
            raise ValueError(
                f"stem shrinks a {self.resolution}x{self.resolution} input below 1x1; "
                "raise resolution or reduce the stem stride / kernel_size"
            )
        channels = self.stem.out_channels
        for index, block in enumerate(self.blocks):
            if size == 1 and block.stride > 1:
                raise ValueError(
                    f"blocks.{index}.stride={block.stride} would stride a 1x1 feature map; "
                    "use stride 1 there, fewer stride-2 blocks, or a larger resolution"
                )
            if isinstance(block, PikeBlockSpec) and block.residual:
                if block.stride != 1 or block.out_channels != channels:
                    raise ValueError(
                        f"blocks.{index}.residual needs stride 1 and out_channels equal to the "
                        f"input channels ({channels}); set residual to false or fix the block"
                    )
            size = block.output_size(size)
            channels = block.out_channels
        weights = self.weight_count()
        if weights > MAX_PARAMETERS:
            raise ValueError(
                f"the network would hold {weights:,} weights, more than pikenas builds "
                f"({MAX_PARAMETERS:,}); use fewer or narrower blocks"
            )
        return self

    def dead_ends(self) -> list[str]:
        """What makes the output independent of the input (empty for a live network): a ReLU
        before a 1-bit (sign) output is always +1, and so is a 1-bit head input after an
        unsigned (ReLU) last stage."""
        reasons = []
        parts = [("stem", self.stem)] + [(f"blocks.{i}", b) for i, b in enumerate(self.blocks)]
        last_unsigned = False
        for path, part in parts:
            activation = getattr(part, "activation", None)
            bits = getattr(part, "activation_bits", None)
            if activation is None:  # PokeBNN parts: signed float outputs
                last_unsigned = False
                continue
            if activation == "relu" and bits == 1:
                reasons.append(f"{path}: a ReLU before a 1-bit output makes every output +1")
            last_unsigned = activation == "relu"
        if self.head.input_bits == 1 and last_unsigned:
            reasons.append("head: a 1-bit input after a ReLU stage is always +1")
        return reasons

    def weight_count(self) -> int:
        """The conv and linear weights the network holds (a bound checked before building)."""
        stem = self.stem
        if isinstance(stem, ConvStemSpec):
            total = stem.kernel_size**2 * self.input_channels * stem.out_channels
        else:
            total = 16 * self.input_channels * stem.group_channels + 9 * stem.out_channels
        channels = stem.out_channels
        for block in self.blocks:
            if isinstance(block, PikeBlockSpec):
                total += block.kernel_size**2 * channels + channels * block.out_channels
            else:
                width = block.channels
                total += channels * width + 9 * width * width + width * block.out_channels
            channels = block.out_channels
        return total + channels * self.num_classes

    # ---- serialization -------------------------------------------------------------------
    def to_json(self, indent: int | None = 2) -> str:
        """Exact JSON form; :meth:`from_json` of it gives an equal config."""
        # No ``"input": null`` for unfitted networks: their JSON reads as before the field.
        exclude = {"input"} if self.input is None else None
        return self.model_dump_json(indent=indent, exclude=exclude)

    @classmethod
    def from_json(cls, text: str | bytes) -> ArchConfig:
        """Parse and validate; any problem raises :class:`ArchConfigError` with one line."""
        data = parse_json(text, "invalid architecture JSON", ArchConfigError)
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> ArchConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ArchConfigError(_one_line(exc)) from None

    def canonical_json(self) -> str:
        """Sorted-key compact JSON of everything but ``name`` and ``input`` (data statistics,
        not architecture): what :attr:`archid` hashes."""
        data = self.model_dump(mode="json", exclude={"name", "input"})
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @property
    def archid(self) -> str:
        """16 hex digits of the SHA-256 of :meth:`canonical_json`."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    # ---- convenience ---------------------------------------------------------------------
    def replace(self, **changes: Any) -> ArchConfig:
        """A validated copy with some top-level fields changed. Changing ``input_channels``
        without giving ``input`` drops the input spec (its statistics are per channel)."""
        data = self.model_dump()
        if changes.get("input_channels", self.input_channels) != self.input_channels:
            data["input"] = None
        data.update(changes)
        return ArchConfig.from_dict(data)

    def feature_sizes(self) -> list[tuple[int, int]]:
        """``(channels, spatial size)`` after the stem and after each block."""
        size = self.stem.output_size(self.resolution)
        sizes = [(self.stem.out_channels, size)]
        for block in self.blocks:
            size = block.output_size(size)
            sizes.append((block.out_channels, size))
        return sizes


def _one_line(exc: ValidationError) -> str:
    """pydantic's report as one line naming the field and the fix."""
    return f"invalid architecture: {one_line(exc)}"
