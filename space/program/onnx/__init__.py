"""ONNX and QONNX, both ways: the integer program exported as a plain ONNX graph (checked bit for
bit in onnxruntime) and as QONNX, and ONNX / QONNX models imported back into a program (so
``pikenas ace MODEL.onnx`` prices foreign graphs with the same rules)."""

from __future__ import annotations

from pikenas.space.program.onnx.export_onnx import OnnxExportError, export_onnx, program_to_onnx
from pikenas.space.program.onnx.export_qonnx import QonnxExportError, program_to_qonnx
from pikenas.space.program.onnx.importer import OnnxImportError, import_onnx

__all__ = [
    "OnnxExportError",
    "OnnxImportError",
    "QonnxExportError",
    "export_onnx",
    "import_onnx",
    "program_to_onnx",
    "program_to_qonnx",
]
