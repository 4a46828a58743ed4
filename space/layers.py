"""Quantized conv and linear layers that declare their inference MACs (docs/ace_v2_rules.md).

A layer quantizes its *weights* with its own weight quantizer (run offline at deployment, so
no inference cost); its *input* is expected to be quantized already by the module before it
(the requantizer of the previous output stage), and ``input_bits`` records how wide it is.
A layer is "float" when its weights or its inputs are float (32 bits): then its MACs are
float and its accumulator is 32 bits.

H2 / other users: ``QuantConv2d(in_channels, out_channels, kernel_size, stride=..., groups=...,
weight_bits=..., weight_quantizer="binary", input_bits=1)``; read ``accumulator_bits``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from space.costs import FLOAT_BITS, CostDeclaration, Op, accumulator_bits
from space.quantizers import Quantizer, make_quantizer

__all__ = ["QuantConv2d", "QuantLinear"]


def _prod(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


class QuantConv2d(nn.Module):
    """A 2-D convolution with fake-quantized weights.

    Input ``(N, in_channels, H, W)`` (already quantized to ``input_bits``), output
    ``(N, out_channels, H_out, W_out)`` with "same" padding ``kernel_size // 2`` (odd kernels:
    ``H_out = ceil(H / stride)``). ``groups = in_channels`` is a depthwise conv. No bias by
    default (a norm follows).

    Attributes: ``weight_bits``, ``input_bits``, ``weight_quantizer`` (a
    :class:`space.quantizers.Quantizer`), ``is_float``, ``accumulator_bits``
    (``min(32, b_w + b_a + ceil(log2(fan_in)))``, fan-in ``in_channels / groups * k * k``; 32
    when float).
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
        self.is_float = weight_bits >= FLOAT_BITS or input_bits >= FLOAT_BITS
        self.accumulator_bits = (
            FLOAT_BITS if self.is_float else accumulator_bits(weight_bits, input_bits, self.fan_in)
        )
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Kaiming-normal weights (fan-out, as in ResNet / MobileNet), then the weight
        quantizer's initialisation from them. Deterministic under ``torch.manual_seed``."""
        if self.weight.is_meta:  # no values to initialise (the ACE counter builds on meta)
            return
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        if self.bias is not None:
            self.bias.zero_()
        self.weight_quantizer.init_from(self.weight)

    def quantized_weight(self) -> Tensor:
        """The fake-quantized weight, shape ``(out, in / groups, k, k)``."""
        return self.weight_quantizer(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(
            x, self.quantized_weight(), self.bias, self.stride, self.padding, 1, self.groups
        )

    def inference_ops(
        self, input_shape: tuple[int, ...], output_shape: tuple[int, ...]
    ) -> CostDeclaration:
        """``N * H_out * W_out * C_out * (C_in / groups) * k * k`` MACs at (weight, input) bits
        (float: 32 x 32), plus a float bias add per output element when there is a bias."""
        count = _prod(output_shape) * self.fan_in
        if self.is_float:
            ops = [Op("mac", count, FLOAT_BITS, FLOAT_BITS, True, "conv")]
        else:
            ops = [Op("mac", count, self.weight_bits, self.input_bits, False, "conv")]
        params = self.weight.numel()
        if self.bias is not None:
            ops.append(Op("add", _prod(output_shape), FLOAT_BITS, FLOAT_BITS, True, "bias"))
            params += self.bias.numel()
        return CostDeclaration(tuple(ops), {}, params)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, groups={self.groups}, weight_bits={self.weight_bits}, "
            f"input_bits={self.input_bits}, accumulator_bits={self.accumulator_bits}"
        )


class QuantLinear(nn.Module):
    """A linear layer with fake-quantized weights: ``(N, in_features) -> (N, out_features)``.

    The input is already quantized to ``input_bits``. With integer weights and inputs the
    integer result is dequantized (one float multiply per output) before the float bias add,
    so the output (logits) is float.
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
        scale_format: str = "float32",
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight_bits = weight_bits
        self.input_bits = input_bits
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
        self.is_float = weight_bits >= FLOAT_BITS or input_bits >= FLOAT_BITS
        self.accumulator_bits = (
            FLOAT_BITS if self.is_float else accumulator_bits(weight_bits, input_bits, in_features)
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

    def inference_ops(
        self, input_shape: tuple[int, ...], output_shape: tuple[int, ...]
    ) -> CostDeclaration:
        """``N * in * out`` MACs; integer: plus ``mul(N*out, 32, 32, float, "dequantize")``;
        bias: ``add(N*out, 32, 32, float, "bias")``."""
        outputs = _prod(output_shape)
        count = outputs * self.in_features
        if self.is_float:
            ops = [Op("mac", count, FLOAT_BITS, FLOAT_BITS, True, "linear")]
        else:
            ops = [
                Op("mac", count, self.weight_bits, self.input_bits, False, "linear"),
                Op("mul", outputs, FLOAT_BITS, FLOAT_BITS, True, "dequantize"),
            ]
        params = self.weight.numel()
        if self.bias is not None:
            ops.append(Op("add", outputs, FLOAT_BITS, FLOAT_BITS, True, "bias"))
            params += self.bias.numel()
        return CostDeclaration(tuple(ops), {}, params)

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, {self.out_features}, weight_bits={self.weight_bits}, "
            f"input_bits={self.input_bits}, accumulator_bits={self.accumulator_bits}"
        )
