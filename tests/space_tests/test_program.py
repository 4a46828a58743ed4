"""The integer program: operation semantics of the numpy runner, worked out by hand; range
checks; files (program.json + program.safetensors) and their refusal of bad content."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pikenas.space.program.builder import LoweringError, ProgramBuilder
from pikenas.space.program.ir import (
    Constant,
    IntegerProgram,
    ProgramError,
    ProgramOverflowError,
    Value,
    range_bits,
    read_safetensors,
    write_safetensors,
)
from pikenas.space.program.pricing import primitives


def _builder() -> ProgramBuilder:
    return ProgramBuilder(with_constants=True)


def _int_input(builder: ProgramBuilder, shape: tuple[int, ...]) -> tuple[Value, Value]:
    """A float input turned into int codes in [-128, 127] (what every network starts with)."""
    x = builder.input(shape)
    clipped = builder.clip(x, -128.0, 127.0, kind="t")
    return x, builder.round(clipped, -128, 127, kind="t", scale=1.0)


def test_range_bits() -> None:
    assert range_bits(0, 255) == 8
    assert range_bits(-128, 127) == 8
    assert range_bits(-128, 128) == 9
    assert range_bits(-1, 1) == 2
    assert range_bits(0, 1) == 1
    assert range_bits(-(2**40), 2**40) == 42


def test_round_is_half_up_and_clip_counts_binding_bounds() -> None:
    builder = _builder()
    x, q = _int_input(builder, (6,))
    program = builder.program(x, q, "t")
    out = program.run(np.array([[-2.5, -1.5, -0.5, 0.5, 1.5, 300.0]], np.float32)).output
    assert out.tolist() == [[-2, -1, 0, 1, 2, 127]]
    clip = program.ops[0]
    assert primitives(program, clip) == [("compare", 12, 32, 32, True)]  # two float bounds
    assert primitives(program, program.ops[1]) == [("round", 6, 32, 32, True)]


def test_shift_is_floor_division_and_left_shift() -> None:
    builder = _builder()
    x, q = _int_input(builder, (2, 1, 1))
    amount = builder.constant("a", np.array([-2, 3]), shape=(2, 1, 1), dtype="int", lo=-2, hi=3)
    y = builder.shift(q, amount, kind="t")
    assert (y.lo, y.hi) == (-128 * 8, 127 * 8)
    program = builder.program(x, y, "t")
    out = program.run(np.array([[[[-7.0]], [[-7.0]]], [[[7.0]], [[5.0]]]], np.float32)).output
    assert out.reshape(2, 2).tolist() == [[-2, -56], [1, 40]]  # floor(-7/4) = -2
    assert primitives(program, program.ops[-1]) == [("shift", 2, 8, 8, False)]


def test_int_clip_counts_only_bounds_that_can_bind() -> None:
    builder = _builder()
    x, q = _int_input(builder, (3,))
    low_only = builder.clip(q, 0, 127, kind="t")  # hi == input hi: cannot bind
    program = builder.program(x, low_only, "t")
    assert primitives(program, program.ops[-1]) == [("compare", 3, 8, 8, False)]
    assert (low_only.lo, low_only.hi) == (0, 127)


def test_mul_add_select_sign_and_the_ranges_they_declare() -> None:
    builder = _builder()
    x, q = _int_input(builder, (2, 1, 1))
    k = builder.constant("k", np.array([3, -2]), shape=(2, 1, 1), dtype="int", lo=-3, hi=3)
    product = builder.mul(q, k, kind="t")
    assert (product.lo, product.hi) == (-384, 384) and product.bits == 10
    bias = builder.constant("b", np.array([1, 1]), shape=(2, 1, 1), dtype="int", lo=0, hi=1)
    total = builder.add(product, bias, kind="t")
    factor = builder.select(total, k, bias, kind="t")  # >= 0: k, else: bias
    signs = builder.sign(factor, kind="t")
    program = builder.program(x, signs, "t")
    result = program.run(np.array([[[[2.0]], [[5.0]]], [[[-1.0]], [[0.0]]]], np.float32), keep=True)
    assert result.values[total.name].reshape(2, 2).tolist() == [[7, -9], [-2, 1]]
    assert result.values[factor.name].reshape(2, 2).tolist() == [[3, 1], [1, -2]]
    assert result.output.reshape(2, 2).tolist() == [[1, 1], [1, -1]]  # sign(0) would be +1
    assert primitives(program, program.ops[2]) == [("mul", 2, 8, 3, False)]
    assert primitives(program, program.ops[3]) == [("add", 2, 10, 10, False)]
    assert primitives(program, program.ops[5]) == [("compare", 2, 3, 3, False)]


def test_float_sums_run_in_a_fixed_order() -> None:
    builder = _builder()
    x = builder.input((1, 2, 2))
    total = builder.sum(x, mode="global", kind="pool")
    program = builder.program(x, total, "t")
    values = np.array([[[[1e8, 1.0], [-1e8, 1.0]]]], np.float32)
    # ((1e8 + 1) - 1e8) + 1 in float32: the first 1 is lost, the last one kept
    assert program.run(values).output.reshape(-1).tolist() == [1.0]
    assert primitives(program, program.ops[0]) == [("add", 3, 32, 32, True)]


def test_window_sum_counts_in_bounds_terms_only() -> None:
    builder = _builder()
    x, q = _int_input(builder, (1, 3, 3))
    pooled = builder.sum(q, mode="window", kind="pool", kernel=3, stride=2, padding=[1, 1, 1, 1])
    assert pooled.shape == (1, 2, 2)
    program = builder.program(x, pooled, "t")
    ones = np.ones((1, 1, 3, 3), np.float32)
    assert program.run(ones).output.reshape(-1).tolist() == [4, 4, 4, 4]  # corners see 2x2
    assert primitives(program, program.ops[-1]) == [
        ("add", 12, 12, 12, False)
    ]  # 16 - 4 terms; [-1152, 1143]


def test_conv_is_exact_on_integers_and_counts_macs() -> None:
    builder = _builder()
    x, q = _int_input(builder, (2, 3, 3))
    weights = np.arange(-9, 9).reshape(2, 1, 3, 3)
    w = builder.constant("w", weights, shape=(2, 1, 3, 3), dtype="int", lo=-9, hi=9, bits=5)
    acc = builder.conv(q, w, stride=1, padding=(1, 1, 1, 1), groups=2)
    program = builder.program(x, acc, "t")
    image = np.random.default_rng(0).integers(-128, 128, (2, 2, 3, 3)).astype(np.float32)
    out = program.run(image).output
    padded = np.pad(image.astype(np.int64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = np.zeros((2, 2, 3, 3), np.int64)
    for c in range(2):
        for i in range(3):
            for j in range(3):
                expected[:, c, i, j] = (padded[:, c, i : i + 3, j : j + 3] * weights[c, 0]).sum(
                    (1, 2)
                )
    assert np.array_equal(out, expected)
    assert acc.hi == 9 * 9 * 128
    assert primitives(program, program.ops[-1]) == [("mac", 18 * 9, 5, 8, False)]


def test_prefix_add_adds_only_the_first_channels() -> None:
    builder = _builder()
    x = builder.input((3, 1, 1))
    part = builder.sum(x, mode="groups", kind="t", out_channels=1, group=2)
    total = builder.add(x, part, kind="t")
    program = builder.program(x, total, "t")
    out = program.run(np.array([[[[1.0]], [[2.0]], [[5.0]]]], np.float32)).output
    assert out.reshape(-1).tolist() == [4.0, 2.0, 5.0]
    assert primitives(program, program.ops[-1]) == [("add", 1, 32, 32, True)]


def test_overflow_names_the_op_and_the_layer() -> None:
    builder = _builder()
    x, q = _int_input(builder, (1,))
    program = builder.program(x, q, "t")
    narrowed = {**program.values, q.name: Value(q.name, q.shape, "int", 4, -8, 7, 1.0)}
    program.values = narrowed
    with pytest.raises(ProgramOverflowError, match=r"\(model\): round .* outside its declared"):
        program.run(np.array([[100.0]], np.float32))
    assert program.run(np.array([[3.0]], np.float32)).widest == {"(model)": (2, 4)}


def test_constants_outside_their_range_are_refused() -> None:
    builder = _builder()
    with pytest.raises(LoweringError, match="not an integer in"):
        builder.constant("k", np.array([4]), shape=(1,), dtype="int", lo=-3, hi=3)
    with pytest.raises(LoweringError, match="not finite"):
        builder.constant("m", np.array([np.nan]), shape=(1,), dtype="float")


def test_files_round_trip(tmp_path: Path) -> None:
    builder = _builder()
    x, q = _int_input(builder, (2, 1, 1))
    k = builder.constant("k", np.array([3, -2]), shape=(2, 1, 1), dtype="int", lo=-3, hi=3)
    m = builder.constant("m", np.array([0.5, 0.25]), shape=(2, 1, 1), dtype="float")
    one = builder.constant("one", np.array(1), shape=(), dtype="int", lo=0, hi=1)
    y = builder.mul(builder.mul(builder.add(q, one, kind="t"), k, kind="t"), m, kind="t")
    program = builder.program(x, y, "round-trip")
    program.save(tmp_path)
    loaded = IntegerProgram.load(tmp_path)
    assert loaded.to_dict() == program.to_dict()
    image = np.array([[[[3.0]], [[-4.0]]]], np.float32)
    assert np.array_equal(loaded.run(image).output, program.run(image).output)
    assert loaded.arrays[k.name].dtype == np.int64 and loaded.arrays[m.name].dtype == np.float32


def test_safetensors_reader_matches_the_library(tmp_path: Path) -> None:
    safetensors = pytest.importorskip("safetensors.numpy")
    arrays = {"a": np.arange(6, dtype=np.int64).reshape(2, 3), "b": np.float32([1.5, -2])}
    write_safetensors(tmp_path / "x.safetensors", arrays)
    theirs = safetensors.load_file(str(tmp_path / "x.safetensors"))
    ours = read_safetensors(tmp_path / "x.safetensors")
    for name, array in arrays.items():
        assert np.array_equal(theirs[name], array) and np.array_equal(ours[name], array)


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.update(version=99),
        lambda d: d["ops"][0].update(op="fft"),
        lambda d: d.pop("values"),
        lambda d: d["constants"][0].update(shape=[7]),
    ],
)
def test_damaged_program_files_give_one_clear_error(tmp_path: Path, damage) -> None:  # noqa: ANN001
    builder = _builder()
    x, q = _int_input(builder, (2, 1, 1))
    k = builder.constant("k", np.array([3, -2]), shape=(2, 1, 1), dtype="int", lo=-3, hi=3)
    builder.program(x, builder.mul(q, k, kind="t"), "t").save(tmp_path)
    data = json.loads((tmp_path / "program.json").read_text())
    damage(data)
    (tmp_path / "program.json").write_text(json.dumps(data))
    with pytest.raises(ProgramError):
        IntegerProgram.load(tmp_path)


def test_constants_out_of_range_in_a_file_are_refused(tmp_path: Path) -> None:
    builder = _builder()
    x, q = _int_input(builder, (2, 1, 1))
    k = builder.constant("k", np.array([3, -2]), shape=(2, 1, 1), dtype="int", lo=-3, hi=3)
    builder.program(x, builder.mul(q, k, kind="t"), "t").save(tmp_path)
    write_safetensors(tmp_path / "program.safetensors", {k.name: np.array([[[9]], [[0]]])})
    with pytest.raises(ProgramError, match="outside its declared range"):
        IntegerProgram.load(tmp_path)
    (tmp_path / "program.safetensors").write_bytes(b"\x01")
    with pytest.raises(ProgramError, match="cannot read constants"):
        IntegerProgram.load(tmp_path)


def test_a_shape_only_program_cannot_run() -> None:
    builder = ProgramBuilder(with_constants=False)
    x, q = _int_input(builder, (1,))
    k = builder.constant("k", None, shape=(1,), dtype="int", lo=-3, hi=3)
    program = builder.program(x, builder.mul(q, k, kind="t"), "t")
    assert isinstance(program.constants[k.name], Constant) and not program.arrays
    with pytest.raises(ProgramError, match="shape-only"):
        program.run(np.zeros((1, 1), np.float32))
