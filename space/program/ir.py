"""The integer program: the exact arithmetic a pikenas network runs at inference, and its
numpy runner.

Every network lowers (``program.builder.lower``) to one :class:`IntegerProgram`: a list of
:class:`Operation` on named :class:`Value` s and constants. Integer values are int64 arrays
with a declared range ``[lo, hi]`` (fixed by the configuration alone, never by trained
weights); float values are float32. The same program is what ACE v1 / ACE v2 count
(``program.pricing``), what the PyTorch eval forward computes, what an export bundle
carries and what ``pikenas verify`` checks.

This file imports numpy only, so an export bundle ships it as its torch-free runner::

    python run_program.py BUNDLE_DIR --input image.npy      # prints the logits

The operation vocabulary is data: :class:`Op` names every operation once, :data:`OP_SPECS`
gives each its family, arity, required attributes and how ACE v2 prices it, and every
interpreter (this numpy runner, the torch runner, the pricing, the ONNX and QONNX exports) is a
table keyed by :class:`Op`; a missing entry is an error naming the op, never a silent skip.
``E`` = output elements of one sample; ``x`` the first input:

=========  ============================================================  =================
op         semantics (numpy, batch first)                                 ACE primitives
=========  ============================================================  =================
conv       2-D convolution of ``x`` with the constant weight              mac
linear     ``x @ w.T``                                                    mac
mul        ``x * y`` (y: value or per-channel / scalar constant)          mul (E)
add        ``x + y``                                                      add (E)
shift      ``x * 2^a`` (``a >= 0``), ``floor(x / 2^-a)`` (``a < 0``)       shift (E)
round      float32 -> int: ``floor(x + 0.5)`` (half up, in float32)       round (E)
clip       ``min(max(x, lo), hi)``; only bounds that can bind count       compare (E each)
sign       ``+1 if x >= 0 else -1``                                       compare (E)
select     ``y if c >= 0 else z``                                         compare (E)
sum        sums in a fixed order: ``global`` (H, W), ``window`` (k, s),   add (terms - E)
           ``groups`` (consecutive channel groups)
pad/tile   zero-pad or repeat channels (data movement)                    free
flatten    ``(C, 1, 1)`` or ``(C, H, W)`` -> ``(C*H*W,)``                 free
=========  ============================================================  =================

Float ops are IEEE float32 elementwise operations in a fixed order, so every executor that
follows this table (numpy here, torch in ``program._torch_runner``, onnxruntime for the exported
graph) gets the same bits; the only float ops whose result depends on the executor's summation
order are float ``conv`` / ``linear`` (float networks), whose outputs are marked ``exact=False``.
"""

from __future__ import annotations

import enum
import json
import math
import struct
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Op",
    "OpFamily",
    "OpSpec",
    "OP_SPECS",
    "OP_KINDS",
    "op_function",
    "ProgramWalk",
    "NUMPY_OPS",
    "PROGRAM_VERSION",
    "PROGRAM_FILE",
    "CONSTANTS_FILE",
    "Value",
    "Constant",
    "Operation",
    "IntegerProgram",
    "RunResult",
    "execute_operation",
    "ProgramError",
    "ProgramOverflowError",
    "range_bits",
    "MAX_RUN_WORK",
    "MAX_RUN_BYTES",
]

PROGRAM_VERSION = 1
#: the ACE operation kinds a cost table prices.
OP_KINDS: tuple[str, ...] = ("mac", "mul", "add", "round", "compare", "shift")
PROGRAM_FILE = "program.json"
CONSTANTS_FILE = "program.safetensors"
FLOAT_BITS = 32
_EXACT_FLOAT64 = 2**53  # integers below this are exact in float64 (and in its BLAS)


class ProgramError(Exception):
    """A program that cannot be read or run (malformed file, unknown op, bad input)."""


class ProgramOverflowError(ProgramError):
    """An intermediate left its declared range."""


class OpFamily(enum.Enum):
    """What an operation does, for readers and for the interpreters' coverage."""

    MAC = "multiply-accumulate"  # conv, linear
    ARITHMETIC = "elementwise arithmetic"  # mul, add, shift, round
    COMPARE = "compare"  # clip, sign, select
    REDUCE = "reduce"  # sum
    MOVEMENT = "data movement"  # pad, tile, flatten: free


class Op(enum.StrEnum):
    """Every operation an integer program can hold (``program.json`` stores the value)."""

    CONV = "conv"
    LINEAR = "linear"
    MUL = "mul"
    ADD = "add"
    SHIFT = "shift"
    ROUND = "round"
    CLIP = "clip"
    SIGN = "sign"
    SELECT = "select"
    SUM = "sum"
    PAD = "pad"
    TILE = "tile"
    FLATTEN = "flatten"


@dataclass(frozen=True)
class OpSpec:
    """One operation's specification: ``arity`` inputs, ``attrs`` required attributes,
    ``optional`` ones, ``priced_as`` the ACE primitive kind it costs (one of :data:`OP_KINDS`),
    or ``None``: free, data movement only."""

    family: OpFamily
    arity: int
    priced_as: str | None
    attrs: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


_F = OpFamily
#: the specification of every :class:`Op` (checked complete below, at import).
OP_SPECS: dict[Op, OpSpec] = {
    Op.CONV: OpSpec(_F.MAC, 2, "mac", ("stride", "padding", "groups")),
    Op.LINEAR: OpSpec(_F.MAC, 2, "mac"),
    Op.MUL: OpSpec(_F.ARITHMETIC, 2, "mul"),
    Op.ADD: OpSpec(_F.ARITHMETIC, 2, "add", optional=("prefix",)),
    Op.SHIFT: OpSpec(_F.ARITHMETIC, 2, "shift"),
    Op.ROUND: OpSpec(_F.ARITHMETIC, 1, "round"),
    Op.CLIP: OpSpec(_F.COMPARE, 1, "compare", ("lo", "hi")),
    Op.SIGN: OpSpec(_F.COMPARE, 1, "compare"),
    Op.SELECT: OpSpec(_F.COMPARE, 3, "compare"),
    Op.SUM: OpSpec(
        _F.REDUCE,
        1,
        "add",
        ("mode", "terms"),
        ("kernel", "stride", "padding", "out_channels", "group"),
    ),
    Op.PAD: OpSpec(_F.MOVEMENT, 1, None, ("out_channels",)),
    Op.TILE: OpSpec(_F.MOVEMENT, 1, None, ("repeats",)),
    Op.FLATTEN: OpSpec(_F.MOVEMENT, 1, None),
}
del _F


def op_function(table: Mapping[Op, Any], op: str, purpose: str) -> Any:
    """``table[Op(op)]``, or :class:`ProgramError` naming the op and the known ones (an
    interpreter without an entry for an op refuses it: never a silent skip or zero)."""
    try:
        return table[Op(op)]
    except (ValueError, KeyError):
        known = ", ".join(o.value for o in table)
        raise ProgramError(f"{purpose} has no function for op {op!r}; it knows: {known}") from None


class ProgramWalk:
    """The one walk over a program's operations, in the manner of ``torch.fx.Interpreter``: it
    owns the loop, the environment (value name -> whatever the interpreter computes: arrays,
    tensors, graph tensor names) and the error context; an interpreter gives its ``table``
    (``{Op: function}``) and overrides only the hooks it needs.

    ``function(operation, operands, out)`` by default, ``operands`` the inputs' entries (values
    from the environment, constants from :meth:`constant`), ``out`` the output's
    :class:`Value`. An exception raised while an operation runs gets a note naming the op, its
    output and its layer.
    """

    purpose = "an interpreter"
    table: Mapping[Op, Callable[..., Any]] = {}

    def __init__(self, program: IntegerProgram) -> None:
        self.program = program

    def constant(self, name: str) -> Any:
        """The entry of constant ``name``."""
        raise ProgramError(f"{self.purpose} reads no constants ({name!r})")

    def operand(self, name: str, env: dict[str, Any]) -> Any:
        return env[name] if name in env else self.constant(name)

    def apply(self, function: Callable[..., Any], operation: Operation, env: dict[str, Any]) -> Any:
        operands = [self.operand(name, env) for name in operation.inputs]
        return function(operation, operands, self.program.values[operation.output])

    def store(self, operation: Operation, result: Any) -> Any:
        """What enters the environment for ``operation``'s output (``None``: nothing)."""
        return result

    def skip(self, index: int) -> bool:
        """Whether operation ``index`` was already done (fused into an earlier one)."""
        return False

    def walk(self, env: dict[str, Any]) -> dict[str, Any]:
        """Run every operation in order on ``env`` (holding the input); returns ``env``."""
        for index, operation in enumerate(self.program.ops):
            if self.skip(index):
                continue
            function = op_function(self.table, operation.op, self.purpose)
            try:
                result = self.store(operation, self.apply(function, operation, env))
            except Exception as exc:
                exc.add_note(
                    f"while executing op {operation.op.value} -> {operation.output} of layer "
                    f"{operation.layer!r} ({self.purpose})"
                )
                raise
            if result is not None:
                env[operation.output] = result
        return env


def range_bits(lo: int, hi: int) -> int:
    """Width of the narrowest two's-complement (``lo < 0``) or unsigned integer holding
    ``[lo, hi]``."""
    if lo >= 0:
        return max(1, int(hi).bit_length())
    return max(int(-lo - 1).bit_length(), int(hi).bit_length()) + 1


@dataclass(frozen=True)
class Value:
    """A tensor of the program, per sample (the batch dimension is not part of ``shape``).

    ``dtype`` ``"int"`` (int64 at run time, inside ``[lo, hi]``) or ``"float"`` (float32).
    ``bits``: the width ACE charges its operands at (a quantizer's bits, or the range width;
    32 for float). ``scale``: real value = code x scale, for requantized activations (``None``
    elsewhere). ``exact``: computed by exact arithmetic only (see the module docstring).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    bits: int
    lo: int | None = None
    hi: int | None = None
    scale: float | None = None
    exact: bool = True

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Constant:
    """A constant operand with a per-sample shape: weights, per-channel vectors shaped to
    broadcast (``(C, 1, 1)`` against ``(C, H, W)``, ``(C,)`` against ``(C,)``) or scalars
    ``()``; int constants carry their declared range and the bits ACE charges them at."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    bits: int
    lo: int | None = None
    hi: int | None = None

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Operation:
    """``output = op(inputs...)``; ``layer``: the module path that owns it; ``kind``: the
    elementwise kind it belongs to (``batchnorm``, ``quantnorm``, ``requantize``, ...)."""

    op: Op
    inputs: tuple[str, ...]
    output: str
    layer: str
    kind: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """``op`` becomes an :class:`Op` (a string elsewhere: ``program.json``); its arity and
        required attributes are checked against :data:`OP_SPECS`."""
        try:
            op = Op(self.op)
        except ValueError:
            known = ", ".join(o.value for o in Op)
            raise ProgramError(
                f"unknown op {self.op!r} in layer {self.layer!r}; the ops are {known}"
            ) from None
        object.__setattr__(self, "op", op)
        spec = OP_SPECS[op]
        if len(self.inputs) != spec.arity:
            raise ProgramError(
                f"{self.layer}: {op.value} takes {spec.arity} inputs, got {len(self.inputs)}"
            )
        missing = [name for name in spec.attrs if name not in self.attrs]
        if missing:
            raise ProgramError(f"{self.layer}: {op.value} needs the attributes {missing}")


@dataclass
class RunResult:
    """``output``: the program output (logits); ``values``: every intermediate when kept;
    ``widest``: per layer, the widest integer seen and declared (bits)."""

    output: np.ndarray
    values: dict[str, np.ndarray]
    widest: dict[str, tuple[int, int]]


@dataclass
class IntegerProgram:
    """Inputs, values, constants (``arrays``: name -> ndarray, absent on a shape-only program),
    operations in execution order, output name and per-layer element annotations."""

    input: Value
    output: str
    values: dict[str, Value]
    constants: dict[str, Constant]
    ops: list[Operation]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    elements: list[tuple[str, str, int]] = field(default_factory=list)  # (layer, kind, n)
    name: str = ""

    # ---- execution ---------------------------------------------------------------------
    def run(self, inputs: np.ndarray, *, keep: bool = False, check: bool = True) -> RunResult:
        """Execute on ``inputs`` ``(N, *input.shape)`` float; int64 for integer values,
        float32 for float ones. With ``check`` every integer intermediate is checked against
        its declared range (:class:`ProgramOverflowError` names the op and layer)."""
        if not self.arrays and self.constants:
            raise ProgramError("this program has no constants (shape-only lowering); lower a model")
        x = _checked_input(inputs, self.input.shape)
        self.check_work(x.shape[0])
        runner = _NumpyWalk(self, check)
        env = runner.walk({self.input.name: x})
        widest = runner.widest
        output = env[self.output]
        return RunResult(output, env if keep else {self.output: output}, widest)

    def work(self, batch: int) -> tuple[int, int, str, int]:
        """What :meth:`run` on ``batch`` samples costs, from the declared shapes alone:
        ``(operations, bytes, op, op_operations)``: elementary operations (output elements,
        multiply-accumulates, terms of sums), bytes held at once (every value at 8 bytes an
        element plus the largest temporary) and the costliest operation with its own count."""
        total, held = 0, self.input.elements
        temporary, costliest, most = 0, "", -1
        for operation in self.ops:
            _, per_sample, scratch = _plan(operation, _shapes(self, operation))
            total += per_sample
            held += self.values[operation.output].elements
            temporary = max(temporary, scratch)
            if per_sample > most:
                costliest, most = f"{operation.op.value} in layer {operation.layer!r}", per_sample
        stored = sum(c.elements for c in self.constants.values())  # weights, held once
        return total * batch, ((held + temporary) * batch + stored) * 8, costliest, most * batch

    def check_work(self, batch: int) -> None:
        """Refuse (:class:`ProgramError`, one line naming the costliest op, the size and the
        bound) a run on ``batch`` samples beyond :data:`MAX_RUN_WORK` / :data:`MAX_RUN_BYTES`,
        before anything is allocated or looped over."""
        total, held, costliest, most = self.work(batch)
        if total > MAX_RUN_WORK:
            raise ProgramError(
                f"running this program on {batch} sample(s) takes {total:.3g} operations, over "
                f"the bound of {MAX_RUN_WORK:.3g} (the costliest: {costliest}, {most:.3g}); "
                "use fewer samples or a smaller network"
            )
        if held > MAX_RUN_BYTES:
            raise ProgramError(
                f"running this program on {batch} sample(s) needs {held / 2**30:.3g} GiB, over "
                f"the bound of {MAX_RUN_BYTES / 2**30:.3g} GiB (the costliest op: {costliest}); "
                "use fewer samples or a smaller network"
            )

    # ---- files -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PROGRAM_VERSION,
            "name": self.name,
            "input": asdict(self.input),
            "output": self.output,
            "values": [asdict(v) for v in self.values.values()],
            "constants": [asdict(c) for c in self.constants.values()],
            "ops": [{**asdict(o), "op": o.op.value} for o in self.ops],
            "elements": [list(e) for e in self.elements],
        }

    @classmethod
    def from_dict(cls, data: Any) -> IntegerProgram:
        if not isinstance(data, dict):
            raise ProgramError(
                f"malformed program: a JSON object is needed, not {type(data).__name__}"
            )
        try:
            if data.get("version") != PROGRAM_VERSION:
                raise ProgramError(f"program version {data.get('version')!r} is not supported")
            values = {v["name"]: _value(v) for v in data["values"]}
            constants = {c["name"]: _constant(c) for c in data["constants"]}
            ops = [
                Operation(
                    o["op"], tuple(o["inputs"]), o["output"], o["layer"], o["kind"], o["attrs"]
                )
                for o in data["ops"]
            ]
            elements = [(str(a), str(b), int(n)) for a, b, n in data["elements"]]
            program = cls(_value(data["input"]), data["output"], values, constants, ops)
            program.elements, program.name = elements, str(data.get("name", ""))
            _validate(program)
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            text = " ".join(str(exc).split())[:200]
            raise ProgramError(f"malformed program: {type(exc).__name__}: {text}") from None
        return program

    def save(self, folder: str | Path) -> None:
        """Write ``program.json`` and ``program.safetensors`` into ``folder``."""
        folder = Path(folder)
        (folder / PROGRAM_FILE).write_text(json.dumps(self.to_dict(), indent=1), "utf-8")
        write_safetensors(folder / CONSTANTS_FILE, self.arrays)

    @classmethod
    def load(cls, folder: str | Path) -> IntegerProgram:
        folder = Path(folder)
        try:
            data = json.loads((folder / PROGRAM_FILE).read_text("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            text = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise ProgramError(f"cannot read {folder / PROGRAM_FILE}: {text}") from None
        program = cls.from_dict(data)
        arrays = read_safetensors(folder / CONSTANTS_FILE)
        for name, constant in program.constants.items():
            array = arrays.get(name)
            if array is None or tuple(array.shape) != constant.shape:
                raise ProgramError(
                    f"{folder / CONSTANTS_FILE}: constant {name!r} missing or misshapen"
                )
            if constant.dtype == "int" and array.size:
                if array.min() < constant.lo or array.max() > constant.hi:
                    raise ProgramError(f"constant {name!r} lies outside its declared range")
        program.arrays = {name: arrays[name] for name in program.constants}
        return program


def _checked_input(inputs: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``inputs`` as float32 ``(N, *shape)``, ``N >= 1``, real finite numbers, or
    :class:`ProgramError` saying what is wrong."""
    want = f"(N, {', '.join(map(str, shape))})"
    if not isinstance(inputs, np.ndarray):
        raise ProgramError(
            f"the input must be one array of shape {want}, not {type(inputs).__name__}"
        )
    if inputs.dtype.kind not in "biuf":
        raise ProgramError(
            f"the input must hold real numbers, not {inputs.dtype}; pass float32 {want}"
        )
    if inputs.shape[1:] != shape or inputs.ndim == 0:
        raise ProgramError(
            f"input shape {tuple(inputs.shape[1:])} does not match the program's {shape}; "
            f"pass {want}"
        )
    if inputs.shape[0] < 1:
        raise ProgramError(f"the input holds no samples; pass {want} with N >= 1")
    with np.errstate(over="ignore", invalid="ignore"):
        x = inputs.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ProgramError("the input holds NaN or infinite values (in float32); pass finite ones")
    return x


def _value(data: dict[str, Any]) -> Value:
    return Value(**{**data, "shape": tuple(data["shape"])})


def _constant(data: dict[str, Any]) -> Constant:
    return Constant(**{**data, "shape": tuple(data["shape"])})


def _check_range(
    operation: Operation, value: Value, result: np.ndarray, widest: dict[str, tuple[int, int]]
) -> None:
    low, high = int(result.min()), int(result.max())
    seen = range_bits(min(low, 0), max(high, 0))
    declared = range_bits(value.lo, value.hi)  # type: ignore[arg-type]
    previous = widest.get(operation.layer)
    if previous is None or seen > previous[0]:
        widest[operation.layer] = (seen, max(declared, previous[1] if previous else 0))
    if low < value.lo or high > value.hi:  # type: ignore[operator]
        raise ProgramOverflowError(
            f"{operation.layer}: {operation.op} -> {value.name} reached [{low}, {high}], outside "
            f"its declared range [{value.lo}, {value.hi}] ({declared} bits)"
        )


# ---- operations ---------------------------------------------------------------------------
def _promote(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int x int stays int64; anything with a float becomes float32 (exact int -> float32)."""
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        return a.astype(np.float32, copy=False), b.astype(np.float32, copy=False)
    return a.astype(np.int64, copy=False), b.astype(np.int64, copy=False)


def _conv(x: np.ndarray, w: np.ndarray, attrs: dict[str, Any], out: Value) -> np.ndarray:
    stride, groups = attrs["stride"], attrs["groups"]
    top, bottom, left, right = attrs["padding"]
    n, channels = x.shape[:2]
    out_channels, per_group, k_h, k_w = w.shape
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k_h, k_w), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride]  # (N, C, Ho, Wo, kh, kw)
    ho, wo = windows.shape[2:4]
    windows = windows.reshape(n, groups, per_group, ho, wo, k_h, k_w)
    kernels = w.reshape(groups, out_channels // groups, per_group, k_h, k_w)
    exact_float = out.dtype == "int" and max(abs(out.lo), abs(out.hi)) < _EXACT_FLOAT64  # type: ignore[arg-type]
    dtype = np.float64 if exact_float else (np.int64 if out.dtype == "int" else np.float32)
    result = np.einsum(
        "ngchwij,gocij->ngohw", windows.astype(dtype), kernels.astype(dtype), optimize=True
    ).reshape(n, out_channels, ho, wo)
    return np.rint(result).astype(np.int64) if exact_float else result


def _linear(x: np.ndarray, w: np.ndarray, out: Value) -> np.ndarray:
    if out.dtype == "float":
        return x.astype(np.float32) @ w.astype(np.float32).T
    if max(abs(out.lo), abs(out.hi)) < _EXACT_FLOAT64:  # type: ignore[arg-type]
        return np.rint(x.astype(np.float64) @ w.astype(np.float64).T).astype(np.int64)
    return x.astype(np.int64) @ w.astype(np.int64).T


def _shift(x: np.ndarray, amount: np.ndarray) -> np.ndarray:
    amount = np.asarray(amount, dtype=np.int64)
    left = np.left_shift(x, np.maximum(amount, 0))
    return np.right_shift(left, np.maximum(-amount, 0))  # arithmetic: floor division


def _sum(x: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
    """Sums in a fixed order (float32 results do not depend on the executor)."""
    mode = attrs["mode"]
    if mode == "global":  # (N, C, H, W) -> (N, C, 1, 1), row-major over H, W
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        if flat.dtype.kind == "i":  # exact in any order
            return flat.sum(axis=2).reshape(x.shape[0], x.shape[1], 1, 1)
        total = flat[:, :, 0].copy()
        for index in range(1, flat.shape[2]):
            total = total + flat[:, :, index]
        return total.reshape(x.shape[0], x.shape[1], 1, 1)
    if mode == "groups":  # consecutive groups of ``group`` channels among the first out*group
        out, group = attrs["out_channels"], attrs["group"]
        parts = x[:, : out * group].reshape(x.shape[0], out, group, *x.shape[2:])
        total = parts[:, :, 0].copy()
        for index in range(1, group):
            total = total + parts[:, :, index]
        return total
    if mode == "window":  # zero-padded k x k windows with a stride, row-major over the window
        k, stride = attrs["kernel"], attrs["stride"]
        top, bottom, left, right = attrs["padding"]
        padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        ho = (padded.shape[2] - k) // stride + 1
        wo = (padded.shape[3] - k) // stride + 1
        total = None
        for dy in range(k):
            for dx in range(k):
                part = padded[:, :, dy : dy + stride * ho : stride, dx : dx + stride * wo : stride]
                total = part.copy() if total is None else total + part
        return total
    raise ProgramError(f"unknown sum mode {mode!r}")


def _add(operation: Operation, operands: list[np.ndarray]) -> np.ndarray:
    a, b = _promote(operands[0], operands[1])
    if operation.attrs.get("prefix"):  # b covers the first channels of a
        result = a.copy()
        result[:, : b.shape[1]] += b
        return result
    return a + b


def _pad(x: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
    extra = attrs["out_channels"] - x.shape[1]
    return np.concatenate([x, np.zeros((x.shape[0], extra, *x.shape[2:]), x.dtype)], axis=1)


def _mul(operation: Operation, a: list[np.ndarray], out: Value) -> np.ndarray:
    x, y = _promote(a[0], a[1])
    return x * y


def _select(operation: Operation, a: list[np.ndarray], out: Value) -> np.ndarray:
    return np.where(a[0] >= 0, *_promote(a[1], a[2]))


#: the numpy runner: one function per :class:`Op` ``(operation, operands, out) -> array``.
NUMPY_OPS: dict[Op, Callable[[Operation, list[np.ndarray], Value], np.ndarray]] = {
    Op.CONV: lambda o, a, out: _conv(a[0], a[1], o.attrs, out),
    Op.LINEAR: lambda o, a, out: _linear(a[0], a[1], out),
    Op.MUL: _mul,
    Op.ADD: lambda o, a, out: _add(o, a),
    Op.SHIFT: lambda o, a, out: _shift(a[0].astype(np.int64), a[1]),
    Op.ROUND: lambda o, a, out: np.floor(a[0].astype(np.float32) + np.float32(0.5)).astype(
        np.int64
    ),
    Op.CLIP: lambda o, a, out: np.clip(a[0], o.attrs["lo"], o.attrs["hi"]),
    Op.SIGN: lambda o, a, out: np.where(a[0] >= 0, 1, -1).astype(np.int64),
    Op.SELECT: _select,
    Op.SUM: lambda o, a, out: _sum(a[0], o.attrs),
    Op.PAD: lambda o, a, out: _pad(a[0], o.attrs),
    Op.TILE: lambda o, a, out: np.tile(a[0], (1, o.attrs["repeats"], 1, 1)),
    Op.FLATTEN: lambda o, a, out: a[0].reshape(a[0].shape[0], -1),
}


def execute_operation(
    operation: Operation,
    env: dict[str, np.ndarray],
    arrays: dict[str, np.ndarray],
    values: dict[str, Value],
) -> np.ndarray:
    """One operation by the reference semantics (:data:`NUMPY_OPS`), its inputs taken from
    ``env`` (values) or ``arrays`` (constants): what a checker re-runs op by op."""
    function = op_function(NUMPY_OPS, operation.op, "the numpy runner")
    operands = [env[name] if name in env else arrays[name] for name in operation.inputs]
    return function(operation, operands, values[operation.output])


class _NumpyWalk(ProgramWalk):
    """The reference executor: :data:`NUMPY_OPS`, int64 / float32 results, range checks."""

    purpose = "the numpy runner"
    table = NUMPY_OPS

    def __init__(self, program: IntegerProgram, check: bool) -> None:
        super().__init__(program)
        self.check = check
        self.widest: dict[str, tuple[int, int]] = {}

    def constant(self, name: str) -> np.ndarray:
        return self.program.arrays[name]  # per-sample shaped: (C, 1, 1) broadcasts

    def store(self, operation: Operation, result: np.ndarray) -> np.ndarray:
        value = self.program.values[operation.output]
        if value.dtype == "int":
            result = result.astype(np.int64, copy=False)
            if self.check and result.size:
                _check_range(operation, value, result, self.widest)
            return result
        result = result.astype(np.float32, copy=False)
        if self.check and not np.all(np.isfinite(result)):
            raise ProgramOverflowError(
                f"{operation.layer}: {operation.op} -> {value.name} produced a non-finite float32"
            )
        return result


# ---- validation of a program read from files, and the bound on one run's work ----------------
#: the most one :meth:`IntegerProgram.run` may cost, computed from the declared shapes before
#: anything is allocated or looped over: elementary operations (an output element, a
#: multiply-accumulate, a term of a sum) for the whole batch ...
MAX_RUN_WORK = 10**12
#: ... and bytes held at once (every value of the batch at 8 bytes an element, plus the largest
#: temporary: a convolution's unfolded windows)
MAX_RUN_BYTES = 16 * 2**30
_MAX_BITS = 64
_MAX_DIM = 2**31
_MAX_INT = 2**63


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _need_int(value: Any, what: str, lowest: int, highest: int = _MAX_INT) -> int:
    if not _is_int(value) or not lowest <= value <= highest:
        shown = repr(value) if len(repr(value)) < 60 else repr(value)[:57] + "..."
        raise ProgramError(f"{what} must be an integer in [{lowest}, {highest}], got {shown}")
    return value


def _need_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ProgramError(f"{what} must be a string, got {type(value).__name__}")
    return value


def _check_item(item: Value | Constant, what: str) -> None:
    """Field types of a value or constant read from a file."""
    _need_str(item.name, f"the name of a {what}")
    label = f"{what} {item.name!r}"
    if not isinstance(item.shape, tuple) or len(item.shape) > 8:
        raise ProgramError(f"{label}: shape must be a list of at most 8 sizes")
    for size in item.shape:
        _need_int(size, f"{label}: each size of its shape", 1, _MAX_DIM)
    if item.dtype not in ("int", "float"):
        raise ProgramError(f"{label}: dtype must be 'int' or 'float', got {item.dtype!r}")
    _need_int(item.bits, f"{label}: bits", 1, _MAX_BITS)
    if item.dtype == "int":
        lo = _need_int(item.lo, f"{label}: lo", -_MAX_INT, _MAX_INT - 1)
        hi = _need_int(item.hi, f"{label}: hi", lo, _MAX_INT - 1)
        del hi
    else:
        for bound in (item.lo, item.hi):
            if bound is not None and not _is_int(bound):
                raise ProgramError(f"{label}: lo and hi of a float must be null or integers")
    if isinstance(item, Value):
        scale = item.scale
        if scale is not None and (
            isinstance(scale, bool)
            or not isinstance(scale, int | float)
            or not math.isfinite(scale)
        ):
            raise ProgramError(f"{label}: scale must be null or a finite number")
        if not isinstance(item.exact, bool):
            raise ProgramError(f"{label}: exact must be true or false")


def _window(
    label: str, shape: tuple[int, ...], attrs: dict[str, Any], k_h: int, k_w: int
) -> tuple[int, int]:
    """The output height and width of a window of ``k_h x k_w`` over ``shape`` (C, H, W)."""
    stride = _need_int(attrs.get("stride"), f"{label}: stride", 1, _MAX_DIM)
    padding = attrs.get("padding")
    if not isinstance(padding, list) or len(padding) != 4:
        raise ProgramError(
            f"{label}: padding must be a list of 4 integers (top, bottom, left, right)"
        )
    top, bottom, left, right = (_need_int(p, f"{label}: padding", 0, _MAX_DIM) for p in padding)
    height, width = shape[1] + top + bottom, shape[2] + left + right
    if k_h > height or k_w > width:
        raise ProgramError(
            f"{label}: a {k_h}x{k_w} window is larger than its padded {height}x{width} input"
        )
    return (height - k_h) // stride + 1, (width - k_w) // stride + 1


def _rank(label: str, shape: tuple[int, ...], rank: int, what: str = "its input") -> None:
    if len(shape) != rank:
        raise ProgramError(f"{label}: {what} must have {rank} dimensions, has shape {shape}")


def _plan(operation: Operation, shapes: list[tuple[int, ...]]) -> tuple[tuple[int, ...], int, int]:
    """``(output shape, work, temporary elements)`` per sample of ``operation`` on inputs of
    per-sample ``shapes``, checking its attributes: what the numpy runner will compute and loop
    over, from the declared shapes alone."""
    op, attrs, label = operation.op, operation.attrs, f"{operation.layer}: {operation.op.value}"
    x = shapes[0]
    if op is Op.CONV:
        w = shapes[1]
        _rank(label, x, 3)
        _rank(label, w, 4, "its weight")
        groups = _need_int(attrs.get("groups"), f"{label}: groups", 1, _MAX_DIM)
        if x[0] % groups or w[0] % groups or w[1] * groups != x[0]:
            raise ProgramError(
                f"{label}: weight {w} with groups={groups} does not fit an input of {x[0]} channels"
            )
        ho, wo = _window(label, x, attrs, w[2], w[3])
        taps = w[1] * w[2] * w[3]
        return (w[0], ho, wo), w[0] * ho * wo * taps, 2 * x[0] * ho * wo * w[2] * w[3]
    if op is Op.LINEAR:
        w = shapes[1]
        _rank(label, x, 1)
        _rank(label, w, 2, "its weight")
        if w[1] != x[0]:
            raise ProgramError(f"{label}: weight {w} does not take {x[0]} inputs")
        return (w[0],), w[0] * w[1], 0
    if op is Op.SUM:
        _rank(label, x, 3)
        mode = attrs.get("mode")
        _need_int(attrs.get("terms"), f"{label}: terms", 0)
        if mode == "global":
            return (x[0], 1, 1), math.prod(x), 0
        if mode == "groups":
            out = _need_int(attrs.get("out_channels"), f"{label}: out_channels", 1, _MAX_DIM)
            group = _need_int(attrs.get("group"), f"{label}: group", 1, _MAX_DIM)
            if out * group > x[0]:
                raise ProgramError(f"{label}: {out} groups of {group} exceed {x[0]} channels")
            return (out, x[1], x[2]), out * group * x[1] * x[2], 0
        if mode == "window":
            k = _need_int(attrs.get("kernel"), f"{label}: kernel", 1, _MAX_DIM)
            ho, wo = _window(label, x, attrs, k, k)
            return (x[0], ho, wo), x[0] * ho * wo * k * k, 0
        raise ProgramError(f"{label}: mode must be global, groups or window, got {mode!r}")
    if op is Op.PAD:
        out = _need_int(attrs.get("out_channels"), f"{label}: out_channels", x[0], _MAX_DIM)
        shape = (out, *x[1:])
        return shape, math.prod(shape), 0
    if op is Op.TILE:
        _rank(label, x, 3)
        repeats = _need_int(attrs.get("repeats"), f"{label}: repeats", 1, _MAX_DIM)
        return (x[0] * repeats, x[1], x[2]), math.prod(x) * repeats, 0
    if op is Op.FLATTEN:
        return (math.prod(x),), math.prod(x), 0
    if op is Op.CLIP:
        for bound in (attrs.get("lo"), attrs.get("hi")):
            if bound is not None and (
                isinstance(bound, bool)
                or not isinstance(bound, int | float)
                or not math.isfinite(bound)
            ):
                raise ProgramError(f"{label}: lo and hi must be null or finite numbers")
    if op is Op.ADD and attrs.get("prefix"):
        y = shapes[1]
        if len(y) != len(x) or y[0] > x[0] or y[1:] != x[1:]:
            raise ProgramError(f"{label}: {y} cannot be added to the first channels of {x}")
        return x, math.prod(x), 0
    try:  # elementwise: numpy broadcasting of the per-sample shapes
        shape = tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ProgramError(f"{label}: its input shapes {shapes} do not broadcast") from None
    return shape, math.prod(shape), 0


def _validate(program: IntegerProgram) -> None:
    """Every field of a program read from a file has its type and every operation's declared
    output shape is what its inputs and attributes give (so :meth:`IntegerProgram.work` holds)."""
    for value in program.values.values():
        _check_item(value, "value")
    for constant in program.constants.values():
        _check_item(constant, "constant")
    _check_item(program.input, "value")
    _need_str(program.output, "the program output")
    if program.values.get(program.input.name) != program.input:
        raise ProgramError(f"the input {program.input.name!r} is not among the values")
    defined = {program.input.name}
    for operation in program.ops:
        for what in ("output", "layer", "kind"):
            _need_str(getattr(operation, what), f"an operation's {what}")
        if not isinstance(operation.attrs, dict):
            raise ProgramError(f"{operation.layer}: attrs must be an object")
        for name in operation.inputs:
            _need_str(name, f"{operation.layer}: an input name")
            if name not in defined and name not in program.constants:
                raise ProgramError(
                    f"{operation.layer}: {operation.op.value} reads {name!r}, which no earlier "
                    "operation computes and no constant holds"
                )
        out = program.values.get(operation.output)
        if out is None or operation.output in defined:
            raise ProgramError(
                f"{operation.layer}: output {operation.output!r} is undeclared or computed twice"
            )
        shape = _plan(operation, _shapes(program, operation))[0]
        if shape != out.shape:
            raise ProgramError(
                f"{operation.layer}: {operation.op.value} gives shape {shape}, but "
                f"{operation.output!r} declares {out.shape}"
            )
        defined.add(operation.output)
    if program.output not in defined:
        raise ProgramError(f"the program output {program.output!r} is not computed")


def _shapes(program: IntegerProgram, operation: Operation) -> list[tuple[int, ...]]:
    items = [program.values.get(n) or program.constants.get(n) for n in operation.inputs]
    return [item.shape for item in items if item is not None]


# ---- safetensors without dependencies -----------------------------------------------------
_DTYPES = {"I64": np.int64, "F32": np.float32}


def write_safetensors(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """The safetensors format: 8-byte little-endian header size, JSON header, raw data."""
    header: dict[str, Any] = {}
    chunks, offset = [], 0
    for name in sorted(arrays):
        array = np.asarray(arrays[name])  # (ascontiguousarray would make a scalar 1-d)
        code = "I64" if array.dtype.kind in "iu" else "F32"
        data = array.astype(np.dtype(_DTYPES[code]).newbyteorder("<")).tobytes(order="C")
        header[name] = {
            "dtype": code,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for chunk in chunks:
            handle.write(chunk)


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        raw = Path(path).read_bytes()
        (size,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + size])
        body = raw[8 + size :]
        arrays = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            start, end = entry["data_offsets"]
            dtype = np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<")
            array = np.frombuffer(body[start:end], dtype=dtype).reshape(entry["shape"])
            arrays[name] = array.astype(_DTYPES[entry["dtype"]])
        return arrays
    except (
        OSError,
        struct.error,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        RecursionError,
        MemoryError,
    ) as exc:
        text = " ".join(str(exc).split())[:200]
        raise ProgramError(f"cannot read constants {path}: {type(exc).__name__}: {text}") from None


def main(argv: list[str] | None = None) -> int:
    """``python run_program.py BUNDLE_DIR --input FILE.npy``: print the logits as JSON."""
    import argparse

    parser = argparse.ArgumentParser(description="Run a pikenas integer program (numpy only).")
    parser.add_argument("bundle", help="folder holding program.json and program.safetensors")
    parser.add_argument("--input", required=True, help=".npy file of shape (N, C, H, W), float")
    args = parser.parse_args(argv)
    try:
        program = IntegerProgram.load(args.bundle)
        try:
            inputs = np.load(args.input, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            text = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise ProgramError(f"cannot read --input {args.input}: {text}") from None
        result = program.run(inputs)
    except ProgramOverflowError as exc:  # the program failed while running: exit 1
        print(f"failed: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except ProgramError as exc:  # bad input (the bundle or the images): exit 2
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except MemoryError:
        print("failed: out of memory; pass fewer images at once", file=sys.stderr)
        return 1
    print(json.dumps(result.output.tolist()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
