"""`pikenas verify` fails on a lowering bug: the numpy runner and the PyTorch eval forward run
the same (wrong) program, so only the training forward, which never sees the lowering, can
tell. Each bug is injected into the lowering functions of ``space/nn/_requant.py`` (through
the names ``space/nn/norms.py`` calls) and must make ``verify`` exit 1; the unpatched network
exits 0 (so the test can fail)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pikenas.search.cli import app
from pikenas.space.nn import _requant, norms
from pikenas.space.program.builder import ProgramBuilder

torch.set_num_threads(1)
runner = CliRunner()
#: large enough inputs that some outputs saturate, so a missing clip shows.
ARGS = ["--json", "--images", "16"]


def _verify(name: str) -> dict[str, Any]:
    result = runner.invoke(app, ["verify", name, *ARGS])
    assert result.exit_code in (0, 1), result.output
    data = json.loads(result.stdout)
    data["exit_code"] = result.exit_code
    return data


def _after(lowering: Callable[..., Any], edit: Callable[[ProgramBuilder, Any], None]) -> Any:
    """``lowering`` followed by ``edit(builder, result)`` on what it emitted."""

    def patched(builder: ProgramBuilder, *args: Any, **kwargs: Any) -> Any:
        result = lowering(builder, *args, **kwargs)
        if builder.with_constants:
            edit(builder, result)
        return result

    return patched


def _last(builder: ProgramBuilder, op: str) -> Any:
    return next(o for o in reversed(builder.ops) if o.op == op)


def _shift_off_by_one(builder: ProgramBuilder, result: Any) -> None:
    amount = _last(builder, "shift").inputs[1]
    builder.arrays[amount] = builder.arrays[amount] - 1


def _drop_clip(builder: ProgramBuilder, result: Any) -> None:
    clip = _last(builder, "clip")
    source = builder.values[clip.inputs[0]]
    if source.dtype == "int":
        clip.attrs.update(lo=source.lo, hi=source.hi)
    else:
        clip.attrs.update(lo=-3e38, hi=3e38)


def _drop_float_rounding(builder: ProgramBuilder, result: Any) -> None:
    """``round`` of ``t - 0.5``: floor instead of half-up (the +0.5 forgotten)."""
    rounding = _last(builder, "round")
    half = builder.constant("-half", torch.tensor(-0.5), shape=(), dtype="float")
    source = builder.values[rounding.inputs[0]]
    shifted = builder.add(source, half, kind="requantize")
    moved = builder.ops.pop()  # emitted last: move it before the round
    builder.ops.insert(builder.ops.index(rounding), moved)
    index = builder.ops.index(rounding)
    builder.ops[index] = type(rounding)(
        rounding.op, (shifted.name, *rounding.inputs[1:]), rounding.output, rounding.layer,
        rounding.kind, rounding.attrs,
    )


def _no_rounding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_requant, "_rounding", lambda exponent: torch.zeros_like(exponent))


BUGS: dict[str, tuple[str, Callable[[pytest.MonkeyPatch], None]]] = {
    "integer rounding constant dropped": ("tiny-pikelpn", _no_rounding),
    "integer shift off by one": (
        "tiny-pikelpn",
        lambda mp: mp.setattr(norms, "lower_integer", _after(_requant.lower_integer,
                                                             _shift_off_by_one)),
    ),
    "integer clip dropped": (
        "tiny-pikelpn",
        lambda mp: mp.setattr(norms, "lower_integer", _after(_requant.lower_integer, _drop_clip)),
    ),
    "float rounding dropped": (
        "tiny-w8a8",
        lambda mp: mp.setattr(norms, "lower_float", _after(_requant.lower_float,
                                                           _drop_float_rounding)),
    ),
    "float clip dropped": (
        "tiny-w8a8",
        lambda mp: mp.setattr(norms, "lower_float", _after(_requant.lower_float, _drop_clip)),
    ),
}


@pytest.mark.parametrize("name", sorted({model for model, _ in BUGS.values()}))
def test_the_unpatched_network_passes(name: str) -> None:
    data = _verify(name)
    assert data["exit_code"] == 0 and data["exact"], data["failures"]
    assert data["training_forward"]["codes_compared"] > 0


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_a_lowering_bug_makes_verify_exit_1(bug: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name, inject = BUGS[bug]
    inject(monkeypatch)
    data = _verify(name)
    assert data["exit_code"] == 1, f"{bug}: verify passed: {data['failures']}"
    assert not data["exact"] and data["failures"]
    # both runners execute the same wrong program: only the training forward, or the declared
    # ranges the bug breaks, can see it
    forward = data["training_forward"]
    assert forward["mismatches_not_at_ties"] > 0 or data["overflows"], data["failures"]
    assert np.isfinite(data["max_logit_diff"])


def test_a_code_one_grid_step_below_a_half_is_a_tie() -> None:
    """An integer QuantNorm's training forward computes on a grid of 2^e output steps, rounded
    there in float32: an exact half (the program rounds it up) can come out one grid step
    below (measured: 15.498046875 = 15.5 - 2^-9 on a trained Fashion-MNIST network). That is a
    tie; a code off by more than a grid step, or on a coarse grid, is not."""
    import numpy as np
    import torch

    from pikenas.evaluators import verify

    class Value:
        bits, scale = 8, 1.0

    units = np.full((4, 2, 2, 2), 3.0)
    units[:, 0] += np.arange(8).reshape(4, 2, 1) * 2.0**-9  # channel 0 on a 2^-9 grid
    units[:, 1] = np.arange(8).reshape(4, 2, 1) * 0.5  # channel 1 on a grid of 1/2
    wrong = np.zeros(units.shape, dtype=bool)
    units[0, 0, 0, 0] = 15.5 - 2.0**-9
    units[1, 0, 0, 0] = 15.25  # on the grid, a quarter from the half
    units[2, 1, 0, 0] = 15.0
    wrong[0, 0, 0, 0] = wrong[1, 0, 0, 0] = wrong[2, 1, 0, 0] = True
    assert verify._not_ties(wrong, torch.from_numpy(units), Value()) == 2
