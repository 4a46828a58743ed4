"""Output stages: what follows a conv: norm -> activation -> requantize to ``activation_bits``.

Two kinds (``ArchConfig`` ``norm``):

* :class:`BatchNormStage` (``"batchnorm"``): float batch norm, float activation, then the
  requantizer. The program runs it fused, in its cheapest correct form: one float multiply and
  one float add per element (``acc * M + B``, the dequantize, batch norm and requantize scales
  folded into ``M``), the activation in float32, then clip and round.
* :class:`QuantNormStage` (``"quantnorm"``, PikeLPN's QuantNorm): batch norm (batch statistics
  and running statistics in training, like ``nn.BatchNorm2d``) folded into the requantization;
  the whole requantization multiplier ``M = s_w s_x m / s_out`` is quantized per
  ``scale_format`` (Double Quantization: pow2 -> a shift, intN -> an N-bit integer multiply
  and a shift, float32 -> a float multiply), the bias lives on the accumulator grid, and the
  forward applies exactly those (see :mod:`space._requant`).

Forward: ``stage(x, acc_scale)`` with ``x`` ``(N, C, H, W)`` the conv output and ``acc_scale``
``(C,)`` the real value of one accumulator unit (weight scale x input step; ones after a float
conv). Output on the ``activation_bits`` grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from pikenas.space.nn._codes import OutputCodes, output_codes, output_step
from pikenas.space.nn._requant import (
    IntegerRanges,
    activation_tail,
    integer_plan,
    integer_surrogate,
    lower_float,
    lower_integer,
)
from pikenas.space.nn._ste import batch_affine
from pikenas.space.nn.activations import ReLU, make_activation
from pikenas.space.nn.quantizers import UniformQuantizer, make_activation_quantizer, ste
from pikenas.space.program.builder import ProgramBuilder
from pikenas.space.program.ir import Constant, Value

__all__ = [
    "BatchNormStage",
    "QuantNormStage",
    "folded_batch_norm",
    "make_output_stage",
    "slope_format_for",
]


def slope_format_for(norm: str, scale_format: str) -> str:
    """How the activation's slopes exist at inference for a stage (see space.activations)."""
    if norm == "batchnorm" or scale_format == "float32":
        return "float32"
    return "pow2" if scale_format == "pow2" else "int8"


def _relu_is_in_the_clip(activation: nn.Module, requantizer: nn.Module) -> bool:
    """An unsigned uniform requantizer clamps at 0 with zero gradient below it, exactly what a
    ReLU before it does (values and gradients), so the ReLU pass can be skipped in training."""
    return (
        isinstance(activation, ReLU)
        and isinstance(requantizer, UniformQuantizer)
        and not requantizer.signed
    )


def folded_batch_norm(norm: nn.Module) -> tuple[Tensor, Tensor]:
    """Eval-mode ``(m, b)`` with ``BN(x) = m * x + b`` per channel (float64), from a module with
    ``weight``, ``bias``, ``running_mean``, ``running_var`` and ``eps``."""
    m = norm.weight.double() * torch.rsqrt(norm.running_var.double() + norm.eps)
    return m, norm.bias.double() - norm.running_mean.double() * m


class _Stage(nn.Module):
    """Shared parts: the activation, the requantizer, the eval-mode affine ``(m, b)``."""

    def __init__(
        self, channels: int, *, activation: str, activation_bits: int, scale_format: str, norm: str
    ) -> None:
        super().__init__()
        self.channels = channels
        self.activation_bits = activation_bits
        self.scale_format = scale_format
        self.activation = make_activation(
            activation, channels, slope_format=slope_format_for(norm, scale_format)
        )
        self.requantizer = make_activation_quantizer(
            activation_bits, signed=activation != "relu", scale_format=scale_format
        )
        self._relu_folded = _relu_is_in_the_clip(self.activation, self.requantizer)

    @property
    def output_codes(self) -> OutputCodes:
        return output_codes(self.requantizer)

    def output_step(self) -> Tensor:
        return output_step(self.requantizer)

    def _finish(self, y: Tensor) -> Tensor:
        return self.requantizer(y if self._relu_folded else self.activation(y))

    def _lower_float(
        self, builder: ProgramBuilder, acc: Value, acc_scale: Tensor | None, m: Tensor, b: Tensor
    ) -> Value:
        have = builder.with_constants
        s_out = self.output_step() if have else None
        if have and acc_scale is None:  # a float conv: the accumulator is in real units
            acc_scale = torch.ones(self.channels, dtype=torch.float64)
        multiplier = acc_scale * m.double() / s_out if have else None
        bias = b.double() / s_out if have else None
        return lower_float(
            builder,
            acc,
            multiplier,
            bias,
            self.activation,
            self.output_codes,
            s_out,
            kind=self.kind,
        )


class BatchNormStage(_Stage):
    """Float batch norm -> activation -> requantize to ``activation_bits``.

    Requantizer: unsigned after ReLU, signed otherwise; ``1`` bit = sign, ``32`` = none.
    """

    kind = "batchnorm"

    def __init__(
        self,
        channels: int,
        *,
        activation: str = "relu",
        activation_bits: int = 8,
        scale_format: str = "float32",
        **_: object,
    ) -> None:
        super().__init__(
            channels,
            activation=activation,
            activation_bits=activation_bits,
            scale_format=scale_format,
            norm="batchnorm",
        )
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor, acc_scale: Tensor | None = None) -> Tensor:
        return self._finish(self.norm(x))

    def affine(self) -> tuple[Tensor, Tensor]:
        return folded_batch_norm(self.norm)

    def lower(
        self, builder: ProgramBuilder, acc: Value, acc_scale: Tensor | None, weight: Constant
    ) -> Value:
        builder.note("batchnorm", acc.elements)
        m, b = self.affine() if builder.with_constants else (None, None)
        return self._lower_float(builder, acc, acc_scale, m, b)


class QuantNormStage(_Stage):
    """QuantNorm: batch norm folded into the requantization (see the module docstring).

    ``accumulator_bound``: largest ``|acc|`` of the conv before it (fixes the widths);
    ``weight_codes``: that conv's weight code range (a pow2 stage folds its signs into them).
    """

    kind = "quantnorm"

    def __init__(
        self,
        channels: int,
        *,
        activation: str = "relu",
        activation_bits: int = 8,
        scale_format: str = "pow2",
        accumulator_bound: int = 2**20,
        momentum: float = 0.1,
        eps: float = 1e-5,
        weight_codes: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(
            channels,
            activation=activation,
            activation_bits=activation_bits,
            scale_format=scale_format,
            norm="quantnorm",
        )
        self.accumulator_bound = accumulator_bound
        self.weight_codes = weight_codes  # the conv's weight code range (before a sign fold)
        self.momentum = momentum
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.integer = scale_format != "float32" and accumulator_bound > 0
        slopes = self.activation.slope_format if activation in ("prelu", "dprelu") else "none"
        self.ranges = (
            IntegerRanges(scale_format, accumulator_bound, self.output_codes, slopes)
            if self.integer
            else None
        )

    def _statistics(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, 1 / sqrt(var + eps))``: of the batch in training (detached; the running
        statistics are updated in the same pass, as ``F.batch_norm`` updates them), else the
        running ones."""
        if not self.training:
            return self.running_mean, torch.rsqrt(self.running_var + self.eps)
        with torch.no_grad():
            mean, var = torch.batch_norm_update_stats(
                x, self.running_mean, self.running_var, self.momentum
            )
            return mean, torch.rsqrt(var + self.eps)

    def affine(self) -> tuple[Tensor, Tensor]:
        return folded_batch_norm(self)

    def forward(self, x: Tensor, acc_scale: Tensor | None = None) -> Tensor:
        if not self.integer:
            y = F.batch_norm(
                x,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                self.training,
                self.momentum,
                self.eps,
            )
            return self._finish(y)
        mean, inverse_std = self._statistics(x)
        if acc_scale is None:
            acc_scale = torch.ones(self.channels, dtype=torch.float64, device=x.device)
        m = self.weight * inverse_std
        b = self.bias - mean * m
        plan = integer_plan(
            m,
            b,
            acc_scale,
            self.output_step().to(x.device),
            self.ranges,
            self.activation.raw_biases()[0],
        )
        if self.training:
            # u = x * m_eff + b_q (one pass, the statistics above were the only other one);
            # backward: batch norm's, through the batch statistics, for BN(x; weight m_eff /
            # invstd, bias b_q + m_eff mean), which is the same affine map; straight-through
            # estimators attach m_eff to gamma, b_q to beta.
            m_eff = plan.effective_m.to(x.dtype)
            b_q = (plan.bias * plan.grid).to(x.dtype)
            bias_x = self.activation.raw_biases()[0]
            weight = ste(m_eff / inverse_std, self.weight)
            shift = ste(b_q + m_eff * mean, self.bias if bias_x is None else self.bias - bias_x)
            u = batch_affine(x, weight, shift, m_eff, b_q, mean, inverse_std, self.eps)
            u = activation_tail(u, plan, self.activation, self.ranges)
        else:
            u = integer_surrogate(x, m, b, plan, self.activation, self.ranges)
        return self.requantizer(u)

    def lower(
        self, builder: ProgramBuilder, acc: Value, acc_scale: Tensor | None, weight: Constant
    ) -> Value:
        builder.note("quantnorm", acc.elements)
        have = builder.with_constants
        m, b = self.affine() if have else (None, None)
        if not self.integer or acc.dtype == "float":
            return self._lower_float(builder, acc, acc_scale, m, b)
        plan = None
        if have:
            plan = integer_plan(
                m, b, acc_scale, self.output_step(), self.ranges, self.activation.raw_biases()[0]
            )
        step = float(self.output_step()) if have and not self.output_codes.is_float else None
        return lower_integer(
            builder,
            acc,
            self.ranges,
            plan,
            self.activation,
            weight=weight,
            scale=step,
            kind=self.kind,
            weight_codes=self.weight_codes,
        )


def make_output_stage(
    norm: str, conv: nn.Module, *, activation: str, activation_bits: int, scale_format: str
) -> BatchNormStage | QuantNormStage:
    """The output stage after ``conv`` for an ``ArchConfig`` ``norm`` kind."""
    options = {
        "activation": activation,
        "activation_bits": activation_bits,
        "scale_format": scale_format,
    }
    if norm == "batchnorm":
        return BatchNormStage(conv.out_channels, **options)
    if norm == "quantnorm":
        return QuantNormStage(
            conv.out_channels,
            accumulator_bound=conv.accumulator_bound,
            weight_codes=None if conv.is_float else conv.weight_quantizer.code_range(),
            **options,
        )
    raise ValueError(f"norm={norm!r} is not supported; use batchnorm or quantnorm")
