from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import torch
from safetensors.torch import save_file

from evaluators.ace import count_ace
from results.export import (
    ARCH_FILE,
    CARD_FILE,
    COST_FILE,
    ONNX_FILE,
    WEIGHTS_FILE,
    export_onnx,
    export_pareto,
    export_trial,
    load_bundle,
)
from space.arch import ArchConfig, ConvQuantSpec, PikeBlockSpec
from space.build import build_model
from space.errors import EvaluationError, RunDirError
from tests.results_tests._studies import Point, make_run, tiny_arch

torch.set_num_threads(1)
TRAINED_BITS = ((4, 4), (4, 4))


def trained_final_dir(tmp_path):
    """A fake full-training folder: arch.json + weights that differ from the initial ones."""
    arch = tiny_arch(TRAINED_BITS)
    model = build_model(arch, seed=7)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and "scale" not in name and "running_var" not in name:
                tensor.add_(0.1 * torch.randn_like(tensor))
    final = tmp_path / "final" / "trial-1"
    final.mkdir(parents=True)
    save_file(dict(model.state_dict()), str(final / WEIGHTS_FILE))
    (final / ARCH_FILE).write_text(arch.to_json())
    return final, model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("export")
    final, model = trained_final_dir(tmp_path)
    run = tmp_path / "run"
    make_run(
        run,
        [
            Point(0.5, 100.0, bits=((2, 2), (2, 2))),
            Point(
                0.9,
                900.0,
                bits=TRAINED_BITS,
                attrs={"final_dir": str(final), "final_accuracy": 0.93},
            ),
            Point(0.9, 900.0, bits=TRAINED_BITS, attrs={"status": "duplicate"}),
            Point(0.1, 950.0),
        ],
    )
    stale = run / "exports" / "trial-0"
    stale.mkdir(parents=True)
    (stale / "stale.txt").write_text("from an earlier export")
    bundles = export_pareto(run)
    return run, bundles, model


@pytest.mark.slow
def test_pareto_export_one_bundle_per_front_architecture(exported):
    run, bundles, _ = exported
    assert [b.name for b in bundles] == ["trial-0", "trial-1"]  # trial 2 duplicates trial 1
    assert all(b.parent == run / "exports" for b in bundles)
    assert sorted(p.name for p in bundles[1].iterdir()) == sorted(
        [ARCH_FILE, WEIGHTS_FILE, ONNX_FILE, COST_FILE, CARD_FILE]
    )
    assert not (bundles[0] / WEIGHTS_FILE).exists()
    assert not [p for p in (run / "exports").iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_bundle_round_trip_gives_identical_outputs_and_ace(exported):
    _, bundles, trained = exported
    arch, model = load_bundle(bundles[1])
    assert arch == tiny_arch(TRAINED_BITS) and not model.training
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(model(x), trained(x))
        reference = model(x).numpy()
    cost = json.loads((bundles[1] / COST_FILE).read_text())
    assert cost["ace_v2"] == count_ace(arch).ace_v2 and cost["breakdown"]
    session = onnxruntime.InferenceSession(str(bundles[1] / ONNX_FILE))
    logits = np.concatenate(
        [session.run(["logits"], {"input": x[i : i + 1].numpy()})[0] for i in range(4)]
    )
    assert np.max(np.abs(logits - reference)) <= 1e-4
    assert np.abs(reference).max() > 1e-3  # the comparison is not trivially between zeros


@pytest.mark.slow
def test_model_card_says_how_it_was_found(exported):
    _, bundles, _ = exported
    trained = (bundles[1] / CARD_FILE).read_text()
    assert "trial 1 of study pikenas" in trained and "93.00%" in trained
    assert "sampler: nsga2" in trained and "data set: digits" in trained
    assert "`8/8 4/8 4/4 4/4 4/4 8/8`" in trained and "load_bundle" in trained
    untrained = (bundles[0] / CARD_FILE).read_text()
    assert "No trained weights" in untrained


def test_missing_trained_weights_fail_without_leaving_a_bundle(tmp_path):
    run = tmp_path / "run"
    make_run(run, [Point(0.5, 10.0, attrs={"final_dir": str(tmp_path / "gone")})])
    with pytest.raises(RunDirError, match="weights.safetensors is missing"):
        export_trial(run, 0)
    assert not (run / "exports" / "trial-0").exists()


def test_unknown_trial_and_bad_bundle(tmp_path):
    run = tmp_path / "run"
    make_run(run, [Point()])
    with pytest.raises(RunDirError, match="no trial 5; trial numbers go from 0 to 0"):
        export_trial(run, 5)
    with pytest.raises(RunDirError, match="not an export bundle"):
        load_bundle(tmp_path)


@pytest.mark.slow
def test_export_replaces_an_existing_bundle(exported):
    _, bundles, _ = exported
    assert not (bundles[0] / "stale.txt").exists() and (bundles[0] / ONNX_FILE).is_file()


class _ExportsSomethingElse(torch.nn.Module):
    """Computes x in eager mode but 2 x while being exported: a wrong graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 2.0 if torch.compiler.is_exporting() else 1.0
        return x.flatten(1)[:, :10] * scale


@pytest.mark.slow
def test_onnx_mismatch_fails_loudly(tmp_path):
    with pytest.raises(EvaluationError, match="differs from PyTorch by .*the exported graph"):
        export_onnx(_ExportsSomethingElse(), tiny_arch(), tmp_path / "m.onnx")


@pytest.mark.slow
def test_tie_sensitive_binary_network_is_accepted_and_explained(tmp_path):
    """Untrained binary blocks after a ReLU stem: depthwise sums are exactly 0 in exact
    arithmetic, float32 noise decides their sign, so runtimes cannot agree to 1e-4."""
    binary = ConvQuantSpec(weight_bits=1, weight_quantizer="binary")
    block = PikeBlockSpec(
        out_channels=64,
        depthwise=binary,
        pointwise=binary,
        activation_bits=1,
        activation="prelu",
    )
    arch = tiny_arch().model_copy(update={"blocks": (block, block)})
    arch = ArchConfig.from_json(arch.to_json())
    check = export_onnx(build_model(arch).eval(), arch, tmp_path / "m.onnx")
    assert check.tie_sensitivity is not None and check.tie_sensitivity > 1e-4
    assert check.max_difference <= 1e-4 + 2 * check.tie_sensitivity
