"""A trial fully trained by evaluators.training.train, exported and loaded back."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import torch

from pikenas.evaluators.cost import count_ace
from pikenas.evaluators.training.loop import TrainConfig, train
from pikenas.results.export.bundle import export_trial, load_bundle
from tests.results_tests._studies import Point, make_run, tiny_arch

torch.set_num_threads(1)


@pytest.mark.slow
def test_trained_trial_round_trip(tmp_path):
    arch = tiny_arch(((4, 4), (4, 4)))
    final_dir = tmp_path / "run" / "final" / "trial-0"
    result = train(arch, TrainConfig(dataset="digits", epochs=1, threads=1), final_dir)
    make_run(
        tmp_path / "run",
        [
            Point(
                0.8,
                1000.0,
                bits=((4, 4), (4, 4)),
                attrs={"final_dir": str(final_dir), "final_accuracy": result.test_accuracy},
            )
        ],
    )
    bundle = export_trial(tmp_path / "run", 0)
    loaded_arch, model = load_bundle(bundle)
    assert loaded_arch.archid == arch.archid
    weights = (bundle / "weights.safetensors").read_bytes()
    assert weights == (final_dir / "weights.safetensors").read_bytes()
    # raw pixels, what the trained (raw-pixel) network and its uint8 model.onnx take
    x = torch.randint(0, 256, (5, 1, 8, 8), generator=torch.Generator().manual_seed(1)).float()
    with torch.no_grad():
        expected = model(x).numpy()
    session = onnxruntime.InferenceSession(str(bundle / "model.onnx"))
    pixels = x.numpy().astype(np.uint8)
    actual = np.concatenate(
        [session.run(["logits"], {"input": pixels[i : i + 1]})[0] for i in range(5)]
    )
    assert np.max(np.abs(actual - expected)) <= 1e-4 and np.abs(expected).max() > 1e-2
    cost = json.loads((bundle / "cost.json").read_text())
    assert cost["ace_v2"] == count_ace(loaded_arch).ace_v2
    assert "No trained weights" not in (bundle / "README.md").read_text()
