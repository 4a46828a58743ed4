"""Writing a bundle's ``model.qonnx.onnx`` and checking it: ``onnx.checker``, ``pikenas ace`` of
the file equals the program's ACE, and (where the ``qonnx`` package is installed: the ``dev``
extra) ``qonnx`` cleanup, shape and data-type inference and ``execute_onnx`` reproduce the
program's output."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pikenas.space.errors import EvaluationError

__all__ = ["QonnxCheck", "check_qonnx_file",
    "export_qonnx", "qonnx_available", "run_qonnx", "QONNX_IMAGES"]

#: images executed by qonnx at export (its node-by-node executor is slow on big graphs).
QONNX_IMAGES = 2


@dataclass(frozen=True)
class QonnxCheck:
    """What the check of ``model.qonnx.onnx`` found: ``executed`` (qonnx was installed),
    ``max_difference`` |qonnx - program| on the logits of ``images`` inputs, ``ace_equal``
    (the imported count equals the program's, exactly)."""

    images: int
    executed: bool
    max_difference: float
    exact: bool
    ace_equal: bool
    notes: list[str] = field(default_factory=list)


def qonnx_available() -> bool:
    try:
        import qonnx  # noqa: F401
    except ImportError:
        return False
    return True


def run_qonnx(model: Any, images: np.ndarray) -> np.ndarray:
    """``qonnx``: cleanup, shape and data-type inference, then ``execute_onnx`` one image at a
    time; the logits ``(N, classes)``."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.cleanup import cleanup_model

    wrapper = cleanup_model(ModelWrapper(model))
    wrapper = wrapper.transform(InferShapes()).transform(InferDataTypes())
    name_in, name_out = wrapper.graph.input[0].name, wrapper.graph.output[0].name
    rows = [
        execute_onnx(wrapper, {name_in: images[i : i + 1].astype(np.float32)})[name_out]
        for i in range(len(images))
    ]
    return np.concatenate(rows, axis=0)


def export_qonnx(program: Any, path: Path, images: np.ndarray) -> QonnxCheck:
    """Write ``program`` as QONNX to ``path`` and check the file (:func:`check_qonnx_file`); an
    unwritable or wrong graph raises :class:`EvaluationError`."""
    import onnx

    from pikenas.space.program.onnx.export_qonnx import QonnxExportError, program_to_qonnx

    try:
        model = program_to_qonnx(program)
    except QonnxExportError as exc:
        raise EvaluationError(f"QONNX export failed: {exc}") from None
    onnx.save(model, str(path))
    return check_qonnx_file(program, path, images)


def check_qonnx_file(program: Any, path: Path, images: np.ndarray) -> QonnxCheck:
    """Check the QONNX file ``path`` against ``program`` (see the module docstring): valid,
    priced by ``pikenas ace`` exactly as the program, and (when qonnx is installed) executed to
    the program's logits on the first :data:`QONNX_IMAGES` of ``images``."""
    import onnx

    from pikenas.evaluators.cost import count_ace, count_onnx
    from pikenas.space.program.onnx.importer import OnnxImportError

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
        imported = count_onnx(path).to_dict()
    except (onnx.checker.ValidationError, OnnxImportError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EvaluationError(f"the QONNX graph is invalid: {first}") from None
    native = count_ace(program).to_dict()
    keys = ("ace_v1", "ace_v2", "macs", "params", "breakdown")
    ace_equal = all(imported[key] == native[key] for key in keys if key != "breakdown") and (
        _rows(imported) == _rows(native)
    )
    if not ace_equal:
        raise EvaluationError(
            f"pikenas ace of the QONNX graph gives ACE v2 {imported['ace_v2']}, the program "
            f"{native['ace_v2']}; the exported graph is wrong"
        )
    if not qonnx_available():
        return QonnxCheck(0, False, 0.0, False, True, ["qonnx not installed: not executed"])
    sample = images[:QONNX_IMAGES]
    actual = run_qonnx(model, sample)
    expected = program.run(sample).output
    difference = float(np.max(np.abs(actual - expected), initial=0.0))
    exact = bool(program.values[program.output].exact)
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-30)
    if (exact and difference != 0.0) or difference > 1e-4 * scale:
        raise EvaluationError(
            f"qonnx executes {path.name} to logits {difference:.3g} away from the integer "
            "program; the graph is wrong"
        )
    notes = [] if exact else ["float convs: onnxruntime sums in its own order"]
    return QonnxCheck(len(sample), True, difference, exact, True, notes)


def _rows(report: dict[str, Any]) -> list[tuple]:
    fields = ("layer", "op", "count", "bits_a", "bits_b", "float_operands", "cost")
    return sorted(tuple(row[f] for f in fields) for row in report["breakdown"])
