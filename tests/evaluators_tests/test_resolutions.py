"""Every resolution and channel count trains, checkpoints, resumes and exports (CPU).

Tiny synthetic sets (a few dozen images) at 8, 16, 28, 32 and 64 px with 1 and 3 channels:
one epoch, a run killed after its first checkpoint and resumed (ending with the weights of an
uninterrupted run), and a bundle whose program, ``model.onnx`` and ``run_program.py`` take raw
uint8 pixels. The larger sizes are marked ``slow``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pikenas.evaluators.data._splits import DatasetSplits, Split, channel_stats
from pikenas.evaluators.training import _checkpoint
from pikenas.evaluators.training import loop as training
from pikenas.evaluators.training.loop import TrainConfig, train
from pikenas.space.arch import ArchConfig, ConvQuantSpec, ConvStemSpec, HeadSpec, PikeBlockSpec

torch.set_num_threads(1)

_SLOW = {64, 32}


def _splits(resolution: int, channels: int, seed: int = 0) -> DatasetSplits:
    """Four classes of smooth random patterns plus noise, as uint8 pixels."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(4, channels, 3, 3, generator=generator)
    prototypes = torch.nn.functional.interpolate(
        coarse, size=(resolution, resolution), mode="bilinear", align_corners=True
    )
    parts = []
    for size in (32, 16, 16):
        labels = torch.arange(size) % 4
        values = prototypes[labels] + 0.2 * torch.randn(
            size, channels, resolution, resolution, generator=generator
        )
        pixels = (values * 255).round().clamp(0, 255).to(torch.uint8)
        parts.append(Split(pixels, labels))
    mean, std = channel_stats(parts[0].images)
    return DatasetSplits("tiny", *parts, num_classes=4, mean=mean, std=std)


def _arch(resolution: int, channels: int) -> ArchConfig:
    spec = ConvQuantSpec(weight_bits=4)
    return ArchConfig(
        name=f"r{resolution}c{channels}",
        input_channels=channels,
        resolution=resolution,
        num_classes=4,
        stem=ConvStemSpec(out_channels=8, stride=2),
        blocks=(
            PikeBlockSpec(
                out_channels=16, stride=2, depthwise=spec, pointwise=spec, activation_bits=4
            ),
        ),
        head=HeadSpec(),
    )


CONFIG = TrainConfig(
    dataset="synthetic", epochs=2, batch_size=16, lr=0.01, warmup_epochs=0.5, threads=1
)


def _cases():
    for resolution in (8, 16, 28, 32, 64):
        for channels in (1, 3):
            marks = [pytest.mark.slow] if resolution in _SLOW else []
            yield pytest.param(resolution, channels, marks=marks, id=f"{resolution}px-{channels}ch")


@pytest.mark.parametrize(("resolution", "channels"), list(_cases()))
def test_train_kill_resume_and_export_from_raw_pixels(tmp_path, monkeypatch, resolution, channels):
    from pikenas.results.export.bundle import export_trained

    splits = _splits(resolution, channels)
    arch = _arch(resolution, channels)
    straight = train(arch, CONFIG, tmp_path / "straight", splits=splits)

    real_save = _checkpoint.save_checkpoint

    def save_then_stop(path, model, optimizer, generator, state, best=None):
        real_save(path, model, optimizer, generator, state, best)
        raise KeyboardInterrupt  # killed right after the first checkpoint

    monkeypatch.setattr(training, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(arch, CONFIG, tmp_path / "resumed", splits=splits)
    monkeypatch.setattr(training, "save_checkpoint", real_save)
    resumed = train(arch, CONFIG, tmp_path / "resumed", splits=splits)
    first = load_file(str(tmp_path / "straight" / "weights.safetensors"))
    second = load_file(str(tmp_path / "resumed" / "weights.safetensors"))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert resumed.test_accuracy == straight.test_accuracy

    stored = ArchConfig.from_json((tmp_path / "straight" / "arch.json").read_text())
    assert stored.input is not None and stored.input.mean == splits.mean

    bundle = export_trained(tmp_path / "straight", tmp_path, formats=("onnx",))
    pixels = splits.test.images.numpy()  # raw uint8, (N, C, H, W)
    np.save(tmp_path / "pixels.npy", pixels)
    run = subprocess.run(
        [
            sys.executable,
            str(bundle / "run_program.py"),
            str(bundle),
            "--input",
            str(tmp_path / "pixels.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    logits = np.asarray(json.loads(run.stdout))
    accuracy = float((logits.argmax(1) == splits.test.labels.numpy()).mean())
    assert accuracy == pytest.approx(straight.test_accuracy)

    import onnxruntime

    session = onnxruntime.InferenceSession(str(bundle / "model.onnx"))
    name = session.get_inputs()[0].name
    assert session.get_inputs()[0].type == "tensor(uint8)"  # what a camera gives
    onnx_logits = session.run(None, {name: pixels.astype(np.uint8)})[0]
    assert float((onnx_logits.argmax(1) == splits.test.labels.numpy()).mean()) == pytest.approx(
        straight.test_accuracy
    )
