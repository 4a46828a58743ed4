"""Output stages: what follows a conv: norm -> activation -> requantize to ``activation_bits``.

Two kinds (``ArchConfig`` ``norm``):

* :class:`BatchNormStage` (``"batchnorm"``): float batch norm, float activation, then the
  requantizer. At inference an integer conv result is dequantized, normalised, activated and
  requantized in float.
* :class:`QuantNormStage` (``"quantnorm"``, PikeLPN's QuantNorm): batch norm (batch statistics
  and running statistics in training, like ``nn.BatchNorm2d``) folded into the requantization,
  ``y = requant(act(m_c * x + c_c))`` with ``m_c = gamma_c / sqrt(var_c + eps)`` and
  ``c_c = beta_c - mean_c * m_c``; ``m_c`` is fake-quantized per ``scale_format`` (Double
  Quantization: pow2 = a shift, intN = N-bit integers times one shared float) and ``c_c`` to a
  fixed-point number with :data:`BIAS_FRACTION_BITS` fractional bits in units of the output
  step, both in the forward pass (straight-through gradients).

Input ``(N, C, H, W)`` float (the fake-quantized conv output), output the same shape on the
``activation_bits`` grid. Each stage declares its inference ops per docs/ace_v2_rules.md, including
those of its activation; ``accumulator_bits`` (``A``) comes from the conv before it.

Modelling note: the deployed integer multiplier is ``m_c * s_w * s_in / s_out``. With pow2 Double
Quantization everywhere in a block every factor is a power of two, so rounding ``m_c`` to a
power of two is exact; with intN and per-channel weight scales the weight scale is not folded
into the quantized ``m_c`` here (a documented approximation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from space.activations import ReLU, make_activation
from space.costs import FLOAT_BITS, CostDeclaration, Op, ShapePreserving
from space.layers import QuantConv2d
from space.quantizers import (
    UniformQuantizer,
    make_activation_quantizer,
    quantize_scale,
    scale_format_bits,
    ste,
)

__all__ = [
    "BatchNormStage",
    "QuantNormStage",
    "make_output_stage",
    "BIAS_FRACTION_BITS",
]

BIAS_FRACTION_BITS = 8


def _channel_view(t: Tensor) -> Tensor:
    return t.view(1, -1, 1, 1)


def _requant_ops(bits: int, elements: int, width: int, is_float: bool) -> tuple[list[Op], str]:
    """Ops turning the activation output into ``bits``-bit values at working ``width``."""
    if bits == 1:
        return [Op("compare", elements, width, width, is_float, "sign")], "sign"
    if bits >= FLOAT_BITS:
        return [], ""
    return [Op("compare", 2 * elements, width, width, is_float, "clip")], "requantize"


def _relu_is_in_the_clip(activation: nn.Module, requantizer: nn.Module) -> bool:
    """An unsigned uniform requantizer clamps at 0 with zero gradient below it, exactly what a
    ReLU before it does (values and gradients), so the ReLU pass can be skipped in training."""
    return (
        isinstance(activation, ReLU)
        and isinstance(requantizer, UniformQuantizer)
        and not requantizer.signed
    )


class BatchNormStage(nn.Module, ShapePreserving):
    """Float batch norm -> activation -> requantize to ``activation_bits``.

    ``input_is_float``: the conv before is float (no dequantize at inference).
    Requantizer: unsigned after ReLU, signed otherwise; ``1`` bit = sign, ``32`` = none.
    """

    def __init__(
        self,
        channels: int,
        *,
        activation: str = "relu",
        activation_bits: int = 8,
        scale_format: str = "float32",
        input_is_float: bool = False,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.activation_bits = activation_bits
        self.scale_format = scale_format
        self.input_is_float = input_is_float
        self.norm = nn.BatchNorm2d(channels)
        self.activation = make_activation(activation, channels)
        self.requantizer = make_activation_quantizer(
            activation_bits, signed=activation != "relu", scale_format=scale_format
        )
        self._relu_folded = _relu_is_in_the_clip(self.activation, self.requantizer)

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm(x)
        return self.requantizer(y if self._relu_folded else self.activation(y))

    def inference_ops(
        self, input_shape: tuple[int, ...], output_shape: tuple[int, ...]
    ) -> CostDeclaration:
        """Float ops: [dequantize], bn_scale, bn_shift, activation, [requant mul, round,
        clip | sign]; see docs/ace_v2_rules.md."""
        e = math.prod(output_shape)
        f = FLOAT_BITS
        ops: list[Op] = []
        if not self.input_is_float:
            ops.append(Op("mul", e, f, f, True, "dequantize"))
        ops += [Op("mul", e, f, f, True, "bn_scale"), Op("add", e, f, f, True, "bn_shift")]
        activation = self.activation.inference_ops(input_shape, output_shape)
        ops += activation.ops
        if 1 < self.activation_bits < FLOAT_BITS:
            ops += [Op("mul", e, f, f, True, "requant_scale"), Op("round", e, f, f, True, "round")]
        requant, kind = _requant_ops(self.activation_bits, e, f, True)
        ops += requant
        elements = {"batchnorm": e, **activation.elements}
        if kind:
            elements[kind] = e
        return CostDeclaration(tuple(ops), elements, 2 * self.channels + activation.params)


class QuantNormStage(nn.Module, ShapePreserving):
    """QuantNorm: batch norm folded into the requantization, with fake-quantized folded
    multiplier (per ``scale_format``) and bias; then activation and requantization.

    Working width ``X`` at inference (docs/ace_v2_rules.md): pow2 -> ``A`` (integer), intN ->
    ``min(32, A + N)`` (integer), float32 -> 32 (float). The activation runs at ``X`` with an
    8-bit slope (a shift for pow2); ReLU is free (the lower clip bound).
    """

    def __init__(
        self,
        channels: int,
        *,
        activation: str = "relu",
        activation_bits: int = 8,
        scale_format: str = "pow2",
        accumulator_bits: int = 32,
        momentum: float = 0.1,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.activation_bits = activation_bits
        self.scale_format = scale_format
        self.accumulator_bits = accumulator_bits
        self.momentum = momentum
        self.eps = eps
        self.multiplier_bits = scale_format_bits(scale_format)
        if scale_format == "pow2":
            self.working_bits, self.float_operands = accumulator_bits, False
        elif self.multiplier_bits is not None:
            self.working_bits = min(FLOAT_BITS, accumulator_bits + self.multiplier_bits)
            self.float_operands = False
        else:
            self.working_bits, self.float_operands = FLOAT_BITS, True
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.activation = make_activation(
            activation,
            channels,
            working_bits=self.working_bits,
            float_operands=self.float_operands,
            slope_format="pow2" if scale_format == "pow2" else "int8",
            relu_is_clip=True,
        )
        self.requantizer = make_activation_quantizer(
            activation_bits, signed=activation != "relu", scale_format=scale_format
        )
        self._relu_folded = _relu_is_in_the_clip(self.activation, self.requantizer)

    def _fold(
        self, mean: Tensor, inverse_std: Tensor, gamma: Tensor, beta: Tensor
    ) -> tuple[Tensor, Tensor]:
        multiplier = gamma * inverse_std
        bias = beta - mean * multiplier
        multiplier = quantize_scale(multiplier, self.scale_format, signed=True)
        if isinstance(self.requantizer, UniformQuantizer):
            grid = self.requantizer.scale_value() / 2**BIAS_FRACTION_BITS
        else:
            grid = torch.full_like(bias[:1], 1.0 / 2**BIAS_FRACTION_BITS).detach()
        bias = ste(torch.round(bias / grid) * grid, bias)
        return multiplier, bias

    def folded(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The fake-quantized ``(m_c, c_c)``, each ``(C,)``, for input ``x`` ``(N, C, H, W)``
        (batch statistics in training, which also updates the running statistics)."""
        if self.training:
            mean, inverse_std = self._batch_statistics(x)
        else:
            mean, inverse_std = self.running_mean, torch.rsqrt(self.running_var + self.eps)
        return self._fold(mean, inverse_std, self.weight, self.bias)

    def _batch_statistics(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Detached per-channel ``(mean, 1 / sqrt(var + eps))`` of ``x`` (biased variance)."""
        with torch.no_grad():
            if x.device.type == "meta":  # no meta kernel for the fused statistics
                var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
            else:
                mean, var = torch.batch_norm_update_stats(x, None, None, self.momentum)
            return mean, torch.rsqrt(var + self.eps)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            # m x + c == BN(x; weight w' = m / invstd, bias b' = c + m mean) with the batch's
            # statistics: the fused BN kernel gives BN's gradient through the statistics and
            # updates the running statistics; w', b' carry the fake-quantized m and c. With the
            # straight-through estimators dw'/dgamma = 1, db'/dbeta = 1, db'/dgamma = 0, so the
            # folded values are computed without autograd and attached to gamma and beta.
            mean, inverse_std = self._batch_statistics(x)
            multiplier, bias = self._fold(
                mean, inverse_std, self.weight.detach(), self.bias.detach()
            )
            weight = ste(multiplier / inverse_std, self.weight)
            shift = ste(bias + multiplier * mean, self.bias)
            y = F.batch_norm(
                x, self.running_mean, self.running_var, weight, shift, True, self.momentum, self.eps
            )
        else:
            multiplier, bias = self.folded(x)
            y = torch.addcmul(_channel_view(bias), x, _channel_view(multiplier))
        return self.requantizer(y if self._relu_folded else self.activation(y))

    def inference_ops(
        self, input_shape: tuple[int, ...], output_shape: tuple[int, ...]
    ) -> CostDeclaration:
        """pow2: shift, add (A bits); intN: mul (A x N), add (W), rescale (W x 32); float32:
        float mul, add, round; then the activation and clip (2E) or sign (E) at ``X``."""
        e = math.prod(output_shape)
        a, x_bits, is_float = self.accumulator_bits, self.working_bits, self.float_operands
        quantized_output = self.activation_bits < FLOAT_BITS
        if self.scale_format == "pow2":
            ops = [Op("shift", e, a, a, False, "qn_shift"), Op("add", e, a, a, False, "qn_bias")]
        elif self.multiplier_bits is not None:
            ops = [
                Op("mul", e, a, self.multiplier_bits, False, "qn_mul"),
                Op("add", e, x_bits, x_bits, False, "qn_bias"),
                Op("mul", e, x_bits, FLOAT_BITS, False, "rescale"),
            ]
        else:
            f = FLOAT_BITS
            ops = [Op("mul", e, a, f, True, "qn_mul"), Op("add", e, f, f, True, "qn_bias")]
            if quantized_output:
                ops.append(Op("round", e, f, f, True, "round"))
        activation = self.activation.inference_ops(input_shape, output_shape)
        ops += activation.ops
        requant, kind = _requant_ops(self.activation_bits, e, x_bits, is_float)
        ops += requant
        elements = {"quantnorm": e, **activation.elements}
        if kind:
            elements[kind] = e
        return CostDeclaration(tuple(ops), elements, 2 * self.channels + activation.params)


def make_output_stage(
    norm: str,
    conv: QuantConv2d,
    *,
    activation: str,
    activation_bits: int,
    scale_format: str,
) -> BatchNormStage | QuantNormStage:
    """The output stage after ``conv`` (``conv.out_channels`` channels) for an ``ArchConfig``
    ``norm`` kind."""
    if norm == "batchnorm":
        return BatchNormStage(
            conv.out_channels,
            activation=activation,
            activation_bits=activation_bits,
            scale_format=scale_format,
            input_is_float=conv.is_float,
        )
    if norm == "quantnorm":
        return QuantNormStage(
            conv.out_channels,
            activation=activation,
            activation_bits=activation_bits,
            scale_format=scale_format,
            accumulator_bits=conv.accumulator_bits,
        )
    raise ValueError(f"norm={norm!r} is not supported; use batchnorm or quantnorm")
