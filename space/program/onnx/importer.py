"""ACE v2 of any QONNX or plain ONNX graph: the graph becomes an integer program, which
``pikenas.evaluators.cost.count_onnx`` prices with the same rules and report as our networks.

``import_onnx(path)`` walks the graph once, node by node, and appends to a
a :class:`~..builder.ProgramBuilder` the operations each node executes, so widths come from the
same range rules as a native lowering (accumulator = fan-in x largest weight code x largest input
code, sums and products of declared ranges) and each operation is priced by
:func:`..pricing.primitives`. The program counts; it is not meant to run (data
movement has no operations in it).

How nodes become operations (the cheapest direct form of each node, no fusion across nodes beyond
the two below):

* ``Quant(x, s, 0, b)`` emits integer codes with scale ``s``: on an integer input already on its
  grid a clip; otherwise a float multiply by ``(scale of x) / s`` (skipped when 1), clip and
  round. ``BipolarQuant``: a sign. ``Trunc``: a shift (plus an add for non-FLOOR rounding). A
  ``Quant`` / ``BipolarQuant`` of an initializer is a weight: integer codes, no operation; a
  ``FloatQuant`` with no mantissa on such codes declares them powers of two (b-bit pow2 weights,
  ``1 + exponent bits`` wide).
* ``Conv`` / ``Gemm`` / ``MatMul``: integer MACs when both operands are integer codes (the input
  scale a scalar), else float MACs on dequantized values. The accumulator keeps the product of
  the scales; the next float ``Mul`` or ``BatchNormalization`` folds that dequantization into its
  own multiply (one multiply), any other float consumer pays an explicit one. A depthwise ``Conv``
  with all-ones weights is a sum pool (adds).
* ``Mul`` / ``Add`` / ``Sub`` / ``Div``: integer when both operands are integers (an integer
  constant is one declared by ``Quant`` or by a ``pikenas_range`` annotation), else float. A
  ``Mul`` of integers by powers of two is a shift (the sign of a negative one folded into the
  weights offline, as the native lowering does); below 1 only where a floor follows.
  ``Add(x, 0.5)`` feeding a FLOOR rounding is half-up rounding: no add of its own.
* ``BatchNormalization``: one multiply and one add. ``Relu`` / ``Clip`` / ``Max`` / ``Min``:
  a compare for each bound that can bind (of a constant: none, see below). ``Pow(2, a)``: see
  below. ``GreaterOrEqual(x, 0)`` + ``Where``: a select.
* ``GlobalAveragePool`` / ``ReduceMean`` / ``AveragePool`` / ``ReduceSum``: adds, the division
  folded into the next multiply; ``MaxPool``: one compare per window element beyond the first.
* ``Reshape``, ``Flatten``, ``Transpose``, ``Slice``, ``Concat``, ``Pad``, ``Tile``,
  ``Identity`` and friends move data: free.

Any other node stops the count with :class:`OnnxImportError` naming it (never a silent zero).
Ranges come from the graph's own quantizers: a ``Quant``'s type, narrowed by a ``Clip`` of the
codes (a constant computation: free); ``Pow(2, a)`` of integer codes ``a`` is a power-of-two
multiplier with ``a``'s range (a ``Mul`` by it is a shift over that range). That is how
:mod:`.export_qonnx` writes every declared range. ``model.onnx`` (:mod:`.export_onnx`) has no
quantizers: annotations (keys in :mod:`._common`: ``pikenas_range``, ``pikenas_bits``,
``pikenas_shift``) give its declared ranges. Node ``metadata_props`` ``pikenas.layer`` /
``pikenas.kind`` give layer names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pikenas.space.errors import CostModelError
from pikenas.space.program.builder import ProgramBuilder
from pikenas.space.program.ir import IntegerProgram, ProgramError
from pikenas.space.program.onnx._graph import Entry, GraphReader, OnnxImportError
from pikenas.space.program.onnx._nodes import lower_node, materialize
from pikenas.space.program.onnx._validate import check_value, printable

__all__ = ["import_onnx", "OnnxImportError"]


def import_onnx(source: str | Path | Any) -> IntegerProgram:
    """The integer program (shape-only: for counting) of an ONNX / QONNX model file or
    ``onnx.ModelProto``. Raises :class:`OnnxImportError` (one line) on a file that is not a
    model, on a malformed graph and on a node that cannot be priced."""
    reader = GraphReader(source)
    builder = ProgramBuilder(with_constants=False)
    x = builder.input(reader.input_shape)
    env: dict[str, Entry] = {reader.input_name: Entry(x)}
    for index, node in enumerate(reader.nodes):
        with builder.layer(reader.layer_of(node, index)):
            try:
                lower_node(reader, builder, env, node)
            except OnnxImportError:
                raise
            except (
                CostModelError,
                ProgramError,
                ArithmeticError,
                LookupError,
                TypeError,
                ValueError,
            ) as exc:  # what validate_graph cannot see: named here, one line
                text = " ".join(str(exc).split())[:200] or type(exc).__name__
                raise reader.fail(node, printable(text)) from None
        for name in node.output:
            item = env[name].item if name in env else None
            if item is not None:
                check_value(reader, node, item.shape)
    output = env.get(reader.output_name)
    if output is None:
        raise OnnxImportError(
            f"{reader.label}: the graph output {reader.output_name!r} is not computed"
        )
    with builder.layer("(model)"):
        final = materialize(reader, builder, output, "output")
    return builder.program(x, final, reader.model_name)
