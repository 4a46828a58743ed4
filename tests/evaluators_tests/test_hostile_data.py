"""Hostile data files (issue 22): CIFAR pickles that ask for unbounded memory or hold bad
labels, and image folders with FIFOs, decompression bombs, 16-bit / float images and classes
too small for every split. Each is a one-line DataError naming the file, never a hang, a
MemoryError or a silent wrong value."""

from __future__ import annotations

import os
import pickle
import random
import signal
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from pikenas.evaluators.data import datasets
from pikenas.evaluators.data._cifar import read_cifar_pickle
from pikenas.evaluators.data.datasets import load_dataset
from pikenas.space.errors import DataError


@pytest.fixture(autouse=True)
def _fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("PIKENAS_CACHE_DIR", str(tmp_path / ".cache"))
    datasets._CACHE.clear()
    yield
    datasets._CACHE.clear()


def _one_line(error: pytest.ExceptionInfo, *names: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for name in names:
        assert name in message


# ---- CIFAR ---------------------------------------------------------------------------------
def _batch(path: Path, labels, data=None, key: bytes = b"labels") -> None:
    if data is None:
        data = np.zeros((len(labels), 3072), dtype=np.uint8)
    with open(path, "wb") as handle:
        pickle.dump({b"batch_label": b"x", key: labels, b"data": data}, handle, protocol=2)


def _cifar10(folder: Path, per_class: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    labels = [label for label in range(10) for _ in range(per_class)]
    for index in range(1, 6):
        _batch(folder / f"data_batch_{index}", labels)
    _batch(folder / "test_batch", list(range(10)))


_TERABYTE = (2**40).to_bytes(6, "little")
_BOMBS = {
    # BINBYTES8 declaring a terabyte: the C unpickler allocates it before reading.
    "bytes8": b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"x.",
    "ndarray_call": b"\x80\x02cnumpy\nndarray\n\x8a\x06" + _TERABYTE + b"\x85R.",
    "reconstruct": (
        b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\n\x8a\x06"
        + _TERABYTE
        + b"\x85C\x01b\x87R."
    ),
    "bytes_call": b"\x80\x02c__builtin__\nbytes\n\x8a\x06" + _TERABYTE + b"\x85R.",
    "memo_index": b"\x80\x02N" + b"r" + struct.pack("<I", 2**31 + 5) + b".",
}


@pytest.mark.parametrize("name", sorted(_BOMBS))
def test_tiny_cifar_pickle_cannot_request_memory(tmp_path, name):
    _cifar10(tmp_path)
    (tmp_path / "data_batch_2").write_bytes(_BOMBS[name])
    assert len(_BOMBS[name]) <= 80
    with pytest.raises(DataError) as error:
        load_dataset("cifar10", data_dir=tmp_path)
    _one_line(error, "data_batch_2")


def test_mutated_cifar_pickles_give_only_data_errors(tmp_path):
    _batch(tmp_path / "good", [0, 1, 2], np.arange(3 * 3072, dtype=np.uint8).reshape(3, 3072))
    original = (tmp_path / "good").read_bytes()
    rng = random.Random(22)
    for trial in range(150):
        content = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(content))
            content[position] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        (tmp_path / "bad").write_bytes(bytes(content[: rng.randint(1, len(content))]))
        try:
            read_cifar_pickle(tmp_path / "bad")
        except DataError as exc:
            assert "\n" not in str(exc), trial


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        (["cat"] * 20, "label 0 is str"),
        ([2**70] + [0] * 19, "label 0 is int"),
        (7, "got int"),
        ([0.0, 1.9] + [0] * 18, "label 0 is float"),
        ([True] * 20, "label 0 is bool"),
        ([0] * 19, "got 19 labels for 20 images"),
        ([-1] + [0] * 19, "label 0 is int -1"),
    ],
)
def test_bad_cifar_labels_are_one_line_naming_the_file(tmp_path, labels, problem):
    _cifar10(tmp_path)
    _batch(tmp_path / "data_batch_4", labels, np.zeros((20, 3072), np.uint8))
    with pytest.raises(DataError) as error:
        load_dataset("cifar10", data_dir=tmp_path)
    _one_line(error, "data_batch_4", problem)


def test_missing_cifar_labels_and_wrong_arrays(tmp_path):
    _cifar10(tmp_path)
    with open(tmp_path / "data_batch_1", "wb") as handle:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8)}, handle, protocol=2)
    with pytest.raises(DataError, match="data_batch_1: 'labels' .*has no 'labels'"):
        load_dataset("cifar10", data_dir=tmp_path)
    for data in (np.zeros((2, 3072), np.float32), np.zeros((2, 3, 32, 32), np.uint8), [0] * 2):
        _batch(tmp_path / "data_batch_1", [0, 1], data)
        with pytest.raises(DataError) as error:
            load_dataset("cifar10", data_dir=tmp_path)
        _one_line(error, "data_batch_1", "'data' must")


def test_one_class_cifar_set_is_refused(tmp_path):
    _cifar10(tmp_path)
    for index in range(1, 6):
        _batch(tmp_path / f"data_batch_{index}", [0] * 20)
    with pytest.raises(DataError) as error:
        load_dataset("cifar10", data_dir=tmp_path)
    _one_line(error, "class 1 has 0 training", "at least 6")


def test_cifar_numpy_labels_and_protocol_5_still_read(tmp_path):
    _cifar10(tmp_path)
    labels = np.repeat(np.arange(10), 2).astype(np.int64)
    with open(tmp_path / "data_batch_5", "wb") as handle:
        data = np.full((20, 3072), 9, np.uint8)
        pickle.dump({b"labels": labels, b"data": data}, handle, protocol=5)
    splits = load_dataset("cifar10", data_dir=tmp_path)
    assert len(splits.train) + len(splits.val) == 100
    assert int((splits.train.images == 9).all(dim=(1, 2, 3)).sum()) > 0


# ---- image folders -------------------------------------------------------------------------
def _png(path: Path, array: np.ndarray, mode: str | None = None, suffix: str = "png") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(array) if mode is None else Image.fromarray(array, mode)
    picture.save(path)


def _classes(root: Path, count: int = 4, shade: int = 60) -> None:
    for name in ("a", "b"):
        for index in range(count):
            _png(root / name / f"{index}.png", np.full((8, 8), shade, np.uint8))


class _HungError(Exception):
    pass


def _raise_hung(*_):
    raise _HungError


def test_fifo_named_like_an_image_is_refused_not_read(tmp_path):
    _classes(tmp_path)
    os.mkfifo(tmp_path / "a" / "x.png")
    previous = signal.signal(signal.SIGALRM, _raise_hung)
    signal.alarm(20)
    try:
        with pytest.raises(DataError) as error:
            load_dataset("imagefolder", data_dir=tmp_path, resolution=8)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    _one_line(error, "x.png", "not a regular file")


def _png_header_only(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    content = b"\x89PNG\r\n\x1a\n"
    for kind, body in ((b"IHDR", header), (b"IDAT", zlib.compress(b"")), (b"IEND", b"")):
        content += struct.pack(">I", len(body)) + kind + body
        content += struct.pack(">I", zlib.crc32(kind + body))
    return content


def test_decompression_bombs_name_the_file(tmp_path, monkeypatch):
    from PIL import Image

    _classes(tmp_path)
    (tmp_path / "b" / "bomb.png").write_bytes(_png_header_only(100_000, 100_000))
    with pytest.raises(DataError) as error:
        load_dataset("imagefolder", data_dir=tmp_path, resolution=8)
    _one_line(error, "bomb.png", "limit")
    # Between Pillow's limit and twice it, Pillow only warns: refused as well.
    (tmp_path / "b" / "bomb.png").unlink()
    _png(tmp_path / "b" / "big.png", np.zeros((12, 12), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    datasets._CACHE.clear()
    with pytest.raises(DataError) as error:
        load_dataset("imagefolder", data_dir=tmp_path, resolution=8)
    _one_line(error, "big.png", "100")


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    for name, value in (("a", 32896), ("b", 65535)):  # 32896 = 128 * 257
        for index in range(4):
            _png(tmp_path / name / f"{index}.png", np.full((8, 8), value, np.uint16))
    splits = load_dataset("imagefolder", data_dir=tmp_path, resolution=8)
    images = torch.cat([splits.train.images, splits.val.images, splits.test.images])
    labels = torch.cat([splits.train.labels, splits.val.labels, splits.test.labels])
    assert set(images[labels == 0].unique().tolist()) == {128}
    assert set(images[labels == 1].unique().tolist()) == {255}


def test_float_images_in_unit_range_are_scaled_others_refused(tmp_path):
    for name, value in (("a", 0.25), ("b", 1.0)):
        for index in range(4):
            path = tmp_path / name / f"{index}.tif"
            _png(path, np.full((8, 8), value, np.float32), "F")
    splits = load_dataset("imagefolder", data_dir=tmp_path, resolution=8)
    images = torch.cat([splits.train.images, splits.val.images, splits.test.images])
    labels = torch.cat([splits.train.labels, splits.val.labels, splits.test.labels])
    assert set(images[labels == 0].unique().tolist()) == {64}
    assert set(images[labels == 1].unique().tolist()) == {255}
    _png(tmp_path / "b" / "3.tif", np.full((8, 8), 3.5, np.float32), "F")
    datasets._CACHE.clear()
    with pytest.raises(DataError) as error:
        load_dataset("imagefolder", data_dir=tmp_path, resolution=8)
    _one_line(error, "3.tif", "outside [0, 1]")


def test_class_too_small_for_validation_and_test_is_refused(tmp_path):
    _classes(tmp_path)
    for index in range(1, 4):
        (tmp_path / "b" / f"{index}.png").unlink()
    with pytest.raises(DataError) as error:
        load_dataset("imagefolder", data_dir=tmp_path, resolution=8)
    _one_line(error, "class 'b' has 1 image", "at least 4")


def test_class_missing_from_a_given_part_and_one_class_sets_are_refused(tmp_path):
    for part, count in (("train", 4), ("val", 1), ("test", 1)):
        for name in ("a", "b"):
            if not (part == "val" and name == "b"):
                _png(tmp_path / part / name / "0.png", np.full((8, 8), 9, np.uint8))
                for index in range(1, count):
                    _png(tmp_path / part / name / f"{index}.png", np.full((8, 8), 9, np.uint8))
    with pytest.raises(DataError) as error:
        load_dataset("imagefolder", data_dir=tmp_path, resolution=8)
    _one_line(error, "class 'b' has 0 image", "val")
    single = tmp_path / "single"
    for index in range(8):
        _png(single / "only" / f"{index}.png", np.full((8, 8), 9, np.uint8))
    with pytest.raises(DataError, match="at least 2"):
        load_dataset("imagefolder", data_dir=single, resolution=8)


def test_cifar_pickle_cannot_set_attributes_on_the_allowed_functions(tmp_path):
    from pikenas.evaluators.data import _cifar

    # {'marker': 1} BUILT onto the allowed _codecs.encode: it would outlive this file.
    payload = b"\x80\x02c_codecs\nencode\n}X\x06\x00\x00\x00markerK\x01sb."
    (tmp_path / "batch").write_bytes(payload)
    with pytest.raises(DataError) as error:
        read_cifar_pickle(tmp_path / "batch")
    _one_line(error, "batch")
    assert not hasattr(_cifar._latin1_encode, "marker")
