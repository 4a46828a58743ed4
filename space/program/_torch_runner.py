"""The integer program executed with torch: the eval forward of every pikenas network.

The operations and their semantics are those of :mod:`space.program` (whose numpy runner is the
reference): integer values are int64 tensors (convolutions and matrix products run in float64 on
integers below 2^53, where they are exact, then are rounded back), float values float32 with the
same elementwise operations in the same order, float sums in the same fixed order. Autocast and
TF32 are off inside: evaluation is the arithmetic of the network that is costed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from pikenas.space.program.ir import IntegerProgram, Op, Operation, ProgramWalk, Value

__all__ = ["TorchProgram", "TORCH_OPS"]


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

    def __init__(self, program: IntegerProgram, constants: dict[str, Tensor]) -> None:
        super().__init__(program)
        self.constants = constants

    def constant(self, name: str) -> Tensor:
        return self.constants[name]

    def store(self, operation: Operation, result: Tensor) -> Tensor:
        value = self.program.values[operation.output]
        return result.long() if value.dtype == "int" else result.float()


class TorchProgram:
    """A program with its constants on ``device``; call it on ``(N, *input.shape)``."""

    def __init__(self, program: IntegerProgram, device: torch.device | str) -> None:
        self.program = program
        self.device = torch.device(device)
        self.constants = {
            name: torch.from_numpy(array.copy()).to(self.device)
            for name, array in program.arrays.items()
        }

    def run(self, x: Tensor, *, keep: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        """``(output, values)``; ``values`` holds every intermediate when ``keep``."""
        env: dict[str, Tensor] = {self.program.input.name: x.float().to(self.device)}
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            stack.enter_context(torch.autocast(self.device.type, enabled=False))
            if self.device.type == "cuda":
                stack.enter_context(torch.backends.cudnn.flags(enabled=True, allow_tf32=False))
            env = _TorchWalk(self.program, self.constants).walk(env)
        output = env[self.program.output]
        return output, env if keep else {}

    def __call__(self, x: Tensor) -> Tensor:
        return self.run(x)[0]
