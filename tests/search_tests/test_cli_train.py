"""`pikenas train` through typer's in-process runner."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pikenas.search.cli import app, main
from pikenas.space.arch import ArchConfig
from pikenas.space.zoo.catalog import get_zoo_arch

torch.set_num_threads(1)
runner = CliRunner()


def one_line_error(arguments: list[str], message: str) -> None:
    """In-process (CliRunner) exit code 2 with the message, and through the console-script
    entry point exactly one line on stderr, nothing on stdout."""
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        with contextlib.redirect_stderr(io.StringIO()) as stderr:
            assert main(arguments) == 2
    assert stdout.getvalue() == ""
    lines = stderr.getvalue().strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset", "kmnist"], "unknown data set 'kmnist'; choose one of: cifar10, cifar100"),
        (["--dataset", "cifar10"], "cifar10 needs --data-dir"),
        (["--dataset", "cifar10", "--data-dir", "/no/such/folder"], "is not a folder"),
        (["--epochs", "0"], "Invalid value for '--epochs'"),
        (["--device", "tpu"], "invalid training option device"),
        (["--optimizer", "lion"], "invalid training option optimizer"),
    ],
)
def test_bad_options_exit_2_with_one_line(tmp_path: Path, extra: list[str], message: str) -> None:
    out = tmp_path / "run"
    one_line_error(["train", "tiny-w8a8", "--out", str(out), *extra], message)
    assert not out.exists()  # nothing half-written


def test_cifar_folder_without_the_official_files_names_them(tmp_path: Path) -> None:
    out = tmp_path / "run"
    one_line_error(
        [
            "train",
            "tiny-w8a8",
            "--dataset",
            "cifar10",
            "--data-dir",
            str(tmp_path),
            "--out",
            str(out),
        ],
        "lacks data_batch_1, data_batch_2",
    )
    assert not out.exists()


def test_a_model_that_cannot_take_the_data_set_input_is_refused(tmp_path: Path) -> None:
    # MobileNetV1 halves the map five times after a stride-2 stem: 8x8 digits cannot fit.
    out = tmp_path / "run"
    one_line_error(
        ["train", "mobilenet_v1-0.25-w4a4", "--out", str(out)],
        "'mobilenet_v1-0.25-w4a4' (224x224x3, 1000 classes) cannot take data set 'digits' "
        "(8x8x1, 10 classes)",
    )
    assert not out.exists()


def test_unknown_model_and_bad_json_file(tmp_path: Path) -> None:
    one_line_error(["train", "resnet-50", "--out", str(tmp_path / "a")], "unknown zoo model")
    bad = tmp_path / "bad.json"
    bad.write_text('{"stem": 1}')
    one_line_error(["train", str(bad), "--out", str(tmp_path / "b")], "bad.json: invalid")


def test_one_epoch_writes_the_three_files_and_a_rerun_reports_them(tmp_path: Path) -> None:
    out = tmp_path / "run"
    arguments = ["train", "tiny-w8a8", "--epochs", "1", "--seed", "0", "--out", str(out)]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "tiny-w8a8 on digits: test accuracy" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["name"] == "tiny-w8a8"
    assert {"test_accuracy", "val_accuracy", "wall_s", "images_per_s"} <= metrics.keys()
    stored = ArchConfig.from_json((out / "arch.json").read_text())
    assert stored.replace(input=None) == get_zoo_arch("tiny-w8a8")  # + the raw-pixel spec
    assert stored.input is not None
    assert (out / "weights.safetensors").stat().st_size > 0

    again = runner.invoke(app, [*arguments, "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output) == metrics

    one_line_error([*arguments[:3], "2", *arguments[4:]], "pass another --out")


def test_a_train_folder_exports_as_one_bundle(tmp_path: Path) -> None:
    out = tmp_path / "run"
    trained = runner.invoke(app, ["train", "tiny-w8a8", "--epochs", "1", "--out", str(out)])
    assert trained.exit_code == 0, trained.output
    one_line_error(["export", str(out), "--trial", "0"], "drop --trial/--pareto")
    result = runner.invoke(app, ["export", str(out), "--out", str(tmp_path / "bundles")])
    assert result.exit_code == 0, result.output
    bundle = tmp_path / "bundles" / "run-bundle"
    assert f"exported {bundle}" in result.output
    assert {"arch.json", "weights.safetensors", "program.json", "model.onnx"} <= {
        p.name for p in bundle.iterdir()
    }
    verified = runner.invoke(app, ["verify", str(bundle), "--dataset", "digits", "--images", "8"])
    assert verified.exit_code == 0, verified.output
