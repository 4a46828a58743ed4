"""Requantization of an accumulator: the one definition used by the training forward (the
surrogate) and by the lowering (the program).

A stage after a conv computes, per channel ``c``, ``z = acc * s_acc[c] * m[c] + b[c]`` (``m``,
``b``: the folded batch norm), applies its activation and requantizes to the output step
``s_out``. In output units that is ``acc * M[c] + B[c]`` with ``M = s_acc * m / s_out`` and
``B = b / s_out``. How the program runs it depends on the stage's multiplier format:

* ``float32`` (float batch norm, fused; QuantNorm with float32 scales): ``t = float32(acc) * M
  + B`` in float32, the activation in float32 (its biases in output units), clip, round.
* ``pow2`` (QuantNorm, pow2 Double Quantization): ``M`` rounded to ``sign * 2^e`` per channel;
  the sign is folded into the weight codes (offline; b-bit two's-complement codes are then
  charged b + 1 bits: ``-2^(b-1)`` negated is ``+2^(b-1)``), so ``t = acc + B_t`` with ``B_t`` an
  integer on the accumulator grid (``2^e`` output units), then ``y = (t + r) >> -e`` (``r`` the
  half-up rounding constant; a left shift when ``e >= 0``) and the clip: no multiply.
* ``intN``: ``M`` rounded to ``k * 2^-s`` with N-bit ``k`` per channel and one shared ``s``:
  ``t = acc * k + B_t`` (``B_t`` on the grid ``2^-s``), ``y = (t + r) >> s``, clip.

An integer activation (PReLU / DPReLU) runs on ``t``: ``bias_x`` is folded into ``B_t``; the
slope ``f = select(t, pos, neg)`` multiplies (int8) or shifts (pow2) ``t`` onto a grid ``2^-a``
finer; ``bias_y`` and the rounding constant are one add; the final shift is ``e - a``. ReLU is
the lower bound of the clip. A binary output is the sign of the last integer before the shift.
Every constant is clamped to a range fixed by the configuration (so widths are too); the training
forward applies the same quantized multiplier, biases and slopes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from pikenas.space.nn._codes import OutputCodes
from pikenas.space.nn._fixed_point import fixed_point_multiplier, round_half_up, scale_format_bits
from pikenas.space.nn.activations import Activation, NoActivation, QuantizedSlopes, ReLU
from pikenas.space.nn.quantizers import ste
from pikenas.space.program.builder import ProgramBuilder, channel_shape
from pikenas.space.program.ir import Constant, Value, range_bits

__all__ = [
    "IntegerRanges",
    "IntegerPlan",
    "integer_plan",
    "integer_surrogate",
    "activation_tail",
    "lower_integer",
    "sign_folded_bits",
    "lower_float",
    "lower_float_activation",
    "lower_output",
]


# ---- ranges fixed by the configuration ----------------------------------------------------
@dataclass(frozen=True)
class IntegerRanges:
    """Config-only bounds of an integer stage whose accumulator has magnitude ``acc_bound``."""

    scale_format: str
    acc_bound: int
    out: OutputCodes
    slope_format: str = "none"  # "none" (relu / identity), "int8" or "pow2"

    @property
    def levels(self) -> int:
        bits = scale_format_bits(self.scale_format)
        return 1 if bits is None else 2 ** (bits - 1) - 1

    @property
    def term(self) -> int:
        """``|acc * k|`` (pow2: ``|acc|``: the sign is folded into the weights)."""
        return self.acc_bound * self.levels

    @property
    def bias_bound(self) -> int:
        return 2 * self.term

    @property
    def t_bits(self) -> int:
        return range_bits(-3 * self.term, 3 * self.term)

    @property
    def exponent_range(self) -> tuple[int, int]:
        """Exponents ``e`` of the output grid that still change the output (beyond them every
        output is 0, or saturates: clamping there is lossless)."""
        return -(self.t_bits + 1), self.out.bits

    @property
    def slope_shift_max(self) -> int:
        return {"none": 0, "int8": 7, "pow2": 7}[self.slope_format]

    @property
    def slope_range(self) -> tuple[int, int]:
        """Range of the selected slope: int8 codes, or pow2 left-shift amounts."""
        return {"none": (1, 1), "int8": (-127, 127), "pow2": (0, 14)}[self.slope_format]

    @property
    def v_bound(self) -> int:
        """``|t * slope|`` after the slope multiply / shift."""
        if self.slope_format == "pow2":
            return 3 * self.term * 2**14
        return 3 * self.term * max(abs(v) for v in self.slope_range)


def _exponents_of(ranges: IntegerRanges) -> tuple[int, int]:
    low, high = ranges.exponent_range
    return low - ranges.slope_shift_max, high


@dataclass
class IntegerPlan:
    """One stage's integer constants ``(C,)`` (float64 tensors, integer-valued, detached) and
    what the training forward applies: ``effective_m`` (the multiplier on ``z``), ``grid``
    (one ``t`` unit in real units)."""

    multiplier: Tensor  # k (intN) or the sign folded into the weights (pow2)
    exponent: Tensor  # e: one t unit = 2^e output units
    bias: Tensor  # B_t = clamp(round((b - bias_x) / grid))
    effective_m: Tensor
    grid: Tensor


def integer_plan(
    m: Tensor,
    b: Tensor,
    acc_scale: Tensor,
    s_out: Tensor,
    ranges: IntegerRanges,
    bias_x: Tensor | None,
) -> IntegerPlan:
    """Quantize ``M = s_acc m / s_out`` and the bias as the program applies them."""
    md, acc_scale = m.detach().double(), acc_scale.detach().double()
    real_m = acc_scale * md / s_out
    low, high = ranges.exponent_range
    fixed = fixed_point_multiplier(
        real_m, ranges.scale_format, exponent_range=(low, high), shift_range=(-high, -low)
    )
    if ranges.scale_format == "pow2":
        multiplier, exponent = torch.where(real_m < 0, -1.0, 1.0).double(), fixed.exponent
    else:
        multiplier = fixed.k
        exponent = torch.full_like(real_m, -float(fixed.shift))
    grid = torch.exp2(exponent) * s_out
    folded = b.detach().double() - (0.0 if bias_x is None else bias_x.detach().double())
    bias = torch.clamp(round_half_up(folded / grid), -ranges.bias_bound, ranges.bias_bound)
    return IntegerPlan(multiplier, exponent, bias, fixed.value * s_out / acc_scale, grid)


def _view(t: Tensor, like: Tensor) -> Tensor:
    return t.to(like.dtype).view(1, -1, *([1] * (like.dim() - 2)))


def integer_surrogate(
    x: Tensor,
    m: Tensor,
    b: Tensor,
    plan: IntegerPlan,
    activation: Activation,
    ranges: IntegerRanges,
) -> Tensor:
    """The forward of an integer stage before its requantizer: ``u = x * m_eff + B_t * grid``
    (straight-through to ``m``, ``b`` and ``bias_x``), then :func:`activation_tail`. ``x`` is
    the conv output ``(N, C, H, W)`` (``acc * s_acc``)."""
    bias_x = activation.raw_biases()[0]
    raw_b = b if bias_x is None else b - bias_x
    u = x * _view(ste(plan.effective_m.to(m.dtype), m), x) + _view(
        ste((plan.bias * plan.grid).to(b.dtype), raw_b), x
    )
    return activation_tail(u, plan, activation, ranges)


def activation_tail(
    u: Tensor, plan: IntegerPlan, activation: Activation, ranges: IntegerRanges
) -> Tensor:
    """The activation of an integer stage on ``u`` (``bias_x`` already folded): the quantized
    slopes, then ``bias_y`` rounded to the grid after the slope (``grid * 2^-a``)."""
    if ranges.slope_format == "none":
        return torch.relu(u) if isinstance(activation, ReLU) else u
    slopes = activation.slopes()
    v = u * torch.where(u >= 0, _view(slopes.pos, u), _view(slopes.neg, u))
    bias_y = activation.raw_biases()[1]
    if bias_y is None:
        return v
    fine = plan.grid * 2.0**-slopes.shift
    limit = ranges.v_bound
    by = torch.clamp(round_half_up(bias_y.detach().double() / fine), -limit, limit) * fine
    return v - _view(ste(by.to(bias_y.dtype), bias_y), v)


# ---- lowering -----------------------------------------------------------------------------
def _per_channel(
    builder: ProgramBuilder, hint: str, array: Tensor | None, like: Value, lo: int, hi: int
) -> Constant:
    return builder.constant(hint, array, shape=channel_shape(like.shape), dtype="int", lo=lo, hi=hi)


def _rounding(exponent: Tensor) -> Tensor:
    """Half-up rounding constant of a right shift by ``-exponent`` (0 for left shifts)."""
    return torch.where(exponent < 0, torch.exp2(-exponent - 1), torch.zeros_like(exponent))


def sign_folded_bits(bits: int, codes: tuple[int, int] | None) -> int:
    """Bits of ``bits``-bit weight codes in ``codes`` once a channel may be negated: a
    two's-complement range ``[-2^(b-1), 2^(b-1) - 1]`` turns ``-2^(b-1)`` into ``+2^(b-1)``,
    which needs ``b + 1`` bits; symmetric code sets (sign, ternary, pow2) keep their width."""
    if codes is None:
        return bits
    lo, hi = codes
    return bits + 1 if lo < 0 and -lo > hi and range_bits(lo, hi) == bits else bits


def _charge_sign_fold(
    builder: ProgramBuilder, weight: Constant, codes: tuple[int, int] | None
) -> None:
    """Declare the width the folded weight codes need (from the configuration alone: which
    channels get negated is only known after training)."""
    folded = sign_folded_bits(weight.bits, codes)
    if folded != weight.bits:
        builder.constants[weight.name] = replace(weight, bits=folded)


def lower_integer(
    builder: ProgramBuilder,
    acc: Value,
    ranges: IntegerRanges,
    plan: IntegerPlan | None,
    activation: Activation,
    *,
    weight: Constant,
    scale: float | None,
    kind: str,
    weight_codes: tuple[int, int] | None = None,
) -> Value:
    """Emit the integer requantization of ``acc`` (see the module docstring).
    ``weight_codes``: the code range of ``weight`` before a pow2 stage folds signs into it."""
    have = plan is not None
    if ranges.scale_format == "pow2":
        _charge_sign_fold(builder, weight, weight_codes)
        if have and builder.with_constants:  # the sign of M, offline into the weight codes
            signs = plan.multiplier.cpu().numpy().reshape(-1, *([1] * (len(weight.shape) - 1)))
            builder.arrays[weight.name] = builder.arrays[weight.name] * signs.astype("int64")
        t = acc
    else:
        k = _per_channel(
            builder, "k", plan.multiplier if have else None, acc, -ranges.levels, ranges.levels
        )
        t = builder.mul(acc, k, kind=kind)
    low, high = _exponents_of(ranges)
    slope_shift = 0
    slopes: QuantizedSlopes | None = None
    if ranges.slope_format != "none" and have:
        slopes = activation.slopes()
        slope_shift = slopes.shift
    final_exponent = plan.exponent - slope_shift if have else None
    sign_out = ranges.out.is_sign or ranges.out.is_float  # no rounding before sign / float
    if ranges.slope_format == "none":
        rounding = 0 if (sign_out or not have) else _rounding(final_exponent)
        bias = plan.bias + rounding if have else None
        r_max = 0 if sign_out else 2 ** (-low - 1)
        const = _per_channel(
            builder, "bias", bias, acc, -ranges.bias_bound, ranges.bias_bound + r_max
        )
        w = builder.add(t, const, kind=kind)
    else:
        const = _per_channel(
            builder, "bias", plan.bias if have else None, acc, -ranges.bias_bound, ranges.bias_bound
        )
        t = builder.add(t, const, kind=kind)
        lo, hi = ranges.slope_range
        pos = _per_channel(builder, "slope+", slopes.pos_code if slopes else None, acc, lo, hi)
        neg = _per_channel(builder, "slope-", slopes.neg_code if slopes else None, acc, lo, hi)
        factor = builder.select(t, pos, neg, kind=activation.kind)
        if ranges.slope_format == "pow2":
            v = builder.shift(t, factor, kind=activation.kind)
        else:
            v = builder.mul(t, factor, kind=activation.kind)
        bias_y = activation.raw_biases()[1]
        offset = None
        if have:
            fine = plan.grid * 2.0**-slope_shift
            by = (
                torch.zeros_like(fine)
                if bias_y is None
                else torch.clamp(
                    round_half_up(bias_y.detach().double() / fine), -ranges.v_bound, ranges.v_bound
                )
            )
            offset = (0 if sign_out else _rounding(final_exponent)) - by
        r_max = 0 if sign_out else 2 ** (-low - 1)
        const = _per_channel(
            builder, "bias_y", offset, acc, -ranges.v_bound, ranges.v_bound + r_max
        )
        w = builder.add(v, const, kind=activation.kind)
    out = ranges.out
    relu = isinstance(activation, ReLU)
    if out.is_sign or out.is_float:
        if relu:  # no clip to fold it into: an explicit max(w, 0)
            w = builder.clip(w, 0, w.hi, kind=activation.kind)
        if out.is_sign:
            return builder.sign(w, kind=kind)
        unit = builder.constant(
            "grid",
            plan.grid * 2.0**-slope_shift if have else None,
            shape=channel_shape(acc.shape),
            dtype="float",
        )
        return builder.mul(w, unit, kind=kind)
    amount = _per_channel(builder, "shift", final_exponent, acc, low, high)
    y = builder.shift(w, amount, kind=kind)
    return builder.clip(y, out.lo, out.hi, kind=kind, scale=scale)


def lower_float_activation(
    builder: ProgramBuilder,
    t: Value,
    activation: Activation,
    s_out: Tensor | None,
    out: OutputCodes,
) -> tuple[Value, float | None]:
    """The float activation on ``t`` (output units: biases divided by ``s_out``). Returns the
    value and the clip's lower bound the activation leaves to the requantization (ReLU)."""
    kind = activation.kind
    if isinstance(activation, NoActivation):
        return t, None
    if isinstance(activation, ReLU):
        if out.is_float or out.is_sign or out.lo < 0:
            return builder.clip(t, 0.0, None, kind=kind), None
        return t, 0.0
    have = builder.with_constants
    shape = channel_shape(t.shape)
    slopes = activation.slopes() if have else None
    bias_x, bias_y = activation.raw_biases()
    scale = s_out if s_out is not None else torch.ones((), dtype=torch.float64)

    def const(hint: str, tensor: Tensor | None) -> Constant:
        return builder.constant(hint, tensor if have else None, shape=shape, dtype="float")

    if bias_x is not None:
        t = builder.add(
            t, const("-bias_x", -bias_x.detach().double() / scale if have else None), kind=kind
        )
    pos = const("slope+", slopes.pos.detach() if slopes else None)
    neg = const("slope-", slopes.neg.detach() if slopes else None)
    factor = builder.select(t, pos, neg, kind=kind)
    t = builder.mul(t, factor, kind=kind)
    if bias_y is not None:
        t = builder.add(
            t, const("-bias_y", -bias_y.detach().double() / scale if have else None), kind=kind
        )
    return t, None


def lower_output(
    builder: ProgramBuilder,
    t: Value,
    out: OutputCodes,
    *,
    scale: float | None,
    kind: str,
    lower_bound: float | None = None,
) -> Value:
    """Requantize the float ``t`` (output units): float out as is, sign, or clip + round."""
    if out.is_float:
        return t
    if out.is_sign:
        return builder.sign(t, kind=kind)
    lo = float(out.lo) if lower_bound is None else max(lower_bound, float(out.lo))
    clipped = builder.clip(t, lo, float(out.hi), kind=kind)
    return builder.round(clipped, int(lo), out.hi, kind=kind, scale=scale)


def lower_float(
    builder: ProgramBuilder,
    acc: Value,
    multiplier: Tensor | None,
    bias: Tensor | None,
    activation: Activation,
    out: OutputCodes,
    s_out: Tensor | None,
    *,
    kind: str,
) -> Value:
    """Fused float stage: ``t = float32(acc) * M + B`` (output units), activation, output."""
    shape = channel_shape(acc.shape)
    have = builder.with_constants
    m = builder.constant("M", multiplier if have else None, shape=shape, dtype="float")
    b = builder.constant("B", bias if have else None, shape=shape, dtype="float")
    t = builder.add(builder.mul(acc, m, kind=kind), b, kind=kind)
    t, lower_bound = lower_float_activation(builder, t, activation, s_out, out)
    scale = float(s_out) if (s_out is not None and have and not out.is_float) else None
    return lower_output(builder, t, out, scale=scale, kind="requantize", lower_bound=lower_bound)
