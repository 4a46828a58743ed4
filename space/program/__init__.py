"""The integer program: the exact arithmetic a network runs at inference, from raw pixels to logits.

* :mod:`.ir` — the IR (one ``Op`` vocabulary with its ``OP_SPECS``, one ``ProgramWalk``),
  program files and the numpy runner (numpy only: bundles ship it as ``run_program.py``);
* :mod:`.builder` — ``ProgramBuilder`` and ``lower(model)``: modules lower themselves into it;
* :mod:`._torch_runner` — the same program executed with torch (the eval forward), a table,
  on the exact integer carriers and products of :mod:`._torch_exact`;
* :mod:`.pricing` — the ACE primitives each operation costs, a table;
* :mod:`.onnx` — ONNX and QONNX, export and import.
"""

from __future__ import annotations

from pikenas.space.program.ir import (
    CONSTANTS_FILE,
    OP_KINDS,
    OP_SPECS,
    PROGRAM_FILE,
    PROGRAM_VERSION,
    Constant,
    IntegerProgram,
    Op,
    Operation,
    OpFamily,
    OpSpec,
    ProgramError,
    ProgramOverflowError,
    ProgramWalk,
    RunResult,
    Value,
    op_function,
    range_bits,
)

__all__ = [
    "CONSTANTS_FILE",
    "OP_KINDS",
    "OP_SPECS",
    "PROGRAM_FILE",
    "PROGRAM_VERSION",
    "Constant",
    "IntegerProgram",
    "Op",
    "OpFamily",
    "OpSpec",
    "Operation",
    "ProgramError",
    "ProgramOverflowError",
    "ProgramWalk",
    "RunResult",
    "Value",
    "op_function",
    "range_bits",
]
