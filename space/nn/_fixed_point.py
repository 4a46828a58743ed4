"""Rounding, Double Quantization and fixed-point multipliers: one definition for the training
forward, the lowering to the integer program and the tests.

* One rounding mode everywhere: half up, ``floor(x + 0.5)`` (an integer add of half the
  divisor before an arithmetic right shift computes exactly this).
* Double Quantization of a tensor of scales (:func:`double_quantized`): ``float32`` as is;
  ``intN``: ``k * 2^-s`` with N-bit integers ``k`` and one shared power of two; ``pow2``:
  ``sign * 2^e`` (rounded half up in the log domain).
* Requantization multipliers (:func:`fixed_point_multiplier`): the per-channel factor
  ``M = s_acc * m / s_out`` that turns an accumulator into output codes, quantized as the
  integer program applies it: ``pow2`` a shift by a per-channel exponent, ``intN`` an N-bit
  integer per channel and one shared right shift, ``float32`` a float32 multiply.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "round_half_up",
    "sign_zero_up",
    "pow2_exponent",
    "scale_format_bits",
    "double_quantized",
    "FixedPoint",
    "fixed_point_multiplier",
    "TINY",
]

TINY = 1e-12


def round_half_up(x: Tensor) -> Tensor:
    """``floor(x + 0.5)``: the rounding of the whole program (ties go up)."""
    return torch.floor(x + 0.5)


def sign_zero_up(x: Tensor) -> Tensor:
    """``+1`` where ``x >= 0`` (both zeros included), else ``-1``; same dtype as ``x``.

    Computed as ``sign(sign(x) + 0.5)``: three fast elementwise passes, no bool mask (on CPU
    ``torch.where(x >= 0, 1.0, -1.0)`` is one to two orders of magnitude slower)."""
    return torch.sign(x).add_(0.5).sign_()


def pow2_exponent(magnitude: Tensor) -> Tensor:
    """``floor(log2(m) + 0.5)`` for ``m > 0``: the nearest power of two in the log domain."""
    return torch.floor(torch.log2(magnitude.clamp_min(TINY)) + 0.5)


def scale_format_bits(scale_format: str) -> int | None:
    """``N`` of an ``intN`` scale format, ``None`` for ``float32`` / ``pow2``."""
    from pikenas.space.errors import ArchConfigError

    if scale_format in ("int16", "int8", "int4"):
        return int(scale_format[3:])
    if scale_format in ("float32", "pow2"):
        return None
    raise ArchConfigError(
        f"scale_format={scale_format!r} is not supported; use float32, int16, int8, int4 or pow2"
    )


def _shared_exponent(largest: Tensor, levels: int) -> Tensor:
    """``s`` with ``largest * 2^s <= levels`` as large as possible (a tensor scalar)."""
    return torch.floor(torch.log2(levels / largest.clamp_min(TINY)))


def double_quantized(scale: Tensor, scale_format: str, signed: bool = False) -> Tensor:
    """Double Quantization of ``scale`` (any shape, no gradient bookkeeping).

    ``intN``: ``k * 2^-s``; ``k = round(scale * 2^s)`` clamped to ``[1, 2^N - 1]`` (unsigned)
    or ``[-(2^(N-1) - 1), 2^(N-1) - 1]`` (signed), ``s`` the largest shift that keeps
    ``max|scale| * 2^s`` inside the range. ``pow2``: ``sign(scale) * 2^round(log2|scale|)``.
    """
    if scale_format == "float32":
        return scale
    if scale_format == "pow2":
        rounded = torch.exp2(pow2_exponent(scale.abs()))
        return torch.where(scale < 0, -rounded, rounded) if signed else rounded
    n_bits = scale_format_bits(scale_format)
    assert n_bits is not None
    levels = 2 ** (n_bits - 1) - 1 if signed else 2**n_bits - 1
    dims = tuple(range(scale.dim()))
    largest = scale.abs().amax(dim=dims, keepdim=True) if dims else scale.abs()
    factor = torch.exp2(_shared_exponent(largest, levels))
    low = -levels if signed else 1
    return torch.clamp(round_half_up(scale * factor), low, levels) / factor


@dataclass(frozen=True)
class FixedPoint:
    """A quantized per-channel multiplier ``(C,)``.

    ``value``: the multiplier the program applies (float64). ``pow2``: ``value = sign * 2^e``
    with ``exponent`` ``e`` per channel; ``intN``: ``value = k * 2^-shift`` with integers ``k``
    per channel and one ``shift``; ``float32``: ``value`` is the float32 multiplier.
    """

    scale_format: str
    value: Tensor
    exponent: Tensor | None = None
    k: Tensor | None = None
    shift: int | None = None


def fixed_point_multiplier(
    multiplier: Tensor,
    scale_format: str,
    *,
    exponent_range: tuple[int, int],
    shift_range: tuple[int, int] = (0, 62),
) -> FixedPoint:
    """Quantize a real per-channel multiplier ``(C,)`` as the integer program applies it.

    ``exponent_range``: the pow2 exponents allowed (beyond them the output no longer changes,
    so clamping there is lossless); ``shift_range``: the shared intN shift allowed.
    """
    m = multiplier.detach().double()
    if scale_format == "float32":
        return FixedPoint("float32", m.float().double())
    if scale_format == "pow2":
        low, high = exponent_range
        exponent = torch.clamp(pow2_exponent(m.abs()), low, high)
        value = torch.where(m < 0, -1.0, 1.0).double() * torch.exp2(exponent)
        return FixedPoint("pow2", value, exponent=exponent)
    n_bits = scale_format_bits(scale_format)
    assert n_bits is not None
    levels = 2 ** (n_bits - 1) - 1
    largest = m.abs().max() if m.numel() else torch.ones((), dtype=torch.float64)
    shift = int(torch.clamp(_shared_exponent(largest, levels), *shift_range))
    k = torch.clamp(round_half_up(m * 2.0**shift), -levels, levels)
    return FixedPoint(scale_format, k * 2.0**-shift, k=k, shift=shift)
