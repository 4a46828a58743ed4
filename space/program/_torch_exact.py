"""Exact integer arithmetic in torch, for the torch runner (:mod:`._torch_runner`).

Integer values ride on *carriers*: the cheapest torch dtype that holds every integer of their
declared range exactly (:func:`carrier`): float32 up to 2^24, float64 up to 2^53, int64 beyond.
Integer convolutions and matrix products (:class:`IntegerProducts`, planned once per program
with their weights cached on the device) run on CPU as float32 kernels, exact while every
partial sum stays below 2^24, which the declared input range and the weight codes bound; wider
ones split the weight codes into signed base-2^b digits (as the ONNX export does), one exact
float32 product per digit, recombined in float64 (or int64); when not even one-bit digits fit,
and on other devices (whose libraries may pick inexact algorithms), float64, exact below 2^53.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from pikenas.space.program.ir import IntegerProgram, Operation, Value

__all__ = ["WIDTH", "IntegerProducts", "carrier", "integer_carrier", "plan_products", "widest"]

# float32 represents every integer of magnitude up to 2^24 exactly ...
_EXACT_FLOAT32 = 2**24
# ... and float64 every integer up to 2^53.
_EXACT_FLOAT64 = 2**53


def carrier(value: Value) -> torch.dtype:
    """The torch dtype that carries ``value`` exactly and cheapest: float32 for floats and for
    integers within 2^24 of zero, float64 within 2^53, int64 beyond or without a range."""
    if value.dtype != "int":
        return torch.float32
    if value.lo is None or value.hi is None:
        return torch.int64
    return integer_carrier(max(abs(int(value.lo)), abs(int(value.hi))))


def integer_carrier(magnitude: int) -> torch.dtype:
    if magnitude <= _EXACT_FLOAT32:
        return torch.float32
    return torch.float64 if magnitude <= _EXACT_FLOAT64 else torch.int64


WIDTH = {torch.float32: 0, torch.float64: 1, torch.int64: 2}


def widest(*dtypes: torch.dtype) -> torch.dtype:
    return max(dtypes, key=WIDTH.__getitem__)


# ---- integer conv / linear: exact float32 products, planned once per program ------------------
def _signed_digits(codes: Tensor, base_bits: int) -> list[tuple[Tensor, int]]:
    """Signed base-``2^base_bits`` digits of integer ``codes`` (int64), each of magnitude at
    most ``2^(base_bits - 1)``: ``codes == sum(digit * 2^power)``."""
    digits, rest, power = [], codes, 0
    base = 1 << base_bits
    while bool(rest.any()):
        low = rest - torch.floor(rest.double() / base + 0.5).long() * base
        digits.append((low, power))
        rest = torch.div(rest - low, base, rounding_mode="floor")
        power += base_bits
    return digits or [(torch.zeros_like(codes), 0)]


@dataclass(frozen=True)
class IntegerProducts:
    """An integer ``conv`` or ``linear`` with its weight prepared once on the device.

    ``parts``: ``(weight digit as float32 (or float64), power)``; the result is
    ``sum(product(x, digit) * 2^power)``, exact integers in float32 (one float32 part), float64
    (one float64 part; several parts whose result fits 2^53) or int64. One part with power 0
    when every partial sum of the whole weight is below 2^24 (the usual case: 8-bit codes,
    fan-in up to ~500).
    """

    op: str
    attrs: dict[str, Any]
    parts: tuple[tuple[Tensor, int], ...]
    dtype: torch.dtype
    #: where several parts add up: float64 while the accumulator's range fits 2^53, else int64
    accumulate: torch.dtype = torch.float64

    @classmethod
    def plan(
        cls, program: IntegerProgram, operation: Operation, weight: Tensor
    ) -> IntegerProducts | None:
        """The plan of an integer conv / linear (``None`` for a float one or an unknown input
        range). ``weight``: the int64 codes on the target device."""
        out = program.values[operation.output]
        source = program.values.get(operation.inputs[0])
        if out.dtype != "int" or source is None or source.lo is None or source.hi is None:
            return None
        attrs = dict(operation.attrs)
        if weight.device.type != "cpu":  # cuDNN and friends may choose inexact algorithms
            return cls(operation.op, attrs, ((weight.double(), 0),), torch.float64)
        fan_in = math.prod(weight.shape[1:])
        x_max = max(abs(int(source.lo)), abs(int(source.hi)), 1)
        w_max = int(weight.abs().max()) if weight.numel() else 0
        if fan_in * x_max * w_max < _EXACT_FLOAT32:
            return cls(operation.op, attrs, ((_nhwc(weight.float()), 0),), torch.float32)
        base_bits = int(math.log2(_EXACT_FLOAT32 / (fan_in * x_max)))
        if base_bits < 1:  # not even digits in {-1, 0, 1} keep the sums exact
            return cls(operation.op, attrs, ((weight.double(), 0),), torch.float64)
        parts = tuple((_nhwc(d.float()), p) for d, p in _signed_digits(weight.long(), base_bits))
        return cls(operation.op, attrs, parts, torch.float32, widest(torch.float64, carrier(out)))

    def __call__(self, x: Tensor) -> Tensor:
        """``x`` integer codes (N, C, H, W) or (N, features) -> the exact accumulators."""
        x = x.to(self.dtype)
        if self.op == "conv":
            top, bottom, left, right = self.attrs["padding"]
            padding: Any = (top, left)
            if (top, left) != (bottom, right):
                x, padding = F.pad(x, (left, right, top, bottom)), 0
            if x.device.type == "cpu":  # oneDNN's fast kernels are NHWC (and so is the result)
                x = x.contiguous(memory_format=torch.channels_last)
        total: Tensor | None = None
        with _exact_float32():
            for weight, power in self.parts:
                if self.op == "conv":
                    y = F.conv2d(
                        x, weight, None, self.attrs["stride"], padding, 1, self.attrs["groups"]
                    )
                else:
                    y = x @ weight.T
                if self.dtype == torch.float64:  # exact below 2^53: round off the last ulp
                    y = torch.round(y)
                if len(self.parts) > 1:
                    y = y.to(self.accumulate)
                    if power and self.accumulate == torch.int64:
                        y = torch.bitwise_left_shift(y, power)
                    elif power:
                        y = y * float(2**power)
                total = y if total is None else total.add_(y)
        assert total is not None
        return total


def _nhwc(weight: Tensor) -> Tensor:
    return weight.contiguous(memory_format=torch.channels_last) if weight.dim() == 4 else weight


@contextlib.contextmanager
def _exact_float32() -> Any:
    """float32 matmuls and convs in full precision (no TF32 / bf16 shortcuts) inside."""
    previous = torch.get_float32_matmul_precision()
    if previous != "highest":
        torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        if previous != "highest":
            torch.set_float32_matmul_precision(previous)


def plan_products(
    program: IntegerProgram, constants: dict[str, Tensor]
) -> dict[str, IntegerProducts]:
    """Operation output name -> :class:`IntegerProducts`, for every integer conv / linear."""
    plans = {}
    for operation in program.ops:
        if operation.op in ("conv", "linear") and operation.inputs[1] in constants:
            plan = IntegerProducts.plan(program, operation, constants[operation.inputs[1]])
            if plan is not None:
                plans[operation.output] = plan
    return plans
