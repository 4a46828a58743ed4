"""PikeLPN building blocks: the conv stem, the PikeLPN block, the classifier head.

Importing this module registers ``STEM_BUILDERS["conv"]`` and ``BLOCK_BUILDERS["pikelpn"]``.
Every block exposes ``output_bits`` (the width of the tensor it emits; 32 = float) and
``output_signed``; :func:`space.build.build_model` hands them to the next block as its
``input_bits`` (a builder that takes an ``input_bits`` keyword receives it).

Blocks are :class:`space.costs.CostContainer` s: their forward only calls children, each of
which declares its own inference ops (convs, output stages, residual add, pool).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from space._builders import BLOCK_BUILDERS, STEM_BUILDERS
from space.arch import ConvStemSpec, HeadSpec, PikeBlockSpec
from space.costs import FLOAT_BITS, CostContainer, CostDeclaration, Op, ShapePreserving
from space.layers import QuantConv2d, QuantLinear
from space.norms import make_output_stage
from space.quantizers import UniformQuantizer, make_activation_quantizer

__all__ = [
    "InputQuantizer",
    "ConvStem",
    "PikeBlock",
    "ResidualAdd",
    "GlobalAvgPoolQuant",
    "Head",
    "build_conv_stem",
    "build_pike_block",
]


class InputQuantizer(nn.Module, ShapePreserving):
    """Fake-quantizes the network input ``(N, C, H, W)`` to ``bits`` (signed, per tensor).

    At inference the pixels already arrive as ``bits``-bit integers (the normalisation is
    folded into the first layer), so this declares no operations (docs/ace_v2_rules.md).
    The step starts at ``4 / q_max`` (a normalised image spans about +-4) and is learned.
    """

    def __init__(self, bits: int, *, scale_format: str = "float32") -> None:
        super().__init__()
        self.bits = bits
        self.quantizer = make_activation_quantizer(bits, signed=True, scale_format=scale_format)
        if isinstance(self.quantizer, UniformQuantizer) and not self.quantizer.scale.is_meta:
            with torch.no_grad():
                self.quantizer.scale.fill_(4.0 / self.quantizer.q_max)

    def forward(self, x: Tensor) -> Tensor:
        return self.quantizer(x)

    def inference_ops(
        self, input_shape: tuple[int, ...], output_shape: tuple[int, ...]
    ) -> CostDeclaration:
        return CostDeclaration()


class ConvStem(nn.Module, CostContainer):
    """Input quantizer -> k x k conv (stride ``spec.stride``) -> norm -> activation ->
    requantize. ``(N, input_channels, H, W) -> (N, out_channels, ceil(H / s), ceil(W / s))``."""

    def __init__(self, spec: ConvStemSpec, input_channels: int) -> None:
        super().__init__()
        self.spec = spec
        self.input_quantizer = InputQuantizer(spec.input_bits, scale_format=spec.scale_format)
        self.conv = QuantConv2d(
            input_channels,
            spec.out_channels,
            spec.kernel_size,
            stride=spec.stride,
            weight_bits=spec.conv.weight_bits,
            weight_quantizer=spec.conv.weight_quantizer,
            weight_granularity=spec.conv.weight_granularity,
            input_bits=spec.input_bits,
            scale_format=spec.scale_format,
        )
        self.stage = make_output_stage(
            spec.norm,
            self.conv,
            activation=spec.activation,
            activation_bits=spec.activation_bits,
            scale_format=spec.scale_format,
        )
        self.output_bits = spec.activation_bits
        self.output_signed = spec.activation != "relu"

    def forward(self, x: Tensor) -> Tensor:
        return self.stage(self.conv(self.input_quantizer(x)))


class ResidualAdd(nn.Module, ShapePreserving):
    """``y = requantize(a + b)`` back to ``bits`` (the block output and its input).

    Declared (docs/ace_v2_rules.md): ``add(E, b, b, "residual")`` and
    ``compare(2E, b+1, b+1, "clip")``; float (``bits = 32``): ``add(E, 32, 32, float)``. The
    rule treats both operands as integers on one grid; in training the sum is requantized with
    this module's own learned step.
    """

    def __init__(self, bits: int, *, signed: bool, scale_format: str = "float32") -> None:
        super().__init__()
        self.bits = bits
        self.requantizer = make_activation_quantizer(bits, signed=signed, scale_format=scale_format)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.requantizer(a + b)

    def inference_ops(
        self, input_shape: tuple[int, ...], output_shape: tuple[int, ...]
    ) -> CostDeclaration:
        e = math.prod(output_shape)
        if self.bits >= FLOAT_BITS:
            ops = (Op("add", e, FLOAT_BITS, FLOAT_BITS, True, "residual"),)
        else:
            b = self.bits
            ops = (
                Op("add", e, b, b, False, "residual"),
                Op("compare", 2 * e, b + 1, b + 1, False, "clip"),
            )
        return CostDeclaration(ops, {"residual_add": e}, 0)


class PikeBlock(nn.Module, CostContainer):
    """PikeLPN block: depthwise k x k conv (stride) -> norm -> act -> requantize -> pointwise
    1x1 conv -> norm -> act -> requantize [-> + input, requantize].

    ``(N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride))``.
    DHQ: the depthwise and pointwise weight quantizers (family, bits, granularity) are set
    independently by ``spec.depthwise`` / ``spec.pointwise``. ``input_bits``: width of the
    incoming tensor (the previous block's ``output_bits``).
    """

    def __init__(self, spec: PikeBlockSpec, in_channels: int, *, input_bits: int = 8) -> None:
        super().__init__()
        self.spec = spec
        self.input_bits = input_bits
        stage_options = {
            "activation": spec.activation,
            "activation_bits": spec.activation_bits,
            "scale_format": spec.scale_format,
        }
        self.depthwise = QuantConv2d(
            in_channels,
            in_channels,
            spec.kernel_size,
            stride=spec.stride,
            groups=in_channels,
            weight_bits=spec.depthwise.weight_bits,
            weight_quantizer=spec.depthwise.weight_quantizer,
            weight_granularity=spec.depthwise.weight_granularity,
            input_bits=input_bits,
            scale_format=spec.scale_format,
        )
        self.depthwise_stage = make_output_stage(spec.norm, self.depthwise, **stage_options)
        self.pointwise = QuantConv2d(
            in_channels,
            spec.out_channels,
            1,
            weight_bits=spec.pointwise.weight_bits,
            weight_quantizer=spec.pointwise.weight_quantizer,
            weight_granularity=spec.pointwise.weight_granularity,
            input_bits=spec.activation_bits,
            scale_format=spec.scale_format,
        )
        self.pointwise_stage = make_output_stage(spec.norm, self.pointwise, **stage_options)
        self.output_bits = spec.activation_bits
        self.output_signed = spec.activation != "relu"
        self.residual = (
            ResidualAdd(
                spec.activation_bits, signed=self.output_signed, scale_format=spec.scale_format
            )
            if spec.residual
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        y = self.depthwise_stage(self.depthwise(x))
        y = self.pointwise_stage(self.pointwise(y))
        if self.residual is not None:
            y = self.residual(y, x)
        return y


class GlobalAvgPoolQuant(nn.Module):
    """Global average pool ``(N, C, H, W) -> (N, C)`` then the head input quantizer to
    ``output_bits`` (signed per ``signed``; 32 = none).

    Declared (docs/ace_v2_rules.md) for ``feature_bits = b`` and ``H * W`` pixels:
    ``add(N*C*H*W, Ab, Ab, "pool_sum")`` with ``Ab = min(32, b + ceil(log2(H*W)))``;
    ``pool_scale``: a shift when ``H*W`` is a power of two, else ``mul(N*C, 32, 32, float)``; the
    quantizer: ``mul``, ``round`` and ``compare(2*N*C)`` at 32 float (``compare(N*C)`` "sign" for 1
    bit).
    """

    def __init__(self, feature_bits: int, output_bits: int, *, signed: bool = True) -> None:
        super().__init__()
        self.feature_bits = feature_bits
        self.output_bits = output_bits
        self.quantizer = make_activation_quantizer(output_bits, signed=signed)

    def forward(self, x: Tensor) -> Tensor:
        return self.quantizer(x.mean(dim=(2, 3)))

    def inference_ops(
        self, input_shape: tuple[int, ...], output_shape: tuple[int, ...]
    ) -> CostDeclaration:
        n, c, h, w = input_shape
        pixels, outputs, f = h * w, n * c, FLOAT_BITS
        if self.feature_bits >= FLOAT_BITS:
            ops = [
                Op("add", n * c * pixels, f, f, True, "pool_sum"),
                Op("mul", outputs, f, f, True, "pool_scale"),
            ]
        else:
            sum_bits = min(f, self.feature_bits + math.ceil(math.log2(pixels)))
            ops = [Op("add", n * c * pixels, sum_bits, sum_bits, False, "pool_sum")]
            if pixels & (pixels - 1) == 0:
                ops.append(Op("shift", outputs, sum_bits, sum_bits, False, "pool_scale"))
            else:
                ops.append(Op("mul", outputs, f, f, True, "pool_scale"))
        elements = {"pool": outputs}
        if self.output_bits == 1:
            ops.append(Op("compare", outputs, f, f, True, "sign"))
            elements["sign"] = outputs
        elif self.output_bits < FLOAT_BITS:
            ops += [
                Op("mul", outputs, f, f, True, "requant_scale"),
                Op("round", outputs, f, f, True, "round"),
                Op("compare", 2 * outputs, f, f, True, "clip"),
            ]
            elements["requantize"] = outputs
        return CostDeclaration(tuple(ops), elements, 0)


class Head(nn.Module, CostContainer):
    """Global average pool -> quantize to ``spec.input_bits`` -> :class:`QuantLinear`.

    ``(N, in_channels, H, W) -> (N, num_classes)`` float logits. ``feature_bits``: width of the
    incoming features (the last block's ``output_bits``).
    """

    def __init__(
        self,
        spec: HeadSpec,
        in_channels: int,
        num_classes: int,
        *,
        feature_bits: int = 8,
        signed: bool = True,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.pool = GlobalAvgPoolQuant(feature_bits, spec.input_bits, signed=signed)
        self.linear = QuantLinear(
            in_channels,
            num_classes,
            weight_bits=spec.linear.weight_bits,
            weight_quantizer=spec.linear.weight_quantizer,
            weight_granularity=spec.linear.weight_granularity,
            input_bits=spec.input_bits,
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.pool(x))


@STEM_BUILDERS.register("conv")
def build_conv_stem(spec: ConvStemSpec, input_channels: int) -> ConvStem:
    """``STEM_BUILDERS["conv"]``."""
    return ConvStem(spec, input_channels)


@BLOCK_BUILDERS.register("pikelpn")
def build_pike_block(spec: PikeBlockSpec, in_channels: int, *, input_bits: int = 8) -> PikeBlock:
    """``BLOCK_BUILDERS["pikelpn"]``."""
    return PikeBlock(spec, in_channels, input_bits=input_bits)
