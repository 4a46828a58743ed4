"""The torch runner's integer conv / linear: exact float32 products (one, or one per weight
digit) or float64, always equal to the numpy reference runner."""

from __future__ import annotations

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
