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

from space._fixed_point import TINY, double_quantized, round_half_up, scale_format_bits
from space.errors import ArchConfigError
from space.registry import Registry

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

QUANTIZERS: Registry[type[Quantizer]] = Registry("quantizer family")

_TINY = TINY
# Below this many elements the plain straight-through ops are cheaper than a custom autograd
# node (whose Python overhead is tens of microseconds); above it the node saves memory passes.
_LARGE = 1 << 15


def _eager_training(*tensors: Tensor) -> bool:
    """True in eager training (grad enabled, a tensor needs grad, a real device): then the
    straight-through estimators run as single custom autograd nodes (fewer passes and far fewer
    tiny autograd nodes). Tracing, export, ``no_grad`` and the meta device take plain ops with
    the same values and gradients."""
    return (
        torch.is_grad_enabled()
        and any(t.requires_grad for t in tensors)
        and tensors[0].device.type != "meta"
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
    )


class _Replace(torch.autograd.Function):
    """Forward ``value``; the gradient goes to ``surrogate`` unchanged."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, surrogate: Tensor) -> Tensor:  # type: ignore[override]
        return value

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        return None, grad


class _ClippedReplace(torch.autograd.Function):
    """Forward ``value``; the gradient goes to ``x`` where ``|x| < clip``, else 0."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, x: Tensor, clip: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.clip = clip
        return value

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return None, torch.ops.aten.hardtanh_backward(grad, x, -ctx.clip, ctx.clip), None


def ste(value: Tensor, surrogate: Tensor) -> Tensor:
    """Forward ``value`` exactly, backward the gradient of ``surrogate`` (straight-through).

    The plain form ``value.detach() + (surrogate - surrogate.detach())`` adds an exact zero, so
    outputs lie exactly on the grid; for large tensors in eager training one custom node does
    the same.
    """
    if surrogate.numel() >= _LARGE and _eager_training(surrogate):
        return _Replace.apply(value.detach(), surrogate)
    return value.detach() + (surrogate - surrogate.detach())


def clipped_ste(value: Tensor, x: Tensor, clip: float) -> Tensor:
    """Forward ``value``; gradient 1 with respect to ``x`` where ``|x| <= clip``, else 0."""
    if _eager_training(x):
        return _ClippedReplace.apply(value.detach(), x, clip)
    surrogate = torch.clamp(x, -clip, clip)
    return value.detach() + (surrogate - surrogate.detach())


def round_ste(x: Tensor) -> Tensor:
    """``floor(x + 0.5)`` (half up) forward, identity gradient."""
    return ste(round_half_up(x.detach()), x)


def _all_dims(t: Tensor) -> tuple[int, ...]:
    return tuple(range(t.dim()))


def quantize_scale(scale: Tensor, scale_format: str, *, signed: bool = False) -> Tensor:
    """Double Quantization of a tensor of scales (any shape), with a straight-through gradient.

    * ``float32``: returned as is.
    * ``intN``: ``k * 2^-s``, ``k`` an N-bit integer (``[1, 2^N - 1]``, or
      ``[-(2^(N-1) - 1), 2^(N-1) - 1]`` with ``signed``, e.g. PReLU slopes) and one shared
      power of two for the whole tensor. At most ``2^N`` values.
    * ``pow2``: ``sign(scale) * 2^round(log2|scale|)`` (rounded half up in the log domain).

    Gradient: identity with respect to ``scale`` (the shared float is treated as a constant).
    """
    if scale_format == "float32":
        return scale
    return ste(double_quantized(scale.detach(), scale_format, signed), scale)


def _grad_scale(x: Tensor, factor: float) -> Tensor:
    """Forward ``x``, backward gradient times ``factor`` (LSQ's step-size gradient scaling)."""
    return x.detach() + (x * factor - (x * factor).detach())


def _pow2_levels(v: Tensor, min_exponent: int) -> Tensor:
    """``sign(v) * 2^clamp(round(log2|v|), min_exponent, 0)``, 0 below half the smallest level,
    for ``v`` in ``[-1, 1]`` (no gradient)."""
    magnitude = v.abs()
    exponent = torch.clamp(
        torch.floor(torch.log2(magnitude.clamp_min(_TINY)) + 0.5), min_exponent, 0
    )
    level = torch.exp2(exponent)
    level = torch.where(magnitude < 2.0 ** (min_exponent - 1), 0.0, level)
    return torch.where(v < 0, -level, level)


class _LevelsFunction(torch.autograd.Function):
    """A learned-scale quantizer in one autograd node (eager training):
    ``s = view(DQ(clamp(scale, 1e-8)))``, ``y = L(clamp(x / s, low, high)) * s`` with ``L`` =
    round half up (uniform / LSQ) or the power-of-two levels (``min_exponent`` given).

    Backward: ``dx = g`` where ``low < x / s < high`` else 0 (one fused ``hardtanh_backward``
    pass, no bool masks, which are slow on CPU); ``ds = factor * sum(g * (L(v) - v))`` inside and
    ``sum(g * L(v))`` outside (LSQ), computed as ``sum(g * L) - sum(dx * v)`` (two dot products
    for a per-tensor scale, ``v = x / s``), passed straight through the Double Quantization to
    the raw ``scale``. One node instead of a dozen keeps small tensors cheap.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        scale: Tensor,
        scale_format: str,
        view_shape: tuple[int, ...],
        low: float,
        high: float,
        grad_factor: float,
        min_exponent: int | None,
    ) -> Tensor:
        step = double_quantized(scale.clamp_min(1e-8), scale_format, False).view(view_shape)
        v = x / step
        if min_exponent is None:
            levels = torch.clamp(v, low, high).add_(0.5).floor_()
        else:
            levels = _pow2_levels(torch.clamp(v, low, high), min_exponent)
        ctx.save_for_backward(v, levels)
        ctx.bounds = (low, high)
        ctx.shapes = (step.shape, scale.shape)
        ctx.grad_factor = grad_factor
        return levels * step

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        v, levels = ctx.saved_tensors
        grad_x = torch.ops.aten.hardtanh_backward(grad, v, *ctx.bounds)
        grad_scale = None
        if ctx.needs_input_grad[1]:
            step_shape, scale_shape = ctx.shapes
            if math.prod(scale_shape) == 1 and _same_dense_layout(grad, levels, grad_x, v):
                total = torch.dot(_flat(grad), _flat(levels)) - torch.dot(_flat(grad_x), _flat(v))
            else:
                total = (grad * levels - grad_x * v).sum_to_size(step_shape)
            grad_scale = total.reshape(scale_shape) * ctx.grad_factor
        return grad_x, grad_scale, None, None, None, None, None, None


def _same_dense_layout(*tensors: Tensor) -> bool:
    first = tensors[0]
    dense = first.is_contiguous() or (
        first.dim() == 4 and first.is_contiguous(memory_format=torch.channels_last)
    )
    return dense and all(
        t.shape == first.shape and t.stride() == first.stride() and t.dtype == first.dtype
        for t in tensors[1:]
    )


def _flat(t: Tensor) -> Tensor:
    """The elements of a dense tensor in memory order, as a 1-D view."""
    return t.as_strided((t.numel(),), (1,))


class Quantizer(nn.Module):
    """Base class. Subclasses set the attributes and implement ``forward(x) -> x_q``.

    ``x`` has any shape; with ``per_channel`` granularity dim 0 indexes the channels (weights
    ``(C_out, C_in / groups, k, k)`` or ``(out_features, in_features)``).
    """

    family: str = ""
    bits: int = 32
    signed: bool = True
    granularity: str = "per_tensor"
    scale_format: str = "float32"
    has_scales: bool = False

    def _configure(self, bits: int, signed: bool, granularity: str, scale_format: str) -> None:
        """Validate and set the attributes every scaled quantizer has."""
        if granularity not in ("per_tensor", "per_channel"):
            raise ArchConfigError(
                f"granularity={granularity!r} is not supported; use per_tensor or per_channel"
            )
        scale_format_bits(scale_format)
        self.bits = bits
        self.signed = signed
        self.granularity = granularity
        self.scale_format = scale_format

    def init_from(self, x: Tensor) -> None:
        """Initialise learned scales from a representative tensor (weights or a batch)."""

    def scale_for(self, x: Tensor) -> Tensor | None:
        """The (double-quantized) scale used for input ``x``, broadcastable to ``x``."""
        return None

    def clip_range(self, x: Tensor) -> tuple[Tensor, Tensor] | None:
        """``(low, high)`` inside which the straight-through gradient is exactly 1."""
        return None

    def code_range(self) -> tuple[int, int]:
        """``(lo, hi)`` of the integer codes (fixed by the configuration); float: none."""
        raise ArchConfigError(f"a {self.family} quantizer has no integer codes")

    @torch.no_grad()
    def codes_and_scale(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(codes, scale)`` with ``forward(x) == codes * scale`` (scale broadcast over dim 0
        per channel): ``codes`` integer-valued, same shape as ``x``; ``scale`` ``(channels,)``
        or ``(1,)``, positive."""
        raise ArchConfigError(f"a {self.family} quantizer has no integer codes")

    @torch.no_grad()
    def code_scale(self, x: Tensor) -> Tensor:
        """The ``scale`` of :meth:`codes_and_scale` alone (cheaper: no codes computed)."""
        return self.codes_and_scale(x)[1]

    def _view_shape(self, x: Tensor) -> tuple[int, ...]:
        """Shape that broadcasts a ``(channels,)`` or ``(1,)`` scale against ``x``."""
        if self.granularity == "per_channel":
            return (-1, *([1] * (x.dim() - 1)))
        return (1,) * x.dim()

    def _channel_view(self, scale: Tensor, x: Tensor) -> Tensor:
        return scale.view(self._view_shape(x))

    def _reduce_dims(self, x: Tensor) -> tuple[int, ...]:
        start = 1 if self.granularity == "per_channel" else 0
        return tuple(range(start, x.dim()))

    def extra_repr(self) -> str:
        return (
            f"bits={self.bits}, signed={self.signed}, granularity={self.granularity}, "
            f"scale_format={self.scale_format}"
        )


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


class _DataScaled(Quantizer):
    """Quantizers whose scale is a statistic of the input (XNOR-Net / TWN style)."""

    def __init__(
        self,
        bits: int,
        *,
        granularity: str,
        scale_format: str,
        clip: float,
    ) -> None:
        super().__init__()
        self._configure(bits, True, granularity, scale_format)
        self.clip = clip

    def clip_range(self, x: Tensor) -> tuple[Tensor, Tensor]:
        limit = torch.full((), self.clip, device=x.device, dtype=x.dtype)
        return -limit, limit


@QUANTIZERS.register("binary")
class BinaryQuantizer(_DataScaled):
    """Binary quantizer: ``y = sign(x) * a`` with ``sign(0) = +1``.

    ``scaled=True`` (weights): ``a = mean|x|`` per channel (dim 0) or per tensor, after Double
    Quantization. ``scaled=False`` (activations): ``a = 1``, a pure sign, no scales.

    Gradient: straight-through, 1 where ``|x| <= clip`` (default 1, as Larq's ``ste_sign``), else
    0; no gradient through ``a``.
    """

    family = "binary"

    def __init__(
        self,
        bits: int = 1,
        *,
        signed: bool = True,
        granularity: str = "per_channel",
        channels: int = 1,
        scale_format: str = "float32",
        scaled: bool = True,
        clip: float = 1.0,
    ) -> None:
        if bits != 1:
            raise ArchConfigError(f"bits={bits} is not possible for a binary quantizer; use 1")
        super().__init__(1, granularity=granularity, scale_format=scale_format, clip=clip)
        self.scaled = scaled
        self.has_scales = scaled

    def scale_for(self, x: Tensor) -> Tensor | None:
        if not self.scaled:
            return None
        dims = self._reduce_dims(x)
        mean_abs = x.detach().abs().mean(dim=dims) if dims else x.detach().abs()
        scale = double_quantized(mean_abs.reshape(-1).clamp_min(_TINY), self.scale_format, False)
        return self._channel_view(scale, x)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.scale_for(x)
        signs = torch.where(x.detach() >= 0, 1.0, -1.0).to(x.dtype)
        value = signs if scale is None else signs * scale
        return clipped_ste(value, x, self.clip)

    def code_range(self) -> tuple[int, int]:
        return -1, 1

    @torch.no_grad()
    def codes_and_scale(self, x: Tensor) -> tuple[Tensor, Tensor]:
        scale = self.scale_for(x)
        codes = torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
        if scale is None:
            return codes, torch.ones(1, dtype=x.dtype, device=x.device)
        return codes, scale.reshape(-1)


@QUANTIZERS.register("ternary")
class TernaryQuantizer(_DataScaled):
    """Ternary quantizer (TWN, Li et al. 2016): ``y = a * t``, ``t`` in ``{-1, 0, +1}``.

    ``t = sign(x)`` where ``|x| > delta`` else 0, with ``delta = threshold * mean|x|`` (default
    0.7) and ``a = mean of |x| over |x| > delta``, per channel (dim 0) or per tensor, after
    Double Quantization. Gradient: straight-through, 1 where ``|x| <= clip`` (default 1), else
    0; no gradient through ``a``.
    """

    family = "ternary"
    has_scales = True

    def __init__(
        self,
        bits: int = 2,
        *,
        signed: bool = True,
        granularity: str = "per_channel",
        channels: int = 1,
        scale_format: str = "float32",
        threshold: float = 0.7,
        clip: float = 1.0,
    ) -> None:
        if bits != 2:
            raise ArchConfigError(f"bits={bits} is not possible for a ternary quantizer; use 2")
        super().__init__(2, granularity=granularity, scale_format=scale_format, clip=clip)
        self.threshold = threshold

    def _mask_and_scale(self, x: Tensor) -> tuple[Tensor, Tensor]:
        dims = self._reduce_dims(x)
        magnitude = x.detach().abs()
        if dims:
            delta = self.threshold * magnitude.mean(dim=dims, keepdim=True)
        else:
            delta = self.threshold * magnitude
        mask = (magnitude > delta).to(x.dtype)
        if dims:
            total = (magnitude * mask).sum(dim=dims)
            count = mask.sum(dim=dims).clamp_min(1.0)
            scale = total / count
        else:
            scale = magnitude
        scale = double_quantized(scale.reshape(-1).clamp_min(_TINY), self.scale_format, False)
        return mask, self._channel_view(scale, x)

    def scale_for(self, x: Tensor) -> Tensor:
        return self._mask_and_scale(x)[1]

    def forward(self, x: Tensor) -> Tensor:
        mask, scale = self._mask_and_scale(x)
        signs = torch.where(x.detach() >= 0, 1.0, -1.0).to(x.dtype)
        return clipped_ste(signs * mask * scale, x, self.clip)

    def code_range(self) -> tuple[int, int]:
        return -1, 1

    @torch.no_grad()
    def codes_and_scale(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mask, scale = self._mask_and_scale(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype) * mask, scale.reshape(-1)


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
