"""A bundle's every file checked against its integer program, so that an altered file cannot
pass ``pikenas verify BUNDLE``.

``program.json`` / ``program.safetensors`` are checked by :func:`pikenas.evaluators.verify.verify`
(the stored program must equal the network's); here the rest:

* ``run_program.py`` must be, byte for byte, the numpy runner of this pikenas version (it is
  compared, never executed: verify runs no code a bundle brings);
* ``cost.json`` must state the program's MACs, parameters and ACE v1, and its ACE v2 when it was
  priced with the default table (another table's ACE v2 cannot be recomputed from the bundle);
* ``model.onnx`` must run in onnxruntime to the program's logits, and ``model.qonnx.onnx`` must
  be priced as the program and (with qonnx installed) execute to its logits; a format the bundle
  was not exported with is simply absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pikenas.results.export.bundle import COST_FILE, ONNX_FILE, QONNX_FILE, RUNNER_FILE
from pikenas.space.errors import EvaluationError
from pikenas.space.program import ir as program_module
from pikenas.space.program.ir import PROGRAM_FILE, IntegerProgram

__all__ = ["BUNDLE_MARKERS", "check_bundle_files", "is_bundle"]

#: files only an export bundle has (a 'pikenas train' folder has none of them)
BUNDLE_MARKERS = (PROGRAM_FILE, RUNNER_FILE, COST_FILE, ONNX_FILE, QONNX_FILE)
_MAX_COST_BYTES = 64 * 1024 * 1024
_EXACT_KEYS = ("macs", "params", "ace_v1")


def is_bundle(folder: Path) -> bool:
    """Whether ``folder`` is an export bundle (it holds any of :data:`BUNDLE_MARKERS`)."""
    return folder.is_dir() and any((folder / name).exists() for name in BUNDLE_MARKERS)


def check_bundle_files(folder: Path, program: IntegerProgram, images: np.ndarray) -> list[str]:
    """One line per file of bundle ``folder`` that disagrees with ``program`` (the network
    rebuilt from ``arch.json`` and its weights), checked on ``images`` ``(N, C, H, W)``."""
    failures = []
    if not (folder / PROGRAM_FILE).is_file():
        failures.append(f"{PROGRAM_FILE} is missing: the bundle does not carry its program")
    runner = folder / RUNNER_FILE
    if not runner.is_file():
        failures.append(f"{RUNNER_FILE} is missing")
    elif runner.read_bytes() != Path(program_module.__file__).read_bytes():
        failures.append(
            f"{RUNNER_FILE} is not the numpy runner of this pikenas version (altered, or written "
            "by another version: export the bundle again)"
        )
    failures += _cost_failures(folder / COST_FILE, program)
    if (folder / ONNX_FILE).exists():
        from pikenas.space.program.onnx.export_onnx import check_onnx_file

        try:
            check_onnx_file(program, folder / ONNX_FILE, images)
        except EvaluationError as exc:
            failures.append(f"{ONNX_FILE}: {exc}")
    if (folder / QONNX_FILE).exists():
        from pikenas.results.export._qonnx_check import check_qonnx_file

        try:
            check_qonnx_file(program, folder / QONNX_FILE, images)
        except EvaluationError as exc:
            failures.append(f"{QONNX_FILE}: {exc}")
    return failures


def _cost_failures(path: Path, program: IntegerProgram) -> list[str]:
    from pikenas.evaluators.cost import CostTable, count_ace

    if not path.is_file():
        return [f"{COST_FILE} is missing"]
    try:
        if path.stat().st_size > _MAX_COST_BYTES:
            return [f"{COST_FILE} is larger than {_MAX_COST_BYTES // 2**20} MiB: not ours"]
        stated = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return [f"{COST_FILE} cannot be read: {type(exc).__name__}"]
    if not isinstance(stated, dict):
        return [f"{COST_FILE} is not a JSON object"]
    actual = count_ace(program).to_dict()
    keys = list(_EXACT_KEYS)
    if stated.get("cost_table") == CostTable.default().name:
        keys.append("ace_v2")
    wrong = [key for key in keys if stated.get(key) != actual[key]]
    return [
        f"{COST_FILE} states {key} {stated.get(key)!r}, the program has {actual[key]!r}"
        for key in wrong
    ]
