"""Fake quantizers for quantization-aware training, and Double Quantization of their scales.

Every quantizer is an ``nn.Module`` mapping a float tensor to a float tensor whose values lie
on the quantization grid ("fake quantization"), with explicit attributes the lowering and the
tests read:

* ``bits``: width of one quantized value (32 = float pass-through);
* ``family``: ``"float"``, ``"uniform"``, ``"pow2"``, ``"binary"`` or ``"ternary"``;
* ``signed``: whether negative levels exist;
* ``granularity``: ``"per_tensor"`` or ``"per_channel"`` (one scale per index of dim 0);
* ``scale_format``: the Double Quantization (DQ) format of the quantizer's scales
  (:func:`space._fixed_point.double_quantized`): ``float32``, ``int16`` / ``int8`` / ``int4``
  (N-bit integers times one shared power of two), ``pow2`` (powers of two, a shift).

A weight quantizer's output is exactly ``codes * scale``: :meth:`Quantizer.codes_and_scale`
gives the integer codes (inside :meth:`Quantizer.code_range`, a range fixed by the
configuration) and the per-channel scale the integer program folds into its requantization.
Rounding is half up (``floor(x + 0.5)``) everywhere, as in the integer program.

Gradients use straight-through estimators (STE) written so that the forward value is exact
(``value.detach() + (surrogate - surrogate.detach())`` adds an exact zero). In eager training
the same estimators run as single custom autograd nodes (:func:`ste`, :class:`_LevelsFunction`)
for speed; the meta device and ``no_grad`` take the plain ops with the same values.

Quantizer initialisation is data-free: a weight quantizer is initialised from the weight by
the layer that owns it (:meth:`Quantizer.init_from`); an activation quantizer starts with the
LSQ initial step for a unit-variance input.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from pikenas.space.errors import ArchConfigError
from pikenas.space.nn._compiled import uniform_levels
from pikenas.space.nn._data_quantizers import BinaryQuantizer, TernaryQuantizer
from pikenas.space.nn._fixed_point import double_quantized, round_half_up, scale_format_bits
from pikenas.space.nn._quantizer_base import QUANTIZERS, Quantizer, quantize_scale
from pikenas.space.nn._ste import (
    _eager_training,
    _grad_scale,
    _LevelsFunction,
    _pow2_levels,
    clipped_ste,
    round_ste,
    ste,
)

__all__ = [
    "QUANTIZERS",
    "Quantizer",
    "FloatQuantizer",
    "UniformQuantizer",
    "Pow2Quantizer",
    "BinaryQuantizer",
    "TernaryQuantizer",
    "make_quantizer",
    "make_activation_quantizer",
    "quantize_scale",
    "scale_format_bits",
    "ste",
    "clipped_ste",
    "round_ste",
]


@QUANTIZERS.register("float")
class FloatQuantizer(Quantizer):
    """Float pass-through: ``y = x``. Gradient: identity. ``bits = 32``, no scales."""

    family = "float"

    def __init__(
        self,
        bits: int = 32,
        *,
        signed: bool = True,
        granularity: str = "per_tensor",
        channels: int = 1,
        scale_format: str = "float32",
    ) -> None:
        super().__init__()
        if bits != 32:
            raise ArchConfigError(f"bits={bits} is not possible for a float quantizer; use 32")
        self.bits = 32
        self.signed = signed
        self.granularity = granularity
        self.scale_format = scale_format

    def forward(self, x: Tensor) -> Tensor:
        return x


class _LearnedScale(Quantizer):
    """Shared machinery of quantizers with a learned scale parameter ``scale``
    (shape ``(channels,)`` per channel, ``(1,)`` per tensor), kept positive by a clamp."""

    has_scales = True

    def __init__(
        self,
        bits: int,
        *,
        signed: bool,
        granularity: str,
        channels: int,
        scale_format: str,
        initial_scale: float,
    ) -> None:
        super().__init__()
        self._configure(bits, signed, granularity, scale_format)
        count = channels if granularity == "per_channel" else 1
        self.scale = nn.Parameter(torch.full((count,), float(initial_scale)))

    def scale_value(self) -> Tensor:
        """:meth:`quantized_scale` without gradient (e.g. a grid for other quantities)."""
        return double_quantized(self.scale.detach().clamp_min(1e-8), self.scale_format, False)

    def quantized_scale(self) -> Tensor:
        """The learned scale after Double Quantization, shape ``(channels,)`` or ``(1,)``;
        straight-through gradient to ``scale`` (kept positive by a clamp at 1e-8)."""
        return ste(self.scale_value(), self.scale)

    def scale_for(self, x: Tensor) -> Tensor:
        return self._channel_view(self.quantized_scale(), x)


@QUANTIZERS.register("uniform")
class UniformQuantizer(_LearnedScale):
    """Uniform quantizer with a learned step size (LSQ, Esser et al. 2020).

    Forward: ``y = clamp(round(x / s), q_min, q_max) * s`` with ``q_min, q_max =
    -2^(b-1), 2^(b-1) - 1`` (signed) or ``0, 2^b - 1`` (unsigned); ``s`` is the learned step
    (per tensor, or per channel over dim 0) after Double Quantization. At most ``2^b`` levels.

    Gradient: straight-through for ``x`` (1 where ``q_min <= x / s <= q_max``, else 0); LSQ's
    gradient for ``s``: ``round(v) - v`` inside the range and ``q_min`` / ``q_max`` outside
    (``v = x / s``), scaled by ``1 / sqrt(numel_per_scale * q_max)``.
    """

    family = "uniform"

    def __init__(
        self,
        bits: int = 8,
        *,
        signed: bool = True,
        granularity: str = "per_tensor",
        channels: int = 1,
        scale_format: str = "float32",
    ) -> None:
        if not 2 <= bits <= 16:
            raise ArchConfigError(f"bits={bits} is not possible for a uniform quantizer; use 2..16")
        q_max = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
        # LSQ's initial step for a unit-variance input: 2 E|x| / sqrt(q_max).
        mean_abs = 0.8 if signed else 0.4
        super().__init__(
            bits,
            signed=signed,
            granularity=granularity,
            channels=channels,
            scale_format=scale_format,
            initial_scale=2 * mean_abs / math.sqrt(q_max),
        )
        self.q_min = -(2 ** (bits - 1)) if signed else 0
        self.q_max = q_max

    @torch.no_grad()
    def init_from(self, x: Tensor) -> None:
        """LSQ initialisation: ``s = 2 mean|x| / sqrt(q_max)`` per channel or tensor."""
        mean_abs = x.abs().mean(dim=self._reduce_dims(x)).reshape(-1)
        self.scale.copy_((2 * mean_abs / math.sqrt(self.q_max)).clamp_min(1e-6))

    def forward(self, x: Tensor) -> Tensor:
        per_scale = x.numel() // self.scale.numel() if x.numel() else 1
        grad_factor = 1.0 / math.sqrt(max(per_scale, 1) * self.q_max)
        if _eager_training(x, self.scale):
            bounds = (float(self.q_min), float(self.q_max))
            fused = uniform_levels(x, self.scale, self.scale_format, *bounds, grad_factor)
            if fused is not None:
                return fused
            return _LevelsFunction.apply(
                x,
                self.scale,
                self.scale_format,
                self._view_shape(x),
                self.q_min,
                self.q_max,
                grad_factor,
                None,
            )
        step = self.scale_for(x)
        # Plain ops (inference, export, meta): same values, same gradients.
        step = _grad_scale(step, grad_factor)
        v = torch.clamp(x / step, self.q_min, self.q_max)
        return ste(round_half_up(v.detach()), v) * step

    def clip_range(self, x: Tensor) -> tuple[Tensor, Tensor]:
        step = self.scale_for(x).detach()
        return self.q_min * step, self.q_max * step

    def code_range(self) -> tuple[int, int]:
        return self.q_min, self.q_max

    @torch.no_grad()
    def code_scale(self, x: Tensor) -> Tensor:
        return self.scale_value()

    @torch.no_grad()
    def codes_and_scale(self, x: Tensor) -> tuple[Tensor, Tensor]:
        step = self.scale_value()
        codes = round_half_up(
            torch.clamp(x / step.view(self._view_shape(x)), self.q_min, self.q_max)
        )
        return codes, step


@QUANTIZERS.register("pow2")
class Pow2Quantizer(_LearnedScale):
    """Power-of-two (logarithmic) quantizer with a learned scale ``s``.

    Forward: ``v = clamp(x / s, -1, 1)``; ``y = s * sign(v) * 2^e`` with
    ``e = clamp(round(log2|v|), -(L - 1), 0)`` and ``L = 2^(b-1) - 1`` magnitude levels, and
    ``y = 0`` where ``|v| < 2^-(L-1) / 2`` (half the smallest level). One sign bit plus
    ``b - 1`` bits of exponent code (one code is zero): ``2^b - 1`` levels; all non-zero outputs
    are ``+-s * 2^e``, powers of two when ``s`` is (``scale_format="pow2"``).

    Gradient: straight-through for ``x`` (1 where ``|x| <= s``, else 0); LSQ-style for ``s``
    (``q(v) - v`` inside, ``+-1`` outside), scaled by ``1 / sqrt(numel_per_scale)``.
    """

    family = "pow2"

    def __init__(
        self,
        bits: int = 4,
        *,
        signed: bool = True,
        granularity: str = "per_tensor",
        channels: int = 1,
        scale_format: str = "float32",
    ) -> None:
        if not 2 <= bits <= 5:
            raise ArchConfigError(
                f"bits={bits} is not possible for a pow2 quantizer; use 2..5 (a b-bit pow2 code "
                "is an integer of up to 2^(2^(b-1) - 2): wider ones do not fit an accumulator)"
            )
        super().__init__(
            bits,
            signed=signed,
            granularity=granularity,
            channels=channels,
            scale_format=scale_format,
            initial_scale=2.0,
        )
        self.min_exponent = -(2 ** (bits - 1) - 2)

    @torch.no_grad()
    def init_from(self, x: Tensor) -> None:
        """``s = max|x|`` per channel or tensor (the largest level covers the data)."""
        dims = self._reduce_dims(x)
        largest = x.abs().amax(dim=dims) if dims else x.abs()
        self.scale.copy_(largest.reshape(-1).clamp_min(1e-6))

    def forward(self, x: Tensor) -> Tensor:
        per_scale = x.numel() // self.scale.numel() if x.numel() else 1
        grad_factor = 1.0 / math.sqrt(max(per_scale, 1))
        low = -1.0 if self.signed else 0.0
        if _eager_training(x, self.scale):
            return _LevelsFunction.apply(
                x,
                self.scale,
                self.scale_format,
                self._view_shape(x),
                low,
                1.0,
                grad_factor,
                self.min_exponent,
            )
        scale = self.scale_for(x)
        scale = _grad_scale(scale, grad_factor)
        v = torch.clamp(x / scale, low, 1.0)
        return ste(_pow2_levels(v.detach(), self.min_exponent), v) * scale

    def clip_range(self, x: Tensor) -> tuple[Tensor, Tensor]:
        scale = self.scale_for(x).detach()
        return (-scale if self.signed else 0 * scale), scale

    def code_range(self) -> tuple[int, int]:
        """Codes ``+-2^(e - min_exponent)``: integers up to ``2^-min_exponent``."""
        largest = 2 ** (-self.min_exponent)
        return (-largest if self.signed else 0), largest

    @torch.no_grad()
    def code_scale(self, x: Tensor) -> Tensor:
        return self.scale_value() * 2.0**self.min_exponent

    @torch.no_grad()
    def codes_and_scale(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Codes ``sign * 2^(e - min_exponent)`` times the scale ``s * 2^min_exponent``."""
        scale = self.scale_value()
        low = -1.0 if self.signed else 0.0
        v = torch.clamp(x / scale.view(self._view_shape(x)), low, 1.0)
        codes = _pow2_levels(v, self.min_exponent) * 2.0 ** (-self.min_exponent)
        return codes, scale * 2.0**self.min_exponent


def make_quantizer(
    family: str,
    bits: int,
    *,
    signed: bool = True,
    granularity: str = "per_tensor",
    channels: int = 1,
    scale_format: str = "float32",
) -> Quantizer:
    """A weight quantizer of ``family`` at ``bits`` bits.

    ``channels`` is the size of dim 0 of the tensors it will see (used for ``per_channel``).
    An unknown family raises :class:`space.errors.UnknownNameError`; bits the family cannot
    take raise :class:`space.errors.ArchConfigError`.
    """
    cls: Any = QUANTIZERS.get(family)
    return cls(
        bits,
        signed=signed,
        granularity=granularity,
        channels=channels,
        scale_format=scale_format,
    )


def make_activation_quantizer(
    bits: int, *, signed: bool, scale_format: str = "float32"
) -> Quantizer:
    """The requantizer of an activation tensor to ``bits`` bits (per tensor).

    ``1``: pure sign (:class:`BinaryQuantizer` with ``scaled=False``); ``2..16``:
    :class:`UniformQuantizer` (unsigned after ReLU: pass ``signed=False``); ``32``: float.
    """
    if bits == 32:
        return FloatQuantizer(signed=signed)
    if bits == 1:
        return BinaryQuantizer(1, granularity="per_tensor", scale_format=scale_format, scaled=False)
    return UniformQuantizer(
        bits, signed=signed, granularity="per_tensor", channels=1, scale_format=scale_format
    )
