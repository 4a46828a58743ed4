"""The torch runner's integer conv / linear: exact float32 products (one, or one per weight
digit) or float64, always equal to the numpy reference runner."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pikenas.space.program._torch_runner import TorchProgram
from pikenas.space.program.ir import Constant, IntegerProgram, Operation, Value

torch.set_num_threads(1)


def _program(op: str, x_max: int, w_max: int, channels: int = 8) -> IntegerProgram:
    """``round(input)`` declared in ``[-x_max, x_max]``, then an integer conv 3x3 (stride 2,
    asymmetric padding) or linear with random codes in ``[-w_max, w_max]`` (the extremes
    included, so the partial sums reach the declared bound's order)."""
    rng = np.random.default_rng(0)
    if op == "conv":
        in_shape, w_shape, out_shape = (channels, 9, 9), (6, channels, 3, 3), (6, 5, 5)
        attrs = {"stride": 2, "padding": [0, 1, 0, 1], "groups": 1}
    else:
        in_shape, w_shape, out_shape, attrs = (channels,), (5, channels), (5,), {}
    codes = rng.integers(-w_max, w_max + 1, size=w_shape)
    codes.flat[0], codes.flat[-1] = w_max, -w_max
    fan_in = int(np.prod(w_shape[1:]))
    bound = fan_in * w_max * x_max
    values = {
        "input": Value("input", in_shape, "float", 32),
        "x": Value("x", in_shape, "int", 32, lo=-x_max, hi=x_max),
        "acc": Value("acc", out_shape, "int", 64, lo=-bound, hi=bound),
    }
    weight = Constant("w", w_shape, "int", 32, lo=-w_max, hi=w_max)
    ops = [
        Operation("round", ("input",), "x", "layer"),
        Operation(op, ("x", "w"), "acc", "layer", attrs=attrs),
    ]
    return IntegerProgram(
        values["input"], "acc", values, {"w": weight}, ops, arrays={"w": codes.astype(np.int64)}
    )


@pytest.mark.parametrize("op", ["conv", "linear"])
@pytest.mark.parametrize(
    ("x_max", "w_max", "kind"),
    [
        (255, 127, "float32"),  # 8-bit: one exact float32 product
        (255, 2**20, "digits"),  # wide weights: base-2^b digits, recombined in int64
        (2**40, 3, "float64"),  # not even one-bit digits fit float32
    ],
)
def test_integer_products_equal_the_numpy_runner(
    op: str, x_max: int, w_max: int, kind: str
) -> None:
    program = _program(op, x_max, w_max)
    shape = (4, *program.input.shape)
    rng = np.random.default_rng(1)
    x = rng.integers(-x_max, x_max + 1, size=shape).astype(np.float64)
    x.flat[:8] = [x_max, -x_max] * 4  # the extremes: the largest partial sums
    if kind == "float64":
        x = np.clip(x, -(2**23), 2**23)  # float32 input values stay exact
    x = x.astype(np.float32)
    runner = TorchProgram(program, "cpu")
    plan = runner.products["acc"]
    dtypes = {weight.dtype for weight, _ in plan.parts}
    if kind == "float32":
        assert len(plan.parts) == 1 and dtypes == {torch.float32}
    elif kind == "digits":
        assert len(plan.parts) > 1 and dtypes == {torch.float32}
    else:
        assert dtypes == {torch.float64}
    expected = program.run(x, check=False).output
    got = runner(torch.from_numpy(x))
    assert got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), expected)


# ---- integer values on float carriers ----------------------------------------------------------
def _chain(
    steps: list[tuple[str, str, tuple[str, ...], int | None, dict]], arrays: dict
) -> IntegerProgram:
    """``input (2, 4, 4) float -> round -> x in [-2^20, 2^20]``, then ``steps``:
    ``(op, output, inputs, bound of the output (None: float), attrs)``."""
    shape = (2, 4, 4)
    values = {
        "input": Value("input", shape, "float", 32),
        "x": Value("x", shape, "int", 32, lo=-(2**20), hi=2**20),
    }
    ops = [Operation("round", ("input",), "x", "layer")]
    for op, output, inputs, bound, attrs in steps:
        source = values[inputs[0]].shape
        if op == "flatten":
            out_shape: tuple[int, ...] = (math.prod(source),)
        elif attrs.get("mode") == "global":
            out_shape = (source[0], 1, 1)
        else:
            out_shape = source
        if bound is None:
            values[output] = Value(output, out_shape, "float", 32)
        else:
            values[output] = Value(output, out_shape, "int", 64, lo=-bound, hi=bound)
        ops.append(Operation(op, inputs, output, "layer", attrs=attrs))
    constants = {
        name: Constant(
            name,
            array.shape,
            "int" if array.dtype.kind == "i" else "float",
            32,
            lo=int(array.min()) if array.dtype.kind == "i" else None,
            hi=int(array.max()) if array.dtype.kind == "i" else None,
        )
        for name, array in arrays.items()
    }
    return IntegerProgram(values["input"], ops[-1].output, values, constants, ops, arrays=arrays)


def _same_as_numpy(program: IntegerProgram) -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(-(2**20), 2**20 + 1, size=(3, 2, 4, 4)).astype(np.float32)
    x.flat[:2] = [2**20, -(2**20)]
    reference = program.run(x, keep=True, check=False)
    runner = TorchProgram(program, "cpu")
    got = runner(torch.from_numpy(x))  # values overwritten in place where no one reads them
    np.testing.assert_array_equal(got.numpy(), reference.output)
    _, kept = runner.run(torch.from_numpy(x), keep=True)
    for name, expected in reference.values.items():
        assert kept[name].dtype == (torch.int64 if expected.dtype.kind == "i" else torch.float32)
        np.testing.assert_array_equal(kept[name].numpy(), expected, err_msg=name)


def test_wide_integers_stay_exact_on_float_carriers() -> None:
    """Results past 2^24 (a shift's, a product's) and past 2^53 (int64) equal numpy's."""
    i64 = np.int64
    arrays = {
        "up": np.array([[[11]], [[3]]], dtype=i64),  # x * 2^11: past 2^24 on float32
        "down": np.array([[[-30]], [[-2]]], dtype=i64),
        "m": np.array([[[987_654_321]], [[-5]]], dtype=i64),  # x * 2^11 * m: past 2^53
        "k": np.array(7, dtype=i64),
        "half": np.array(0.5, dtype=np.float32),
    }
    steps = [
        ("shift", "s", ("x", "up"), 2**31, {}),
        ("add", "a", ("s", "k"), 2**31 + 7, {}),
        ("mul", "p", ("a", "m"), 2**62, {}),  # int64
        ("shift", "d", ("p", "down"), 2**62, {}),
        ("clip", "c", ("d",), 2**40, {"lo": -(2**40), "hi": 2**40}),  # float64
        ("mul", "f", ("c", "half"), None, {}),  # an int meets a float: float32 as numpy
        ("round", "r", ("f",), 2**40, {}),
        ("sum", "g", ("r",), 16 * 2**40, {"mode": "global", "terms": 16}),
    ]
    _same_as_numpy(_chain(steps, arrays))


def test_a_value_read_again_is_never_overwritten() -> None:
    """In-place forms only write into values no later operation reads, views included."""
    arrays = {"k": np.array(3, dtype=np.int64)}
    steps = [
        ("clip", "c", ("x",), 2**20, {"lo": -5, "hi": 5}),  # x is read again below
        ("flatten", "v", ("c",), 2**20, {}),  # a view of c ...
        ("clip", "w", ("v",), 2**20, {"lo": -2, "hi": 2}),  # ... overwritten? c is read below
        ("add", "s", ("c", "k"), 2**20 + 3, {}),
        ("add", "t", ("s", "x"), 2**21 + 3, {}),
        ("flatten", "u", ("t",), 2**21 + 3, {}),
        ("add", "o", ("u", "w"), 2**22, {}),
    ]
    _same_as_numpy(_chain(steps, arrays))


def test_signs_and_selects_by_arithmetic_equal_numpy_at_zeros_and_subnormals() -> None:
    """``x >= 0`` holds for both zeros and fails for the smallest subnormal below zero, on
    float32 and on float64 carriers, with constant and value operands."""
    shape = (2, 3, 3)
    f32 = np.float32
    values = {
        "input": Value("input", shape, "float", 32),
        "y": Value("y", shape, "float", 32),
        "s": Value("s", shape, "int", 2, lo=-1, hi=1),
        "p": Value("p", shape, "float", 32),
        "q": Value("q", shape, "float", 32),
        "w": Value("w", shape, "int", 64, lo=-(2**40), hi=2**40),
    }
    arrays = {
        "one": np.array(1.0, dtype=f32),
        "a": np.array([[[1.0]], [[0.5]]], dtype=f32),
        "b": np.array([[[-0.25]], [[0.0]]], dtype=f32),
        "big": np.array([[[2**40]], [[-(2**40)]]], dtype=np.int64),
        "small": np.array([[[3]], [[-7]]], dtype=np.int64),
    }
    constants = {
        "one": Constant("one", (), "float", 32),
        "a": Constant("a", (2, 1, 1), "float", 32),
        "b": Constant("b", (2, 1, 1), "float", 32),
        "big": Constant("big", (2, 1, 1), "int", 64, lo=-(2**40), hi=2**40),
        "small": Constant("small", (2, 1, 1), "int", 8, lo=-7, hi=3),
    }
    ops = [
        Operation("mul", ("input", "one"), "y", "layer"),
        Operation("sign", ("y",), "s", "layer"),
        Operation("select", ("y", "a", "b"), "p", "layer"),  # constants
        Operation("select", ("s", "y", "p"), "q", "layer"),  # values, an int condition
        Operation("select", ("q", "big", "small"), "w", "layer"),  # float64 carriers
    ]
    program = IntegerProgram(values["input"], "w", values, constants, ops, arrays=arrays)
    tiny = np.float32(2.0**-149)
    x = np.array(
        [-0.0, 0.0, tiny, -tiny, 1e30, -1e30, 3.5, -3.5, 2.0**-126] * 4, dtype=f32
    ).reshape(2, *shape)
    reference = program.run(x, keep=True)
    _, kept = TorchProgram(program, "cpu").run(torch.from_numpy(x), keep=True)
    for name, expected in reference.values.items():
        np.testing.assert_array_equal(kept[name].numpy(), expected, err_msg=name)
    assert np.array_equal(reference.values["s"].reshape(-1)[:4], [1, 1, 1, -1])


def _equal_to_numpy(program: IntegerProgram, x: np.ndarray, runs: int = 1) -> None:
    runner = TorchProgram(program, "cpu")
    expected = program.run(x, check=False).output
    for _ in range(runs):  # a constant overwritten in place would show on a later run
        np.testing.assert_array_equal(runner(torch.from_numpy(x)).numpy(), expected)


def test_clips_sums_float_shifts_and_constant_views_equal_numpy() -> None:
    """A clip bound float32 cannot hold after a shift kept in float32; an integer sum whose
    result is a float (partial sums past 2^24); a shift of a float value (numpy truncates);
    a flatten of a constant read by an in-place add; a right shift by 63."""
    i64 = np.int64
    x = np.zeros((1, 2, 4, 4), np.float32)
    x.flat[:3] = [2**20, -(2**20), 12345]
    clip = _chain(
        [
            ("shift", "s", ("x", "up"), 2**27, {}),
            ("clip", "c", ("s",), 2**27, {"lo": -(2**27 - 1), "hi": 2**27 - 1}),
        ],
        {"up": np.array(7, dtype=i64)},
    )
    _equal_to_numpy(clip, x)
    total = _chain(
        [
            ("mul", "m", ("x", "k"), 3 * 2**20, {}),
            ("sum", "g", ("m",), None, {"mode": "global", "terms": 16}),
        ],
        {"k": np.array(3, dtype=i64)},
    )
    wide = np.full((1, 2, 4, 4), 2**20 - 1, np.float32)
    wide.flat[1] = 1
    _equal_to_numpy(total, wide)
    far = _chain([("shift", "r", ("x", "down"), 2**20, {})], {"down": np.array(-63, dtype=i64)})
    _equal_to_numpy(far, x)

    values = {
        "input": Value("input", (2,), "float", 32),
        "x": Value("x", (2,), "int", 8, lo=-9, hi=9),
        "f": Value("f", (2,), "int", 8, lo=-9, hi=9),
        "y": Value("y", (2,), "int", 8, lo=-18, hi=18),
        "s": Value("s", (2,), "int", 8, lo=-9, hi=9),
        "z": Value("z", (2,), "int", 8, lo=-45, hi=45),
    }
    ops = [
        Operation("round", ("input",), "x", "l"),
        Operation("flatten", ("k",), "f", "l"),
        Operation("add", ("f", "x"), "y", "l"),
        Operation("shift", ("input", "zero"), "s", "l"),
        Operation("add", ("y", "s"), "z", "l"),
    ]
    constants = {
        "k": Constant("k", (2,), "int", 8, lo=-9, hi=9),
        "zero": Constant("zero", (), "int", 8, lo=0, hi=0),
    }
    arrays = {"k": np.array([1, 2], dtype=i64), "zero": np.array(0, dtype=i64)}
    program = IntegerProgram(values["input"], "z", values, constants, ops, arrays=arrays)
    _equal_to_numpy(program, np.array([[3.0, -1.5]], np.float32), runs=3)
