"""Cost handlers for plain torch modules (float networks), in the manner of fvcore's op handlers.

A handler has the signature of :meth:`space.costs.CostDeclaring.inference_ops`:
``handler(module, input_shape, output_shape) -> CostDeclaration``. Handlers are keyed by the
module's exact type: a subclass may override ``forward`` (a quantized conv deriving from
``nn.Conv2d``), and counting it as a float conv would be a silent undercount, so subclasses
must declare their own operations.

Everything here runs at float widths (32 bits, ``float_operands=True``; the cost table may
count them at 16). A bias is one float add per output element.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from space.costs import FLOAT_BITS, CostDeclaration, Op

__all__ = ["TorchHandler", "TORCH_HANDLERS", "register_torch_handler"]

Shape = tuple[int, ...]
TorchHandler = Callable[[nn.Module, Shape, Shape], CostDeclaration]

TORCH_HANDLERS: dict[type[nn.Module], TorchHandler] = {}

F = FLOAT_BITS


def register_torch_handler(
    *module_types: type[nn.Module],
) -> Callable[[TorchHandler], TorchHandler]:
    """Decorator registering a handler for the exact types given; a duplicate is an error."""

    def add(handler: TorchHandler) -> TorchHandler:
        for module_type in module_types:
            if module_type in TORCH_HANDLERS:
                raise ValueError(f"a cost handler for {module_type.__name__} is registered twice")
            TORCH_HANDLERS[module_type] = handler
        return handler

    return add


def _elements(shape: Shape) -> int:
    return math.prod(shape)


def _float(op: str, count: int, label: str) -> Op:
    return Op(op, count, F, F, True, label)  # type: ignore[arg-type]


def _param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@register_torch_handler(nn.Conv2d)
def _conv2d(module: nn.Module, input_shape: Shape, output_shape: Shape) -> CostDeclaration:
    """mac: N*Hout*Wout*Cout*(Cin/groups)*kh*kw at 32x32 float; bias: one add per output."""
    assert isinstance(module, nn.Conv2d)
    kernel_h, kernel_w = module.kernel_size
    fan_in = (module.in_channels // module.groups) * kernel_h * kernel_w
    outputs = _elements(output_shape)
    ops = [_float("mac", outputs * fan_in, "conv")]
    if module.bias is not None:
        ops.append(_float("add", outputs, "bias"))
    return CostDeclaration(tuple(ops), {}, _param_count(module))


@register_torch_handler(nn.Linear)
def _linear(module: nn.Module, input_shape: Shape, output_shape: Shape) -> CostDeclaration:
    """mac: rows*in*out at 32x32 float (rows = all leading dims); bias: one add per output."""
    assert isinstance(module, nn.Linear)
    outputs = _elements(output_shape)
    ops = [_float("mac", outputs * module.in_features, "linear")]
    if module.bias is not None:
        ops.append(_float("add", outputs, "bias"))
    return CostDeclaration(tuple(ops), {}, _param_count(module))


@register_torch_handler(nn.BatchNorm2d, nn.BatchNorm1d)
def _batchnorm(module: nn.Module, input_shape: Shape, output_shape: Shape) -> CostDeclaration:
    """Inference BN folded to y = x*scale + shift: one float mul and one float add per element.

    Params: the folded scale and shift, 2*C (the running statistics fold into them).
    """
    assert isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d)
    elements = _elements(output_shape)
    ops = (_float("mul", elements, "bn_scale"), _float("add", elements, "bn_shift"))
    return CostDeclaration(ops, {"batchnorm": elements}, 2 * module.num_features)


@register_torch_handler(nn.ReLU)
def _relu(module: nn.Module, input_shape: Shape, output_shape: Shape) -> CostDeclaration:
    """One float compare per element."""
    elements = _elements(output_shape)
    return CostDeclaration((_float("compare", elements, "relu"),), {"relu": elements}, 0)


@register_torch_handler(nn.ReLU6)
def _relu6(module: nn.Module, input_shape: Shape, output_shape: Shape) -> CostDeclaration:
    """Two float compares per element (the lower and the upper bound)."""
    elements = _elements(output_shape)
    return CostDeclaration((_float("compare", 2 * elements, "relu6"),), {"relu": elements}, 0)


@register_torch_handler(nn.PReLU)
def _prelu(module: nn.Module, input_shape: Shape, output_shape: Shape) -> CostDeclaration:
    """A float select (compare) and a float slope multiply per element."""
    elements = _elements(output_shape)
    ops = (_float("compare", elements, "select"), _float("mul", elements, "slope"))
    return CostDeclaration(ops, {"prelu": elements}, _param_count(module))


def _adaptive_bin_total(size: int, bins: int) -> int:
    """Sum of the adaptive-pooling window lengths along one axis (PyTorch's bin rule)."""
    return sum(
        math.ceil((index + 1) * size / bins) - (index * size) // bins for index in range(bins)
    )


def _window_total(size: int, out: int, kernel: int, stride: int, padding: int) -> int:
    """Sum over the output positions of the in-bounds window lengths along one axis."""
    total = 0
    for index in range(out):
        start = index * stride - padding
        total += min(start + kernel, size) - max(start, 0)
    return total


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[-1])


def _pool_declaration(
    input_shape: Shape, output_shape: Shape, sum_h: int, sum_w: int
) -> CostDeclaration:
    batch_channels = math.prod(input_shape[:-2])
    outputs = _elements(output_shape)
    ops = (
        _float("add", batch_channels * sum_h * sum_w, "pool_sum"),
        _float("mul", outputs, "pool_scale"),
    )
    return CostDeclaration(ops, {"pool": outputs}, 0)


@register_torch_handler(nn.AdaptiveAvgPool2d)
def _adaptive_avg_pool(
    module: nn.Module, input_shape: Shape, output_shape: Shape
) -> CostDeclaration:
    """One float add per summed input element of each window, one float mul per output.

    A global pool of (N, C, H, W) is N*C*H*W adds and N*C multiplies.
    """
    height, width = input_shape[-2:]
    out_h, out_w = output_shape[-2:]
    return _pool_declaration(
        input_shape,
        output_shape,
        _adaptive_bin_total(height, out_h),
        _adaptive_bin_total(width, out_w),
    )


@register_torch_handler(nn.AvgPool2d)
def _avg_pool(module: nn.Module, input_shape: Shape, output_shape: Shape) -> CostDeclaration:
    """One float add per in-bounds input element of each window, one float mul per output."""
    assert isinstance(module, nn.AvgPool2d)
    kernel_h, kernel_w = _pair(module.kernel_size)
    stride_h, stride_w = _pair(module.stride if module.stride else module.kernel_size)
    pad_h, pad_w = _pair(module.padding)
    height, width = input_shape[-2:]
    out_h, out_w = output_shape[-2:]
    return _pool_declaration(
        input_shape,
        output_shape,
        _window_total(height, out_h, kernel_h, stride_h, pad_h),
        _window_total(width, out_w, kernel_w, stride_w, pad_w),
    )


@register_torch_handler(nn.Flatten, nn.Identity, nn.Dropout)
def _free(module: nn.Module, input_shape: Shape, output_shape: Shape) -> CostDeclaration:
    """Reshapes and inference no-ops: no arithmetic."""
    return CostDeclaration()
