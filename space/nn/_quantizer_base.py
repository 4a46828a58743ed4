"""The quantizer base class, the registry of quantizer families and Double Quantization of
scales (see :mod:`space.quantizers` for the families)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pikenas.space.errors import ArchConfigError
from pikenas.space.nn._fixed_point import double_quantized, scale_format_bits
from pikenas.space.nn._ste import ste
from pikenas.space.registry import Registry

__all__ = ["QUANTIZERS", "Quantizer", "quantize_scale"]

QUANTIZERS: Registry[type[Quantizer]] = Registry("quantizer family")


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
