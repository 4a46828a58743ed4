"""Cost declarations: the arithmetic a module executes at inference.

Every pikenas module that computes something declares, for its configuration, the operations
it executes at inference on one forward pass: ``inference_ops(input_shape, output_shape)``
returns a :class:`CostDeclaration`. The ACE counter in ``evaluators`` turns these into ACE v1 /
ACE v2 with a cost table; it never guesses, so a module that computes but declares nothing is a
bug the counter refuses (see :class:`CostDeclaring`).

Operand widths follow DESIGN.md:

* a quantized tensor has its quantizer's bits;
* a float tensor is marked ``float_operands=True`` with width 32 (the cost table may count
  float elementwise operations at 16 bits for fp16/bf16 deployments);
* the integer accumulator of a conv or linear has
  ``min(32, weight_bits + activation_bits + ceil(log2(fan_in)))`` bits
  (:func:`accumulator_bits`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

__all__ = [
    "OP_KINDS",
    "OpKind",
    "Op",
    "CostDeclaration",
    "CostDeclaring",
    "CostContainer",
    "ShapePreserving",
    "accumulator_bits",
    "FLOAT_BITS",
]

OpKind = Literal["mac", "mul", "add", "round", "compare", "shift"]
OP_KINDS: tuple[str, ...] = ("mac", "mul", "add", "round", "compare", "shift")
FLOAT_BITS = 32


@dataclass(frozen=True)
class Op:
    """``count`` executions of one operation kind on operands of ``bits_a`` and ``bits_b`` bits.

    ``op`` is one of :data:`OP_KINDS`: ``mac`` (multiply-accumulate of a conv / linear, cost
    n*m), ``mul`` (elementwise multiply, n*m), ``add`` (add, subtract, n-ary sums counted as
    one add per term; max(n, m)), ``round`` (max(n, m)), ``compare`` (compare, min, max, select,
    ReLU, sign, clipping; max(n, m)), ``shift`` (multiply by a power of two; n).
    ``float_operands`` marks operations on float values (then the widths are 32).
    ``label`` is a short free-text hint shown in the breakdown (``"bn_scale"``, ``"requant"``).
    """

    op: OpKind
    count: int
    bits_a: int
    bits_b: int
    float_operands: bool = False
    label: str = ""

    def __post_init__(self) -> None:
        if self.op not in OP_KINDS:
            raise ValueError(f"unknown op kind {self.op!r}; choose one of {OP_KINDS}")
        if self.count < 0 or self.bits_a < 1 or self.bits_b < 1:
            raise ValueError(f"invalid op {self!r}: count >= 0 and bits >= 1 required")


@dataclass(frozen=True)
class CostDeclaration:
    """What one module executes on one forward pass.

    ``ops``: the operations. ``elements``: for each elementwise module kind the module contains
    (``batchnorm``, ``quantnorm``, ``dprelu``, ``prelu``, ``relu``, ``residual_add``,
    ``squeeze_excite``, ``requantize``, ``pool`` ...) the number of output elements it processes.
    ``params``: parameters stored for inference (weights, folded multipliers), counted once.
    """

    ops: tuple[Op, ...] = ()
    elements: dict[str, int] = field(default_factory=dict)
    params: int = 0

    def __add__(self, other: CostDeclaration) -> CostDeclaration:
        merged = dict(self.elements)
        for kind, n in other.elements.items():
            merged[kind] = merged.get(kind, 0) + n
        return CostDeclaration(self.ops + other.ops, merged, self.params + other.params)


@runtime_checkable
class CostDeclaring(Protocol):
    """A module that declares its own inference arithmetic, including that of its children.

    ``input_shape`` and ``output_shape`` are the shapes ``(N, C, H, W)`` (or ``(N, F)``) of the
    module's first tensor input and its output on the forward pass being counted.
    """

    def inference_ops(
        self, input_shape: tuple[int, ...], output_shape: tuple[int, ...]
    ) -> CostDeclaration: ...


class CostContainer:
    """Mixin marking a module whose forward only calls its children (plus free reshapes).

    The counter recurses into such a module; any other module that neither declares its
    operations nor is a known torch module makes the counter raise.
    """

    cost_container = True


class ShapePreserving:
    """Mixin marking a module whose output has exactly the shape of its first input (norm
    stages, activations, quantizers, residual adds).

    The ACE counter only needs shapes from its forward pass on the meta device, where every
    elementwise op costs about a millisecond of Python; it makes such a module return its
    first input during that pass (hooks still record the shapes; the module's own
    ``inference_ops`` is still counted). Mark only modules whose output shape never differs.
    """

    preserves_shape = True


def accumulator_bits(weight_bits: int, activation_bits: int, fan_in: int) -> int:
    """Width of an integer accumulator: ``min(32, b_w + b_a + ceil(log2(fan_in)))`` bits."""
    if fan_in < 1:
        raise ValueError("fan_in must be >= 1")
    return min(32, weight_bits + activation_bits + math.ceil(math.log2(fan_in)))
