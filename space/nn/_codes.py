"""What a requantizer emits: its codes (bits, range) and their step, for the training forward
and the lowering alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pikenas.space.nn.quantizers import BinaryQuantizer, FloatQuantizer, Quantizer

__all__ = [
    "UNSIGNED_8BIT",
    "OutputCodes",
    "output_codes",
    "output_step",
    "step_of",
    "code_range",
    "code_scale_of",
]


@dataclass(frozen=True)
class OutputCodes:
    """What a requantizer produces: ``bits`` (32 float, 1 sign) and the code range."""

    bits: int
    lo: int
    hi: int

    @property
    def is_float(self) -> bool:
        return self.bits >= 32

    @property
    def is_sign(self) -> bool:
        return self.bits == 1


UNSIGNED_8BIT = OutputCodes(8, 0, 255)


def output_codes(requantizer: Quantizer) -> OutputCodes:
    if isinstance(requantizer, FloatQuantizer):  # no codes; lo < 0 says "signed"
        return OutputCodes(32, -1 if requantizer.signed else 0, 1)
    if isinstance(requantizer, BinaryQuantizer):
        return OutputCodes(1, -1, 1)
    lo, hi = requantizer.code_range()
    return OutputCodes(requantizer.bits, lo, hi)


def output_step(requantizer: Quantizer) -> Tensor:
    """The output step ``s_out`` (a float64 tensor scalar; 1 for float and sign outputs)."""
    if isinstance(requantizer, FloatQuantizer | BinaryQuantizer):
        return torch.ones((), dtype=torch.float64)
    return requantizer.scale_value().detach().double().reshape(())


def step_of(quantizer: nn.Module) -> Tensor | None:
    """The detached step of an activation quantizer's output (None: float; 1: sign)."""
    codes = output_codes(quantizer)
    return None if codes.is_float else output_step(quantizer)


def code_range(codes: OutputCodes) -> tuple[int, int] | None:
    return None if codes.is_float else (codes.lo, codes.hi)


def code_scale_of(builder: Any, quantizer: nn.Module) -> float | None:
    """The step of ``quantizer``'s codes as a python float, when the program has constants."""
    step = step_of(quantizer)
    return float(step) if (builder.with_constants and step is not None) else None
