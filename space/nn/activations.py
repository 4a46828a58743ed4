"""Activation functions, as the training forward computes them and as the program runs them.

Every activation is a two-slope function of its input ``z``::

    act(z) = (z - bias_x) * (pos_slope if z - bias_x >= 0 else neg_slope) - bias_y

``ReLU`` (slopes 1, 0), ``PReLU`` (1, a learned ``a_c``), ``DPReLU`` (PokeBNN: all four learned
per channel) and ``NoActivation`` (identity). ``slope_format`` says how the slopes exist at
inference, and the training forward quantizes them the same way:

* ``float32``: float slopes (a float multiply); the setting after a float batch norm;
* ``int8``: ``k * 2^-s`` with 8-bit integers ``k`` and one shared ``s`` in ``[0, 7]``
  (an integer multiply, under QuantNorm with intN Double Quantization);
* ``pow2``: positive powers of two ``2^e``, ``e`` in ``[-7, 7]`` (a shift, under pow2 QuantNorm).

Under an integer QuantNorm the biases live on the grid of the integer they are added to: the
stage passes that grid (``grid``, real units per channel) and the forward rounds ``bias_x`` to it
and ``bias_y`` to ``grid * 2^-s`` (the grid after the slope multiply), as the program does.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from pikenas.space.nn._fixed_point import TINY, pow2_exponent, round_half_up
from pikenas.space.nn._ste import prelu
from pikenas.space.nn.quantizers import ste
from pikenas.space.registry import Registry

__all__ = [
    "ACTIVATIONS",
    "SLOPE_FORMATS",
    "Activation",
    "ReLU",
    "PReLU",
    "DPReLU",
    "NoActivation",
    "QuantizedSlopes",
    "make_activation",
]

ACTIVATIONS: Registry[type[Activation]] = Registry("activation")
SlopeFormat = Literal["float32", "int8", "pow2"]
SLOPE_FORMATS: tuple[str, ...] = get_args(SlopeFormat)
#: pow2 slopes 2^e with e in [-POW2_SLOPE_SPAN, POW2_SLOPE_SPAN]; int8 shared shift in [0, 7].
POW2_SLOPE_SPAN = 7
INT8_SLOPE_SHIFT = 7
INT8_SLOPE_LEVELS = 127


def _channel_view(parameter: Tensor, x: Tensor) -> Tensor:
    """``(C,)`` -> ``(1, C, 1, 1)`` (or ``(1, C)``) to broadcast against ``x``."""
    return parameter.view(1, -1, *([1] * (x.dim() - 2)))


class QuantizedSlopes:
    """Slopes as the program holds them. ``pos`` / ``neg``: values ``(C,)`` (with straight-
    through gradients to the raw slopes). Integer formats also give the integer form:
    ``shift`` ``s`` and codes ``pos_code`` / ``neg_code`` (int8: ``slope = code * 2^-s``; pow2:
    ``slope = 2^(code - s)``, the code a left-shift amount)."""

    def __init__(self, pos: Tensor, neg: Tensor, slope_format: str) -> None:
        self.slope_format = slope_format
        self.shift = 0
        self.pos_code: Tensor | None = None
        self.neg_code: Tensor | None = None
        if slope_format == "float32":
            self.pos, self.neg = pos, neg
            return
        raw = torch.stack([pos.detach(), neg.detach()]).double()
        if slope_format == "pow2":
            exponent = torch.clamp(pow2_exponent(raw.abs()), -POW2_SLOPE_SPAN, POW2_SLOPE_SPAN)
            self.shift = POW2_SLOPE_SPAN
            codes = exponent + POW2_SLOPE_SPAN
            values = torch.exp2(exponent)
        else:
            largest = float(raw.abs().max()) if raw.numel() else 1.0
            shift = int(
                torch.floor(torch.log2(torch.tensor(INT8_SLOPE_LEVELS / max(largest, TINY))))
            )
            self.shift = min(max(shift, 0), INT8_SLOPE_SHIFT)
            codes = torch.clamp(
                round_half_up(raw * 2.0**self.shift), -INT8_SLOPE_LEVELS, INT8_SLOPE_LEVELS
            )
            values = codes * 2.0**-self.shift
        self.pos_code, self.neg_code = codes[0], codes[1]
        self.pos = ste(values[0].to(pos.dtype), pos)
        self.neg = ste(values[1].to(neg.dtype), neg)


class Activation(nn.Module):
    """Base class: the two-slope form. Subclasses say which parts are learned."""

    kind: str = ""

    def __init__(self, channels: int = 1, *, slope_format: str = "float32") -> None:
        super().__init__()
        if slope_format not in SLOPE_FORMATS:
            raise ValueError(f"slope_format={slope_format!r}; use one of {SLOPE_FORMATS}")
        self.channels = channels
        self.slope_format = slope_format

    # Parts of the two-slope form (constants for fixed activations).
    def raw_slopes(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def raw_biases(self) -> tuple[Tensor | None, Tensor | None]:
        return None, None

    def slopes(self) -> QuantizedSlopes:
        pos, neg = self.raw_slopes()
        return QuantizedSlopes(pos, neg, self.slope_format)

    def biases(self, grid: Tensor | None, slope_shift: int) -> tuple[Tensor | None, Tensor | None]:
        """``(bias_x, bias_y)`` as the forward applies them: rounded to ``grid`` and
        ``grid * 2^-slope_shift`` when a grid is given (integer QuantNorm)."""
        bias_x, bias_y = self.raw_biases()
        if grid is None:
            return bias_x, bias_y
        if bias_x is not None:
            bias_x = ste(round_half_up(bias_x.detach() / grid) * grid, bias_x)
        if bias_y is not None:
            fine = grid * 2.0**-slope_shift
            bias_y = ste(round_half_up(bias_y.detach() / fine) * fine, bias_y)
        return bias_x, bias_y

    def forward(self, x: Tensor, grid: Tensor | None = None) -> Tensor:
        """``x`` ``(N, C, H, W)`` or ``(N, C)``; ``grid`` ``(C,)`` the integer grid of ``x``
        under an integer QuantNorm (None: float)."""
        slopes = self.slopes()
        bias_x, bias_y = self.biases(grid, slopes.shift)
        shifted = x if bias_x is None else x - _channel_view(bias_x, x)
        pos, neg = _channel_view(slopes.pos, x), _channel_view(slopes.neg, x)
        y = shifted * torch.where(shifted >= 0, pos, neg)
        return y if bias_y is None else y - _channel_view(bias_y, x)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, slope_format={self.slope_format}"


@ACTIVATIONS.register("relu")
class ReLU(Activation):
    """``y = max(x, 0)``. In the program it is the lower bound of the requantization clip."""

    kind = "relu"

    def raw_slopes(self) -> tuple[Tensor, Tensor]:
        one = torch.ones(self.channels)
        return one, torch.zeros(self.channels)

    def forward(self, x: Tensor, grid: Tensor | None = None) -> Tensor:
        return torch.relu(x)


@ACTIVATIONS.register("prelu")
class PReLU(Activation):
    """``y = x if x >= 0 else a_c * x`` with a learned per-channel slope ``a_c`` (init 0.25),
    quantized per ``slope_format``."""

    kind = "prelu"

    def __init__(self, channels: int = 1, **options: Any) -> None:
        super().__init__(channels, **options)
        self.slope = nn.Parameter(torch.full((channels,), 0.25))

    def raw_slopes(self) -> tuple[Tensor, Tensor]:
        return torch.ones_like(self.slope), self.slope

    def forward(self, x: Tensor, grid: Tensor | None = None) -> Tensor:
        # The two-slope form with pos = 1 (exact in every slope format) and no biases is a
        # prelu (equal up to the sign of zeros); the generic torch.where is slow on CPU.
        return prelu(x, self.slopes().neg)


@ACTIVATIONS.register("dprelu")
class DPReLU(Activation):
    """PokeBNN's dynamic PReLU: ``u = x - bias_x``; ``y = slope * u - bias_y`` with
    ``slope = pos_slope`` where ``u >= 0`` else ``neg_slope``; all four learned per channel
    (init ``pos_slope = 1``, ``neg_slope = 0.25``, biases 0)."""

    kind = "dprelu"

    def __init__(self, channels: int = 1, **options: Any) -> None:
        super().__init__(channels, **options)
        self.pos_slope = nn.Parameter(torch.ones(channels))
        self.neg_slope = nn.Parameter(torch.full((channels,), 0.25))
        self.bias_x = nn.Parameter(torch.zeros(channels))
        self.bias_y = nn.Parameter(torch.zeros(channels))

    def raw_slopes(self) -> tuple[Tensor, Tensor]:
        return self.pos_slope, self.neg_slope

    def raw_biases(self) -> tuple[Tensor | None, Tensor | None]:
        return self.bias_x, self.bias_y


@ACTIVATIONS.register("none")
class NoActivation(Activation):
    """Identity: ``y = x``; nothing in the program."""

    kind = "none"

    def raw_slopes(self) -> tuple[Tensor, Tensor]:
        one = torch.ones(self.channels)
        return one, one

    def forward(self, x: Tensor, grid: Tensor | None = None) -> Tensor:
        return x


def make_activation(kind: str, channels: int, **options: Any) -> Activation:
    """``ACTIVATIONS[kind](channels, **options)``; options as in :class:`Activation`."""
    return ACTIVATIONS.get(kind)(channels, **options)
