"""Data sets: fixed splits, the official CIFAR format, image folders, batches, geometry fit."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from pikenas.evaluators.data import datasets
from pikenas.evaluators.data.datasets import (
    DATASETS,
    Augmentation,
    Split,
    fit_arch_to_dataset,
    iterate_batches,
    load_dataset,
    stratified_subset,
)
from pikenas.space.arch import ArchConfig, ConvQuantSpec, ConvStemSpec, PikeBlockSpec
from pikenas.space.errors import DataError, UnknownNameError

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PIKENAS_CACHE_DIR", str(tmp_path_factory.mktemp("pikenas-cache")))
    datasets._CACHE.clear()
    yield
    datasets._CACHE.clear()


# ---- digits -------------------------------------------------------------------------------
def test_digits_split_sizes_are_the_hand_computed_ones():
    # Class counts 178,182,177,183,181,182,181,179,174,180; round(0.15 * count) is 27 for all
    # but class 8 (174 -> 26.1 -> 26): 269 validation, 269 test, 1797 - 538 = 1259 training.
    splits = load_dataset("digits")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1259, 269, 269)
    assert splits.geometry() == "8x8x1, 10 classes"
    assert splits.train.images.shape == (1259, 1, 8, 8)
    assert splits.augmentation == Augmentation()  # no flips or crops for digits
    val_counts = torch.bincount(splits.val.labels, minlength=10).tolist()
    assert val_counts == [27] * 8 + [26, 27]
    assert torch.bincount(splits.test.labels, minlength=10).tolist() == val_counts


def test_digits_splits_are_disjoint_and_cover_every_image():
    splits = load_dataset("digits")
    rows = torch.cat([splits.train.images, splits.val.images, splits.test.images]).flatten(1)
    assert rows.shape[0] == 1797
    # digits has a few duplicate images, so compare (image, label) multisets with sklearn's.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    ours = sorted(
        map(
            tuple,
            torch.cat(
                [
                    rows.float() / 15,  # uint8 pixels 15 * level
                    torch.cat([splits.train.labels, splits.val.labels, splits.test.labels])[
                        :, None
                    ].float(),
                ],
                1,
            )
            .round()
            .int()
            .tolist(),
        )
    )
    theirs = sorted(
        map(tuple, np.concatenate([bunch.data, bunch.target[:, None]], 1).astype(int).tolist())
    )
    assert ours == theirs


def test_digits_split_is_fixed_and_independent_of_the_run_seed():
    first = load_dataset("digits", seed=0)
    datasets._CACHE.clear()
    second = load_dataset("digits", seed=123)
    assert first is not second
    assert torch.equal(first.test.images, second.test.images)
    assert torch.equal(first.train.labels, second.train.labels)


def test_digits_resized_to_a_requested_resolution():
    splits = load_dataset("digits", resolution=16)
    assert splits.train.images.shape == (1259, 1, 16, 16)
    assert splits.resolution == 16


def test_unknown_data_set_lists_the_valid_names():
    with pytest.raises(UnknownNameError, match="choose one of: .*cifar10.*digits"):
        load_dataset("kmnist-not-registered")


def test_every_registered_loader_without_files_gives_a_set_or_a_data_error(tmp_path):
    for name in DATASETS:
        try:
            splits = load_dataset(name, data_dir=tmp_path / "absent")
        except DataError as exc:
            assert "\n" not in str(exc)
        else:
            assert len(splits.train) > 0 and len(splits.val) > 0 and len(splits.test) > 0


# ---- synthetic ----------------------------------------------------------------------------
def test_synthetic_is_deterministic_per_seed():
    first = load_dataset("synthetic", seed=1)
    datasets._CACHE.clear()
    again = load_dataset("synthetic", seed=1)
    other = load_dataset("synthetic", seed=2)
    assert torch.equal(first.train.images, again.train.images)
    assert not torch.equal(first.train.images, other.train.images)
    assert first.geometry() == "8x8x3, 4 classes"
    assert (len(first.train), len(first.val), len(first.test)) == (512, 128, 128)
    assert torch.bincount(first.train.labels).tolist() == [128] * 4


# ---- CIFAR in the official python format --------------------------------------------------
def _write_batch(path: Path, data: np.ndarray, labels: list[int], label_key: bytes) -> None:
    # The official files are Python 2 pickles with bytes keys; protocol 2 is what they use.
    batch = {b"batch_label": b"fixture", label_key: labels, b"data": data, b"filenames": []}
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)


def _cifar_images(labels: list[int]) -> np.ndarray:
    data = np.zeros((len(labels), 3072), dtype=np.uint8)
    data[:, 0] = labels  # red channel, pixel (0, 0) holds the label
    data[:, 1024] = 200  # green channel, pixel (0, 0)
    data[:, 2047] = 7  # green channel, pixel (31, 31)
    return data


def _write_cifar10(folder: Path, per_class_per_batch: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    labels = [label for label in range(10) for _ in range(per_class_per_batch)]
    for index in range(1, 6):
        _write_batch(folder / f"data_batch_{index}", _cifar_images(labels), labels, b"labels")
    _write_batch(folder / "test_batch", _cifar_images(list(range(10))), list(range(10)), b"labels")
    names = [name.encode() for name in "abcdefghij"]
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": 20}, handle, protocol=2)


def test_cifar10_official_format_is_read_back(tmp_path):
    _write_cifar10(tmp_path / "cifar-10-batches-py")
    splits = load_dataset("cifar10", data_dir=tmp_path)  # the parent folder works too
    # 100 training images, 10 per class; a tenth of each class (1) is held out for validation.
    assert (len(splits.train), len(splits.val), len(splits.test)) == (90, 10, 10)
    assert splits.geometry() == "32x32x3, 10 classes"
    assert splits.class_names == tuple("abcdefghij")
    assert splits.augmentation == Augmentation(crop_padding=4, horizontal_flip=True)
    for part in (splits.train, splits.val, splits.test):
        assert part.images.dtype == torch.uint8
        assert torch.equal(part.images[:, 0, 0, 0].long(), part.labels)
        assert (part.images[:, 1, 0, 0] == 200).all() and (part.images[:, 1, 31, 31] == 7).all()
    assert torch.bincount(splits.val.labels).tolist() == [1] * 10


def test_cifar100_official_format_is_read_back(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    labels = [label for label in range(100) for _ in range(10)]
    _write_batch(folder / "train", _cifar_images(labels), labels, b"fine_labels")
    _write_batch(folder / "test", _cifar_images(list(range(100))), list(range(100)), b"fine_labels")
    splits = load_dataset("cifar100", data_dir=folder, resolution=16)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (900, 100, 100)
    assert splits.geometry() == "16x16x3, 100 classes"
    assert splits.augmentation.crop_padding == 2  # 4 pixels at 32, scaled with the size


def test_cifar_missing_files_name_the_expected_files(tmp_path):
    (tmp_path / "data_batch_1").write_bytes(b"")
    with pytest.raises(DataError, match="lacks data_batch_2, .*test_batch \\(official"):
        load_dataset("cifar10", data_dir=tmp_path)
    with pytest.raises(DataError, match="cifar100 needs --data-dir.*train, test"):
        load_dataset("cifar100")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("cifar10", data_dir=tmp_path / "nowhere")


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_pickle_that_names_other_callables_is_refused(tmp_path):
    _write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    exploit = _Exploit()
    exploit.marker = marker
    with open(tmp_path / "test_batch", "wb") as handle:
        pickle.dump({b"data": exploit, b"labels": [0]}, handle, protocol=2)
    with pytest.raises(DataError, match="system is not allowed"):
        load_dataset("cifar10", data_dir=tmp_path)
    assert not marker.exists()


def test_cifar_batch_with_wrong_content_is_a_data_error(tmp_path):
    _write_cifar10(tmp_path)
    _write_batch(tmp_path / "data_batch_3", np.zeros((4, 10), np.uint8), [0] * 4, b"labels")
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", data_dir=tmp_path)


# ---- image folders ------------------------------------------------------------------------
def _write_png(path: Path, colour: tuple[int, int, int], size: tuple[int, int], mode="RGB"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.new("RGB", size, colour)
    picture.convert(mode).save(path)


def test_imagefolder_reads_class_folders_and_splits_them(tmp_path):
    for index in range(4):
        _write_png(tmp_path / "cat" / f"{index}.png", (255, 0, 0), (20 + index, 12))
        _write_png(tmp_path / "dog" / f"{index}.PNG", (0, 0, 255), (12, 12))
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    splits = load_dataset("imagefolder", data_dir=tmp_path, resolution=16)
    assert splits.class_names == ("cat", "dog")
    assert splits.geometry() == "16x16x3, 2 classes"
    # 4 per class: round(0.15 * 4) = 1 validation and 1 test image per class, 2 for training.
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4, 2, 2)
    for part in (splits.train, splits.val, splits.test):
        red = part.images[:, 0].float().mean(dim=(1, 2))
        assert torch.equal((red > 128).long(), 1 - part.labels)


def test_imagefolder_with_train_val_test_and_grey_images(tmp_path):
    for part, count in (("train", 3), ("val", 1), ("test", 2)):
        for label, shade in (("a", 10), ("b", 240)):
            for index in range(count):
                _write_png(tmp_path / part / label / f"{index}.png", (shade,) * 3, (9, 9), "L")
    splits = load_dataset("imagefolder", data_dir=tmp_path, resolution=8)
    assert splits.geometry() == "8x8x1, 2 classes"
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 2, 4)
    assert splits.test.images[splits.test.labels == 1].min() >= 230


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match="needs --data-dir"):
        load_dataset("imagefolder")
    (tmp_path / "only").mkdir()
    with pytest.raises(DataError, match="at least 2"):
        load_dataset("imagefolder", data_dir=tmp_path)
    (tmp_path / "second").mkdir()
    with pytest.raises(DataError, match="class folder .*only holds no images"):
        load_dataset("imagefolder", data_dir=tmp_path)
    for index in range(4):  # 4 images per class: enough for a validation and a test image
        _write_png(tmp_path / "only" / f"a{index}.png", (1, 2, 3), (8, 8))
        _write_png(tmp_path / "second" / f"b{index}.png", (1, 2, 3), (8, 8))
    (tmp_path / "second" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        load_dataset("imagefolder", data_dir=tmp_path)
    _write_png(tmp_path / "second" / "broken.png", (9, 9, 9), (8, 8), "L")
    with pytest.raises(DataError, match="mixed image modes: .*broken.png is greyscale"):
        load_dataset("imagefolder", data_dir=tmp_path)


def test_imagefolder_is_decoded_once_and_the_cache_follows_the_files(tmp_path, monkeypatch):
    from pikenas.evaluators.data import _imagefolder

    monkeypatch.setenv("PIKENAS_CACHE_DIR", str(tmp_path / "cache"))
    for index in range(4):  # 4 per class: enough for a validation and a test image each
        _write_png(tmp_path / "data" / "cat" / f"{index}.png", (200, 0, 0), (10, 10))
        _write_png(tmp_path / "data" / "dog" / f"{index}.png", (0, 0, 200), (12, 12))
    first = load_dataset("imagefolder", data_dir=tmp_path / "data", resolution=8)
    assert len(list((tmp_path / "cache").glob("imagefolder-*.npy"))) == 1  # one flat pool
    decoded = []
    real = _imagefolder._decode_all
    monkeypatch.setattr(_imagefolder, "_decode_all", lambda *a: decoded.append(1) or real(*a))
    datasets._CACHE.clear()
    again = load_dataset("imagefolder", data_dir=tmp_path / "data", resolution=8)
    assert decoded == [] and torch.equal(again.train.images, first.train.images)
    # A changed file (another size) makes its part decode again, with the new pixels.
    _write_png(tmp_path / "data" / "dog" / "0.png", (0, 255, 0), (30, 30))
    datasets._CACHE.clear()
    changed = load_dataset("imagefolder", data_dir=tmp_path / "data", resolution=8)
    assert decoded and not torch.equal(
        torch.cat([changed.train.images, changed.val.images, changed.test.images]).sort()[0],
        torch.cat([first.train.images, first.val.images, first.test.images]).sort()[0],
    )
    assert not any(p.name.endswith(".npy") for p in (tmp_path / "data").rglob("*"))


# ---- batches ------------------------------------------------------------------------------
def _toy_split(count: int = 10, size: int = 6) -> Split:
    images = torch.arange(count * 2 * size * size, dtype=torch.float32)
    return Split(images.reshape(count, 2, size, size), torch.arange(count))


def test_evaluation_batches_keep_order_and_normalize():
    split = _toy_split()
    batches = list(iterate_batches(split, 4, mean=(1.0, 2.0), std=(2.0, 4.0)))
    assert [len(labels) for _, labels in batches] == [4, 4, 2]
    images = torch.cat([batch for batch, _ in batches])
    assert torch.equal(torch.cat([labels for _, labels in batches]), torch.arange(10))
    assert torch.allclose(images[:, 0], (split.images[:, 0] - 1.0) / 2.0)
    assert torch.allclose(images[:, 1], (split.images[:, 1] - 2.0) / 4.0)


def test_training_batches_shuffle_reproducibly_and_drop_the_short_batch():
    split = _toy_split()

    def labels(seed: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(seed)
        return [
            batch.tolist()
            for _, batch in iterate_batches(
                split, 4, mean=(0.0, 0.0), std=(1.0, 1.0), generator=generator, drop_last=True
            )
        ]

    assert labels(0) == labels(0) and labels(0) != labels(1)
    assert [len(batch) for batch in labels(0)] == [4, 4]
    assert len(set(sum(labels(0), []))) == 8


def test_augmentation_crops_a_padded_window_and_flips_some_images():
    split = _toy_split(count=64)
    generator = torch.Generator().manual_seed(3)
    images, labels = next(
        iterate_batches(
            split,
            64,
            mean=(0.0, 0.0),
            std=(1.0, 1.0),
            augmentation=Augmentation(crop_padding=2, horizontal_flip=True),
            generator=generator,
        )
    )
    flipped = 0
    for image, label in zip(images, labels, strict=True):
        padded = torch.nn.functional.pad(split.images[label], (2, 2, 2, 2))
        windows = [
            padded[:, top : top + 6, left : left + 6] for top in range(5) for left in range(5)
        ]
        plain = any(torch.equal(image, window) for window in windows)
        mirrored = any(torch.equal(image, window.flip(-1)) for window in windows)
        assert plain or mirrored
        flipped += mirrored and not plain
    assert 10 < flipped < 54


def test_stratified_subset_takes_the_same_fraction_of_every_class():
    split = Split(torch.zeros(40, 1, 2, 2), torch.arange(40) % 4)
    subset = stratified_subset(split, 0.25)
    assert torch.bincount(subset.labels).tolist() == [2, 2, 2, 2]
    assert torch.equal(subset.labels, stratified_subset(split, 0.25).labels)
    assert stratified_subset(split, 1.0) is split


# ---- geometry -----------------------------------------------------------------------------
def _strided_arch(blocks: int = 3) -> ArchConfig:
    spec = ConvQuantSpec(weight_bits=8)
    return ArchConfig(
        name="strided",
        input_channels=3,
        resolution=32,
        num_classes=100,
        stem=ConvStemSpec(out_channels=8, stride=2),
        blocks=tuple(
            PikeBlockSpec(
                out_channels=8, stride=2, depthwise=spec, pointwise=spec, activation_bits=8
            )
            for _ in range(blocks)
        ),
    )


def test_fit_arch_to_dataset_adopts_the_data_geometry():
    fitted = fit_arch_to_dataset(_strided_arch(blocks=2), load_dataset("digits"))
    assert (fitted.input_channels, fitted.resolution, fitted.num_classes) == (1, 8, 10)
    assert fitted.name == "strided"
    assert fit_arch_to_dataset(fitted, load_dataset("digits")) is fitted


def test_fit_arch_to_dataset_refuses_strides_below_1x1_with_the_fix():
    # 8 -> stem 4 -> 2 -> 1 -> a third stride-2 block on 1x1. The smallest input that fits
    # needs ceil(ceil(ceil(r/2)/2)/2) >= 2, i.e. r >= 9.
    with pytest.raises(DataError) as caught:
        fit_arch_to_dataset(_strided_arch(blocks=3), load_dataset("digits"))
    message = str(caught.value)
    assert "\n" not in message
    assert "'strided' (32x32x3, 100 classes)" in message
    assert "'digits' (8x8x1, 10 classes)" in message
    assert "--resolution 9 or more" in message
