"""`pikenas verify`: zoo names, JSON files and bundles; exit 0 when exact, 1 on a mismatch (a
tampered bundle), 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from pikenas.results.export.bundle import export_trial
from pikenas.search.cli import app
from pikenas.space.nn.build import build_model
from pikenas.space.program.ir import CONSTANTS_FILE, read_safetensors, write_safetensors
from tests.results_tests._studies import Point, make_run, tiny_arch

torch.set_num_threads(1)
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["verify", *args])


def test_zoo_model_is_exact_and_the_json_has_the_keys() -> None:
    result = invoke("tiny-pikelpn", "--json", "--images", "8")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in (
        "mismatches",
        "max_logit_diff",
        "ace_v2",
        "ace_v1",
        "overflows",
        "widest",
        "stages",
        "training_forward",
    ):
        assert key in data
    assert data["exact"] and data["mismatches"] == 0 and data["overflows"] == []
    assert data["images"] == 8 and data["stages"] > 0


def test_text_report_on_real_images(tmp_path: Path) -> None:
    arch = tiny_arch()
    path = tmp_path / "arch.json"
    path.write_text(arch.to_json())
    weights = tmp_path / "w.safetensors"
    model = build_model(arch, seed=4)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if "running_var" in name:
                tensor.uniform_(0.5, 2.0)
    save_file(dict(model.state_dict()), str(weights))
    result = invoke(str(path), "--weights", str(weights), "--dataset", "digits", "--images", "16")
    assert result.exit_code == 0, result.output
    assert "exact on 16 images (data set digits)" in result.stdout
    assert "mismatching elements (numpy runner vs PyTorch eval forward): 0" in result.stdout
    assert "widest integer per layer" in result.stdout and "stem.conv" in result.stdout


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    make_run(run, [Point()])
    return export_trial(run, 0)


@pytest.mark.slow
def test_bundle_is_exact_and_a_tampered_one_is_not(bundle: Path) -> None:
    result = invoke(str(bundle), "--images", "4")
    assert result.exit_code == 0, result.output
    arrays = read_safetensors(bundle / CONSTANTS_FILE)
    name = next(n for n, a in arrays.items() if a.dtype == np.float32 and a.size > 1)
    arrays[name] = arrays[name] + 1.0
    write_safetensors(bundle / CONSTANTS_FILE, arrays)
    result = invoke(str(bundle), "--images", "4")
    assert result.exit_code == 1, result.output
    assert "NOT EXACT" in result.stdout and f"constant {name} differs" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "unknown zoo model"),
        (["missing.json"], "no such file"),
        (["tiny-w8a8", "--dataset", "cifar10"], "--data-dir"),
        (["tiny-w8a8", "--weights", "absent.safetensors"], "no such file"),
        (["tiny-w8a8", "--images", "0"], "--images"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_weights_of_another_network_are_refused(tmp_path: Path) -> None:
    weights = tmp_path / "w.safetensors"
    save_file(dict(build_model(tiny_arch(channels=4)).state_dict()), str(weights))
    result = invoke("tiny-w8a8", "--weights", str(weights))
    assert result.exit_code == 2 and "does not fit this architecture" in result.output


def test_a_bundles_hls4ml_check_is_reported(tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_run(run, [Point()])
    bundle = export_trial(run, 0, formats=("hls4ml",))
    result = invoke(str(bundle), "--images", "4")
    assert result.exit_code == 0, result.output  # a refusal is reported, not a failure
    assert "hls4ml C simulation: not converted: stem.stage: mul -> float32" in result.stdout
    data = json.loads(invoke(str(bundle), "--images", "4", "--json").stdout)
    assert data["hls4ml"]["compiled"] is False and data["hls4ml"]["refusals"]
