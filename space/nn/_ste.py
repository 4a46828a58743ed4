"""Straight-through estimators and the fused autograd nodes of the fake quantizers.

``ste(value, surrogate)`` forwards ``value`` exactly and backpropagates the gradient of
``surrogate``; in eager training the estimators run as single custom autograd nodes
(:class:`_LevelsFunction` quantizes a tensor with a learned scale in one node), fewer passes and
far fewer tiny autograd nodes; the meta device, tracing and ``no_grad`` take plain ops with the
same values and gradients. Rounding is half up, as in the integer program.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from pikenas.space.nn._fixed_point import TINY, double_quantized, round_half_up

__all__ = ["ste", "clipped_ste", "round_ste"]

_TINY = TINY
# Below this many elements the plain straight-through ops are cheaper than a custom autograd
# node (whose Python overhead is tens of microseconds); above it the node saves memory passes.
_LARGE = 1 << 15


def _eager_training(*tensors: Tensor) -> bool:
    """True in eager training (grad enabled, a tensor needs grad, a real device): then the
    straight-through estimators run as single custom autograd nodes (fewer passes and far fewer
    tiny autograd nodes). Tracing, export, ``no_grad`` and the meta device take plain ops with
    the same values and gradients."""
    return (
        torch.is_grad_enabled()
        and any(t.requires_grad for t in tensors)
        and tensors[0].device.type != "meta"
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
    )


class _Replace(torch.autograd.Function):
    """Forward ``value``; the gradient goes to ``surrogate`` unchanged."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, surrogate: Tensor) -> Tensor:  # type: ignore[override]
        return value

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        return None, grad


class _ClippedReplace(torch.autograd.Function):
    """Forward ``value``; the gradient goes to ``x`` where ``|x| < clip``, else 0."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, x: Tensor, clip: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.clip = clip
        return value

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return None, torch.ops.aten.hardtanh_backward(grad, x, -ctx.clip, ctx.clip), None


def ste(value: Tensor, surrogate: Tensor) -> Tensor:
    """Forward ``value`` exactly, backward the gradient of ``surrogate`` (straight-through).

    The plain form ``value.detach() + (surrogate - surrogate.detach())`` adds an exact zero, so
    outputs lie exactly on the grid; for large tensors in eager training one custom node does
    the same.
    """
    if surrogate.numel() >= _LARGE and _eager_training(surrogate):
        return _Replace.apply(value.detach(), surrogate)
    return value.detach() + (surrogate - surrogate.detach())


def clipped_ste(value: Tensor, x: Tensor, clip: float) -> Tensor:
    """Forward ``value``; gradient 1 with respect to ``x`` where ``|x| <= clip``, else 0."""
    if _eager_training(x):
        return _ClippedReplace.apply(value.detach(), x, clip)
    surrogate = torch.clamp(x, -clip, clip)
    return value.detach() + (surrogate - surrogate.detach())


def round_ste(x: Tensor) -> Tensor:
    """``floor(x + 0.5)`` (half up) forward, identity gradient."""
    return ste(round_half_up(x.detach()), x)


def _grad_scale(x: Tensor, factor: float) -> Tensor:
    """Forward ``x``, backward gradient times ``factor`` (LSQ's step-size gradient scaling)."""
    return x.detach() + (x * factor - (x * factor).detach())


def _pow2_levels(v: Tensor, min_exponent: int) -> Tensor:
    """``sign(v) * 2^clamp(round(log2|v|), min_exponent, 0)``, 0 below half the smallest level,
    for ``v`` in ``[-1, 1]`` (no gradient)."""
    magnitude = v.abs()
    exponent = torch.clamp(
        torch.floor(torch.log2(magnitude.clamp_min(_TINY)) + 0.5), min_exponent, 0
    )
    level = torch.exp2(exponent)
    level = torch.where(magnitude < 2.0 ** (min_exponent - 1), 0.0, level)
    return torch.where(v < 0, -level, level)


class _LevelsFunction(torch.autograd.Function):
    """A learned-scale quantizer in one autograd node (eager training):
    ``s = view(DQ(clamp(scale, 1e-8)))``, ``y = L(clamp(x / s, low, high)) * s`` with ``L`` =
    round half up (uniform / LSQ) or the power-of-two levels (``min_exponent`` given).

    Backward: ``dx = g`` where ``low < x / s < high`` else 0 (one fused ``hardtanh_backward``
    pass, no bool masks, which are slow on CPU); ``ds = factor * sum(g * (L(v) - v))`` inside and
    ``sum(g * L(v))`` outside (LSQ), computed as ``sum(g * L) - sum(dx * v)`` (two dot products
    for a per-tensor scale, ``v = x / s``), passed straight through the Double Quantization to
    the raw ``scale``. One node instead of a dozen keeps small tensors cheap.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        scale: Tensor,
        scale_format: str,
        view_shape: tuple[int, ...],
        low: float,
        high: float,
        grad_factor: float,
        min_exponent: int | None,
    ) -> Tensor:
        step = double_quantized(scale.clamp_min(1e-8), scale_format, False).view(view_shape)
        v = x / step
        if min_exponent is None:
            levels = torch.clamp(v, low, high).add_(0.5).floor_()
        else:
            levels = _pow2_levels(torch.clamp(v, low, high), min_exponent)
        ctx.save_for_backward(v, levels)
        ctx.bounds = (low, high)
        ctx.shapes = (step.shape, scale.shape)
        ctx.grad_factor = grad_factor
        return levels * step

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        v, levels = ctx.saved_tensors
        if grad.stride() != v.stride() and v.dim() == 4:
            # One copy to the saved tensors' layout: mixed-layout elementwise ops are slow.
            grad = grad.contiguous(memory_format=_memory_format(v))
        grad_x = torch.ops.aten.hardtanh_backward(grad, v, *ctx.bounds)
        grad_scale = None
        if ctx.needs_input_grad[1]:
            step_shape, scale_shape = ctx.shapes
            if math.prod(scale_shape) == 1 and _same_dense_layout(grad, levels, grad_x, v):
                total = torch.dot(_flat(grad), _flat(levels)) - torch.dot(_flat(grad_x), _flat(v))
            else:
                total = (grad * levels - grad_x * v).sum_to_size(step_shape)
            grad_scale = total.reshape(scale_shape) * ctx.grad_factor
        return grad_x, grad_scale, None, None, None, None, None, None


def _same_dense_layout(*tensors: Tensor) -> bool:
    first = tensors[0]
    dense = first.is_contiguous() or (
        first.dim() == 4 and first.is_contiguous(memory_format=torch.channels_last)
    )
    return dense and all(
        t.shape == first.shape and t.stride() == first.stride() and t.dtype == first.dtype
        for t in tensors[1:]
    )


def _flat(t: Tensor) -> Tensor:
    """The elements of a dense tensor in memory order, as a 1-D view."""
    return t.as_strided((t.numel(),), (1,))


# The largest float below zero is minus the smallest subnormal: ``x > -_SUBNORMAL`` holds
# exactly for ``x >= 0`` (both zeros), a strict comparison hardtanh_backward can make.
_SUBNORMAL = {torch.float32: 2.0**-149, torch.float64: 2.0**-1074, torch.bfloat16: 2.0**-133}


class _PReLUFunction(torch.autograd.Function):
    """``torch.prelu`` forward; a backward of four fast passes (the native CPU backward is
    several times slower): ``dx = g`` where ``x >= 0`` else ``slope * g``; ``dslope_c`` =
    sum of ``g * x`` over ``x < 0``, per channel (dim 1)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, slope: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, slope)
        return torch.prelu(x, slope)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, slope = ctx.saved_tensors
        tiny = _SUBNORMAL[x.dtype]
        grad_positive = torch.ops.aten.hardtanh_backward(grad, x, -tiny, math.inf)
        grad_negative = grad - grad_positive
        view = (1, -1, *([1] * (x.dim() - 2)))
        grad_x = torch.addcmul(grad_positive, grad_negative, slope.view(view))
        grad_slope = None
        if ctx.needs_input_grad[1]:
            dims = (0, *range(2, x.dim()))
            grad_slope = (grad_negative * x).sum(dims)
        return grad_x, grad_slope


def prelu(x: Tensor, slope: Tensor) -> Tensor:
    """``x`` where ``x >= 0`` else ``slope_c * x`` (channels on dim 1 of ``x`` ``(N, C, ...)``,
    ``slope`` ``(C,)``): ``torch.prelu``, with :class:`_PReLUFunction` in eager training."""
    if x.dim() >= 2 and x.dtype in _SUBNORMAL and _eager_training(x, slope):
        return _PReLUFunction.apply(x, slope)
    return torch.prelu(x, slope)


class _BatchAffine(torch.autograd.Function):
    """``x * m + b`` per channel (dim 1) forward; batch norm's training backward (through the
    batch statistics ``mean`` / ``inverse_std``) for ``weight`` / ``shift``, the same affine map
    written as batch norm (``m = weight * inverse_std``, ``b = shift - m * mean``)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        shift: Tensor,
        m: Tensor,
        b: Tensor,
        mean: Tensor,
        inverse_std: Tensor,
        eps: float,
    ) -> Tensor:
        view = (1, -1, *([1] * (x.dim() - 2)))
        ctx.save_for_backward(x, weight, mean, inverse_std)
        ctx.eps = eps
        return torch.addcmul(b.view(view), x, m.view(view))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight, mean, inverse_std = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
        grad_x, grad_weight, grad_shift = torch.ops.aten.native_batch_norm_backward(
            grad.contiguous(memory_format=_memory_format(x)),
            x,
            weight,
            None,
            None,
            mean,
            inverse_std,
            True,
            ctx.eps,
            mask,
        )
        return grad_x, grad_weight, grad_shift, None, None, None, None, None


def _memory_format(x: Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def batch_affine(
    x: Tensor,
    weight: Tensor,
    shift: Tensor,
    m: Tensor,
    b: Tensor,
    mean: Tensor,
    inverse_std: Tensor,
    eps: float,
) -> Tensor:
    """``x * m + b`` per channel with batch norm's training gradient (see
    :class:`_BatchAffine`): ``x`` ``(N, C, ...)``, the others ``(C,)``; ``mean`` /
    ``inverse_std`` the batch's statistics (detached), ``m = weight * inverse_std`` and
    ``b = shift - m * mean`` up to rounding. Outside eager training: batch norm in training
    mode (its own statistics, no running update; same values up to rounding)."""
    if _eager_training(x, weight, shift):
        return _BatchAffine.apply(x, weight, shift, m, b, mean, inverse_std, eps)
    return torch.nn.functional.batch_norm(x, None, None, weight, shift, True, 0.0, eps)
