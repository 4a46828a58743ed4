"""Lowering: a built network -> its :class:`~space.program.IntegerProgram`.

``lower(model)`` walks a :class:`~space.build.PikeNet`; every part implements
``lower(builder, x) -> Value`` and appends the operations it runs at inference through the
:class:`ProgramBuilder`. Ranges (hence widths) come from the configuration only: weight codes
from their quantizer's code range, accumulators from fan-in x code ranges, and every constant the
lowering derives from trained values (biases, exponents, multipliers) is clamped into a range
fixed by the configuration, in the training forward as here. So a model on the meta device
lowers to the same operations and widths as a trained one, without constants: that is what the
ACE counter counts, before any training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pikenas.space.errors import CostModelError
from pikenas.space.program.ir import Constant, IntegerProgram, Operation, Value, range_bits

__all__ = [
    "ProgramBuilder",
    "lower",
    "LoweringError",
    "channel_shape",
    "window_terms",
    "INT64_LIMIT",
]

# Intermediates must stay clear of int64 overflow (and of float64's exact range in convs).
INT64_LIMIT = 2**62
CONV_LIMIT = 2**53


class LoweringError(CostModelError):
    """A network (or part of one) that cannot be lowered to an integer program."""


def channel_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of a per-channel constant broadcasting against a per-sample ``shape``."""
    return (shape[0], *([1] * (len(shape) - 1)))


def _interval_product(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    products = [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]]
    return min(products), max(products)


def _shifted(value: int, amount: int) -> int:
    return value << amount if amount >= 0 else value >> -amount


def float32_bounds(lo: int, hi: int) -> tuple[int, int]:
    """``[lo, hi]`` widened to float32 numbers (exact below 2^24; beyond, rounded outward to 24
    significant bits), so that a float32 graph states a declared range exactly (QONNX's
    ``Clip`` of a constant)."""
    low, high = np.float32(lo), np.float32(hi)
    if int(low) > lo:
        low = np.nextafter(low, np.float32(-np.inf))
    if int(high) < hi:
        high = np.nextafter(high, np.float32(np.inf))
    return int(low), int(high)


class ProgramBuilder:
    """Collects values, constants and operations; ``with_constants`` False on the meta device
    (shapes and ranges only)."""

    def __init__(self, *, with_constants: bool) -> None:
        self.with_constants = with_constants
        self.values: dict[str, Value] = {}
        self.constants: dict[str, Constant] = {}
        self.arrays: dict[str, np.ndarray] = {}
        self.ops: list[Operation] = []
        self.elements: list[tuple[str, str, int]] = []
        self._path: list[str] = []
        self._count = 0

    # ---- naming --------------------------------------------------------------------------
    @contextlib.contextmanager
    def layer(self, name: str) -> Iterator[None]:
        self._path.append(name)
        try:
            yield
        finally:
            self._path.pop()

    def part(self, name: str, module: nn.Module, *args: Any) -> Any:
        """``module.lower(self, *args)`` inside layer ``name`` (strict: a module without a
        lowering is an error naming it and its path)."""
        with self.layer(name):
            return require_lowering(module, self.current_layer)(self, *args)

    @property
    def current_layer(self) -> str:
        return ".".join(self._path) or "(model)"

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{self.current_layer}/{hint}#{self._count}"

    def note(self, kind: str, elements: int) -> None:
        """Record that the current layer's ``kind`` module processes ``elements`` elements."""
        self.elements.append((self.current_layer, kind, int(elements)))

    # ---- values and constants ------------------------------------------------------------
    def input(self, shape: tuple[int, ...], *, bits: int = 32) -> Value:
        """The program's input; ``bits=8`` for raw pixels (float32 values 0..255)."""
        value = Value("input", tuple(shape), "float", bits)
        self.values[value.name] = value
        return value

    def constant(
        self,
        hint: str,
        array: Tensor | np.ndarray | None,
        *,
        shape: tuple[int, ...],
        dtype: str,
        lo: int | None = None,
        hi: int | None = None,
        bits: int | None = None,
    ) -> Constant:
        """A constant of per-sample ``shape``; int constants lie in ``[lo, hi]``."""
        name = self._name(hint)
        if dtype == "int":
            assert lo is not None and hi is not None
            lo, hi = float32_bounds(lo, hi)
            bits = range_bits(lo, hi) if bits is None else bits
        else:
            bits = 32
        constant = Constant(name, tuple(shape), dtype, bits, lo, hi)
        self.constants[name] = constant
        if self.with_constants:
            if array is None:
                raise LoweringError(f"{self.current_layer}: constant {hint} has no value")
            data = array.detach().cpu().double().numpy() if isinstance(array, Tensor) else array
            data = np.asarray(data).reshape(shape)
            if not np.all(np.isfinite(data)):
                raise LoweringError(
                    f"{self.current_layer}: constant {hint} is not finite (NaN or inf): the "
                    "weights diverged; retrain with a lower learning rate"
                )
            if dtype == "int":
                rounded = np.rint(data)
                if (
                    not np.array_equal(rounded, data)
                    or rounded.min(initial=lo) < lo
                    or (rounded.max(initial=hi) > hi)
                ):
                    raise LoweringError(
                        f"{self.current_layer}: constant {hint} is not an integer in "
                        f"[{lo}, {hi}] (a lowering bug: constants are clamped to their range)"
                    )
                self.arrays[name] = np.asarray(rounded, dtype=np.int64)
            else:
                self.arrays[name] = np.asarray(data, dtype=np.float32)
        return constant

    def emit(
        self,
        op: str,
        inputs: list[Value | Constant],
        *,
        shape: tuple[int, ...],
        dtype: str,
        lo: int | None = None,
        hi: int | None = None,
        bits: int | None = None,
        scale: float | None = None,
        kind: str = "",
        attrs: dict[str, Any] | None = None,
        exact: bool | None = None,
    ) -> Value:
        if dtype == "int":
            assert lo is not None and hi is not None
            if max(abs(lo), abs(hi)) >= INT64_LIMIT:
                raise LoweringError(
                    f"{self.current_layer}: {op} needs a {range_bits(lo, hi)}-bit integer, "
                    "more than the program's 62-bit limit; use fewer weight or activation bits"
                )
            bits = range_bits(lo, hi) if bits is None else bits
        else:
            bits, lo, hi = 32, None, None
        if exact is None:
            exact = all(getattr(i, "exact", True) for i in inputs) and not (
                op in ("conv", "linear") and dtype == "float"
            )
        value = Value(self._name(op), tuple(shape), dtype, bits, lo, hi, scale, exact)
        self.values[value.name] = value
        self.ops.append(
            Operation(
                op,
                tuple(i.name for i in inputs),
                value.name,
                self.current_layer,
                kind,
                dict(attrs or {}),
            )
        )
        return value

    # ---- typed helpers (ranges computed here, once) ----------------------------------------
    def mul(self, x: Value, k: Constant | Value, *, kind: str, scale: float | None = None) -> Value:
        if x.dtype == "int" and k.dtype == "int":
            lo, hi = _interval_product((x.lo, x.hi), (k.lo, k.hi))  # type: ignore[arg-type]
            return self.emit("mul", [x, k], shape=x.shape, dtype="int", lo=lo, hi=hi, kind=kind)
        return self.emit("mul", [x, k], shape=x.shape, dtype="float", kind=kind, scale=scale)

    def add(self, x: Value, y: Constant | Value, *, kind: str) -> Value:
        """``x + y``; a value ``y`` with fewer channels is added to ``x``'s first channels (a
        zero-padded shortcut: the padding needs no add)."""
        prefix = isinstance(y, Value) and len(y.shape) == len(x.shape) and y.shape[0] < x.shape[0]
        attrs = {"prefix": True} if prefix else None
        if x.dtype == "int" and y.dtype == "int":
            lo, hi = (
                x.lo + min(y.lo, 0 if prefix else y.lo),
                x.hi + max(y.hi, 0 if prefix else y.hi),
            )  # type: ignore[operator]
            return self.emit(
                "add", [x, y], shape=x.shape, dtype="int", lo=lo, hi=hi, kind=kind, attrs=attrs
            )
        return self.emit("add", [x, y], shape=x.shape, dtype="float", kind=kind, attrs=attrs)

    def shift(self, x: Value, amount: Constant | Value, *, kind: str) -> Value:
        """``x * 2^amount`` (floor for negative amounts); ``amount`` int with its range."""
        corners = [
            _shifted(v, a)
            for v in (x.lo, x.hi)  # type: ignore[misc]
            for a in (amount.lo, amount.hi)  # type: ignore[misc]
        ]
        return self.emit(
            "shift",
            [x, amount],
            shape=x.shape,
            dtype="int",
            lo=min(corners),
            hi=max(corners),
            kind=kind,
        )

    def clip(
        self,
        x: Value,
        lo: float | None,
        hi: float | None,
        *,
        kind: str,
        bits: int | None = None,
        scale: float | None = None,
    ) -> Value:
        """Clamp to ``[lo, hi]`` (``None``: no bound; floats only)."""
        attrs = {"lo": lo, "hi": hi}
        if x.dtype == "int":
            assert lo is not None and hi is not None
            new_lo, new_hi = max(int(lo), x.lo), min(int(hi), x.hi)  # type: ignore[type-var]
            return self.emit(
                "clip",
                [x],
                shape=x.shape,
                dtype="int",
                lo=new_lo,
                hi=new_hi,
                bits=bits,
                kind=kind,
                attrs=attrs,
                scale=scale,
            )
        return self.emit("clip", [x], shape=x.shape, dtype="float", kind=kind, attrs=attrs)

    def round(
        self,
        x: Value,
        lo: int,
        hi: int,
        *,
        kind: str,
        bits: int | None = None,
        scale: float | None = None,
    ) -> Value:
        """float32 -> int ``floor(x + 0.5)``; ``x`` already clipped to ``[lo, hi]``."""
        return self.emit(
            "round",
            [x],
            shape=x.shape,
            dtype="int",
            lo=lo,
            hi=hi,
            bits=bits,
            kind=kind,
            scale=scale,
        )

    def sign(self, x: Value, *, kind: str) -> Value:
        return self.emit(
            "sign", [x], shape=x.shape, dtype="int", lo=-1, hi=1, bits=1, kind=kind, scale=1.0
        )

    def select(self, c: Value, a: Constant | Value, b: Constant | Value, *, kind: str) -> Value:
        if a.dtype == "int" and b.dtype == "int":
            lo, hi = min(a.lo, b.lo), max(a.hi, b.hi)  # type: ignore[type-var]
            return self.emit(
                "select", [c, a, b], shape=c.shape, dtype="int", lo=lo, hi=hi, kind=kind
            )
        return self.emit("select", [c, a, b], shape=c.shape, dtype="float", kind=kind)

    def conv(
        self,
        x: Value,
        weight: Constant,
        *,
        stride: int,
        padding: tuple[int, int, int, int],
        groups: int,
        kind: str = "conv",
    ) -> Value:
        out_channels, per_group, k_h, k_w = weight.shape
        channels, height, width = x.shape
        top, bottom, left, right = padding
        out_h = (height + top + bottom - k_h) // stride + 1
        out_w = (width + left + right - k_w) // stride + 1
        shape = (out_channels, out_h, out_w)
        attrs = {"stride": stride, "padding": list(padding), "groups": groups}
        if x.dtype == "float" or weight.dtype == "float":
            return self.emit(
                "conv", [x, weight], shape=shape, dtype="float", kind=kind, attrs=attrs
            )
        bound = per_group * k_h * k_w * _magnitude(weight) * _magnitude(x)
        self._check_conv_bound(bound)
        return self.emit(
            "conv",
            [x, weight],
            shape=shape,
            dtype="int",
            lo=-bound,
            hi=bound,
            kind=kind,
            attrs=attrs,
        )

    def linear(self, x: Value, weight: Constant, *, kind: str = "linear") -> Value:
        out_features, in_features = weight.shape
        if x.dtype == "float" or weight.dtype == "float":
            return self.emit("linear", [x, weight], shape=(out_features,), dtype="float", kind=kind)
        bound = in_features * _magnitude(weight) * _magnitude(x)
        self._check_conv_bound(bound)
        return self.emit(
            "linear",
            [x, weight],
            shape=(out_features,),
            dtype="int",
            lo=-bound,
            hi=bound,
            kind=kind,
        )

    def _check_conv_bound(self, bound: int) -> None:
        if bound >= CONV_LIMIT:
            raise LoweringError(
                f"{self.current_layer}: the accumulator needs {range_bits(-bound, bound)} bits, "
                "more than 53; use fewer weight or activation bits"
            )

    def sum(self, x: Value, *, mode: str, kind: str, **attrs: Any) -> Value:
        """Fixed-order sums: ``global`` (H, W), ``window`` (kernel, stride, padding) or
        ``groups`` (out_channels, group)."""
        channels, height, width = x.shape
        if mode == "global":
            shape, terms = (channels, 1, 1), channels * height * width
            per_output = height * width
        elif mode == "groups":
            out, group = attrs["out_channels"], attrs["group"]
            shape, terms, per_output = (out, height, width), out * group * height * width, group
        else:
            kernel, stride = attrs["kernel"], attrs["stride"]
            top, bottom, left, right = attrs["padding"]
            out_h = (height + top + bottom - kernel) // stride + 1
            out_w = (width + left + right - kernel) // stride + 1
            shape, per_output = (channels, out_h, out_w), kernel * kernel
            terms = (
                channels
                * window_terms(height, out_h, kernel, stride, top)
                * (window_terms(width, out_w, kernel, stride, left))
            )
        attrs = {"mode": mode, "terms": terms, **attrs}
        if x.dtype == "int":
            lo, hi = x.lo * per_output, x.hi * per_output  # type: ignore[operator]
            return self.emit(
                "sum", [x], shape=shape, dtype="int", lo=lo, hi=hi, kind=kind, attrs=attrs
            )
        return self.emit("sum", [x], shape=shape, dtype="float", kind=kind, attrs=attrs)

    def reshape(self, op: str, x: Value, shape: tuple[int, ...], **attrs: Any) -> Value:
        """Data movement (``pad``, ``tile``, ``flatten``): same range, no cost."""
        if x.dtype == "int":
            lo, hi = (min(x.lo, 0), max(x.hi, 0)) if op == "pad" else (x.lo, x.hi)  # type: ignore[type-var]
            return self.emit(
                op,
                [x],
                shape=shape,
                dtype="int",
                lo=lo,
                hi=hi,
                bits=x.bits,
                scale=x.scale,
                attrs=attrs,
            )
        return self.emit(op, [x], shape=shape, dtype="float", attrs=attrs)

    def program(self, x: Value, output: Value, name: str) -> IntegerProgram:
        return IntegerProgram(
            input=x,
            output=output.name,
            values=self.values,
            constants=self.constants,
            ops=self.ops,
            arrays=self.arrays,
            elements=self.elements,
            name=name,
        )


def _magnitude(item: Value | Constant) -> int:
    return max(abs(item.lo), abs(item.hi))  # type: ignore[arg-type]


def window_terms(size: int, out: int, kernel: int, stride: int, pad: int) -> int:
    """In-bounds window elements summed along one axis."""
    total = 0
    for index in range(out):
        start = index * stride - pad
        total += min(start + kernel, size) - max(start, 0)
    return total


def lower(model: nn.Module, *, with_constants: bool | None = None) -> IntegerProgram:
    """The integer program of an eval-mode network built by :func:`space.build.build_model`.

    On the meta device (or with ``with_constants=False``) the program has operations, shapes
    and ranges but no constants. A module that does not know how to lower raises
    :class:`LoweringError` naming its type and path.
    """
    lower_fn = getattr(model, "lower", None)
    arch = getattr(model, "arch", None)
    if lower_fn is None or arch is None:
        raise LoweringError(
            f"cannot lower {type(model).__qualname__}: pass a network built by "
            "space.build_model (it lowers itself part by part)"
        )
    if with_constants is None:
        with_constants = not any(p.is_meta for p in model.parameters())
    builder = ProgramBuilder(with_constants=with_constants)
    pixel_bits = 8 if getattr(arch, "input", None) is not None else 32
    x = builder.input((arch.input_channels, arch.resolution, arch.resolution), bits=pixel_bits)
    with torch.no_grad():
        output = lower_fn(builder, x)
    return builder.program(x, output, arch.name)


def require_lowering(module: nn.Module, path: str) -> Any:
    """``module.lower``, or :class:`LoweringError` naming the type and path (strict: an
    operation without a lowering would be run but not charged)."""
    fn = getattr(module, "lower", None)
    if fn is None:
        name = f"{type(module).__module__}.{type(module).__qualname__}"
        raise LoweringError(
            f"cannot lower module {path!r} of type {name}: it has no lower() method (strict: a "
            "silent undercount corrupts the Pareto front)"
        )
    return fn
