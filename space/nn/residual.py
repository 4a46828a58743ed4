"""The residual add of a PikeLPN block: ``y = requantize(a + b)`` with each operand rescaled to
the sum's grid, in the training forward and in the program alike."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pikenas.space.nn._codes import (
    UNSIGNED_8BIT,
    OutputCodes,
    code_scale_of,
    output_codes,
    output_step,
)
from pikenas.space.nn._fixed_point import FixedPoint, fixed_point_multiplier
from pikenas.space.nn._requant import lower_output
from pikenas.space.nn.layers import dequantized
from pikenas.space.nn.quantizers import make_activation_quantizer
from pikenas.space.program.builder import ProgramBuilder
from pikenas.space.program.ir import Value

__all__ = ["ResidualAdd", "RESIDUAL_SPAN"]

#: pow2 residual rescales 2^e with e in [-RESIDUAL_SPAN, RESIDUAL_SPAN].
RESIDUAL_SPAN = 8


class ResidualAdd(nn.Module):
    """``y = requantize(a + b)`` (the block output ``a`` and its input ``b``) to ``bits``.

    The operands have their own steps ``s_a``, ``s_b`` and the sum its own ``s_y``: the program
    rescales each by ``M = s / s_y`` quantized per ``scale_format`` (pow2: shifts onto the finer
    of the two grids; intN: N-bit multiplies and one shift; float32: float multiplies), adds,
    rounds and clips (a sign for 1 bit); the forward applies the same rescales. Two signs add as
    integers; a float operand makes the add float.
    """

    def __init__(
        self,
        bits: int,
        *,
        signed: bool,
        scale_format: str = "float32",
        a_codes: OutputCodes = UNSIGNED_8BIT,
        b_codes: OutputCodes = UNSIGNED_8BIT,
    ) -> None:
        super().__init__()
        self.bits = bits
        self.scale_format = scale_format
        self.requantizer = make_activation_quantizer(bits, signed=signed, scale_format=scale_format)
        out = self.output_codes
        self.float_add = a_codes.is_float or b_codes.is_float or out.is_float
        self.sign_add = a_codes.is_sign and b_codes.is_sign
        magnitude = max(abs(a_codes.lo), abs(a_codes.hi)) + max(abs(b_codes.lo), abs(b_codes.hi))
        levels = 1 if scale_format in ("float32", "pow2") else 2 ** (int(scale_format[3:]) - 1) - 1
        self.sum_bits = (magnitude * levels).bit_length() + 1  # the rescaled sum, intN

    @property
    def output_codes(self) -> OutputCodes:
        return output_codes(self.requantizer)

    def rescales(self, s_a: Tensor, s_b: Tensor) -> FixedPoint:
        """The quantized ``(M_a, M_b)``, as the program applies them."""
        s_y = output_step(self.requantizer).to(s_a.device)
        ratios = torch.stack([s_a.double().reshape(()), s_b.double().reshape(())]) / s_y
        return fixed_point_multiplier(
            ratios,
            self.scale_format,
            exponent_range=(-RESIDUAL_SPAN, RESIDUAL_SPAN),
            shift_range=(0, self.sum_bits + 1),
        )

    def forward(self, a: Tensor, s_a: Tensor | None, b: Tensor, s_b: Tensor | None) -> Tensor:
        if self.float_add or self.sign_add:
            return self.requantizer(a + b)
        m = self.rescales(s_a, s_b).value
        s_y = output_step(self.requantizer).to(a.device)
        ratio_a = (m[0] * s_y / s_a.double()).to(a.dtype)
        ratio_b = (m[1] * s_y / s_b.double()).to(a.dtype)
        return self.requantizer(a * ratio_a + b * ratio_b)

    def lower(self, builder: ProgramBuilder, a: Value, b: Value) -> Value:
        builder.note("residual_add", a.elements)
        out = self.output_codes
        scale = code_scale_of(builder, self.requantizer)
        if self.sign_add:
            t = builder.add(a, b, kind="residual")
            return lower_output(builder, t, out, scale=scale, kind="residual")
        if self.float_add:
            t = builder.add(
                dequantized(builder, a, "dequantize"),
                dequantized(builder, b, "dequantize"),
                kind="residual",
            )
            if not (out.is_float or out.is_sign):
                have = builder.with_constants
                inverse = builder.constant(
                    "1/step",
                    1.0 / output_step(self.requantizer) if have else None,
                    shape=(),
                    dtype="float",
                )
                t = builder.mul(t, inverse, kind="residual")
            return lower_output(builder, t, out, scale=scale, kind="residual")
        return _lower_integer_residual(builder, self, a, b, scale)


def _lower_integer_residual(
    builder: ProgramBuilder, residual: ResidualAdd, a: Value, b: Value, scale: float | None
) -> Value:
    have = builder.with_constants
    out = residual.output_codes
    fixed = residual.rescales(torch.tensor(a.scale), torch.tensor(b.scale)) if have else None
    if residual.scale_format == "float32":
        factors = [
            builder.constant(f"M{i}", fixed.value[i] if have else None, shape=(), dtype="float")
            for i in range(2)
        ]
        t = builder.add(
            builder.mul(a, factors[0], kind="residual"),
            builder.mul(b, factors[1], kind="residual"),
            kind="residual",
        )
        return lower_output(builder, t, out, scale=scale, kind="residual")
    terms = []
    if residual.scale_format == "pow2":  # both onto the finer grid 2^min(e_a, e_b)
        span = RESIDUAL_SPAN
        finest = fixed.exponent.min() if have else None
        for index, value in enumerate((a, b)):
            amount = fixed.exponent[index] - finest if have else None
            constant = builder.constant(
                f"align{index}", amount, shape=(), dtype="int", lo=0, hi=2 * span
            )
            terms.append(builder.shift(value, constant, kind="residual"))
        final, low, high = (finest if have else None), -span, span
    else:  # intN: k_a, k_b and one shared shift
        levels = 2 ** (int(residual.scale_format[3:]) - 1) - 1
        for index, value in enumerate((a, b)):
            k = builder.constant(
                f"k{index}",
                fixed.k[index] if have else None,
                shape=(),
                dtype="int",
                lo=-levels,
                hi=levels,
            )
            terms.append(builder.mul(value, k, kind="residual"))
        final = torch.tensor(-float(fixed.shift)) if have else None
        low, high = -(residual.sum_bits + 1), 0
    t = builder.add(terms[0], terms[1], kind="residual")
    if out.is_sign:
        return builder.sign(t, kind="residual")
    rounding = None
    if have:
        rounding = torch.exp2(-final - 1) if final < 0 else torch.zeros(())
    r = builder.constant("round", rounding, shape=(), dtype="int", lo=0, hi=2 ** max(-low - 1, 0))
    t = builder.add(t, r, kind="residual")
    amount = builder.constant("shift", final, shape=(), dtype="int", lo=low, hi=high)
    y = builder.shift(t, amount, kind="residual")
    return builder.clip(y, out.lo, out.hi, kind="residual", scale=scale)
