"""The uniform learned-scale quantizer as two compiled kernels, for long trainings.

Eager, the quantizer of an activation (:class:`pikenas.space.nn._ste._LevelsFunction`) makes
five passes over the tensor forward (divide, clip, add, floor, multiply) and three backward (the
straight-through mask, two dot products for LSQ's scale gradient). ``torch.compile`` fuses the
forward into one pass and the backward into one pass with its reduction; the forward computes
the same operations in the same order, so its codes are bit-equal to the eager quantizer's (and
to the integer program's); the scale gradient sums in the compiler's order. Compiling costs
seconds (about 10 s cold on the project's 2-core CPU, then about 2 s for each new tensor shape,
see ``benchmarks/training.py --compile``), so the training loop turns it on only for runs long
enough to win that back (:data:`pikenas.evaluators.training.config.COMPILE_MIN_STEPS`), and any
failure to compile falls back to the eager quantizer for the rest of the process with one
warning line.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from pikenas.space.nn._fixed_point import double_quantized

__all__ = ["compiled_quantizers", "uniform_levels"]

_log = logging.getLogger("pikenas")
_STATE: dict[str, Any] = {"on": False, "failed": False, "kernels": None}


def _forward(x: Tensor, step: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """``floor(clamp(x / step, low, high) + 0.5) * step``: the eager quantizer's operations
    (``low`` / ``high``: 0-d tensors, so one compiled graph serves every bit width)."""
    return torch.floor(torch.clamp(x / step, low, high) + 0.5) * step


def _backward(
    g: Tensor, x: Tensor, step: Tensor, low: Tensor, high: Tensor
) -> tuple[Tensor, Tensor]:
    """``(dx, sum)``: ``dx = g`` where ``low < x / step < high`` else 0 (straight through);
    ``sum = sum(g * L) - sum(dx * v)`` (LSQ's step gradient before its factor, per tensor)."""
    v = x / step
    grad_x = torch.where((v > low) & (v < high), g, torch.zeros_like(g))
    levels = torch.floor(torch.clamp(v, low, high) + 0.5)
    return grad_x, (g * levels - grad_x * v).sum()


#: compiled graphs allowed per kernel (dynamo's default of 8 runs a kernel's Python eagerly, and
#: slowly, past it): shapes are dynamic, so a graph is added only per dtype, layout and whether
#: the input needs a gradient, but a process may train many networks
_RECOMPILE_LIMIT = 64


@contextlib.contextmanager
def compiled_quantizers(on: bool = True) -> Iterator[None]:
    """Inside: per-tensor uniform quantizers of 4-D tensors in eager training run compiled."""
    before = _STATE["on"]
    _STATE["on"] = on
    try:
        if on:
            limit = max(_RECOMPILE_LIMIT, torch._dynamo.config.recompile_limit)  # noqa: SLF001
            with torch._dynamo.config.patch(recompile_limit=limit):  # noqa: SLF001
                yield
        else:
            yield
    finally:
        _STATE["on"] = before


def _kernels() -> tuple[Callable[..., Tensor], Callable[..., tuple[Tensor, Tensor]]]:
    if _STATE["kernels"] is None:
        _STATE["kernels"] = (
            torch.compile(_forward, dynamic=True),
            torch.compile(_backward, dynamic=True),
        )
    return _STATE["kernels"]


def _bounds(low: float, high: float, like: Tensor) -> tuple[Tensor, Tensor]:
    """``low`` / ``high`` as 0-d float32 tensors on ``like``'s device (cached)."""
    key = (low, high, like.device)
    if key not in _BOUNDS:
        _BOUNDS[key] = tuple(
            torch.tensor(v, dtype=torch.float32, device=like.device) for v in (low, high)
        )
    return _BOUNDS[key]


_BOUNDS: dict[tuple[float, float, torch.device], tuple[Tensor, Tensor]] = {}


def _run(index: int, eager: Callable[..., Any], *args: Any) -> Any:
    """Kernel ``index`` compiled, or ``eager`` once compiling has failed in this process."""
    if not _STATE["failed"]:
        try:
            return _kernels()[index](*args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back, say so once
            _STATE["failed"] = True
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            _log.warning(
                "torch.compile of the quantizer failed (%s: %s); training continues eager",
                type(exc).__name__,
                first,
            )
    return eager(*args)


class _CompiledLevels(torch.autograd.Function):
    """:class:`~pikenas.space.nn._ste._LevelsFunction` for a per-tensor uniform scale, its
    forward and backward each one compiled kernel; saves ``x`` and the step, not ``v`` and
    the levels."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        scale: Tensor,
        scale_format: str,
        low: float,
        high: float,
        grad_factor: float,
    ) -> Tensor:
        # (1, 1, 1, 1) as the eager quantizer's view: the same type promotion (bf16 x / float32
        # step is float32; a 0-d step would keep bf16)
        step = double_quantized(scale.clamp_min(1e-8), scale_format, False).reshape((1,) * x.dim())
        ctx.save_for_backward(x, step)
        ctx.bounds, ctx.grad_factor, ctx.scale_shape = (low, high), grad_factor, scale.shape
        return _run(0, _forward, x.detach(), step.detach(), *_bounds(low, high, x))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, step = ctx.saved_tensors
        if grad.stride() != x.stride():  # one copy to x's layout: mixed layouts are slow
            grad = (
                grad.contiguous(memory_format=torch.channels_last)
                if _nhwc(x)
                else (grad.contiguous())
            )
        bounds = _bounds(*ctx.bounds, x)
        grad_x, total = _run(1, _backward, grad, x.detach(), step.detach(), *bounds)
        grad_scale = None
        if ctx.needs_input_grad[1]:
            grad_scale = (total * ctx.grad_factor).reshape(ctx.scale_shape)
        return grad_x, grad_scale, None, None, None, None


def _nhwc(x: Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)


def uniform_levels(
    x: Tensor, scale: Tensor, scale_format: str, low: float, high: float, grad_factor: float
) -> Tensor | None:
    """The compiled quantizer of ``x`` when it applies (switched on, a per-tensor scale, a
    4-D float tensor), else ``None``: the caller runs the eager one."""
    if not _STATE["on"] or _STATE["failed"] or scale.numel() != 1 or x.dim() != 4:
        return None
    if not x.is_floating_point() or x.device.type not in ("cpu", "cuda"):
        return None
    return _CompiledLevels.apply(x, scale, scale_format, low, high, grad_factor)
