"""CIFAR-10 / CIFAR-100 from a local folder in the official "python version" format.

The official files (``data_batch_1..5``, ``test_batch``, ``batches.meta`` for CIFAR-10;
``train``, ``test``, ``meta`` for CIFAR-100) are Python pickles, and reading that format
requires unpickling. Unpickling can run arbitrary code (a pickle may name any importable
callable) and ask for any amount of memory (a 30-byte pickle may declare a terabyte string or
call ``numpy.ndarray((10**12,))``), so these files are read with :class:`_CifarUnpickler`:

* the file is opened only when it is a regular file of at most ``_MAX_FILE_BYTES`` and read
  whole into memory (:func:`~evaluators.data._splits.read_regular_file`);
* it is decoded by Python's pure-Python unpickler over that buffer, whose reads are bounded by
  what the buffer holds (the C unpickler allocates any declared length first) and whose memo is
  a dictionary (the C one grows an array to the largest index named); at most
  ``_MAX_OPCODES`` opcodes are executed, so no object graph outgrows the file by much;
* the only names it resolves are what a CIFAR batch holds: ``bytes`` (empty, as protocol 2
  writes ``b''``), ``_codecs.encode`` restricted to ``latin1`` (protocol-2 ``bytes``) and numpy's
  array reconstruction (``ndarray``, ``dtype``, ``_reconstruct``, ``_frombuffer``), each
  replaced by a stand-in that builds plain numeric arrays only from bytes of exactly the
  declared size (no object arrays, nothing allocated from a declared shape alone).

Anything else is a one-line :class:`~space.errors.DataError` naming the file.
"""

from __future__ import annotations

import codecs
import io
import math
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pikenas.evaluators.data._splits import (
    VAL_FRACTION,
    Augmentation,
    DatasetSplits,
    Split,
    hold_out_validation,
    min_class_size,
    read_regular_file,
)
from pikenas.space.errors import DataError

__all__ = ["load_cifar10", "load_cifar100", "read_cifar_pickle"]

_CIFAR10_FOLDER = "cifar-10-batches-py"
_CIFAR100_FOLDER = "cifar-100-python"
_CIFAR10_TRAIN = tuple(f"data_batch_{index}" for index in range(1, 6))
# CIFAR has no validation split: a fixed, stratified tenth of the training images is held out.
# The largest official file (CIFAR-100 ``train``) is 155 MB; a tenfold margin.
_MAX_FILE_BYTES = 1_600_000_000
# CIFAR-100 ``train`` runs about 200,000 opcodes (labels, coarse labels, file names).
_MAX_OPCODES = 2_000_000
_NUMERIC_KINDS = "biuf"


def _refuse(message: str) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(message)


class _Dtype:
    """Stand-in for ``numpy.dtype(spec, align, copy)``: plain numbers only; the byte order of
    the pickled state is applied, anything else in it (fields, sub-arrays) is refused."""

    def __init__(self, spec: Any = None, align: Any = False, copy: Any = False) -> None:
        del align, copy
        if isinstance(spec, bytes):
            spec = spec.decode("latin1")
        if not isinstance(spec, str) or len(spec) > 8:
            raise _refuse(f"dtype {str(spec)[:40]!r} is not allowed in a CIFAR batch file")
        try:
            dtype = np.dtype(spec)
        except TypeError as exc:
            raise _refuse(f"bad dtype {spec!r} ({exc})") from None
        if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype:
            raise _refuse(f"dtype {spec!r} is not a plain number type")
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 5 or any(x is not None for x in state[2:5]):
            raise _refuse("dtype state with fields or sub-arrays is not allowed")
        order = state[1].decode("latin1") if isinstance(state[1], bytes) else state[1]
        if order not in ("<", ">", "|", "="):
            raise _refuse(f"dtype byte order {str(order)[:10]!r} is not allowed")
        self.dtype = self.dtype.newbyteorder(order) if order != "|" else self.dtype


def _plain_dtype(value: Any) -> np.dtype:
    if isinstance(value, _Dtype):
        return value.dtype
    return _Dtype(value).dtype


def _array_from_bytes(raw: Any, dtype: np.dtype, shape: Any, fortran: bool) -> np.ndarray:
    """``raw`` viewed as an array of ``shape``; the byte count must match exactly."""
    if isinstance(raw, str):  # protocol-0 pickles written by Python 2 under encoding="latin1"
        raw = raw.encode("latin1")
    if not isinstance(raw, bytes | bytearray):
        raise _refuse(f"array data is {type(raw).__name__}, not bytes")
    if not isinstance(shape, tuple) or len(shape) > 8:
        raise _refuse("array shape must be a tuple of at most 8 sizes")
    if not all(type(size) is int and size >= 0 for size in shape):
        raise _refuse(f"array shape {str(shape)[:60]} holds a size that is not a count")
    if math.prod(shape) * dtype.itemsize != len(raw):
        raise _refuse(
            f"array of shape {shape} and type {dtype} needs {math.prod(shape) * dtype.itemsize:,}"
            f" bytes but the file holds {len(raw):,}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C")


class _Array:
    """Stand-in for ``_reconstruct(ndarray, shape, dtype)``: allocates nothing; the array is
    made by ``__setstate__`` from the pickled bytes, whose length must match the shape."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _refuse("array state must be (version, shape, dtype, fortran, data)")
        shape, dtype, fortran, raw = state[-4:]
        self.array = _array_from_bytes(raw, _plain_dtype(dtype), shape, bool(fortran))


def _ndarray_name(*args: Any) -> None:
    raise _refuse("calling numpy.ndarray is not allowed in a CIFAR batch file")


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> _Array:
    del shape, dtype  # the real shape and type come with the state
    if subtype is not _ndarray_name:
        raise _refuse("_reconstruct of anything but numpy.ndarray is not allowed")
    return _Array()


def _frombuffer(raw: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    return _array_from_bytes(raw, _plain_dtype(dtype), shape, order == "F")


def _bytes(*args: Any) -> bytes:
    """``bytes()`` as protocol 2 writes ``b''``; ``bytes(n)`` would allocate ``n`` bytes."""
    if args and not isinstance(args[0], bytes | bytearray):
        raise _refuse("bytes() of anything but bytes is not allowed in a CIFAR batch file")
    return bytes(*args[:1])


def _latin1_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for ``bytes``; only ``latin1``."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _refuse(f"_codecs.encode with encoding {str(encoding)[:20]!r} is not allowed")
    return codecs.encode(text, "latin1")


def _dtype(spec: Any = None, align: Any = False, copy: Any = False) -> _Dtype:
    """``numpy.dtype`` as a pickle names it (a function: NEWOBJ cannot bypass ``__init__``)."""
    return _Dtype(spec, align, copy)


def _allowed_names() -> dict[tuple[str, str], Callable[..., Any]]:
    allowed: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): _ndarray_name,
        ("numpy", "dtype"): _dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("builtins", "bytes"): _bytes,
        ("__builtin__", "bytes"): _bytes,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = _frombuffer
    return allowed


def _counted(step: Callable[[Any], None]) -> Callable[[Any], None]:
    def run(unpickler: _CifarUnpickler) -> None:
        unpickler.opcodes += 1
        if unpickler.opcodes > _MAX_OPCODES:
            raise _refuse(f"more than {_MAX_OPCODES:,} pickle opcodes; not a CIFAR batch")
        step(unpickler)

    return run


def _build_stand_ins_only(step: Callable[[Any], None]) -> Callable[[Any], None]:
    """BUILD may only set the state of an array or dtype stand-in: on anything else (one of
    the allowed functions) it would set attributes that outlive this file."""

    def run(unpickler: _CifarUnpickler) -> None:
        if len(unpickler.stack) < 2 or not isinstance(unpickler.stack[-2], _Array | _Dtype):
            raise _refuse("BUILD on anything but a numpy array or dtype is not allowed")
        step(unpickler)

    return run


def _dispatch() -> dict[int, Callable[[Any], None]]:
    table = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]
    table[pickle.BUILD[0]] = _build_stand_ins_only(table[pickle.BUILD[0]])
    return {key: _counted(step) for key, step in table.items()}


class _CifarUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Python's pure-Python unpickler, resolving only :func:`_allowed_names`, with a bounded
    number of opcodes."""

    _allowed = _allowed_names()
    dispatch = _dispatch()
    opcodes = 0

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except (KeyError, TypeError):
            raise _refuse(f"{module}.{name} is not allowed in a CIFAR batch file") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _refuse("persistent ids are not allowed in a CIFAR batch file")


def _finish(value: Any) -> Any:
    """``value`` with every :class:`_Array` stand-in replaced by its array (one level of
    containers: a batch is a dictionary of arrays and lists)."""
    if isinstance(value, _Array):
        if value.array is None:
            raise _refuse("an array without its data")
        return value.array
    if isinstance(value, _Dtype):
        return value.dtype
    if isinstance(value, list) and any(isinstance(item, _Array | _Dtype) for item in value):
        return [_finish(item) for item in value]
    return value


def read_cifar_pickle(path: Path) -> dict[str, Any]:
    """Read one official CIFAR pickle with the restricted unpickler; keys come back as ``str``.

    Raises :class:`DataError` (one line) when the file is not a regular file, is too large, is
    not a CIFAR pickle or names anything outside the allowed list.
    """
    content = read_regular_file(path, _MAX_FILE_BYTES, "CIFAR batch file")
    try:
        loaded = _CifarUnpickler(io.BytesIO(content), encoding="bytes").load()
    except (
        pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, KeyError,
        IndexError, struct.error, OverflowError, RecursionError, MemoryError,
    ) as exc:  # fmt: skip
        if isinstance(exc, EOFError):
            reason = "it ends early: truncated, or a length larger than the file"
        else:
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise DataError(f"{path} is not a CIFAR python-format batch ({reason})") from None
    if not isinstance(loaded, dict):
        raise DataError(f"{path} is not a CIFAR python-format batch (no dictionary inside)")
    try:
        return {
            (key.decode("latin1") if isinstance(key, bytes) else str(key)): _finish(value)
            for key, value in loaded.items()
        }
    except pickle.UnpicklingError as exc:
        raise DataError(f"{path} is not a CIFAR python-format batch ({exc})") from None


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


def _labels(path: Path, labels: Any, count: int, key: str, num_classes: int) -> torch.Tensor:
    """``(N,)`` int64 class indices from a batch's label list; one-line :class:`DataError`
    for a missing, scalar, non-integer (float, string) or out-of-range label."""
    fix = f"{path}: {key!r} must be a list of {count:,} integer class indices 0..{num_classes - 1}"
    if labels is None:
        raise DataError(f"{fix}; the batch has no {key!r}")
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataError(f"{fix}, got a {labels.dtype} array of shape {labels.shape}")
        values = labels.tolist()
    elif isinstance(labels, list):
        values = labels
    else:
        raise DataError(f"{fix}, got {type(labels).__name__}")
    if len(values) != count:
        raise DataError(f"{fix}, got {len(values):,} labels for {count:,} images")
    for index, value in enumerate(values):
        if type(value) is not int or not 0 <= value < num_classes:
            shown = repr(value)[:30]
            raise DataError(f"{fix}; label {index} is {type(value).__name__} {shown}")
    return torch.tensor(values, dtype=torch.int64)


def _read_images(path: Path, label_key: str, num_classes: int) -> Split:
    batch = read_cifar_pickle(path)
    data = batch.get("data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        shown = (
            f"a {data.dtype} array of shape {data.shape}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), got {shown}")
    if data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' must have shape (N, 3072), got {data.shape}")
    labels = _labels(path, batch.get(label_key), data.shape[0], label_key, num_classes)
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return Split(images, labels)


def _class_names(path: Path, key: str, num_classes: int) -> tuple[str, ...]:
    if not path.exists():
        return ()
    names = read_cifar_pickle(path).get(key)
    if (
        not isinstance(names, list)
        or len(names) != num_classes
        or not all(isinstance(name, bytes | str) for name in names)
    ):
        raise DataError(f"{path}: {key!r} must be a list of {num_classes} class names")
    return tuple(name.decode("latin1") if isinstance(name, bytes) else name for name in names)


def _check_classes(name: str, train_val: Split, test: Split, num_classes: int) -> None:
    """Every class must reach the training, validation and test splits: a set with a missing
    or tiny class would report accuracy over fewer classes than it claims."""
    needed = min_class_size((1 - VAL_FRACTION, VAL_FRACTION))
    train_counts = torch.bincount(train_val.labels, minlength=num_classes).tolist()
    test_counts = torch.bincount(test.labels, minlength=num_classes).tolist()
    for label in range(num_classes):
        if train_counts[label] < needed or test_counts[label] < 1:
            raise DataError(
                f"{name}: class {label} has {train_counts[label]} training and "
                f"{test_counts[label]} test images; every class needs at least {needed} training "
                "images (a tenth is held out for validation) and 1 test image"
            )


def _assemble(name: str, train_val: Split, test: Split, num_classes: int, names: tuple[str, ...]):
    _check_classes(name, train_val, test, num_classes)
    augmentation = Augmentation(crop_padding=4, horizontal_flip=True)
    return hold_out_validation(name, train_val, test, num_classes, augmentation, names)


def load_cifar10(data_dir: Path | None, seed: int = 0) -> DatasetSplits:
    """CIFAR-10: 45,000 / 5,000 / 10,000 images of 32x32x3, 10 classes."""
    del seed  # the splits are fixed
    folder = _find_folder(data_dir, _CIFAR10_FOLDER, (*_CIFAR10_TRAIN, "test_batch"), "cifar10")
    parts = [_read_images(folder / file, "labels", 10) for file in _CIFAR10_TRAIN]
    train_val = Split(
        torch.cat([part.images for part in parts]), torch.cat([part.labels for part in parts])
    )
    test = _read_images(folder / "test_batch", "labels", 10)
    names = _class_names(folder / "batches.meta", "label_names", 10)
    return _assemble("cifar10", train_val, test, 10, names)


def load_cifar100(data_dir: Path | None, seed: int = 0) -> DatasetSplits:
    """CIFAR-100 (fine labels): 45,000 / 5,000 / 10,000 images of 32x32x3, 100 classes."""
    del seed
    folder = _find_folder(data_dir, _CIFAR100_FOLDER, ("train", "test"), "cifar100")
    train_val = _read_images(folder / "train", "fine_labels", 100)
    test = _read_images(folder / "test", "fine_labels", 100)
    names = _class_names(folder / "meta", "fine_label_names", 100)
    return _assemble("cifar100", train_val, test, 100, names)
