"""PikeLPN building blocks: the conv stem, the PikeLPN block, the classifier head.

Importing this module registers ``STEM_BUILDERS["conv"]`` and ``BLOCK_BUILDERS["pikelpn"]``.
Every part exposes ``output_codes`` (bits and code range of the tensor it emits; 32 bits =
float), receives the previous part's codes as ``input_codes``, and has

* ``forward(x, step) -> (y, step_y)``: the training forward (fake quantization); ``step`` is
  the input's quantization step (``None`` for a float tensor, 1 for a sign);
* ``lower(builder, x) -> Value``: the operations it runs in the integer program.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pikenas.space.arch import ConvStemSpec, HeadSpec, InputSpec, PikeBlockSpec
from pikenas.space.nn._builders import BLOCK_BUILDERS, STEM_BUILDERS
from pikenas.space.nn._codes import (
    UNSIGNED_8BIT,
    OutputCodes,
    code_range,
    code_scale_of,
    output_codes,
    output_step,
    step_of,
)
from pikenas.space.nn._requant import lower_output
from pikenas.space.nn.layers import QuantConv2d, QuantLinear
from pikenas.space.nn.norms import make_output_stage
from pikenas.space.nn.quantizers import UniformQuantizer, make_activation_quantizer
from pikenas.space.nn.residual import ResidualAdd
from pikenas.space.program.builder import ProgramBuilder, channel_shape
from pikenas.space.program.ir import Value

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

FLOAT_BITS = 32


class InputQuantizer(nn.Module):
    """Quantizes the network input ``(N, C, H, W)`` to ``bits`` (signed, per tensor).

    Without ``input_spec`` the input is already-normalized floats and the program runs a float
    multiply by ``1 / step``, clip, round (a sign for 1 bit; nothing for 32). With an
    :class:`~space.arch.InputSpec` the input is raw pixels ``0..255`` (8-bit values) and the
    per-channel normalization ``(x / 255 - mean[c]) / std[c]`` is folded into the same
    operations: the program runs one per-channel multiply by ``1 / (255 std[c] step)`` and one
    per-channel add of ``-mean[c] / (std[c] step)``, then clip and round, each charged by ACE
    like any other op. The step starts at ``4 / q_max`` (normalized units) and is learned.
    """

    def __init__(
        self, bits: int, *, scale_format: str = "float32", input_spec: InputSpec | None = None
    ) -> None:
        super().__init__()
        self.bits = bits
        self.input_spec = input_spec
        self.quantizer = make_activation_quantizer(bits, signed=True, scale_format=scale_format)
        if isinstance(self.quantizer, UniformQuantizer) and not self.quantizer.scale.is_meta:
            with torch.no_grad():
                self.quantizer.scale.fill_(4.0 / self.quantizer.q_max)

    @property
    def output_codes(self) -> OutputCodes:
        return output_codes(self.quantizer)

    def _normalization(self) -> tuple[Tensor, Tensor] | None:
        """``(gain, offset)`` per channel, float64: normalized = pixels * gain + offset."""
        if self.input_spec is None:
            return None
        std = torch.tensor(self.input_spec.std, dtype=torch.float64)
        mean = torch.tensor(self.input_spec.mean, dtype=torch.float64)
        return 1.0 / (255.0 * std), -mean / std

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        normalization = self._normalization()
        if normalization is not None:
            gain, offset = (
                v.to(device=x.device, dtype=x.dtype)[:, None, None] for v in normalization
            )
            x = x * gain + offset
        return self.quantizer(x), step_of(self.quantizer)

    def lower(self, builder: ProgramBuilder, x: Value) -> Value:
        codes = self.output_codes
        normalization = self._normalization()
        if normalization is None:
            if codes.is_float or codes.is_sign:
                return lower_output(builder, x, codes, scale=1.0, kind="input_quantize")
            builder.note("requantize", x.elements)
            step = step_of(self.quantizer)
            have = builder.with_constants
            inverse = builder.constant(
                "1/step", 1.0 / step if have else None, shape=(), dtype="float"
            )
            t = builder.mul(x, inverse, kind="input_quantize")
            return lower_output(
                builder,
                t,
                codes,
                scale=code_scale_of(builder, self.quantizer),
                kind="input_quantize",
            )
        builder.note("normalize", x.elements)
        have = builder.with_constants
        gain, offset = normalization
        if not (codes.is_float or codes.is_sign):
            builder.note("requantize", x.elements)
            if have:
                step = float(step_of(self.quantizer))
                gain, offset = gain / step, offset / step
        shape = channel_shape(x.shape)
        gain_constant = builder.constant("gain", gain if have else None, shape=shape, dtype="float")
        offset_constant = builder.constant(
            "offset", offset if have else None, shape=shape, dtype="float"
        )
        t = builder.mul(x, gain_constant, kind="input_quantize")
        t = builder.add(t, offset_constant, kind="input_quantize")
        scale = 1.0 if codes.is_float or codes.is_sign else code_scale_of(builder, self.quantizer)
        return lower_output(builder, t, codes, scale=scale, kind="input_quantize")


def _conv_stage(
    builder: ProgramBuilder, conv: QuantConv2d, stage: nn.Module, x: Value, names: tuple[str, str]
) -> Value:
    """The conv (layer ``names[0]``) and its output stage (``names[1]``): module paths."""
    acc, weight, acc_scale = builder.part(names[0], conv, x)
    return builder.part(names[1], stage, acc, acc_scale, weight)


class ConvStem(nn.Module):
    """Input quantizer -> k x k conv (stride ``spec.stride``) -> norm -> activation ->
    requantize. ``(N, input_channels, H, W) -> (N, out_channels, ceil(H / s), ceil(W / s))``."""

    def __init__(
        self, spec: ConvStemSpec, input_channels: int, *, input_spec: InputSpec | None = None
    ) -> None:
        super().__init__()
        self.spec = spec
        self.input_quantizer = InputQuantizer(
            spec.input_bits, scale_format=spec.scale_format, input_spec=input_spec
        )
        self.conv = QuantConv2d(
            input_channels,
            spec.out_channels,
            spec.kernel_size,
            stride=spec.stride,
            weight_bits=spec.conv.weight_bits,
            weight_quantizer=spec.conv.weight_quantizer,
            weight_granularity=spec.conv.weight_granularity,
            input_bits=spec.input_bits,
            input_range=code_range(self.input_quantizer.output_codes),
            scale_format=spec.scale_format,
        )
        self.stage = make_output_stage(
            spec.norm,
            self.conv,
            activation=spec.activation,
            activation_bits=spec.activation_bits,
            scale_format=spec.scale_format,
        )

    @property
    def output_codes(self) -> OutputCodes:
        return self.stage.output_codes

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        x, step = self.input_quantizer(x)
        y = self.stage(self.conv(x), self.conv.accumulator_scale(step))
        return y, step_of(self.stage.requantizer)

    def lower(self, builder: ProgramBuilder, x: Value) -> Value:
        x = builder.part("input_quantizer", self.input_quantizer, x)
        return _conv_stage(builder, self.conv, self.stage, x, ("conv", "stage"))


class PikeBlock(nn.Module):
    """PikeLPN block: depthwise k x k conv (stride) -> norm -> act -> requantize -> pointwise
    1x1 conv -> norm -> act -> requantize [-> + input, requantize].

    ``(N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride))``.
    DHQ: the depthwise and pointwise weight quantizers (family, bits, granularity) are set
    independently by ``spec.depthwise`` / ``spec.pointwise``. ``input_codes``: the codes of the
    incoming tensor (the previous part's ``output_codes``).
    """

    def __init__(
        self,
        spec: PikeBlockSpec,
        in_channels: int,
        *,
        input_codes: OutputCodes = UNSIGNED_8BIT,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.input_bits = input_codes.bits
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
            input_bits=input_codes.bits,
            input_range=code_range(input_codes),
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
            input_range=code_range(self.depthwise_stage.output_codes),
            scale_format=spec.scale_format,
        )
        self.pointwise_stage = make_output_stage(spec.norm, self.pointwise, **stage_options)
        self.residual = (
            ResidualAdd(
                spec.activation_bits,
                signed=spec.activation != "relu",
                scale_format=spec.scale_format,
                a_codes=self.pointwise_stage.output_codes,
                b_codes=input_codes,
            )
            if spec.residual
            else None
        )

    @property
    def output_codes(self) -> OutputCodes:
        last = self.residual if self.residual is not None else self.pointwise_stage
        return last.output_codes

    def forward(self, x: Tensor, step: Tensor | None) -> tuple[Tensor, Tensor | None]:
        y = self.depthwise_stage(self.depthwise(x), self.depthwise.accumulator_scale(step))
        dw_step = step_of(self.depthwise_stage.requantizer)
        y = self.pointwise_stage(self.pointwise(y), self.pointwise.accumulator_scale(dw_step))
        pw_step = step_of(self.pointwise_stage.requantizer)
        if self.residual is None:
            return y, pw_step
        return self.residual(y, pw_step, x, step), step_of(self.residual.requantizer)

    def lower(self, builder: ProgramBuilder, x: Value) -> Value:
        y = _conv_stage(
            builder, self.depthwise, self.depthwise_stage, x, ("depthwise", "depthwise_stage")
        )
        y = _conv_stage(
            builder, self.pointwise, self.pointwise_stage, y, ("pointwise", "pointwise_stage")
        )
        if self.residual is None:
            return y
        return builder.part("residual", self.residual, y, x)


class GlobalAvgPoolQuant(nn.Module):
    """Global average pool ``(N, C, H, W) -> (N, C)`` then the head input quantizer to
    ``output_bits`` (32 = none). Program: the integer sum of the codes over ``H * W``, one float
    multiply by ``s_x / (H W s_out)``, clip, round (a sign for 1 bit)."""

    def __init__(self, output_bits: int, *, signed: bool = True) -> None:
        super().__init__()
        self.output_bits = output_bits
        self.quantizer = make_activation_quantizer(output_bits, signed=signed)

    @property
    def output_codes(self) -> OutputCodes:
        return output_codes(self.quantizer)

    def forward(self, x: Tensor, step: Tensor | None) -> tuple[Tensor, Tensor | None]:
        return self.quantizer(x.mean(dim=(2, 3))), step_of(self.quantizer)

    def lower(self, builder: ProgramBuilder, x: Value) -> Value:
        channels, height, width = x.shape
        builder.note("pool", channels)
        total = builder.sum(x, mode="global", kind="pool")
        out = self.output_codes
        if out.is_sign:
            t = total
        else:
            have = builder.with_constants
            factor = None
            if have:
                s_x = 1.0 if x.scale is None else x.scale
                factor = s_x / (height * width) / float(output_step(self.quantizer))
            m = builder.constant(
                "M", torch.tensor(factor) if have else None, shape=(), dtype="float"
            )
            t = builder.mul(total, m, kind="pool")
        t = builder.reshape("flatten", t, (channels,))
        return lower_output(
            builder, t, out, scale=code_scale_of(builder, self.quantizer), kind="requantize"
        )


class Head(nn.Module):
    """Global average pool -> quantize to ``spec.input_bits`` -> :class:`QuantLinear`.

    ``(N, in_channels, H, W) -> (N, num_classes)`` float logits."""

    def __init__(
        self, spec: HeadSpec, in_channels: int, num_classes: int, *, signed: bool = True
    ) -> None:
        super().__init__()
        self.spec = spec
        self.pool = GlobalAvgPoolQuant(spec.input_bits, signed=signed)
        self.linear = QuantLinear(
            in_channels,
            num_classes,
            weight_bits=spec.linear.weight_bits,
            weight_quantizer=spec.linear.weight_quantizer,
            weight_granularity=spec.linear.weight_granularity,
            input_bits=spec.input_bits,
            input_range=code_range(self.pool.output_codes),
        )

    def forward(self, x: Tensor, step: Tensor | None) -> Tensor:
        pooled, _ = self.pool(x, step)
        return self.linear(pooled)

    def lower(self, builder: ProgramBuilder, x: Value) -> Value:
        x = builder.part("pool", self.pool, x)
        return builder.part("linear", self.linear, x)


@STEM_BUILDERS.register("conv")
def build_conv_stem(
    spec: ConvStemSpec, input_channels: int, *, input_spec: InputSpec | None = None
) -> ConvStem:
    """``STEM_BUILDERS["conv"]``."""
    return ConvStem(spec, input_channels, input_spec=input_spec)


@BLOCK_BUILDERS.register("pikelpn")
def build_pike_block(
    spec: PikeBlockSpec, in_channels: int, *, input_codes: OutputCodes
) -> PikeBlock:
    """``BLOCK_BUILDERS["pikelpn"]``."""
    return PikeBlock(spec, in_channels, input_codes=input_codes)
