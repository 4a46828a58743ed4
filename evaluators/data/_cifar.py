"""CIFAR-10 / CIFAR-100 from a local folder in the official "python version" format.

The official files (``data_batch_1..5``, ``test_batch``, ``batches.meta`` for CIFAR-10;
``train``, ``test``, ``meta`` for CIFAR-100) are Python pickles, and reading that format
requires unpickling. Unpickling can run arbitrary code (a pickle may name any importable
callable), so these files are read with :class:`_CifarUnpickler`, which resolves only the
names that a CIFAR batch really contains: plain containers and numbers (``dict``, ``list``,
``bytes``, ``str``, ``int``) and numpy's array reconstruction (``ndarray``, ``dtype``,
``_reconstruct``, ``_frombuffer``, plus ``_codecs.encode`` restricted to ``latin1``, which
pickles of ``bytes`` written by Python 3 with protocol 2 use). Any other name makes the read
fail with a :class:`~space.errors.DataError`; arrays must hold ``uint8`` pixels.
"""

from __future__ import annotations

import codecs
import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pikenas.evaluators.data._splits import (
    Augmentation,
    DatasetSplits,
    Split,
    channel_stats,
    stratified_split,
)
from pikenas.space.errors import DataError

__all__ = ["load_cifar10", "load_cifar100", "read_cifar_pickle"]

_CIFAR10_FOLDER = "cifar-10-batches-py"
_CIFAR100_FOLDER = "cifar-100-python"
_CIFAR10_TRAIN = tuple(f"data_batch_{index}" for index in range(1, 6))
# CIFAR has no validation split: a fixed, stratified tenth of the training images is held out.
_VAL_FRACTION = 0.1


def _numpy_attribute(modules: tuple[str, ...], name: str) -> Any:
    for module_name in modules:
        try:
            return getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError):
            continue
    raise DataError(f"this numpy has no {name}; cannot read CIFAR pickles")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for ``bytes``; only ``latin1``."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(text, "latin1")


def _allowed_names() -> dict[tuple[str, str], Any]:
    reconstruct = _numpy_attribute(
        ("numpy._core.multiarray", "numpy.core.multiarray"), "_reconstruct"
    )
    frombuffer = _numpy_attribute(("numpy._core.numeric", "numpy.core.numeric"), "_frombuffer")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reconstruct
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(module, "_frombuffer")] = frombuffer
    for module in ("builtins", "__builtin__"):
        for builtin in (dict, list, bytes, str, int):
            allowed[(module, builtin.__name__)] = builtin
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the names listed in :func:`_allowed_names`."""

    _allowed = _allowed_names()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"{module}.{name} is not allowed in a CIFAR batch file"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in a CIFAR batch file")


def read_cifar_pickle(path: Path) -> dict[str, Any]:
    """Read one official CIFAR pickle with the restricted unpickler; keys come back as ``str``.

    Raises :class:`DataError` (one line) when the file is not a CIFAR pickle or names anything
    outside the allowed list.
    """
    try:
        with open(path, "rb") as handle:
            content = _CifarUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{path} is not a CIFAR python-format batch ({exc})") from None
    if not isinstance(content, dict):
        raise DataError(f"{path} is not a CIFAR python-format batch (no dictionary inside)")
    return {(key.decode() if isinstance(key, bytes) else str(key)): v for key, v in content.items()}


def _find_folder(data_dir: Path | None, folder: str, files: tuple[str, ...], name: str) -> Path:
    """``data_dir`` itself or ``data_dir/folder``, whichever holds all ``files``."""
    if data_dir is None:
        raise DataError(
            f"{name} needs --data-dir: a folder with the official python-format files "
            f"({', '.join(files)}), as unpacked from the {folder} archive"
        )
    for candidate in (data_dir, data_dir / folder):
        if all((candidate / file).is_file() for file in files):
            return candidate
    if not data_dir.is_dir():
        raise DataError(f"data folder {data_dir} does not exist; pass the folder holding {folder}")
    missing = [file for file in files if not (data_dir / file).is_file()]
    raise DataError(
        f"{name}: {data_dir} lacks {', '.join(missing)} (official python-format files); put "
        f"them in {data_dir} or {data_dir / folder}"
    )


def _read_images(path: Path, label_key: str, num_classes: int) -> Split:
    batch = read_cifar_pickle(path)
    data, labels = batch.get("data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072)")
    if data.shape[1] != 3 * 32 * 32 or labels is None or len(labels) != data.shape[0]:
        raise DataError(f"{path}: expected (N, 3072) pixels and N {label_key!r}")
    label_tensor = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if len(label_tensor) and not (
        0 <= int(label_tensor.min()) <= int(label_tensor.max()) < num_classes
    ):
        raise DataError(f"{path}: labels outside 0..{num_classes - 1}")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return Split(images, label_tensor)


def _class_names(path: Path, key: str) -> tuple[str, ...]:
    if not path.is_file():
        return ()
    names = read_cifar_pickle(path).get(key, [])
    return tuple(name.decode() if isinstance(name, bytes) else str(name) for name in names)


def _assemble(name: str, train_val: Split, test: Split, num_classes: int, names: tuple[str, ...]):
    train_indices, val_indices = stratified_split(
        train_val.labels.numpy(), (1 - _VAL_FRACTION, _VAL_FRACTION)
    )
    train = train_val.select(torch.from_numpy(train_indices))
    mean, std = channel_stats(train.images)
    return DatasetSplits(
        name=name,
        train=train,
        val=train_val.select(torch.from_numpy(val_indices)),
        test=test,
        num_classes=num_classes,
        mean=mean,
        std=std,
        augmentation=Augmentation(crop_padding=4, horizontal_flip=True),
        class_names=names,
    )


def load_cifar10(data_dir: Path | None, seed: int = 0) -> DatasetSplits:
    """CIFAR-10: 45,000 / 5,000 / 10,000 images of 32x32x3, 10 classes."""
    del seed  # the splits are fixed
    folder = _find_folder(data_dir, _CIFAR10_FOLDER, (*_CIFAR10_TRAIN, "test_batch"), "cifar10")
    parts = [_read_images(folder / file, "labels", 10) for file in _CIFAR10_TRAIN]
    train_val = Split(
        torch.cat([part.images for part in parts]), torch.cat([part.labels for part in parts])
    )
    test = _read_images(folder / "test_batch", "labels", 10)
    names = _class_names(folder / "batches.meta", "label_names")
    return _assemble("cifar10", train_val, test, 10, names)


def load_cifar100(data_dir: Path | None, seed: int = 0) -> DatasetSplits:
    """CIFAR-100 (fine labels): 45,000 / 5,000 / 10,000 images of 32x32x3, 100 classes."""
    del seed
    folder = _find_folder(data_dir, _CIFAR100_FOLDER, ("train", "test"), "cifar100")
    train_val = _read_images(folder / "train", "fine_labels", 100)
    test = _read_images(folder / "test", "fine_labels", 100)
    names = _class_names(folder / "meta", "fine_label_names")
    return _assemble("cifar100", train_val, test, 100, names)
