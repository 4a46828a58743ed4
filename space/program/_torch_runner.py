"""The integer program executed with torch: the eval forward of every pikenas network.

The operations and their semantics are those of :mod:`space.program` (whose numpy runner is the
reference): float values are float32 with the same elementwise operations in the same order,
float sums in the same fixed order. Integer values are exact integers carried in the cheapest
torch dtype their declared range allows (:func:`carrier`): float32 up to 2^24, float64 up to
2^53, int64 beyond. Integer arithmetic on a float carrier is exact because every result lies in
the declared range of its value (the numpy runner checks those ranges), a shift is a multiply by
an exact power of two then a floor, and a sum is carried wide enough for every partial sum: the
fast vectorised float32 kernels do integer work without one int64 pass. Integer convolutions
and matrix products are exact products planned once per program (:mod:`._torch_exact`).
Autocast and TF32 are off inside: evaluation is the arithmetic of the network that is costed.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from pikenas.space.program._torch_exact import (
    WIDTH,
    IntegerProducts,
    carrier,
    integer_carrier,
    plan_products,
    widest,
)
from pikenas.space.program.ir import IntegerProgram, Op, Operation, ProgramWalk, Value

__all__ = ["TORCH_OPS", "TorchProgram"]


def _conv(x: Tensor, w: Tensor, attrs: dict[str, Any], out: Value) -> Tensor:
    """A float conv, or an integer one without a plan (unknown input range): float64."""
    top, bottom, left, right = attrs["padding"]
    if any((top, bottom, left, right)):
        x = F.pad(x, (left, right, top, bottom))
    if out.dtype == "int":
        y = F.conv2d(x.double(), w.double(), None, attrs["stride"], 0, 1, attrs["groups"])
        return torch.round(y)
    return F.conv2d(x.float(), w.float(), None, attrs["stride"], 0, 1, attrs["groups"])


def _linear(x: Tensor, w: Tensor, out: Value) -> Tensor:
    if out.dtype == "int":
        return torch.round(x.double() @ w.double().T)
    return x.float() @ w.float().T


def _shift(x: Tensor, amount: Tensor) -> Tensor:
    """``floor(x * 2^amount)``: bit shifts on int64; on a float carrier an exact power-of-two
    multiply and a floor, exact in the carrier ``x`` came in (scaling by 2^k keeps the
    significant bits of an integer, a floor drops some), whatever the result's magnitude."""
    amount = amount.long()
    if not x.is_floating_point():
        left = torch.bitwise_left_shift(x, amount.clamp_min(0))
        return torch.bitwise_right_shift(left, (-amount).clamp_min(0))
    return torch.floor(x * _pow2(amount, x.dtype))


def _pow2(amount: Tensor, dtype: torch.dtype) -> Tensor:
    """``2^amount`` exactly in float ``dtype``: the product of ``2^half`` and
    ``2^(amount - half)``, each from integer shifts of at most 62 (quotients and products of
    powers of two are exact), so ``|amount|`` up to 124."""
    one = torch.ones_like(amount)
    half = torch.div(amount, 2, rounding_mode="trunc")
    factors = [
        torch.bitwise_left_shift(one, part.clamp(0, 62)).to(dtype)
        / torch.bitwise_left_shift(one, (-part).clamp(0, 62)).to(dtype)
        for part in (half, amount - half)
    ]
    return factors[0] * factors[1]


def _sum(x: Tensor, attrs: dict[str, Any], *, integer: bool) -> Tensor:
    mode = attrs["mode"]
    if mode == "global":
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        if integer:  # exact in any order on its carrier
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


def _sum_terms(operation: Operation, source: Value) -> int:
    """How many terms one output element of a ``sum`` adds."""
    mode = operation.attrs["mode"]
    if mode == "global":
        return math.prod(source.shape[1:])
    if mode == "groups":
        return int(operation.attrs["group"])
    return int(operation.attrs["kernel"]) ** 2


def _pad(x: Tensor, attrs: dict[str, Any]) -> Tensor:
    extra = attrs["out_channels"] - x.shape[1]
    zeros = torch.zeros((x.shape[0], extra, *x.shape[2:]), dtype=x.dtype, device=x.device)
    return torch.cat([x, zeros], dim=1)


def _add(operation: Operation, a: list[Tensor], out: Value) -> Tensor:
    x, y = a
    if operation.attrs.get("prefix"):
        x = x.clone()
        x[:, : y.shape[1]] += y
        return x
    return x + y


# x * 2^k: every negative float, down to the smallest subnormal (2^-149 / 2^-1074), to <= -1
_UNDO_SUBNORMAL = {torch.float32: (2.0**100, 2.0**49), torch.float64: (2.0**1000, 2.0**74)}


def _nonnegative(x: Tensor) -> Tensor | None:
    """1 where ``x >= 0`` (both zeros) else 0, in ``x``'s float dtype, by arithmetic: ``x``
    scaled past the smallest subnormal, plus 1, clipped to [0, 1] (every negative value lands
    at or below 0, every other at or above 1). On CPU, ``torch.where`` and bool tensors cost
    ten times these passes. ``None`` for an int64 ``x``."""
    factors = _UNDO_SUBNORMAL.get(x.dtype)
    if factors is None:
        return None
    return (x * factors[0]).mul_(factors[1]).add_(1.0).clamp_(0.0, 1.0)


def _sign(x: Tensor, out: Value) -> Tensor:
    mask = _nonnegative(x)
    if mask is None:
        return (x >= 0).to(carrier(out)) * 2 - 1
    return mask.mul_(2.0).sub_(1.0)


def _select(condition: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``a`` where ``condition >= 0`` else ``b``: ``m * a + (1 - m) * b`` with the 0 / 1 mask
    ``m``, exact for finite ``a`` and ``b`` (a product with 0 adds a zero; only the sign of a
    zero result may differ, which no later operation can see; the walk takes ``torch.where``
    for a program with non-finite constants), ``torch.where`` on int64."""
    mask = _nonnegative(condition)
    if mask is None or not a.is_floating_point():
        return torch.where(condition >= 0, a, b)
    mask = mask.to(a.dtype)
    if mask.shape != torch.broadcast_shapes(mask.shape, a.shape, b.shape):
        return mask * a + (1.0 - mask) * b
    return (mask * a).add_(mask.neg_().add_(1.0).mul_(b))


#: the torch runner: one function per :class:`Op` ``(operation, operands, out) -> tensor``.
TORCH_OPS: dict[Op, Callable[[Operation, list[Tensor], Value], Tensor]] = {
    Op.CONV: lambda o, a, out: _conv(a[0], a[1], o.attrs, out),
    Op.LINEAR: lambda o, a, out: _linear(a[0], a[1], out),
    Op.MUL: lambda o, a, out: a[0] * a[1],
    Op.ADD: _add,
    Op.SHIFT: lambda o, a, out: _shift(a[0], a[1]),
    Op.ROUND: lambda o, a, out: torch.floor(a[0].float() + 0.5),
    Op.CLIP: lambda o, a, out: torch.clamp(a[0], o.attrs["lo"], o.attrs["hi"]),
    Op.SIGN: lambda o, a, out: _sign(a[0], out),
    Op.SELECT: lambda o, a, out: _select(a[0], a[1], a[2]),
    Op.SUM: lambda o, a, out: _sum(a[0], o.attrs, integer=not a[0].is_floating_point()),
    Op.PAD: lambda o, a, out: _pad(a[0], o.attrs),
    Op.TILE: lambda o, a, out: a[0].repeat(1, o.attrs["repeats"], 1, 1),
    Op.FLATTEN: lambda o, a, out: a[0].reshape(a[0].shape[0], -1),
}


#: operands that an operation brings to one dtype (numpy's promotion: float32 when one of them is
#: a float; for integers, a carrier wide enough for them and the result)
_PROMOTED: dict[Op, tuple[int, ...]] = {Op.MUL: (0, 1), Op.ADD: (0, 1), Op.SELECT: (1, 2)}


def _shift_in_place(x: Tensor, amount: Tensor) -> Tensor:
    if not x.is_floating_point():
        return x.copy_(_shift(x, amount))
    return x.mul_(_pow2(amount.long(), x.dtype)).floor_()


#: in-place forms of the elementwise operations that may overwrite their first operand: when
#: that operand is a value no later operation reads (and of the result's shape and dtype), the
#: runner writes into it instead of allocating (the numbers are those of :data:`TORCH_OPS`)
_IN_PLACE: dict[Op, Callable[[Operation, list[Tensor]], Tensor]] = {
    Op.ADD: lambda o, a: a[0].add_(a[1]),
    Op.MUL: lambda o, a: a[0].mul_(a[1]),
    Op.SHIFT: lambda o, a: _shift_in_place(a[0], a[1]),
    Op.CLIP: lambda o, a: a[0].clamp_(o.attrs["lo"], o.attrs["hi"]),
}


def _last_uses(program: IntegerProgram) -> dict[str, str]:
    """Value name -> the output of the last operation reading it or any value sharing its
    memory (a ``flatten`` is a view of its input), for the values a walk may overwrite: not the
    program's input (the caller's tensor), its output, or a view of a constant."""
    root: dict[str, str] = {}
    last: dict[str, str] = {}
    for operation in program.ops:
        for name in operation.inputs:
            if name in program.values:
                last[root.get(name, name)] = operation.output
        if operation.op is Op.FLATTEN:
            root[operation.output] = root.get(operation.inputs[0], operation.inputs[0])
    protected = {root.get(n, n) for n in (program.input.name, program.output)}
    return {
        name: last[base]
        for name in program.values
        if (base := root.get(name, name)) in last
        and base not in protected
        and base in program.values  # a view of a constant is never written
    }


class _TorchWalk(ProgramWalk):
    purpose = "the torch runner"
    table = TORCH_OPS

    def __init__(
        self,
        program: IntegerProgram,
        constants: dict[str, Tensor],
        products: dict[str, IntegerProducts],
        *,
        donate: bool = True,
    ) -> None:
        super().__init__(program)
        self.constants = constants
        self.products = products
        self.last_use = _last_uses(program) if donate else {}
        # selects blend with 0 / 1 masks, exact for finite operands (values are, by the ranges)
        self.finite_constants = all(
            bool(t.isfinite().all()) for t in constants.values() if t.is_floating_point()
        )

    def constant(self, name: str) -> Tensor:
        return self.constants[name]

    def is_int(self, name: str) -> bool:
        item = self.program.values.get(name) or self.program.constants[name]
        return item.dtype == "int"

    def apply(
        self, function: Callable[..., Tensor], operation: Operation, env: dict[str, Tensor]
    ) -> Tensor:
        """An integer conv / linear runs its prepared exact products; the rest its table entry
        (or its in-place form), on operands brought to the dtype the operation computes in."""
        products = self.products.get(operation.output)
        if products is not None:
            return products(self.operand(operation.inputs[0], env))
        operands = [self.operand(name, env) for name in operation.inputs]
        out = self.program.values[operation.output]
        promoted = _PROMOTED.get(operation.op, ())
        if promoted:
            if any(not self.is_int(operation.inputs[i]) for i in promoted):
                dtype = torch.float32
            else:
                result = carrier(out) if out.dtype == "int" else torch.int64
                dtype = widest(result, *(operands[i].dtype for i in promoted))
            for i in promoted:
                operands[i] = operands[i].to(dtype)
        elif operation.op is Op.SHIFT and not self.is_int(operation.inputs[0]):
            operands[0] = operands[0].long()  # numpy truncates a float to int64 first
        elif operation.op is Op.CLIP and out.dtype == "int":  # bounds held exactly
            operands[0] = operands[0].to(widest(carrier(out), operands[0].dtype))
        elif operation.op is Op.SUM and self.is_int(operation.inputs[0]):
            # integers: exact in any order on a carrier wide enough for every partial sum
            wide = operands[0].to(widest(self.sum_carrier(operation), operands[0].dtype))
            return _sum(wide, operation.attrs, integer=True)
        if operation.op is Op.SELECT and not self.finite_constants:
            return torch.where(operands[0] >= 0, operands[1], operands[2])
        if self.donated(operation, operands, env):
            return _IN_PLACE[operation.op](operation, operands)
        return function(operation, operands, out)

    def sum_carrier(self, operation: Operation) -> torch.dtype:
        """A carrier for every partial sum of an integer ``sum``: the terms times the largest
        magnitude of its input (int64 without a declared range)."""
        source = self.program.values[operation.inputs[0]]
        if source.lo is None or source.hi is None:
            return torch.int64
        magnitude = max(abs(int(source.lo)), abs(int(source.hi)))
        return integer_carrier(_sum_terms(operation, source) * magnitude)

    def donated(self, operation: Operation, operands: list[Tensor], env: dict[str, Tensor]) -> bool:
        """Whether ``operation`` may write into its first operand: an in-place form exists, the
        operand is a value this walk computed, read by no later operation, still the tensor in
        the environment (not a cast copy), and already of the result's shape."""
        name = operation.inputs[0]
        if operation.op not in _IN_PLACE or self.last_use.get(name) != operation.output:
            return False
        if operation.attrs.get("prefix") or env.get(name) is not operands[0]:
            return False
        shape = (operands[0].shape[0], *self.program.values[operation.output].shape)
        return tuple(operands[0].shape) == shape and all(
            torch.broadcast_shapes(t.shape, operands[0].shape) == operands[0].shape
            for t in operands[1:]
        )

    def store(self, operation: Operation, result: Tensor) -> Tensor:
        """Exact integers stay in the carrier they came in when it is narrower than the
        value's range would need (a shift's result), and narrow to it otherwise."""
        wanted = carrier(self.program.values[operation.output])
        if result.dtype in WIDTH and WIDTH[result.dtype] <= WIDTH[wanted]:
            return result
        return result.to(wanted)


def _constant(array: Any) -> Tensor:
    """A constant as a tensor: integer arrays on the carrier their largest magnitude needs."""
    tensor = torch.from_numpy(array.copy())
    if tensor.is_floating_point() or tensor.dtype == torch.bool:
        return tensor
    magnitude = int(tensor.abs().max()) if tensor.numel() else 0
    return tensor.to(integer_carrier(magnitude))


def _semantic(tensor: Tensor, value: Value) -> Tensor:
    return tensor.long() if value.dtype == "int" else tensor.float()


class TorchProgram:
    """A program with its constants on ``device``; call it on ``(N, *input.shape)``."""

    def __init__(self, program: IntegerProgram, device: torch.device | str) -> None:
        self.program = program
        self.device = torch.device(device)
        self.constants = {
            name: _constant(array).to(self.device) for name, array in program.arrays.items()
        }
        self.products = plan_products(program, self.constants)

    def run(self, x: Tensor, *, keep: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        """``(output, values)``; ``values`` holds every intermediate when ``keep``: integer
        values as int64, float values as float32, as the numpy runner gives them."""
        program = self.program
        env: dict[str, Tensor] = {program.input.name: x.to(self.device, carrier(program.input))}
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            stack.enter_context(torch.autocast(self.device.type, enabled=False))
            if self.device.type == "cuda":
                stack.enter_context(torch.backends.cudnn.flags(enabled=True, allow_tf32=False))
            walk = _TorchWalk(self.program, self.constants, self.products, donate=not keep)
            env = walk.walk(env)
        output = _semantic(env[program.output], program.values[program.output])
        if not keep:
            return output, {}
        return output, {name: _semantic(t, program.values[name]) for name, t in env.items()}

    def __call__(self, x: Tensor) -> Tensor:
        return self.run(x)[0]
