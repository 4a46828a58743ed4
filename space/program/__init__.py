"""The integer program: the exact arithmetic a network runs at inference, from raw pixels to logits.

* :mod:`.ir` — the IR (one ``Op`` vocabulary), program files and the numpy runner (numpy only:
  bundles ship it as ``run_program.py``);
* :mod:`.builder` — ``ProgramBuilder`` and ``lower(model)``: modules lower themselves into it;
* :mod:`._torch_runner` — the same program executed with torch (the eval forward);
* :mod:`.pricing` — the ACE primitives each operation costs;
* :mod:`.onnx` — ONNX and QONNX, export and import.
"""

from __future__ import annotations

from pikenas.space.program.ir import (
    CONSTANTS_FILE,
    OP_KINDS,
    PROGRAM_FILE,
    PROGRAM_VERSION,
    Constant,
    IntegerProgram,
    Operation,
    ProgramError,
    ProgramOverflowError,
    RunResult,
    Value,
    range_bits,
)

__all__ = [
    "CONSTANTS_FILE",
    "OP_KINDS",
    "PROGRAM_FILE",
    "PROGRAM_VERSION",
    "Constant",
    "IntegerProgram",
    "Operation",
    "ProgramError",
    "ProgramOverflowError",
    "RunResult",
    "Value",
    "range_bits",
]
