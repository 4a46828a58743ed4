"""The training loop: learning, determinism, divergence, checkpoints and exact resume."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pikenas.evaluators._atomic import LEDGER_NAME
from pikenas.evaluators.data.datasets import Split, fit_arch_to_dataset, load_dataset
from pikenas.evaluators.training import _checkpoint
from pikenas.evaluators.training import loop as training
from pikenas.evaluators.training.loop import (
    TrainConfig,
    TrainResult,
    evaluate,
    learning_rate,
    train,
)
from pikenas.space.arch import ArchConfig, ConvQuantSpec, ConvStemSpec, HeadSpec, PikeBlockSpec
from pikenas.space.errors import EvaluationError, RunDirError, SearchConfigError

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]


def micro_arch(bits: int = 8, name: str = "micro") -> ArchConfig:
    """A stem and one separable block: trains in milliseconds per step on 8x8 inputs."""
    family = "float" if bits == 32 else "uniform"
    spec = ConvQuantSpec(weight_bits=bits, weight_quantizer=family)
    return ArchConfig(
        name=name,
        input_channels=3,
        resolution=8,
        num_classes=4,
        stem=ConvStemSpec(
            out_channels=8, stride=2, conv=spec, input_bits=bits, activation_bits=bits
        ),
        blocks=(
            PikeBlockSpec(out_channels=16, depthwise=spec, pointwise=spec, activation_bits=bits),
        ),
        head=HeadSpec(input_bits=bits, linear=spec),
    )


SYNTHETIC = TrainConfig(dataset="synthetic", epochs=4, batch_size=64, lr=0.01, warmup_epochs=0.5)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "weights.safetensors"))


def assert_same_tensors(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


# ---- pieces -------------------------------------------------------------------------------
def test_learning_rate_warms_up_linearly_then_follows_a_cosine():
    def at(step: int) -> float:
        return learning_rate(step, peak=1.0, warmup_steps=2, total_steps=10)

    assert [at(0), at(1), at(2)] == [0.5, 1.0, 1.0]
    assert at(6) == pytest.approx(0.5)  # half-way through the 8 decay steps: cos(pi/2) = 0
    assert at(10) == pytest.approx(0.0)
    assert learning_rate(0, peak=2.0, warmup_steps=0, total_steps=4) == 2.0


def test_distillation_loss_is_zero_for_equal_logits_and_positive_otherwise():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    assert training._distill_loss(logits, logits, 4.0).item() == pytest.approx(0.0, abs=1e-7)
    assert training._distill_loss(logits, logits.flip(1), 4.0).item() > 0


def test_train_config_rejects_unknown_options_and_bad_values_in_one_line():
    with pytest.raises(SearchConfigError, match="invalid training option epochs: .*1"):
        TrainConfig.from_dict({"epochs": 0})
    with pytest.raises(SearchConfigError, match="learning_rate: unknown option; valid ones: .*lr"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    assert TrainConfig().replace(epochs=3).epochs == 3


# ---- the loop -----------------------------------------------------------------------------
def test_a_short_run_on_synthetic_data_learns():
    result = evaluate(micro_arch(), SYNTHETIC.replace(epochs=6))
    assert isinstance(result, TrainResult)
    assert result.epochs == 6 and len(result.curve) == 6
    assert result.val_accuracy > 0.85 and result.test_accuracy > 0.85  # chance is 0.25
    assert result.curve[-1]["train_loss"] < result.curve[0]["train_loss"]
    assert result.images_per_s > 0 and result.wall_s > 0
    assert json.loads(json.dumps(result.to_dict()))["test_accuracy"] == result.test_accuracy


def test_proxy_knobs_resolution_and_data_fraction_are_applied(monkeypatch):
    seen = {}
    original = training._fit

    def spy(arch, config, splits, **kwargs):
        seen["resolution"], seen["arch_resolution"] = splits.resolution, arch.resolution
        return original(arch, config, splits, **kwargs)

    monkeypatch.setattr(training, "_fit", spy)
    budget = SYNTHETIC.replace(epochs=1, resolution=12, data_fraction=0.25)
    result = evaluate(micro_arch(), budget)
    assert seen == {"resolution": 12, "arch_resolution": 12}
    assert result.epochs == 1


def test_same_seed_gives_the_same_weights_and_another_seed_does_not(tmp_path):
    config = SYNTHETIC.replace(epochs=2)
    train(micro_arch(), config, tmp_path / "a")
    train(micro_arch(), config, tmp_path / "b")
    train(micro_arch(), config.replace(seed=1), tmp_path / "c")
    assert_same_tensors(weights(tmp_path / "a"), weights(tmp_path / "b"))
    first, other = weights(tmp_path / "a"), weights(tmp_path / "c")
    assert any(not torch.equal(first[name], other[name]) for name in first)


def test_a_non_finite_loss_raises_an_evaluation_error():
    splits = load_dataset("synthetic")
    poisoned = dataclasses.replace(
        splits, train=Split(splits.train.images * math.nan, splits.train.labels)
    )
    with pytest.raises(EvaluationError, match="diverged: the loss became nan at epoch 1, step 1"):
        evaluate(micro_arch(), SYNTHETIC, splits=poisoned)


def test_sgd_learns_too():
    result = evaluate(micro_arch(), SYNTHETIC.replace(epochs=3, optimizer="sgd", lr=0.2))
    assert result.val_accuracy > 0.6


def test_a_student_distilled_from_a_float_teacher_mimics_it(tmp_path):
    teacher_dir = tmp_path / "teacher"
    train(micro_arch(bits=32, name="teacher"), SYNTHETIC.replace(epochs=8), teacher_dir)
    splits = load_dataset("synthetic")
    config = SYNTHETIC.replace(distill_from=str(teacher_dir), distill_weight=1.0)
    teacher = training.build_teacher(config.distill_from, config, splits)
    config = config.replace(distill_temperature=1.0, epochs=6)
    student_arch = fit_arch_to_dataset(micro_arch(), splits)  # both take raw pixels
    student, result = training._fit(student_arch, config, splits, teacher=teacher)
    student.eval()
    with torch.no_grad():
        images = splits.val.images.float()
        agreement = (student(images).argmax(1) == teacher(images).argmax(1)).float().mean()
    # Trained on the teacher's outputs alone (no labels), the student reproduces its decisions.
    assert agreement > 0.85
    with pytest.raises(Exception, match="neither a folder .* nor a zoo name"):
        evaluate(micro_arch(), SYNTHETIC.replace(epochs=1, distill_from=str(tmp_path / "no")))


# ---- full training: files, resume, refusal ------------------------------------------------
def test_train_writes_the_run_files(tmp_path):
    result = train(micro_arch(), SYNTHETIC.replace(epochs=1), tmp_path / "run")
    names = sorted(p.name for p in (tmp_path / "run").iterdir() if p.name != LEDGER_NAME)
    assert names == [
        "arch.json",
        "checkpoint.safetensors",
        "config.json",
        "metrics.json",
        "weights.safetensors",
    ]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("test_accuracy", "val_accuracy", "epochs", "wall_s", "images_per_s"):
        assert metrics[key] == result.to_dict()[key]
    stored = ArchConfig.from_json((tmp_path / "run" / "arch.json").read_text())
    # Already fitted to synthetic's 8x8x3 and 4 classes; the raw-pixel input spec is added.
    assert stored.replace(input=None) == micro_arch() and stored.archid == micro_arch().archid
    assert stored.input is not None and stored.input.mean == load_dataset("synthetic").mean


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    config = SYNTHETIC.replace(epochs=4)
    train(micro_arch(), config, tmp_path / "straight")

    saved_epochs = []
    real_save = _checkpoint.save_checkpoint

    def save_then_stop_after_two(path, model, optimizer, generator, state, best=None):
        real_save(path, model, optimizer, generator, state, best)
        saved_epochs.append(state["epoch"])
        if state["epoch"] == 2:
            raise KeyboardInterrupt  # as if killed right after the second checkpoint

    monkeypatch.setattr(training, "save_checkpoint", save_then_stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        train(micro_arch(), config, tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "metrics.json").exists()

    result = train(micro_arch(), config, tmp_path / "resumed")
    assert saved_epochs == [1, 2, 3, 4]  # the second call started at epoch 3
    assert result.epochs == 4 and len(result.curve) == 4
    assert_same_tensors(weights(tmp_path / "straight"), weights(tmp_path / "resumed"))
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert result.test_accuracy == straight["test_accuracy"]


def test_a_finished_folder_returns_the_stored_result_without_training(tmp_path, monkeypatch):
    first = train(micro_arch(), SYNTHETIC.replace(epochs=1), tmp_path / "run")

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(training, "_fit", no_training)
    assert train(micro_arch(), SYNTHETIC.replace(epochs=1, threads=2), tmp_path / "run") == first


def test_a_folder_of_another_run_is_refused(tmp_path):
    train(micro_arch(), SYNTHETIC.replace(epochs=1), tmp_path / "run")
    with pytest.raises(RunDirError, match="epochs=1 .*2.*pass another --out"):
        train(micro_arch(), SYNTHETIC.replace(epochs=2), tmp_path / "run")
    with pytest.raises(RunDirError, match="another architecture"):
        train(micro_arch(bits=4), SYNTHETIC.replace(epochs=1), tmp_path / "run")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(RunDirError, match="not a training run"):
        train(micro_arch(), SYNTHETIC.replace(epochs=1), tmp_path / "mine")


# ---- a real SIGKILL -----------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_then_rerun_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    arch_file = tmp_path / "micro.json"
    arch_file.write_text(micro_arch().to_json())
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "search", "train", str(arch_file), "--dataset", "digits"]
    command += ["--epochs", "8", "--seed", "3", "--threads", "1", "--out", str(killed)]
    environment = {**os.environ, "PYTHONPATH": str(REPO)}

    victim = subprocess.Popen(
        command, env=environment, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while not (killed / "checkpoint.safetensors").exists() and victim.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 60 s"
        time.sleep(0.002)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, victim.stderr.read()
    assert not (killed / "metrics.json").exists()

    resumed = subprocess.run(command, env=environment, cwd=tmp_path, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr

    # The uninterrupted reference, in this process with the options the command line sets.
    config = TrainConfig(dataset="digits", epochs=8, seed=3, threads=1)
    train(micro_arch(), config, tmp_path / "straight")
    assert_same_tensors(weights(tmp_path / "straight"), weights(killed))
    assert json.loads((killed / "metrics.json").read_text())["epochs"] == 8


# ---- rungs of successive halving ------------------------------------------------------------
def test_rung_by_rung_ends_exactly_where_one_go_ends(tmp_path):
    config = SYNTHETIC.replace(epochs=4)
    whole = evaluate(micro_arch(), config)
    checkpoint = tmp_path / "proxy.safetensors"
    first = evaluate(micro_arch(), config, until_epoch=1, checkpoint=checkpoint)
    assert first.epochs == 1 and math.isnan(first.test_accuracy) and 0 <= first.val_accuracy <= 1
    again = evaluate(micro_arch(), config, until_epoch=1, checkpoint=checkpoint)
    assert again.val_accuracy == first.val_accuracy  # measuring a rung leaves the state as it was
    evaluate(micro_arch(), config, until_epoch=3, checkpoint=checkpoint)
    last = evaluate(micro_arch(), config, until_epoch=4, checkpoint=checkpoint)
    assert (last.val_accuracy, last.test_accuracy, last.val_loss) == (
        whole.val_accuracy,
        whole.test_accuracy,
        whole.val_loss,
    )
    assert [entry["val_accuracy"] for entry in last.curve] == [
        entry["val_accuracy"] for entry in whole.curve
    ]


def test_a_rung_is_measured_with_the_training_forward(monkeypatch):
    """Below the last epoch: batch statistics (the running averages lag behind early on), in
    equal batches, without touching the model's state."""
    calls = []
    real = training.batch_statistics_eval

    def spy(model, split, splits, batch_size, channels_last):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        result = real(model, split, splits, batch_size, channels_last)
        assert_same_tensors(before, model.state_dict())
        calls.append(len(split))
        return result

    monkeypatch.setattr(training, "batch_statistics_eval", spy)
    evaluate(micro_arch(), SYNTHETIC, until_epoch=2)
    assert len(calls) == 1
    evaluate(micro_arch(), SYNTHETIC)  # the last epoch: the eval forward, no rung measure
    assert len(calls) == 1


def test_a_checkpoint_past_the_rung_is_trained_again(tmp_path):
    config = SYNTHETIC.replace(epochs=4)
    checkpoint = tmp_path / "proxy.safetensors"
    evaluate(micro_arch(), config, until_epoch=3, checkpoint=checkpoint)
    fresh = evaluate(micro_arch(), config, until_epoch=1)
    again = evaluate(micro_arch(), config, until_epoch=1, checkpoint=checkpoint)
    assert again.epochs == 1
    assert (again.val_accuracy, again.val_loss) == (fresh.val_accuracy, fresh.val_loss)


def _killed_after_then_resumed(epoch, config, folder, monkeypatch):
    """Train into ``folder`` killed right after epoch ``epoch``'s checkpoint, then rerun."""
    real_save = _checkpoint.save_checkpoint

    def save_then_stop(path, model, optimizer, generator, state, best=None):
        real_save(path, model, optimizer, generator, state, best)
        if state["epoch"] == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(micro_arch(), config, folder)
    monkeypatch.setattr(training, "save_checkpoint", real_save)
    return train(micro_arch(), config, folder)


def test_compiled_quantizers_train_the_same_weights_again_and_after_a_resume(
    tmp_path, monkeypatch
):
    config = SYNTHETIC.replace(epochs=3, compile="on")
    train(micro_arch(), config, tmp_path / "a")
    train(micro_arch(), config, tmp_path / "b")
    assert_same_tensors(weights(tmp_path / "a"), weights(tmp_path / "b"))
    _killed_after_then_resumed(1, config, tmp_path / "resumed", monkeypatch)
    assert_same_tensors(weights(tmp_path / "a"), weights(tmp_path / "resumed"))


def test_auto_compiles_only_schedules_long_enough_to_win_the_compile_back(monkeypatch):
    decisions = []
    real = training.compiled_quantizers

    def spy(on):
        decisions.append(on)
        return real(on)

    monkeypatch.setattr(training, "compiled_quantizers", spy)
    evaluate(micro_arch(), SYNTHETIC.replace(epochs=1))
    monkeypatch.setattr(training, "COMPILE_MIN_STEPS", 2)
    evaluate(micro_arch(), SYNTHETIC.replace(epochs=1))
    evaluate(micro_arch(), SYNTHETIC.replace(epochs=1, compile="off"))
    assert decisions == [False, True, False]


def test_a_full_run_keeps_its_best_epoch_through_a_collapse_and_a_resume(tmp_path, monkeypatch):
    """Validation accuracy 0.5, 0.9, then a collapse: the run ends with epoch 2's weights,
    also when killed after epoch 3 (the checkpoint carries them) and resumed."""
    # per call: the four epochs' validations then the test (None: measured), for the straight
    # run, then for the killed run (epochs 1-3) and its resumption (epoch 4, test)
    scripted = iter([0.5, 0.9, 0.3, 0.2, None] * 2)
    real_evaluate = training.evaluate_split
    snapshots = []

    def scripted_validation(model, split, splits, batch_size, channels_last):
        loss, accuracy = real_evaluate(model, split, splits, batch_size, channels_last)
        value = next(scripted)
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return loss, accuracy if value is None else value

    monkeypatch.setattr(training, "evaluate_split", scripted_validation)
    config = SYNTHETIC.replace(epochs=4)
    result = train(micro_arch(), config, tmp_path / "straight")
    assert result.best_epoch == 2 and result.val_accuracy == 0.9
    assert_same_tensors(weights(tmp_path / "straight"), snapshots[1])

    resumed = _killed_after_then_resumed(3, config, tmp_path / "resumed", monkeypatch)
    assert resumed.best_epoch == 2
    assert_same_tensors(weights(tmp_path / "straight"), weights(tmp_path / "resumed"))
