"""Activation functions that declare their inference arithmetic (docs/ace_v2_rules.md).

``ReLU``, ``PReLU``, ``DPReLU`` (PokeBNN) and ``NoActivation``, each usable standalone on
``(N, C, H, W)`` or ``(N, C)`` tensors. Each knows the width it runs at:

* ``working_bits`` (``X`` in docs/ace_v2_rules.md): 32 with ``float_operands=True`` after a
  float batch norm (the default, what standalone use means), or the QuantNorm working width
  (integer);
* ``slope_format``: how a learned slope is stored at inference and fake-quantized in the
  forward pass: ``"float32"`` (float multiply), ``"int8"`` (8-bit integer with one shared
  float: ``mul(E, X, 8)``), ``"pow2"`` (power of two: a shift);
* ``relu_is_clip`` (ReLU only): under QuantNorm the ReLU is the lower clip bound of the
  requantization and costs nothing.

H2: ``DPReLU(channels)`` is PokeBNN's activation with float slopes; its ``inference_ops``
declares ``add bias_x, compare, mul slope (32 x 32 float), add bias_y`` per element.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from space.costs import FLOAT_BITS, CostDeclaration, Op
from space.quantizers import quantize_scale
from space.registry import Registry

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "ReLU",
    "PReLU",
    "DPReLU",
    "NoActivation",
    "make_activation",
    "SLOPE_FORMATS",
]

ACTIVATIONS: Registry[type[Activation]] = Registry("activation")
SLOPE_FORMATS = ("float32", "int8", "pow2")


def _channel_view(parameter: Tensor, x: Tensor) -> Tensor:
    """``(C,)`` -> ``(1, C, 1, 1)`` (or ``(1, C)``) to broadcast against ``x``."""
    return parameter.view(1, -1, *([1] * (x.dim() - 2)))


class Activation(nn.Module):
    """Base class: ``kind`` (the ACE ``elements`` key), width attributes, ``inference_ops``."""

    kind: str = ""

    def __init__(
        self,
        channels: int = 1,
        *,
        working_bits: int = FLOAT_BITS,
        float_operands: bool = True,
        slope_format: str = "float32",
        relu_is_clip: bool = False,
    ) -> None:
        super().__init__()
        if slope_format not in SLOPE_FORMATS:
            raise ValueError(f"slope_format={slope_format!r}; use one of {SLOPE_FORMATS}")
        self.channels = channels
        self.working_bits = working_bits
        self.float_operands = float_operands
        self.slope_format = slope_format
        self.relu_is_clip = relu_is_clip

    def _quantized(self, slope: Tensor) -> Tensor:
        return quantize_scale(slope, self.slope_format, signed=True)

    def _width(self) -> tuple[int, bool]:
        return self.working_bits, self.float_operands

    def _slope_op(self, elements: int) -> Op:
        width, is_float = self._width()
        if self.slope_format == "pow2":
            return Op("shift", elements, width, width, is_float, "slope")
        slope_bits = 8 if self.slope_format == "int8" else FLOAT_BITS
        return Op("mul", elements, width, slope_bits, is_float, "slope")

    def _ops(self, elements: int) -> list[Op]:
        return []

    def inference_ops(
        self, input_shape: tuple[int, ...], output_shape: tuple[int, ...]
    ) -> CostDeclaration:
        elements = math.prod(output_shape)
        kinds = {self.kind: elements} if self.kind != "none" else {}
        return CostDeclaration(tuple(self._ops(elements)), kinds, self._params())

    def _params(self) -> int:
        return sum(p.numel() for p in self.parameters(recurse=False))

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, working_bits={self.working_bits}, "
            f"float_operands={self.float_operands}, slope_format={self.slope_format}"
        )


@ACTIVATIONS.register("relu")
class ReLU(Activation):
    """``y = max(x, 0)``. Cost: ``compare(E, X, X)``; nothing when ``relu_is_clip``."""

    kind = "relu"

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x)

    def _ops(self, elements: int) -> list[Op]:
        if self.relu_is_clip:
            return []
        width, is_float = self._width()
        return [Op("compare", elements, width, width, is_float, "relu")]


@ACTIVATIONS.register("prelu")
class PReLU(Activation):
    """``y = x if x >= 0 else a_c * x`` with a learned per-channel slope ``a_c`` (init 0.25),
    fake-quantized per ``slope_format``. Cost: ``compare(E, X, X, "select")`` and the slope
    multiply (``mul(E, X, 8 or 32)`` or ``shift(E, X)`` for pow2)."""

    kind = "prelu"

    def __init__(self, channels: int = 1, **options: Any) -> None:
        super().__init__(channels, **options)
        self.slope = nn.Parameter(torch.full((channels,), 0.25))

    def forward(self, x: Tensor) -> Tensor:
        slope = _channel_view(self._quantized(self.slope), x)
        return torch.where(x >= 0, x, slope * x)

    def _ops(self, elements: int) -> list[Op]:
        width, is_float = self._width()
        return [Op("compare", elements, width, width, is_float, "select"), self._slope_op(elements)]


@ACTIVATIONS.register("dprelu")
class DPReLU(Activation):
    """PokeBNN's dynamic PReLU: ``u = x - bias_x``; ``y = slope * u - bias_y`` with
    ``slope = pos_slope`` where ``u >= 0`` else ``neg_slope``. All four are learned per channel
    (init ``pos_slope = 1``, ``neg_slope = 0.25``, biases 0); slopes fake-quantized per
    ``slope_format``. Cost: ``add(E, X, X, "bias_x")``, ``compare(E, X, X, "select")``, the slope
    multiply (``mul(E, X, 8 or 32)`` / ``shift`` for pow2), ``add(E, X, X, "bias_y")``."""

    kind = "dprelu"

    def __init__(self, channels: int = 1, **options: Any) -> None:
        super().__init__(channels, **options)
        self.pos_slope = nn.Parameter(torch.ones(channels))
        self.neg_slope = nn.Parameter(torch.full((channels,), 0.25))
        self.bias_x = nn.Parameter(torch.zeros(channels))
        self.bias_y = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        shifted = x - _channel_view(self.bias_x, x)
        pos = _channel_view(self._quantized(self.pos_slope), x)
        neg = _channel_view(self._quantized(self.neg_slope), x)
        slope = torch.where(shifted >= 0, pos, neg)
        return slope * shifted - _channel_view(self.bias_y, x)

    def _ops(self, elements: int) -> list[Op]:
        width, is_float = self._width()
        return [
            Op("add", elements, width, width, is_float, "bias_x"),
            Op("compare", elements, width, width, is_float, "select"),
            self._slope_op(elements),
            Op("add", elements, width, width, is_float, "bias_y"),
        ]


@ACTIVATIONS.register("none")
class NoActivation(Activation):
    """Identity: ``y = x``; no cost."""

    kind = "none"

    def forward(self, x: Tensor) -> Tensor:
        return x


def make_activation(kind: str, channels: int, **options: Any) -> Activation:
    """``ACTIVATIONS[kind](channels, **options)``; options as in :class:`Activation`."""
    return ACTIVATIONS.get(kind)(channels, **options)
