"""Quantized conv and linear layers: fake-quantized weights in training, integer codes in the
program.

A layer quantizes its *weights* with its own weight quantizer (offline at deployment); its
*input* is already quantized by the part before it, whose codes lie in ``input_range`` (``None``:
a float input). A layer is float when its weights or its input are float: then the program runs
a float conv on dequantized values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from pikenas.space.nn.quantizers import Quantizer, make_quantizer
from pikenas.space.program.builder import ProgramBuilder, channel_shape
from pikenas.space.program.ir import Constant, Value

__all__ = ["QuantConv2d", "QuantLinear", "accumulator_bound", "lower_weight", "dequantized"]

FLOAT_BITS = 32


def accumulator_bound(
    quantizer: Quantizer, input_range: tuple[int, int] | None, fan_in: int
) -> int:
    """Largest ``|acc|`` of ``fan_in`` products of weight codes and input codes (0: float)."""
    if input_range is None or quantizer.bits >= FLOAT_BITS:
        return 0
    w_lo, w_hi = quantizer.code_range()
    return fan_in * max(abs(w_lo), abs(w_hi)) * max(abs(input_range[0]), abs(input_range[1]))


def lower_weight(
    builder: ProgramBuilder, quantizer: Quantizer, weight: Tensor, *, is_float: bool
) -> tuple[Constant, Tensor | None]:
    """The weight as a program constant: integer codes (declared symmetric, so a stage may
    negate channels) or float values; and the per-channel scale ``(C,)`` of the codes."""
    shape = tuple(weight.shape)
    have = builder.with_constants
    if is_float:
        values = quantizer(weight).detach() if have else None
        return builder.constant("weight", values, shape=shape, dtype="float"), None
    lo, hi = quantizer.code_range()
    magnitude = max(abs(lo), abs(hi))
    codes, scale = quantizer.codes_and_scale(weight) if have else (None, None)
    constant = builder.constant(
        "weight", codes, shape=shape, dtype="int", lo=-magnitude, hi=magnitude, bits=quantizer.bits
    )
    if scale is not None and scale.numel() == 1:
        scale = scale.expand(shape[0])
    return constant, scale


def dequantized(builder: ProgramBuilder, x: Value, kind: str) -> Value:
    """A float copy of an integer value (``code * scale``), for float layers."""
    if x.dtype == "float":
        return x
    have = builder.with_constants and x.scale is not None
    scale = builder.constant(
        "scale", torch.tensor(x.scale) if have else None, shape=(), dtype="float"
    )
    return builder.mul(x, scale, kind=kind)


class QuantConv2d(nn.Module):
    """A 2-D convolution with fake-quantized weights.

    Input ``(N, in_channels, H, W)`` (already quantized, codes in ``input_range``), output
    ``(N, out_channels, H_out, W_out)`` with "same" padding ``kernel_size // 2`` (odd kernels:
    ``H_out = ceil(H / stride)``) unless ``padding`` is given. ``groups = in_channels`` is a
    depthwise conv. No bias by default (a norm follows).

    Attributes: ``weight_bits``, ``input_bits``, ``weight_quantizer``, ``is_float``,
    ``accumulator_bound`` (largest ``|acc|``: fan-in x largest weight code x largest input
    code; a b-bit pow2 weight code is an integer up to ``2^(2^(b-1) - 2)``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        groups: int = 1,
        weight_bits: int = 8,
        weight_quantizer: str = "uniform",
        weight_granularity: str = "per_channel",
        input_bits: int = 8,
        input_range: tuple[int, int] | None = (-128, 127),
        scale_format: str = "float32",
        padding: int | None = None,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.groups = groups
        self.padding = kernel_size // 2 if padding is None else padding
        self.weight_bits = weight_bits
        self.input_bits = input_bits
        self.input_range = None if input_bits >= FLOAT_BITS else input_range
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size)
        )
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_quantizer: Quantizer = make_quantizer(
            weight_quantizer,
            weight_bits,
            signed=True,
            granularity=weight_granularity,
            channels=out_channels,
            scale_format=scale_format,
        )
        self.fan_in = (in_channels // groups) * kernel_size * kernel_size
        self.is_float = weight_bits >= FLOAT_BITS or self.input_range is None
        self.accumulator_bound = accumulator_bound(
            self.weight_quantizer, self.input_range, self.fan_in
        )
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Kaiming-normal weights (fan-out, as in ResNet / MobileNet), then the weight
        quantizer's initialisation from them. Deterministic under ``torch.manual_seed``."""
        if self.weight.is_meta:
            return
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        if self.bias is not None:
            self.bias.zero_()
        self.weight_quantizer.init_from(self.weight)

    def quantized_weight(self) -> Tensor:
        """The fake-quantized weight, shape ``(out, in / groups, k, k)``."""
        return self.weight_quantizer(self.weight)

    def accumulator_scale(self, input_step: Tensor | None) -> Tensor:
        """Real value of one accumulator unit per output channel ``(C,)``: weight scale x input
        step (detached, float64); 1 for a float conv."""
        if self.is_float or input_step is None:
            return torch.ones(self.out_channels, dtype=torch.float64, device=self.weight.device)
        scale = self.weight_quantizer.code_scale(self.weight.detach())
        return (scale.double() * input_step.detach().double()).expand(self.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        weight = _like(self.quantized_weight(), self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, 1, self.groups)

    def lower(self, builder: ProgramBuilder, x: Value) -> tuple[Value, Constant, Tensor | None]:
        """``(accumulator, weight constant, accumulator scale (C,))``; a float conv gives float
        values in real units and scale ``None``."""
        weight, scale = lower_weight(
            builder, self.weight_quantizer, self.weight, is_float=self.is_float
        )
        source = dequantized(builder, x, "dequantize") if self.is_float else x
        p = self.padding
        acc = builder.conv(
            source, weight, stride=self.stride, padding=(p, p, p, p), groups=self.groups
        )
        if self.bias is not None:  # a float bias: the accumulator is dequantized first
            acc = _dequantize_with_bias(builder, acc, scale, x, self.bias)
            scale = None
        elif scale is not None and x.scale is not None:
            scale = scale.double() * float(x.scale)
        return acc, weight, scale

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, groups={self.groups}, weight_bits={self.weight_bits}, "
            f"input_bits={self.input_bits}, accumulator_bound={self.accumulator_bound}"
        )


def _like(value: Tensor, parameter: Tensor) -> Tensor:
    """``value`` with the exact strides of ``parameter`` (a copy only when they differ).

    Elementwise ops may give a quantized weight with a size-1 dim (1 input channel, 1x1
    kernels) ambiguous strides that the convolution reads as NCHW: a channels_last model then
    runs mixed layouts, converting at every layer. The copy is differentiable and tiny."""
    if value.stride() == parameter.stride():
        return value
    return torch.empty_like(parameter, requires_grad=False).copy_(value)


def _dequantize_with_bias(
    builder: ProgramBuilder, acc: Value, scale: Tensor | None, x: Value, bias: Tensor
) -> Value:
    """``float32(acc) * (s_w * s_x) + bias`` (a float conv: ``acc + bias``)."""
    shape = channel_shape(acc.shape)
    have = builder.with_constants
    if acc.dtype == "int":
        factor = scale.double() * float(x.scale) if have else None
        m = builder.constant("dequantize", factor, shape=shape, dtype="float")
        acc = builder.mul(acc, m, kind="dequantize")
    b = builder.constant("bias", bias.detach() if have else None, shape=shape, dtype="float")
    return builder.add(acc, b, kind="bias")


class QuantLinear(nn.Module):
    """A linear layer with fake-quantized weights: ``(N, in_features) -> (N, out_features)``.

    In the program the integer result is dequantized (one float multiply per output) before the
    float bias add, so the output (logits) is float.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        weight_bits: int = 8,
        weight_quantizer: str = "uniform",
        weight_granularity: str = "per_tensor",
        input_bits: int = 8,
        input_range: tuple[int, int] | None = (-128, 127),
        scale_format: str = "float32",
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight_bits = weight_bits
        self.input_bits = input_bits
        self.input_range = None if input_bits >= FLOAT_BITS else input_range
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.weight_quantizer: Quantizer = make_quantizer(
            weight_quantizer,
            weight_bits,
            signed=True,
            granularity=weight_granularity,
            channels=out_features,
            scale_format=scale_format,
        )
        self.fan_in = in_features
        self.is_float = weight_bits >= FLOAT_BITS or self.input_range is None
        self.accumulator_bound = accumulator_bound(
            self.weight_quantizer, self.input_range, in_features
        )
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Normal(0, 0.01) weights and zero bias (timm / torchvision classifier init)."""
        if self.weight.is_meta:
            return
        nn.init.normal_(self.weight, 0.0, 0.01)
        if self.bias is not None:
            self.bias.zero_()
        self.weight_quantizer.init_from(self.weight)

    def quantized_weight(self) -> Tensor:
        return self.weight_quantizer(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)

    def lower(self, builder: ProgramBuilder, x: Value) -> Value:
        """Logits ``(out_features,)`` float: MACs, dequantize multiply, bias add."""
        weight, scale = lower_weight(
            builder, self.weight_quantizer, self.weight, is_float=self.is_float
        )
        source = dequantized(builder, x, "dequantize") if self.is_float else x
        acc = builder.linear(source, weight)
        have = builder.with_constants
        shape = (self.out_features,)
        if acc.dtype == "int":
            factor = scale.double() * float(x.scale) if have else None
            m = builder.constant("dequantize", factor, shape=shape, dtype="float")
            acc = builder.mul(acc, m, kind="dequantize")
        if self.bias is None:
            return acc
        b = builder.constant(
            "bias", self.bias.detach() if have else None, shape=shape, dtype="float"
        )
        return builder.add(acc, b, kind="bias")

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, {self.out_features}, weight_bits={self.weight_bits}, "
            f"input_bits={self.input_bits}, accumulator_bound={self.accumulator_bound}"
        )
