"""hls4ml: which programs convert (one-line refusals for the rest), the C simulation of a
converted one equals the program bit for bit, and a wrong project is caught."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pikenas.results.export import _hls4ml
from pikenas.results.export._hls4ml import export_hls4ml, hls4ml_available, hls4ml_refusals
from pikenas.space.nn.build import build_model
from pikenas.space.zoo.catalog import get_zoo_arch, zoo_names

torch.set_num_threads(1)
MISSING = hls4ml_available()
needs_hls4ml = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def _program(name: str):  # noqa: ANN202
    resolution = None if name.startswith("tiny-") else 32
    return build_model(get_zoo_arch(name, resolution=resolution), seed=0).program()


def _images(program, count: int = 8) -> np.ndarray:  # noqa: ANN001
    generator = np.random.default_rng(0)
    return generator.standard_normal((count, *program.input.shape)).astype(np.float32)


@pytest.mark.parametrize("name", [n for n in zoo_names() if n.startswith(("tiny-", "pikelpn-1x",
                                                                          "pokebnn-0.5x"))])
def test_every_zoo_model_converts_or_says_why_in_one_line(name: str) -> None:
    refusals = hls4ml_refusals(_program(name))
    if "pikelpn" in name:  # pow2 QuantNorm: integer from the input codes to the classifier
        assert refusals == []
    else:  # float batch norm (fused float multiply-add) or a float network
        assert len(refusals) == 1 and "\n" not in refusals[0]
        assert "fixed-point" in refusals[0]


def test_a_refused_program_writes_its_reason(tmp_path: Path) -> None:
    program = _program("tiny-w8a8")
    check = export_hls4ml(program, tmp_path, _images(program))
    assert not check.compiled and check.refusals
    stored = json.loads((tmp_path / "hls4ml" / "check.json").read_text())
    assert stored["summary"].startswith("not converted: stem.stage: mul -> float32")


@needs_hls4ml
@pytest.mark.slow
def test_c_simulation_is_bit_exact_and_a_wrong_project_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = _program("tiny-pikelpn")
    images = _images(program, 16)
    check = export_hls4ml(program, tmp_path / "good", images)
    assert check.compiled and check.exact, check.summary
    assert check.predictions_equal == 16
    assert (tmp_path / "good" / "hls4ml" / "project" / "firmware").is_dir()
    affine = _hls4ml._affine

    def shift_off_by_one(graph, operation, scale, bias, result):  # noqa: ANN001, ANN202
        return affine(graph, operation, scale * (2.0 if operation.op == "shift" else 1.0),
                      bias, result)

    monkeypatch.setattr(_hls4ml, "_affine", shift_off_by_one)
    wrong = export_hls4ml(program, tmp_path / "bad", images)
    assert wrong.compiled and not wrong.exact and wrong.mismatching_images > 0


def test_identity_steps_make_no_layer_and_the_clip_after_them_stays() -> None:
    """Training can leave a residual's shifts at 0 and its offset at 0: hls4ml would delete
    such a scale-1, bias-0 layer and the clip folded into it (the trained fmnist-pikelpn's C
    simulation differed on every image); they alias their input and the clip saturates the
    real producer instead."""
    program = build_model(get_zoo_arch("fmnist-pikelpn"), seed=0).program()
    steps = [
        op for op in program.ops
        if op.layer.endswith("residual") and op.op.value in ("shift", "add")
        and op.inputs[1] in program.arrays
    ]
    assert steps
    for op in steps:
        program.arrays[op.inputs[1]][...] = 0
    graph, _, _ = _hls4ml._build(program)
    assert graph.refusals == []
    for layer in graph.layers:
        if layer["class_name"] == "BatchNormalization":
            assert not (np.all(layer["scale_data"] == 1) and np.all(layer["bias_data"] == 0))
    clip = next(op for op in program.ops if op.layer.endswith("residual") and op.op.value == "clip")
    assert "AP_SAT" in graph.config[graph.names[clip.output]]["Precision"]["result"]


def _signs_and_slopes():  # noqa: ANN202
    """tiny-pikelpn with DPReLU (pow2 slopes: shifts), PReLU under int8 QuantNorm (int8 slope
    codes: multiplies) and a block of 1-bit (+-1 sign) activations; slopes and biases moved off
    their initial values so every branch is exercised."""
    arch = get_zoo_arch("tiny-pikelpn")
    blocks = list(arch.blocks)
    blocks[0] = blocks[0].model_copy(update={"activation": "dprelu"})
    blocks[1] = blocks[1].model_copy(update={"activation": "prelu", "scale_format": "int8"})
    blocks[2] = blocks[2].model_copy(
        update={"activation": "dprelu", "activation_bits": 1, "residual": False}
    )
    arch = type(arch).model_validate({**arch.model_dump(), "blocks": [
        b.model_dump() for b in blocks
    ]})
    model = build_model(arch, seed=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "slope" in name or "alpha" in name or "bias" in name:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.3)
    program = model.eval().program()
    assert {"select", "sign"} <= {op.op.value for op in program.ops}
    return program


def test_signs_and_slopes_convert() -> None:
    """A per-sign slope becomes a * relu(t) - b * relu(-t); a sign 2 * clip(t + 1, 0, 1) - 1."""
    program = _signs_and_slopes()
    assert hls4ml_refusals(program) == []
    graph, _, _ = _hls4ml._build(program)
    assert not any(layer.get("activation") == "binary_tanh" for layer in graph.layers)
    assert sum(layer.get("activation") == "relu" for layer in graph.layers) >= 4


@needs_hls4ml
@pytest.mark.slow
def test_signs_and_slopes_simulate_bit_exact_and_a_wrong_step_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = _signs_and_slopes()
    images = _images(program, 16)
    check = export_hls4ml(program, tmp_path / "good", images)
    assert check.compiled and check.exact, check.summary
    scale_layer = _hls4ml._scale_layer

    def sign_at_zero_wrong(graph, tag, source, shape, scale, bias, result):  # noqa: ANN001, ANN202
        if tag == "step":  # clip(t, 0, 1): sign(0) = -1 instead of +1
            bias = bias * 0
        return scale_layer(graph, tag, source, shape, scale, bias, result)

    monkeypatch.setattr(_hls4ml, "_scale_layer", sign_at_zero_wrong)
    wrong = export_hls4ml(program, tmp_path / "bad", images)
    assert wrong.compiled and not wrong.exact and wrong.mismatching_images > 0
