"""``verify``: prove on real inputs that a network's integer program is what PyTorch computes.

Three executions of the same network on the same images:

1. the numpy runner of its :class:`~space.program.IntegerProgram` (int64 / float32, every
   integer intermediate checked against its declared range);
2. the PyTorch eval forward (the program executed with torch, :mod:`space._program_torch`);
3. the training forward in eval mode (fake quantization with running statistics), the function
   that was trained.

(1) and (2) must agree exactly on every value computed by exact arithmetic. Values downstream of
a float ``conv`` / ``linear`` (float networks) are checked op by op, each operation of the
program re-executed by the numpy runner on the PyTorch forward's own inputs: elementwise float32
operations, rounding and integer operations must then give the same bits, and a float conv /
linear must stay within the float32 summation bound ``2 (K + 2) u sum|w||x|`` (``K`` its fan-in,
``u = 2^-24``: any summation order of either executor is within ``K u sum|w||x|``). So a code
that flips after a float conv is accepted only where the conv's two results were both within
rounding of each other, and nothing downstream of it can hide a bigger difference.

(3) is independent of the lowering: it is compared with the program at every requantization
point (the codes a stage emits), each part fed the program's own input. It is a float32
computation of the same function, so a code may differ only where the training forward's value
before its requantizer sits within :data:`TIE_EPSILON` of a rounding tie; any other difference
is a lowering bug (a dropped rounding constant, a shift off by one, a missing clip) and fails.

The verdict (:attr:`VerifyReport.exact`, the exit code of ``pikenas verify`` and what export
requires before it writes "verified") needs all three.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from pikenas.evaluators.cost._cost_table import CostTable
from pikenas.evaluators.cost._counter import count_ace
from pikenas.space.program.ir import (
    IntegerProgram,
    ProgramOverflowError,
    execute_operation,  # the reference semantics
)

__all__ = ["VerifyReport", "verify", "TIE_EPSILON", "UNIT_ROUNDOFF"]

#: distance from a half step (in output steps, relative to ``max(1, |value|)``) within which the
#: training forward's float32 value counts as a rounding tie. float32 keeps 24 bits; the stage
#: computes ``x * m + b`` and an activation, each term rounded, so its error is a few units of
#: 2^-24 of the largest term: 1e-4 leaves room for ~800x cancellation and is still far below
#: the half step a lowering bug moves a value by.
TIE_EPSILON = 1e-4
#: the coarsest grid (in output steps) whose one-step error still counts as a rounding tie:
#: a tenth of the half step a lowering bug moves a code by.
TIE_CAP = 0.05
#: float32 unit roundoff.
UNIT_ROUNDOFF = 2.0**-24


@dataclass
class VerifyReport:
    """What :func:`verify` found. ``exact``: no mismatch, no overflow."""

    model: str
    images: int
    stages: int
    values: int
    mismatches: int
    compared_elements: int
    max_logit_diff: float
    max_float_rel_diff: float
    overflows: list[str]
    widest: dict[str, tuple[int, int]]
    ace_v1: int
    ace_v2: int | float
    cost_table: str
    surrogate_mismatches: int = 0
    surrogate_elements: int = 0
    surrogate_not_ties: int = 0
    float_path_flips: int = 0
    float_path_mismatches: int = 0
    max_float_error_ratio: float = 0.0
    mismatch_values: list[str] = field(default_factory=list)
    surrogate_unchecked: list[str] = field(default_factory=list)
    #: the hls4ml C simulation, when one ran (an object with ``exact``, ``compiled``,
    #: ``summary`` and ``to_dict()``: results.export._hls4ml.Hls4mlCheck)
    hls4ml: Any = None
    #: what a bundle's other files (runner, cost.json, ONNX, QONNX) got wrong against its
    #: program (results.export check_bundle_files); empty when all agree or not a bundle
    bundle_failures: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """No mismatch on exact values, no overflow, every operation downstream of a float conv
        reproduced from its own inputs (float convs within their rounding bound), and no
        training-forward code that differs away from a rounding tie."""
        return (
            self.mismatches == 0
            and not self.overflows
            and self.float_path_mismatches == 0
            and self.surrogate_not_ties == 0
            and (self.hls4ml is None or not self.hls4ml.compiled or self.hls4ml.exact)
            and not self.bundle_failures
        )

    def failures(self) -> list[str]:
        """One short reason per failed check (empty when :attr:`exact`)."""
        reasons = []
        if self.mismatches:
            reasons.append(f"{self.mismatches} elements differ between the numpy runner and "
                           "the PyTorch eval forward")
        if self.overflows:
            reasons.append(f"overflow: {self.overflows[0]}")
        if self.float_path_mismatches:
            reasons.append(f"{self.float_path_mismatches} elements after float convs differ "
                           "given the same inputs")
        if self.surrogate_not_ties:
            reasons.append(f"{self.surrogate_not_ties} training-forward codes differ away from "
                           "a rounding tie")
        if self.hls4ml is not None and self.hls4ml.compiled and not self.hls4ml.exact:
            reasons.append(f"hls4ml C simulation: {self.hls4ml.summary}")
        reasons += self.bundle_failures
        return reasons

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "images": self.images,
            "exact": self.exact,
            "stages": self.stages,
            "values": self.values,
            "compared_elements": self.compared_elements,
            "mismatches": self.mismatches,
            "mismatch_values": self.mismatch_values[:20],
            "max_logit_diff": self.max_logit_diff,
            "max_float_rel_diff": self.max_float_rel_diff,
            "float_path_flips": self.float_path_flips,
            "float_path_mismatches": self.float_path_mismatches,
            "max_float_error_ratio": self.max_float_error_ratio,
            "failures": self.failures(),
            **({"hls4ml": self.hls4ml.to_dict()} if self.hls4ml is not None else {}),
            "overflows": self.overflows,
            "widest": {
                layer: {"seen_bits": seen, "declared_bits": declared}
                for layer, (seen, declared) in self.widest.items()
            },
            "ace_v1": self.ace_v1,
            "ace_v2": self.ace_v2,
            "cost_table": self.cost_table,
            "training_forward": {
                "code_mismatches": self.surrogate_mismatches,
                "mismatches_not_at_ties": self.surrogate_not_ties,
                "codes_compared": self.surrogate_elements,
                "stages_not_compared": self.surrogate_unchecked,
            },
        }


def _requantization_points(program: IntegerProgram) -> dict[str, str]:
    """layer -> name of its last value, for layers whose output is requantized codes."""
    last: dict[str, str] = {}
    for operation in program.ops:
        last[operation.layer] = operation.output
    return {layer: name for layer, name in last.items() if program.values[name].scale is not None}


def _inputs_of(program: IntegerProgram) -> dict[str, str]:
    """layer -> the program value its first operation reads (the input of a conv, pool, ...)."""
    first: dict[str, str] = {}
    for operation in program.ops:
        first.setdefault(operation.layer, operation.inputs[0])
    return first


def _as_real(program: IntegerProgram, values: dict[str, np.ndarray], name: str) -> torch.Tensor:
    value = program.values[name]
    array = values[name].astype(np.float64)
    if value.dtype == "int" and value.scale is not None:
        array = array * value.scale
    return torch.from_numpy(array).float()


def _surrogate_codes(
    model: nn.Module,
    x: torch.Tensor,
    program: IntegerProgram,
    values: dict[str, np.ndarray],
    points: dict[str, str],
) -> dict[str, torch.Tensor]:
    """Outputs of the training forward (eval mode) at every requantization point, each part fed
    the program's own input (teacher forcing), so a stage's count is its own."""
    from pikenas.space.nn.blocks import GlobalAvgPoolQuant, PikeBlock
    from pikenas.space.nn.layers import QuantConv2d, QuantLinear
    from pikenas.space.nn.residual import ResidualAdd

    inputs = _inputs_of(program)
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for path, module in model.named_modules():
        if path in points:

            def capture(_: nn.Module, __: Any, output: Any, path: str = path) -> None:
                captured[path] = output[0] if isinstance(output, tuple) else output

            handles.append(module.register_forward_hook(capture))
            requantizer = getattr(module, "requantizer", None) or getattr(module, "quantizer", None)
            if requantizer is not None:

                def before(_: nn.Module, args: tuple, path: str = path) -> None:
                    captured[f"{path}:in"] = args[0]

                handles.append(requantizer.register_forward_pre_hook(before))
        source = None
        if isinstance(module, QuantConv2d | QuantLinear | GlobalAvgPoolQuant):
            source = inputs.get(path)
        elif isinstance(module, PikeBlock):
            source = inputs.get(f"{path}.depthwise")
        if source is not None and source in values:

            def force(_: nn.Module, args: tuple, source: str = source) -> tuple:
                return (_as_real(program, values, source), *args[1:])

            handles.append(module.register_forward_pre_hook(force))
        if isinstance(module, ResidualAdd):
            block = path.rsplit(".", 1)[0]
            a_name, b_name = (
                points.get(f"{block}.pointwise_stage"),
                inputs.get(f"{block}.depthwise"),
            )
            if a_name in values and b_name in values:

                def force_both(
                    _: nn.Module, args: tuple, a: str = a_name, b: str = b_name
                ) -> tuple:
                    return (
                        _as_real(program, values, a),
                        args[1],
                        _as_real(program, values, b),
                        args[3],
                    )

                handles.append(module.register_forward_pre_hook(force_both))
    try:
        with torch.no_grad():
            model.fake_quant_forward(x)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def _compare_stored(program: IntegerProgram, stored: IntegerProgram) -> list[str]:
    """How a bundle's stored program differs from the network's (empty: identical)."""
    if stored.to_dict() != program.to_dict():
        return ["program.json: the stored program is not the network's (operations or ranges)"]
    return [
        f"program.safetensors: constant {name} differs"
        for name, array in program.arrays.items()
        if not np.array_equal(stored.arrays.get(name), array)
    ]


def _grid(units: np.ndarray) -> float:
    """The dyadic grid a stage's training-forward values lie on, in output steps (an integer
    QuantNorm computes its sum on 2^e output steps, rounded there in float32: one grid step off
    at worst, so an exact half can come out one step below it); 0 when none is as fine as
    :data:`TIE_CAP`."""
    finite = units[np.isfinite(units)]
    for k in range(5, 25):  # grids 2^-5 (<= TIE_CAP) .. 2^-24
        scaled = finite * 2.0**k
        if np.array_equal(scaled, np.round(scaled)):
            return 2.0**-k
    return 0.0


def _grids(units: np.ndarray) -> np.ndarray | float:
    """:func:`_grid` of each channel (axis 1: each has its own exponent), broadcastable."""
    if units.ndim < 2:
        return _grid(units)
    grids = [_grid(units[:, c]) for c in range(units.shape[1])]
    return np.array(grids).reshape(1, -1, *([1] * (units.ndim - 2)))


def _not_ties(wrong: np.ndarray, before: torch.Tensor | None, value: Any) -> int:
    """How many of the ``wrong`` codes are not explained by a rounding tie: the training
    forward's value before its requantizer sits, within float32 error, on a half step (multi-bit
    codes) or on zero (signs); a code off by more than one step is never a tie."""
    if before is None or tuple(before.shape) != wrong.shape:
        return int(np.count_nonzero(wrong))
    v = before.double().numpy()
    if value.bits == 1:
        tolerance = 1e-5 * max(float(np.abs(v).max(initial=0.0)), 1e-30)
        tie = np.abs(v) <= tolerance
    else:
        units = v / value.scale
        tolerance = np.maximum(TIE_EPSILON * np.maximum(1.0, np.abs(units)), _grids(units))
        tie = np.abs(units - np.floor(units) - 0.5) <= tolerance
    return int(np.count_nonzero(wrong & ~tie))


def _float_bound(
    operation: Any, env: dict[str, np.ndarray], program: IntegerProgram, value: Any
) -> np.ndarray:
    """Per element, twice the float32 summation error bound ``(K + 2) u sum|w||x|`` of a float
    conv / linear (``K`` its fan-in), the largest any two executors may differ by."""
    x, w = (np.abs(env[n] if n in env else program.arrays[n]) for n in operation.inputs[:2])
    magnitudes = _magnitude(operation, x, w, value)
    fan_in = w[0].size
    return 2.0 * (fan_in + 2) * UNIT_ROUNDOFF * magnitudes.astype(np.float64) + 1e-37


def _magnitude(operation: Any, x: np.ndarray, w: np.ndarray, value: Any) -> np.ndarray:
    """``sum |w| |x|`` of every output element: the operation on magnitudes."""
    renamed = replace(operation, inputs=("x", "w"))
    return execute_operation(
        renamed, {"x": x.astype(np.float32)}, {"w": w.astype(np.float32)},
        {operation.output: value},
    )


def _float_path(
    program: IntegerProgram, actual: dict[str, np.ndarray]
) -> tuple[int, float, list[str]]:
    """Re-execute every operation not computed by exact arithmetic on the PyTorch forward's own
    inputs; ``(elements that differ, largest float conv difference / its bound, descriptions)``."""
    wrong_total, worst, lines = 0, 0.0, []
    for operation in program.ops:
        value = program.values[operation.output]
        if value.exact or operation.output not in actual:
            continue
        expected = execute_operation(operation, actual, program.arrays, program.values)
        expected = expected.astype(np.int64 if value.dtype == "int" else np.float32, copy=False)
        got = actual[operation.output]
        if operation.op in ("conv", "linear") and value.dtype == "float":
            difference = np.abs(expected.astype(np.float64) - got.astype(np.float64))
            ratio = difference / _float_bound(operation, actual, program, value)
            ratio = np.where(np.isnan(ratio), np.inf, ratio)
            worst = max(worst, float(ratio.max(initial=0.0)))
            wrong = int(np.count_nonzero(ratio > 1.0))
        else:
            wrong = int(np.count_nonzero(~_same(expected, got)))
        if wrong:
            wrong_total += wrong
            lines.append(f"{operation.output} ({operation.layer} {operation.op}): {wrong} of "
                         f"{got.size} differ given the same inputs")
    return wrong_total, worst, lines


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise bit equality (NaN equals NaN)."""
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        return (a == b) | (np.isnan(a) & np.isnan(b))
    return a == b


def verify(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    cost_table: CostTable | None = None,
    stored: IntegerProgram | None = None,
) -> VerifyReport:
    """Run every check on ``inputs`` ``(N, C, H, W)`` (what the network takes) for an eval-mode
    network built by ``space.build_model``. ``stored``: a program read from an export bundle,
    which must equal the network's (operations, ranges and every constant). None of the checks
    can be turned off: the verdict is :attr:`VerifyReport.exact`."""
    model.eval()
    program = model.program()
    stored_differences = _compare_stored(program, stored) if stored is not None else []
    report_cost = count_ace(program, cost_table=cost_table)
    x = inputs.detach().float().cpu()
    overflows: list[str] = []
    try:
        reference = program.run(x.numpy(), keep=True)
    except ProgramOverflowError as exc:
        overflows.append(str(exc))
        reference = program.run(x.numpy(), keep=True, check=False)
    _, torch_values = model.program_on("cpu").run(x, keep=True)
    actual = {name: tensor.numpy() for name, tensor in torch_values.items()}
    mismatches = compared = float_path_flips = 0
    mismatch_values: list[str] = []
    max_rel = 0.0
    for name, value in program.values.items():
        if name not in reference.values:
            continue
        expected = reference.values[name]
        got = actual[name]
        compared += expected.size
        if value.exact:
            wrong = int(np.count_nonzero(~_same(expected, got)))
            if wrong:
                mismatches += wrong
                mismatch_values.append(f"{name}: {wrong} of {expected.size}")
        elif value.dtype == "int":  # codes downstream of a float conv: ties may go either way
            float_path_flips += int(np.count_nonzero(expected != got))
        else:
            scale = max(float(np.abs(expected).max(initial=0.0)), 1e-30)
            max_rel = max(max_rel, float(np.abs(expected - got).max(initial=0.0)) / scale)
    float_wrong, float_ratio, float_lines = _float_path(program, actual)
    mismatch_values += float_lines
    logits = reference.output
    max_logit = float(np.abs(logits - actual[program.output]).max(initial=0.0))
    points = _requantization_points(program)
    surrogate_wrong = surrogate_total = not_ties = 0
    unchecked: list[str] = []
    captured = _surrogate_codes(model, x, program, reference.values, points)
    for layer, name in points.items():
        output = captured.get(layer)
        value = program.values[name]
        expected = reference.values[name]
        if output is None or tuple(output.shape) != expected.shape:
            unchecked.append(layer)
            continue
        codes = torch.floor(output.double() / value.scale + 0.5).numpy()
        wrong = codes != expected
        surrogate_total += expected.size
        surrogate_wrong += int(np.count_nonzero(wrong))
        if wrong.any():
            not_ties += _not_ties(wrong, captured.get(f"{layer}:in"), value)
    for difference in stored_differences:
        mismatches += 1
        mismatch_values.append(difference)
    return VerifyReport(
        model=program.name,
        images=int(x.shape[0]),
        stages=len(points),
        values=len(reference.values),
        mismatches=mismatches,
        compared_elements=compared,
        max_logit_diff=max_logit if math.isfinite(max_logit) else float("inf"),
        max_float_rel_diff=max_rel,
        overflows=overflows,
        widest=reference.widest,
        ace_v1=report_cost.ace_v1,
        ace_v2=report_cost.ace_v2,
        cost_table=report_cost.cost_table,
        surrogate_mismatches=surrogate_wrong,
        surrogate_elements=surrogate_total,
        surrogate_not_ties=not_ties,
        float_path_flips=float_path_flips,
        float_path_mismatches=float_wrong,
        max_float_error_ratio=float_ratio,
        mismatch_values=mismatch_values,
        surrogate_unchecked=unchecked,
    )
