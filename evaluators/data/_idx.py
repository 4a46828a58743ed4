"""MNIST-format data sets from the four standard IDX files: Fashion-MNIST, MNIST, KMNIST, ...

A folder holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each optionally gzipped (``.gz``);
a prefix (``emnist-balanced-train-images-idx3-ubyte.gz``) or a dot for the dash before
``idx`` (``train-images.idx3-ubyte``) is accepted too. ``fashion_mnist`` looks in Debian's
``dataset-fashion-mnist`` folder when no ``--data-dir`` is given.

IDX format (big-endian): two zero bytes, a type byte (``0x08`` = unsigned byte, the only type
these sets use), the number of dimensions ``d``, then ``d`` 32-bit sizes and the data. The
reader checks the header against the expected shape and the file length *before* allocating,
so a hostile header cannot ask for gigabytes; every problem is a one-line
:class:`~space.errors.DataError` naming the file. Nothing is written.

EMNIST stores its images transposed; they load as stored (the network learns them either way).

Splits: the 60,000 training images give a fixed stratified 90 / 10 train / validation split
(54,000 / 6,000); the 10,000 test images are the test split. Images stay ``uint8``
``(N, 1, 28, 28)``.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from pikenas.evaluators.data._splits import (
    Augmentation,
    DatasetSplits,
    Split,
    hold_out_validation,
)
from pikenas.space.errors import DataError

__all__ = ["FASHION_MNIST_DIR", "MNIST_DIR", "IDX_PARTS", "load_idx_dataset", "read_idx"]

#: Where Debian's ``dataset-fashion-mnist`` package puts the files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Where an MNIST package would put them (none ships in Debian today).
MNIST_DIR = Path("/usr/share/datasets/mnist")
#: The four files: (part, the stem their names contain, idx dimensions).
IDX_PARTS = (
    ("train images", "train-images", 3),
    ("train labels", "train-labels", 1),
    ("test images", "t10k-images", 3),
    ("test labels", "t10k-labels", 1),
)
_UNSIGNED_BYTE = 0x08
_MAX_IMAGES = 10_000_000
_MAX_SIDE = 1024
_MAX_BYTES = 2**31  # a set larger than this does not belong in memory on this machine
_FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def _file_name(stem: str, dimensions: int) -> str:
    return f"{stem}-idx{dimensions}-ubyte"


def find_idx_files(folder: Path, name: str, how_to_get: str) -> dict[str, Path]:
    """``{part: path}`` of the four IDX files in ``folder``; a :class:`DataError` naming the
    missing ones and ``how_to_get`` them otherwise."""
    if not folder.is_dir():
        wanted = ", ".join(_file_name(stem, dims) + "[.gz]" for _, stem, dims in IDX_PARTS)
        raise DataError(
            f"{name}: folder {folder} does not exist; it must hold {wanted} ({how_to_get})"
        )
    entries = sorted(p for p in folder.iterdir() if p.is_file())
    found: dict[str, Path] = {}
    missing: list[str] = []
    for part, stem, dims in IDX_PARTS:
        suffixes = (f"{stem}-idx{dims}-ubyte", f"{stem}.idx{dims}-ubyte")
        matches = [p for p in entries if p.name.removesuffix(".gz").endswith(suffixes)]
        if not matches:
            missing.append(_file_name(stem, dims) + "[.gz]")
        elif len(matches) > 1:
            names = ", ".join(p.name for p in matches)
            raise DataError(f"{name}: {folder} holds several {part} files ({names}); keep one")
        else:
            found[part] = matches[0]
    if missing:
        raise DataError(f"{name}: {folder} lacks {', '.join(missing)} ({how_to_get})")
    return found


def _read_exactly(handle: BinaryIO, count: int, path: Path, what: str) -> bytes:
    data = handle.read(count)
    if len(data) != count:
        raise DataError(
            f"{path}: truncated {what} ({len(data):,} of {count:,} bytes); the file is incomplete"
        )
    return data


def read_idx(path: Path, dimensions: int, *, side: int | None = None) -> np.ndarray:
    """The ``uint8`` array of an IDX file with ``dimensions`` dimensions (gzipped when its name
    ends in ``.gz``). ``side``: the required image height and width, if any.

    Raises :class:`DataError` (one line, naming ``path``) on a wrong magic number, a type other
    than unsigned byte, sizes out of bounds, truncated or surplus data, or a bad gzip stream.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            magic = _read_exactly(handle, 4, path, "header")
            if magic[:2] != b"\x00\x00" or magic[3] != dimensions:
                raise DataError(
                    f"{path}: wrong magic number 0x{magic.hex()} (expected 0x0000080{dimensions}"
                    f" for {dimensions}-d unsigned bytes); not an IDX file of this kind"
                )
            if magic[2] != _UNSIGNED_BYTE:
                raise DataError(
                    f"{path}: IDX type 0x{magic[2]:02x} is not supported "
                    "(only 0x08, unsigned bytes)"
                )
            sizes = np.frombuffer(_read_exactly(handle, 4 * dimensions, path, "header"), ">u4")
            shape = tuple(int(size) for size in sizes)
            if not 0 < shape[0] <= _MAX_IMAGES:
                raise DataError(
                    f"{path}: header says {shape[0]:,} items; expected 1..{_MAX_IMAGES:,}"
                )
            if any(not 0 < extent <= _MAX_SIDE for extent in shape[1:]):
                raise DataError(
                    f"{path}: header says images of {shape[1:]} pixels; expected 1..{_MAX_SIDE}"
                )
            if side is not None and shape[1:] != (side, side):
                raise DataError(f"{path}: images are {shape[1:]}, expected {side}x{side}")
            total = int(np.prod(shape))
            if total > _MAX_BYTES:
                raise DataError(
                    f"{path}: header says {total:,} bytes of data; more than pikenas loads"
                )
            data = _read_exactly(handle, total, path, "data")
            if handle.read(1):
                raise DataError(f"{path}: data continues past the {total:,} bytes the header gives")
    except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise DataError(
            f"{path}: not a valid gzip file ({exc}); re-download or gunzip it"
        ) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _read_pair(
    images_path: Path, labels_path: Path, num_classes: int | None
) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, 3)
    if images.shape[1] != images.shape[2]:
        raise DataError(
            f"{images_path}: images are {images.shape[1:]}; pikenas needs square images"
        )
    labels = read_idx(labels_path, 1)
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{labels_path}: {labels.shape[0]:,} labels for {images.shape[0]:,} images in "
            f"{images_path.name}; the counts must match"
        )
    if num_classes is not None and int(labels.max()) >= num_classes:
        raise DataError(
            f"{labels_path}: label {int(labels.max())} is outside the class range "
            f"0..{num_classes - 1}"
        )
    return images, labels


def load_idx_dataset(
    name: str,
    data_dir: Path | None,
    *,
    default_dir: Path | None,
    how_to_get: str,
    num_classes: int | None,
    class_names: tuple[str, ...] = (),
    horizontal_flip: bool = False,
) -> DatasetSplits:
    """Read an MNIST-format set (see the module docstring). ``num_classes=None`` takes the
    largest training label + 1 (EMNIST-style sets with their own class count)."""
    folder = data_dir if data_dir is not None else default_dir
    if folder is None:
        raise DataError(f"{name} needs --data-dir: a folder with the four IDX files ({how_to_get})")
    files = find_idx_files(folder, name, how_to_get)
    train_images, train_labels = _read_pair(
        files["train images"], files["train labels"], num_classes
    )
    test_images, test_labels = _read_pair(files["test images"], files["test labels"], num_classes)
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(
            f"{files['test images']}: images are {test_images.shape[1:]} but the training images "
            f"are {train_images.shape[1:]}"
        )
    classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    if classes < 2:
        raise DataError(f"{files['train labels']}: every label is 0; a classifier needs 2 classes")
    if int(test_labels.max()) >= classes:
        raise DataError(
            f"{files['test labels']}: label {int(test_labels.max())} is not among the "
            "training classes"
        )
    train_val = Split(
        torch.from_numpy(train_images.copy()).unsqueeze(1),
        torch.from_numpy(train_labels.astype(np.int64)),
    )
    test = Split(
        torch.from_numpy(test_images.copy()).unsqueeze(1),
        torch.from_numpy(test_labels.astype(np.int64)),
    )
    augmentation = Augmentation(crop_padding=2, horizontal_flip=horizontal_flip)
    names = class_names if len(class_names) == classes else ()
    return hold_out_validation(name, train_val, test, classes, augmentation, names)


def load_fashion_mnist(data_dir: Path | None) -> DatasetSplits:
    """Fashion-MNIST: 54,000 / 6,000 / 10,000 grey 28x28 images, 10 classes."""
    return load_idx_dataset(
        "fashion_mnist",
        data_dir,
        default_dir=FASHION_MNIST_DIR,
        how_to_get="`apt-get install dataset-fashion-mnist` puts them in "
        f"{FASHION_MNIST_DIR}, or pass --data-dir FOLDER holding them",
        num_classes=10,
        class_names=_FASHION_CLASSES,
        horizontal_flip=True,
    )


def load_mnist(data_dir: Path | None) -> DatasetSplits:
    """MNIST (or KMNIST, same format and 10 classes): 54,000 / 6,000 / 10,000 grey 28x28."""
    return load_idx_dataset(
        "mnist",
        data_dir,
        default_dir=MNIST_DIR if MNIST_DIR.is_dir() else None,
        how_to_get="download the four files of yann.lecun.com/exdb/mnist (or KMNIST's) into "
        "a folder and pass it as --data-dir",
        num_classes=10,
        class_names=tuple(str(digit) for digit in range(10)),
    )


def load_idx(data_dir: Path | None) -> DatasetSplits:
    """Any MNIST-format set (EMNIST splits, ...): classes = largest label + 1."""
    return load_idx_dataset(
        "idx",
        data_dir,
        default_dir=None,
        how_to_get="train/t10k images (idx3) and labels (idx1), gzipped or not",
        num_classes=None,
    )
