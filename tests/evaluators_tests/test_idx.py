"""MNIST-format (IDX) data sets: files we write ourselves, gzipped or not, and broken ones."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pikenas.evaluators.data import datasets
from pikenas.evaluators.data._idx import FASHION_MNIST_DIR, read_idx
from pikenas.evaluators.data.datasets import load_dataset
from pikenas.space.errors import DataError

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_cache():
    datasets._CACHE.clear()
    yield
    datasets._CACHE.clear()


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write(path: Path, content: bytes, gz: bool) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(content))
    else:
        path.write_bytes(content)
    return path


def _write_set(
    folder: Path,
    *,
    gz: bool,
    train: int = 40,
    test: int = 20,
    side: int = 6,
    classes: int = 10,
    prefix: str = "",
) -> dict[str, np.ndarray]:
    """A tiny MNIST-format set whose image ``i`` is filled with the value ``label * 20``."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for part, count in (("train", train), ("t10k", test)):
        labels = (np.arange(count) % classes).astype(np.uint8)
        images = np.repeat((labels * 20)[:, None, None], side * side, 1).reshape(count, side, side)
        _write(folder / f"{prefix}{part}-images-idx3-ubyte", _idx_bytes(images), gz)
        _write(folder / f"{prefix}{part}-labels-idx1-ubyte", _idx_bytes(labels), gz)
        arrays[part] = labels
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_format_set_is_read_back_gzipped_or_not(tmp_path, gz):
    _write_set(tmp_path, gz=gz)
    splits = load_dataset("mnist", data_dir=tmp_path)
    assert splits.geometry() == "6x6x1, 10 classes"
    # 4 images per class in training: round(0.1 * 4) = 0 held out -> the 90/10 split gives 40/0;
    # stratified_split rounds per class, so check the totals add up and labels match pixels.
    assert len(splits.train) + len(splits.val) == 40 and len(splits.test) == 20
    assert splits.train.images.dtype == torch.uint8
    for part in (splits.train, splits.val, splits.test):
        assert torch.equal(part.images[:, 0, 0, 0].long(), part.labels * 20)


def test_fashion_mnist_reads_a_given_folder_and_emnist_style_prefixes(tmp_path):
    _write_set(tmp_path / "f", gz=True, train=200)
    splits = load_dataset("fashion_mnist", data_dir=tmp_path / "f")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (180, 20, 20)
    assert splits.class_names[0] == "T-shirt/top" and splits.augmentation.horizontal_flip
    _write_set(tmp_path / "e", gz=False, classes=13, prefix="emnist-letters-")
    assert load_dataset("idx", data_dir=tmp_path / "e").num_classes == 13


def test_missing_files_are_named_with_how_to_get_them(tmp_path):
    _write_set(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as caught:
        load_dataset("fashion_mnist", data_dir=tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert "lacks t10k-labels-idx1-ubyte[.gz]" in message and "dataset-fashion-mnist" in message


def _broken(tmp_path: Path, name: str, content: bytes, gz: bool = False) -> Path:
    _write_set(tmp_path, gz=False)
    target = tmp_path / name
    target.unlink()
    return _write(target, content, gz)


_LABELS = np.arange(40, dtype=np.uint8) % 10
_IMAGES = np.zeros((40, 6, 6), np.uint8)


@pytest.mark.parametrize(
    ("name", "content", "gz", "expected"),
    [
        ("train-images-idx3-ubyte", b"\x00\x00\x08\x01" + _IMAGES.tobytes(), False, "wrong magic"),
        ("train-images-idx3-ubyte", b"\x00\x00\x0d\x03" + b"\x00" * 12, False, "type 0x0d"),
        ("train-images-idx3-ubyte", _idx_bytes(_IMAGES)[:-7], False, "truncated data"),
        ("train-images-idx3-ubyte", _idx_bytes(_IMAGES) + b"\x00", False, "continues past"),
        ("train-images-idx3-ubyte", b"\x00\x00", False, "truncated header"),
        ("train-labels-idx1-ubyte", _idx_bytes(_LABELS[:39]), False, "39 labels for 40 images"),
        ("train-labels-idx1-ubyte", _idx_bytes(_LABELS + 1), False, "outside the class range"),
        ("train-labels-idx1-ubyte", b"\x1f\x8b\x08\x00garbage", True, "not a valid gzip"),
        ("train-labels-idx1-ubyte", gzip.compress(_idx_bytes(_LABELS))[:-12], True, "gzip"),
        ("t10k-images-idx3-ubyte", _idx_bytes(np.zeros((20, 5, 6), np.uint8)), False, "square"),
    ],
)
def test_broken_idx_files_are_one_line_errors_naming_the_file(
    tmp_path, name, content, gz, expected
):
    broken = _broken(tmp_path, name, b"", gz=False)
    broken.unlink()
    if gz:
        broken.with_name(name + ".gz").write_bytes(content)
    else:
        broken.write_bytes(content)
    with pytest.raises(DataError) as caught:
        load_dataset("mnist", data_dir=tmp_path)
    message = str(caught.value)
    assert "\n" not in message and name in message and expected in message


def test_a_header_asking_for_gigabytes_is_refused_before_allocating(tmp_path):
    path = tmp_path / "huge-idx3-ubyte"
    path.write_bytes(struct.pack(">BBBBIII", 0, 0, 8, 3, 9_000_000, 1000, 1000))
    with pytest.raises(DataError, match="expected 1..1024|more than pikenas loads"):
        read_idx(path, 3)


def test_cli_train_on_a_broken_idx_set_exits_2_with_one_line_and_writes_nothing(tmp_path):
    _broken(tmp_path / "data", "train-images-idx3-ubyte", b"\x00\x00\x08\x03\x00", False)
    out = tmp_path / "out"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "pikenas"),
            "train",
            "tiny-w8a8",
            "--dataset",
            "mnist",
            "--data-dir",
            str(tmp_path / "data"),
            "--epochs",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and "train-images-idx3-ubyte" in lines[0] and "truncated" in lines[0]
    assert not out.exists()


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_the_debian_fashion_mnist_package_is_found_by_default():
    splits = load_dataset("fashion_mnist")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (54_000, 6_000, 10_000)
    assert splits.geometry() == "28x28x1, 10 classes"
    assert torch.bincount(splits.test.labels).tolist() == [1000] * 10


def test_a_bundle_verified_on_an_idx_set_reports_the_training_test_accuracy(tmp_path):
    """Train on an MNIST-format set, export, and `pikenas verify BUNDLE --dataset mnist`: the
    integer program fed raw pixels scores exactly the training run's test accuracy."""
    import json

    from pikenas.evaluators.training.loop import TrainConfig, train
    from pikenas.results.export.bundle import export_trained
    from pikenas.space.zoo import get_zoo_arch

    rng = np.random.default_rng(0)
    folder = tmp_path / "data"
    folder.mkdir()
    for part, count in (("train", 120), ("t10k", 40)):
        labels = (np.arange(count) % 10).astype(np.uint8)
        images = rng.integers(0, 60, (count, 8, 8)) + labels[:, None, None] * 19
        _write(folder / f"{part}-images-idx3-ubyte", _idx_bytes(images), gz=True)
        _write(folder / f"{part}-labels-idx1-ubyte", _idx_bytes(labels), gz=True)
    config = TrainConfig(dataset="mnist", data_dir=str(folder), epochs=2, batch_size=32)
    result = train(get_zoo_arch("tiny-w8a8"), config, tmp_path / "run")
    bundle = export_trained(tmp_path / "run", tmp_path, formats=("onnx",))
    assert "**Raw pixels**" in (bundle / "README.md").read_text()
    verified = subprocess.run(
        [
            str(Path(sys.executable).parent / "pikenas"),
            "verify",
            str(bundle),
            "--dataset",
            "mnist",
            "--data-dir",
            str(folder),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert verified.returncode == 0, verified.stderr
    data = json.loads(verified.stdout)
    assert data["exact"] and data["test_images"] == 40
    assert data["test_accuracy"] == result.test_accuracy
