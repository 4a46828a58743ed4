"""The integer program executed with torch: the eval forward of every pikenas network.

The operations and their semantics are those of :mod:`space.program` (whose numpy runner is the
reference): integer values are int64 tensors, float values float32 with the same elementwise
operations in the same order, float sums in the same fixed order. Autocast and TF32 are off
inside: evaluation is the arithmetic of the network that is costed.

Integer convolutions and matrix products (:class:`IntegerProducts`, planned once per program
with their weights cached on the device) run on CPU as float32 kernels, exact while every
partial sum stays below 2^24, which the declared input range and the weight codes bound; wider
ones split the weight codes into signed base-2^b digits (as the ONNX export does), one exact
float32 product per digit, recombined in int64; when not even one-bit digits fit, and on other
devices (whose libraries may pick inexact algorithms), float64, exact below 2^53.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from pikenas.space.program.ir import IntegerProgram, Op, Operation, ProgramWalk, Value

__all__ = ["IntegerProducts", "TORCH_OPS", "TorchProgram"]

# float32 represents every integer of magnitude up to 2^24 exactly.
_EXACT_FLOAT32 = 2**24


def _promote(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    if a.is_floating_point() or b.is_floating_point():
        return a.float(), b.float()
    return a, b


def _conv(x: Tensor, w: Tensor, attrs: dict[str, Any], out: Value) -> Tensor:
    top, bottom, left, right = attrs["padding"]
    if any((top, bottom, left, right)):
        x = F.pad(x, (left, right, top, bottom))
    if out.dtype == "int":
        y = F.conv2d(x.double(), w.double(), None, attrs["stride"], 0, 1, attrs["groups"])
        return torch.round(y).long()
    return F.conv2d(x.float(), w.float(), None, attrs["stride"], 0, 1, attrs["groups"])


def _linear(x: Tensor, w: Tensor, out: Value) -> Tensor:
    if out.dtype == "int":
        return torch.round(x.double() @ w.double().T).long()
    return x.float() @ w.float().T


def _shift(x: Tensor, amount: Tensor) -> Tensor:
    amount = amount.long()
    left = torch.bitwise_left_shift(x.long(), amount.clamp_min(0))
    return torch.bitwise_right_shift(left, (-amount).clamp_min(0))


def _sum(x: Tensor, attrs: dict[str, Any]) -> Tensor:
    mode = attrs["mode"]
    exact_any_order = not x.is_floating_point()
    if mode == "global":
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        if exact_any_order:
            total = flat.sum(dim=2)
        else:
            total = flat[:, :, 0].clone()
            for index in range(1, flat.shape[2]):
                total = total + flat[:, :, index]
        return total.reshape(x.shape[0], x.shape[1], 1, 1)
    if mode == "groups":
        out, group = attrs["out_channels"], attrs["group"]
        parts = x[:, : out * group].reshape(x.shape[0], out, group, *x.shape[2:])
        total = parts[:, :, 0].clone()
        for index in range(1, group):
            total = total + parts[:, :, index]
        return total
    k, stride = attrs["kernel"], attrs["stride"]
    top, bottom, left, right = attrs["padding"]
    padded = F.pad(x, (left, right, top, bottom))
    ho = (padded.shape[2] - k) // stride + 1
    wo = (padded.shape[3] - k) // stride + 1
    total = None
    for dy in range(k):
        for dx in range(k):
            part = padded[:, :, dy : dy + stride * ho : stride, dx : dx + stride * wo : stride]
            total = part.clone() if total is None else total + part
    return total


def _pad(x: Tensor, attrs: dict[str, Any]) -> Tensor:
    extra = attrs["out_channels"] - x.shape[1]
    zeros = torch.zeros((x.shape[0], extra, *x.shape[2:]), dtype=x.dtype, device=x.device)
    return torch.cat([x, zeros], dim=1)


def _mul(operation: Operation, a: list[Tensor], out: Value) -> Tensor:
    x, y = _promote(a[0], a[1])
    return x * y


def _add(operation: Operation, a: list[Tensor], out: Value) -> Tensor:
    x, y = _promote(a[0], a[1])
    if operation.attrs.get("prefix"):
        x = x.clone()
        x[:, : y.shape[1]] += y
        return x
    return x + y


def _select(operation: Operation, a: list[Tensor], out: Value) -> Tensor:
    x, y = _promote(a[1], a[2])
    return torch.where(a[0] >= 0, x, y)


#: the torch runner: one function per :class:`Op` ``(operation, operands, out) -> tensor``.
TORCH_OPS: dict[Op, Callable[[Operation, list[Tensor], Value], Tensor]] = {
    Op.CONV: lambda o, a, out: _conv(a[0], a[1], o.attrs, out),
    Op.LINEAR: lambda o, a, out: _linear(a[0], a[1], out),
    Op.MUL: _mul,
    Op.ADD: _add,
    Op.SHIFT: lambda o, a, out: _shift(a[0], a[1]),
    Op.ROUND: lambda o, a, out: torch.floor(a[0].float() + 0.5).long(),
    Op.CLIP: lambda o, a, out: torch.clamp(a[0], o.attrs["lo"], o.attrs["hi"]),
    Op.SIGN: lambda o, a, out: torch.where(a[0] >= 0, 1, -1).long(),
    Op.SELECT: _select,
    Op.SUM: lambda o, a, out: _sum(a[0], o.attrs),
    Op.PAD: lambda o, a, out: _pad(a[0], o.attrs),
    Op.TILE: lambda o, a, out: a[0].repeat(1, o.attrs["repeats"], 1, 1),
    Op.FLATTEN: lambda o, a, out: a[0].reshape(a[0].shape[0], -1),
}


class _TorchWalk(ProgramWalk):
    purpose = "the torch runner"
    table = TORCH_OPS

    def __init__(
        self,
        program: IntegerProgram,
        constants: dict[str, Tensor],
        products: dict[str, IntegerProducts],
    ) -> None:
        super().__init__(program)
        self.constants = constants
        self.products = products

    def constant(self, name: str) -> Tensor:
        return self.constants[name]

    def apply(
        self, function: Callable[..., Tensor], operation: Operation, env: dict[str, Tensor]
    ) -> Tensor:
        """An integer conv / linear runs its prepared exact products; the rest its table entry."""
        products = self.products.get(operation.output)
        if products is not None:
            return products(self.operand(operation.inputs[0], env))
        return super().apply(function, operation, env)

    def store(self, operation: Operation, result: Tensor) -> Tensor:
        value = self.program.values[operation.output]
        return result.long() if value.dtype == "int" else result.float()


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
    ``sum(product(x, digit) * 2^power)`` in int64. One part with power 0 when every partial sum
    of the whole weight is below 2^24 (the usual case: 8-bit codes, fan-in up to ~500).
    """

    op: str
    attrs: dict[str, Any]
    parts: tuple[tuple[Tensor, int], ...]
    dtype: torch.dtype

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
            return cls(operation.op, attrs, ((weight.float(), 0),), torch.float32)
        base_bits = int(math.log2(_EXACT_FLOAT32 / (fan_in * x_max)))
        if base_bits < 1:  # not even digits in {-1, 0, 1} keep the sums exact
            return cls(operation.op, attrs, ((weight.double(), 0),), torch.float64)
        parts = tuple((d.float(), p) for d, p in _signed_digits(weight.long(), base_bits))
        return cls(operation.op, attrs, parts, torch.float32)

    def __call__(self, x: Tensor) -> Tensor:
        """``x`` integer codes (N, C, H, W) or (N, features) -> int64 accumulators."""
        x = x.to(self.dtype)
        if self.op == "conv":
            top, bottom, left, right = self.attrs["padding"]
            padding: Any = (top, left)
            if (top, left) != (bottom, right):
                x, padding = F.pad(x, (left, right, top, bottom)), 0
        total: Tensor | None = None
        with _exact_float32():
            for weight, power in self.parts:
                if self.op == "conv":
                    y = F.conv2d(
                        x, weight, None, self.attrs["stride"], padding, 1, self.attrs["groups"]
                    )
                else:
                    y = x @ weight.T
                # Exact integers in float: a plain cast; float64 parts round as before.
                part = (torch.round(y) if self.dtype == torch.float64 else y).long()
                if power:
                    part = torch.bitwise_left_shift(part, power)
                total = part if total is None else total.add_(part)
        assert total is not None
        return total


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


class TorchProgram:
    """A program with its constants on ``device``; call it on ``(N, *input.shape)``."""

    def __init__(self, program: IntegerProgram, device: torch.device | str) -> None:
        self.program = program
        self.device = torch.device(device)
        self.constants = {
            name: torch.from_numpy(array.copy()).to(self.device)
            for name, array in program.arrays.items()
        }
        self.products = plan_products(program, self.constants)

    def run(self, x: Tensor, *, keep: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        """``(output, values)``; ``values`` holds every intermediate when ``keep``."""
        env: dict[str, Tensor] = {self.program.input.name: x.float().to(self.device)}
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            stack.enter_context(torch.autocast(self.device.type, enabled=False))
            if self.device.type == "cuda":
                stack.enter_context(torch.backends.cudnn.flags(enabled=True, allow_tf32=False))
            env = _TorchWalk(self.program, self.constants, self.products).walk(env)
        output = env[self.program.output]
        return output, env if keep else {}

    def __call__(self, x: Tensor) -> Tensor:
        return self.run(x)[0]
