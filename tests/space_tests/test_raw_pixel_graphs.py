"""A raw-pixel network's exported graphs take what a camera gives: ``model.onnx`` a uint8 input
(cast inside), ``model.qonnx.onnx`` an input declared ``UINT8``; both price and compute as the
program does."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from pikenas.evaluators.cost import count_ace, count_onnx
from pikenas.space.nn.build import build_model
from pikenas.space.program.onnx._common import DATATYPE_KEY, raw_pixels, takes_raw_pixels
from pikenas.space.program.onnx.export_onnx import program_to_onnx
from pikenas.space.program.onnx.export_qonnx import program_to_qonnx
from pikenas.space.zoo import get_zoo_arch

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def program():  # noqa: ANN201
    model = build_model(get_zoo_arch("fmnist-w4a4"), seed=3).eval()
    return model.program()


def test_model_onnx_takes_uint8_pixels_and_equals_the_program(program, tmp_path) -> None:  # noqa: ANN001
    assert takes_raw_pixels(program)
    path = tmp_path / "model.onnx"
    onnx.save(program_to_onnx(program), str(path))
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    pixels = np.random.default_rng(0).integers(0, 256, size=(6, 1, 28, 28), dtype=np.uint8)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"input": pixels})[0]
    np.testing.assert_array_equal(logits, program.run(pixels.astype(np.float32)).output)
    with pytest.raises(Exception, match="(?i)type"):  # a float array is refused, not misread
        session.run(["logits"], {"input": pixels.astype(np.float32)})
    assert count_onnx(path).ace_v2 == count_ace(program).ace_v2


def test_model_qonnx_declares_its_input_uint8(program, tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "model.qonnx.onnx"
    onnx.save(program_to_qonnx(program), str(path))
    annotations = {
        a.tensor_name: {e.key: e.value for e in a.quant_parameter_tensor_names}
        for a in onnx.load(str(path)).graph.quantization_annotation
    }
    assert annotations["input"][DATATYPE_KEY] == "UINT8"
    assert count_onnx(path).ace_v2 == count_ace(program).ace_v2


def test_raw_pixels_refuses_normalized_values() -> None:
    pixels = np.arange(784, dtype=np.float64).reshape(1, 1, 28, 28) % 256
    assert raw_pixels(pixels).dtype == np.uint8
    for wrong in (pixels / 255, pixels + 1, pixels - 1, pixels + 0.5):
        with pytest.raises(ValueError, match="raw pixels"):
            raw_pixels(wrong)
