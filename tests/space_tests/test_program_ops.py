"""Every :class:`Op` through every interpreter of the integer program: the numpy runner (the
reference), the torch runner, the ACE pricing, the ONNX export (run in onnxruntime), the QONNX
export (run in qonnx where installed) and the importer round trip (QONNX -> program -> ACE).

Each interpreter either handles an op (same codes as numpy, same ACE as the native count) or
refuses it with an error naming it. ``CASES`` holds one tiny program per op and must cover
``Op``: adding an op without a case, or without an entry in any interpreter's table, fails here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from pikenas.evaluators.cost import count_ace
from pikenas.space.program._torch_runner import TORCH_OPS, TorchProgram
from pikenas.space.program.builder import ProgramBuilder
from pikenas.space.program.ir import (
    NUMPY_OPS,
    OP_KINDS,
    OP_SPECS,
    IntegerProgram,
    Op,
    Operation,
    OpFamily,
    ProgramError,
    Value,
    op_function,
)
from pikenas.space.program.onnx.export_onnx import ONNX_OPS, program_to_onnx
from pikenas.space.program.onnx.export_qonnx import QONNX_OPS, program_to_qonnx
from pikenas.space.program.onnx.importer import import_onnx
from pikenas.space.program.pricing import PRICES, primitives

torch.set_num_threads(1)

SHAPE = (2, 3, 3)  # (C, H, W) of one sample
TABLES = {
    "numpy": NUMPY_OPS,
    "torch": TORCH_OPS,
    "pricing": PRICES,
    "onnx": ONNX_OPS,
    "qonnx": QONNX_OPS,
}


def _codes(builder: ProgramBuilder) -> tuple[Value, Value]:
    """The float input and its 4-bit signed codes (clip, then half-up rounding)."""
    x = builder.input(SHAPE)
    clipped = builder.clip(x, -8.0, 7.0, kind="input")
    return x, builder.round(clipped, -8, 7, kind="input")


def _int(builder: ProgramBuilder, hint: str, array: list, lo: int, hi: int) -> object:
    data = np.array(array, dtype=np.int64)
    return builder.constant(hint, data, shape=data.shape, dtype="int", lo=lo, hi=hi)


def _conv(b: ProgramBuilder, q: Value) -> Value:
    weight = np.arange(-18, 18).reshape(4, 1, 3, 3) % 7 - 3
    w = b.constant("w", weight, shape=(4, 1, 3, 3), dtype="int", lo=-3, hi=3)
    return b.conv(q, w, stride=1, padding=(1, 1, 1, 1), groups=2)


def _linear(b: ProgramBuilder, q: Value) -> Value:
    flat = b.reshape("flatten", q, (18,))
    w = b.constant(
        "w", np.arange(54).reshape(3, 18) % 5 - 2, shape=(3, 18), dtype="int", lo=-2, hi=2
    )
    return b.linear(flat, w)


def _mul(b: ProgramBuilder, q: Value) -> Value:
    return b.mul(q, _int(b, "k", [[[3]], [[-2]]], -4, 3), kind="t")


def _add(b: ProgramBuilder, q: Value) -> Value:
    return b.add(q, _int(b, "bias", [[[5]], [[-6]]], -8, 7), kind="t")


def _shift(b: ProgramBuilder, q: Value) -> Value:
    return b.shift(q, _int(b, "amount", [[[-1]], [[2]]], -1, 2), kind="t")


def _round(b: ProgramBuilder, q: Value) -> Value:
    return q  # the input stage: clip, then round


def _clip(b: ProgramBuilder, q: Value) -> Value:
    return b.clip(q, -3, 3, kind="t")


def _sign(b: ProgramBuilder, q: Value) -> Value:
    return b.sign(q, kind="t")


def _select(b: ProgramBuilder, q: Value) -> Value:
    return b.select(q, q, _int(b, "low", [[[-1]], [[-2]]], -2, 0), kind="t")


def _sum(b: ProgramBuilder, q: Value) -> Value:
    return b.sum(q, mode="global", kind="pool")


def _pad(b: ProgramBuilder, q: Value) -> Value:
    return b.reshape("pad", q, (4, 3, 3), out_channels=4)


def _tile(b: ProgramBuilder, q: Value) -> Value:
    return b.reshape("tile", q, (4, 3, 3), repeats=2)


def _flatten(b: ProgramBuilder, q: Value) -> Value:
    return b.reshape("flatten", q, (18,))


#: one tiny program per op, built on the input codes
CASES: dict[Op, Callable[[ProgramBuilder, Value], Value]] = {
    Op.CONV: _conv,
    Op.LINEAR: _linear,
    Op.MUL: _mul,
    Op.ADD: _add,
    Op.SHIFT: _shift,
    Op.ROUND: _round,
    Op.CLIP: _clip,
    Op.SIGN: _sign,
    Op.SELECT: _select,
    Op.SUM: _sum,
    Op.PAD: _pad,
    Op.TILE: _tile,
    Op.FLATTEN: _flatten,
}


def _program(op: Op) -> IntegerProgram:
    builder = ProgramBuilder(with_constants=True)
    x, q = _codes(builder)
    with builder.layer("case"):
        out = CASES[op](builder, q)
    program = builder.program(x, out, f"case-{op.value}")
    assert op in {o.op for o in program.ops}
    return program


def _images(count: int = 3) -> np.ndarray:
    rng = np.random.default_rng(7)
    images = rng.uniform(-10.0, 10.0, size=(count, *SHAPE)).astype(np.float32)
    images[0, 0, 0, :] = [-0.5, 0.5, 2.5]  # rounding ties
    return images


def test_every_op_has_a_spec_a_case_and_an_entry_in_every_table() -> None:
    assert set(OP_SPECS) == set(Op) and set(CASES) == set(Op)
    for name, table in TABLES.items():
        missing = sorted(op.value for op in set(Op) - set(table))
        assert not missing, f"the {name} table has no entry for {missing}"
    for op, spec in OP_SPECS.items():
        assert spec.priced_as in (*OP_KINDS, None), op
        assert (spec.priced_as is None) == (spec.family is OpFamily.MOVEMENT), op


@pytest.mark.parametrize("op", list(Op), ids=lambda op: op.value)
def test_every_interpreter_handles_the_op_like_numpy(op: Op) -> None:
    program = _program(op)
    images = _images()
    expected = program.run(images).output
    # torch
    actual = TorchProgram(program, "cpu")(torch.from_numpy(images)).numpy()
    np.testing.assert_array_equal(actual, expected)
    # pricing: the spec's kind, a positive count, or explicitly free
    operations = [o for o in program.ops if o.op is op]
    found = [p for o in operations for p in primitives(program, o)]
    kind = OP_SPECS[op].priced_as
    if kind is None:
        assert found == []
    else:
        assert found and all(p[0] == kind and p[1] > 0 for p in found), found
    # ONNX in onnxruntime: the same codes
    import onnxruntime

    model = program_to_onnx(program)
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    logits = session.run(["logits"], {"input": images})[0]
    np.testing.assert_array_equal(logits, expected.astype(np.float32))
    # QONNX: the same codes in qonnx's executor (where installed), the same ACE once imported
    qonnx_model = program_to_qonnx(program)
    imported = count_ace(import_onnx(qonnx_model))
    native = count_ace(program)
    assert (imported.ace_v1, imported.ace_v2, imported.macs) == (
        native.ace_v1,
        native.ace_v2,
        native.macs,
    )
    assert imported.op_totals == native.op_totals
    pytest.importorskip("qonnx")
    from pikenas.results.export._qonnx_check import run_qonnx

    np.testing.assert_array_equal(run_qonnx(qonnx_model, images), expected.astype(np.float32))


@pytest.mark.parametrize("name", list(TABLES))
def test_a_table_without_an_op_refuses_it_by_name(name: str) -> None:
    partial = {op: fn for op, fn in TABLES[name].items() if op is not Op.SHIFT}
    with pytest.raises(ProgramError, match=r"no function for op 'shift'.*knows: conv"):
        op_function(partial, "shift", name)


def test_the_pricing_refuses_an_op_it_has_no_price_for(monkeypatch: pytest.MonkeyPatch) -> None:
    program = _program(Op.SHIFT)
    monkeypatch.delitem(PRICES, Op.SHIFT)
    shift = next(o for o in program.ops if o.op is Op.SHIFT)
    with pytest.raises(ProgramError, match="shift"):
        primitives(program, shift)
    with pytest.raises(ProgramError, match="shift"):
        count_ace(program)


def test_the_runners_name_the_op_and_layer_that_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    program = _program(Op.MUL)

    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setitem(NUMPY_OPS, Op.MUL, broken)
    with pytest.raises(RuntimeError, match="boom") as info:
        program.run(_images())
    assert any("op mul" in note and "'case'" in note for note in info.value.__notes__)


def test_an_unknown_op_is_one_clear_error() -> None:
    with pytest.raises(ProgramError, match="unknown op 'warp' in layer 'x'; the ops are conv"):
        Operation("warp", ("a",), "b", "x")
    data = _program(Op.ADD).to_dict()
    data["ops"][1]["op"] = "warp"
    with pytest.raises(ProgramError, match="unknown op 'warp'"):
        IntegerProgram.from_dict(data)
    with pytest.raises(ProgramError, match="takes 2 inputs"):
        Operation("add", ("a",), "b", "x")
    with pytest.raises(ProgramError, match=r"needs the attributes \['lo', 'hi'\]"):
        Operation("clip", ("a",), "b", "x")


def test_program_files_keep_op_names_as_strings() -> None:
    data = _program(Op.CONV).to_dict()
    assert all(type(o["op"]) is str for o in data["ops"])
    assert IntegerProgram.from_dict(data).ops[-1].op is Op.CONV
