"""Quantizers whose scale is a statistic of the input (XNOR-Net / TWN style): binary and
ternary. Registered in :data:`space.quantizers.QUANTIZERS`."""

from __future__ import annotations

import torch
from torch import Tensor

from pikenas.space.errors import ArchConfigError
from pikenas.space.nn._fixed_point import TINY, double_quantized, sign_zero_up
from pikenas.space.nn._quantizer_base import QUANTIZERS, Quantizer
from pikenas.space.nn._ste import clipped_ste

__all__ = ["BinaryQuantizer", "TernaryQuantizer"]

_TINY = TINY


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
        signs = sign_zero_up(x.detach())
        value = signs if scale is None else signs * scale
        return clipped_ste(value, x, self.clip)

    def code_range(self) -> tuple[int, int]:
        return -1, 1

    @torch.no_grad()
    def codes_and_scale(self, x: Tensor) -> tuple[Tensor, Tensor]:
        scale = self.scale_for(x)
        codes = sign_zero_up(x)
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
        signs = sign_zero_up(x.detach())
        return clipped_ste(signs * mask * scale, x, self.clip)

    def code_range(self) -> tuple[int, int]:
        return -1, 1

    @torch.no_grad()
    def codes_and_scale(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mask, scale = self._mask_and_scale(x)
        return sign_zero_up(x) * mask, scale.reshape(-1)
