"""Data sets with no download at run time, held in memory, and a fast batch iterator.

Registered in :data:`DATASETS` (``name -> loader(data_dir, resolution, seed)``):

- ``digits``: scikit-learn's bundled handwritten digits (8x8x1, 10 classes, 1,797 images), a
  fixed stratified 70 / 15 / 15 split (1,259 / 269 / 269), grey levels ``0..16`` stored as
  uint8 pixels ``15 * level``. No augmentation (a flipped digit is another digit).
- ``fashion_mnist`` / ``mnist`` / ``idx``: the four standard IDX files (gzipped or not) under
  ``--data-dir``; Fashion-MNIST is found in Debian's ``dataset-fashion-mnist`` folder by
  default (see :mod:`evaluators.data._idx`). 28x28x1, 54,000 / 6,000 / 10,000 images.
- ``cifar10`` / ``cifar100``: the official python-format files under ``--data-dir`` (see
  :mod:`evaluators._cifar` for the restricted unpickler that reads them).
- ``imagefolder``: one sub-folder per class under ``--data-dir`` (see
  :mod:`evaluators._imagefolder`).
- ``synthetic``: random but learnable images (8x8x3, 4 classes, 512 / 128 / 128) for tests.

Every set holds ``uint8`` pixels until the batch. The fixed splits never depend on the run's
seed; ``seed`` only selects the synthetic set. Augmentation (random crop after zero padding,
horizontal flip) happens per batch with torch alone in :func:`iterate_batches`; there are no
worker processes. Networks take raw pixel values: :func:`fit_arch_to_dataset` records the
training split's mean / std in the architecture's :class:`~space.arch.InputSpec`, and the
network's input quantizer applies them (so do its program and every export).
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pikenas.evaluators.data._cifar import load_cifar10, load_cifar100
from pikenas.evaluators.data._idx import load_fashion_mnist, load_idx, load_mnist
from pikenas.evaluators.data._imagefolder import load_imagefolder
from pikenas.evaluators.data._splits import (
    Augmentation,
    DatasetSplits,
    Split,
    channel_stats,
    stratified_split,
    stratified_subset,
)
from pikenas.evaluators.data._transforms import normalize, random_crop, random_horizontal_flip
from pikenas.space.arch import ArchConfig, InputSpec
from pikenas.space.errors import ArchConfigError, DataError
from pikenas.space.registry import Registry

__all__ = [
    "DATASETS",
    "DatasetSplits",
    "Split",
    "Augmentation",
    "load_dataset",
    "iterate_batches",
    "fit_arch_to_dataset",
    "input_spec",
    "batch_normalization",
    "stratified_subset",
    "DIGITS_FRACTIONS",
]

logger = logging.getLogger(__name__)

DatasetLoader = Callable[[Path | None, int | None, int], DatasetSplits]
DATASETS: Registry[DatasetLoader] = Registry("data set")

DIGITS_FRACTIONS = (0.70, 0.15, 0.15)
_SYNTHETIC_SIZES = (512, 128, 128)
_SYNTHETIC_CLASSES = 4
_SYNTHETIC_CHANNELS = 3
_SYNTHETIC_RESOLUTION = 8
_MAX_RESOLUTION = 4096


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``(pixels (1797, 64) in 0..16, labels (1797,) int64)``, read straight from the CSV file
    that ships inside scikit-learn (what ``load_digits`` reads), which avoids importing
    scikit-learn (seconds); falls back to ``load_digits`` if the file has moved."""
    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as handle:
                table = np.loadtxt(handle, delimiter=",")
            return table[:, :-1], table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data, bunch.target.astype(np.int64)


@DATASETS.register("digits")
def _load_digits(data_dir: Path | None, resolution: int | None, seed: int) -> DatasetSplits:
    if data_dir is not None:
        logger.debug("digits ships with scikit-learn; ignoring data_dir=%s", data_dir)
    pixels, targets = _digits_arrays()
    # Raw pixels are uint8: the 17 grey levels 0..16 become 0, 15, ..., 240 (exact integers;
    # normalization by the training split's statistics makes the scale irrelevant).
    images = torch.from_numpy((pixels * 15).astype(np.uint8)).reshape(-1, 1, 8, 8)
    labels = torch.from_numpy(targets)
    train_idx, val_idx, test_idx = stratified_split(targets, DIGITS_FRACTIONS)
    train = Split(images[train_idx], labels[train_idx])
    mean, std = channel_stats(train.images)
    return DatasetSplits(
        name="digits",
        train=train,
        val=Split(images[val_idx], labels[val_idx]),
        test=Split(images[test_idx], labels[test_idx]),
        num_classes=10,
        mean=mean,
        std=std,
        class_names=tuple(str(digit) for digit in range(10)),
    )


@DATASETS.register("synthetic")
def _load_synthetic(data_dir: Path | None, resolution: int | None, seed: int) -> DatasetSplits:
    """Each class is a smooth random colour pattern plus Gaussian noise (standard deviation 0.35
    against patterns of spread about 0.5): learnable by a small CNN in a few epochs, not
    trivially. Generated at ``resolution`` (default 8) from ``seed``."""
    del data_dir
    resolution = resolution or _SYNTHETIC_RESOLUTION
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(_SYNTHETIC_CLASSES, _SYNTHETIC_CHANNELS, 3, 3, generator=generator)
    prototypes = torch.nn.functional.interpolate(
        coarse, size=(resolution, resolution), mode="bilinear", align_corners=True
    )
    parts = []
    for size in _SYNTHETIC_SIZES:
        labels = torch.arange(size) % _SYNTHETIC_CLASSES
        labels = labels[torch.randperm(size, generator=generator)]
        noise = 0.35 * torch.randn(
            size, _SYNTHETIC_CHANNELS, resolution, resolution, generator=generator
        )
        values = prototypes[labels] + noise  # about -1..2: stored as uint8 pixels, step 3/255
        pixels = ((values + 1.0) * (255.0 / 3.0)).round().clamp(0, 255).to(torch.uint8)
        parts.append(Split(pixels, labels.long()))
    mean, std = channel_stats(parts[0].images)
    return DatasetSplits(
        name="synthetic",
        train=parts[0],
        val=parts[1],
        test=parts[2],
        num_classes=_SYNTHETIC_CLASSES,
        mean=mean,
        std=std,
    )


@DATASETS.register("cifar10")
def _load_cifar10(data_dir: Path | None, resolution: int | None, seed: int) -> DatasetSplits:
    return load_cifar10(data_dir, seed)


@DATASETS.register("cifar100")
def _load_cifar100(data_dir: Path | None, resolution: int | None, seed: int) -> DatasetSplits:
    return load_cifar100(data_dir, seed)


@DATASETS.register("fashion_mnist")
def _load_fashion_mnist(data_dir: Path | None, resolution: int | None, seed: int) -> DatasetSplits:
    return load_fashion_mnist(data_dir)


@DATASETS.register("mnist")
def _load_mnist(data_dir: Path | None, resolution: int | None, seed: int) -> DatasetSplits:
    return load_mnist(data_dir)


@DATASETS.register("idx")
def _load_idx(data_dir: Path | None, resolution: int | None, seed: int) -> DatasetSplits:
    return load_idx(data_dir)


@DATASETS.register("imagefolder")
def _load_imagefolder(data_dir: Path | None, resolution: int | None, seed: int) -> DatasetSplits:
    return load_imagefolder(data_dir, resolution, seed)


_CACHE: OrderedDict[tuple[str, str, int | None, int], DatasetSplits] = OrderedDict()
_CACHE_SIZE = 4


def load_dataset(
    name: str, *, data_dir: str | Path | None = None, resolution: int | None = None, seed: int = 0
) -> DatasetSplits:
    """Load data set ``name`` (see :data:`DATASETS`), resized to ``resolution`` x
    ``resolution`` when given (``None``: the set's native size).

    Loaded sets are cached per process (the last few), so a search worker reads CIFAR once;
    the returned tensors are shared: do not modify them in place.

    Raises :class:`~space.errors.UnknownNameError` for an unknown name and
    :class:`~space.errors.DataError` for missing or malformed files.
    """
    loader = DATASETS.get(name)
    if resolution is not None and not 1 <= resolution <= _MAX_RESOLUTION:
        raise DataError(f"resolution {resolution} is out of range; use 1..{_MAX_RESOLUTION}")
    folder = Path(data_dir).expanduser().resolve() if data_dir is not None else None
    key = (name, str(folder), resolution, seed)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    splits = loader(folder, resolution, seed)
    if resolution is not None:
        splits = splits.resized(resolution)
    _CACHE[key] = splits
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return splits


def iterate_batches(
    split: Split,
    batch_size: int,
    *,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    augmentation: Augmentation | None = None,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    channels_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images (B, C, R, R) float32, labels (B,) int64)`` on the device of ``split``.

    Images are raw pixel values ``0..255`` (what a network with an
    :class:`~space.arch.InputSpec` takes); given ``mean`` and ``std`` (``[0, 1]`` scale) they
    are normalized instead, for networks without one (architectures written before raw-pixel
    inputs existed). The ``uint8`` pixels become floats only here, one batch at a time.

    With a ``generator`` the order is shuffled (``torch.randperm``) and ``augmentation`` is
    applied, all random numbers drawn from that generator; without one, the order is fixed and
    nothing is augmented (evaluation). ``drop_last`` drops a final short batch when there is
    at least one full one (batch norm dislikes tiny batches).
    """
    count = len(split)
    device = split.images.device
    if generator is not None:
        order = torch.randperm(count, generator=generator).to(device)
    else:
        order = torch.arange(count, device=device)
    stop = count - count % batch_size if drop_last and count >= batch_size else count
    for start in range(0, stop, batch_size):
        indices = order[start : start + batch_size]
        images = split.images[indices].float()
        if generator is not None and augmentation is not None:
            images = random_crop(images, augmentation.crop_padding, generator)
            if augmentation.horizontal_flip:
                images = random_horizontal_flip(images, generator)
        if mean is not None and std is not None:
            scale = 255.0 if split.images.dtype == torch.uint8 else 1.0
            images = normalize(images / scale, mean, std)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        yield images, split.labels[indices]


def batch_normalization(arch: ArchConfig | None, splits: DatasetSplits) -> dict[str, Any]:
    """The :func:`iterate_batches` keywords for a network ``arch``: none (raw pixels) when it
    has an input spec, else ``mean`` / ``std`` (it takes normalized floats)."""
    if arch is not None and arch.input is not None:
        return {}
    return {"mean": splits.mean, "std": splits.std}


def input_spec(splits: DatasetSplits) -> InputSpec:
    """The raw-pixel input contract of ``splits``: its training mean / std per channel."""
    return InputSpec(mean=splits.mean, std=splits.std)


def _fits(arch: ArchConfig, splits: DatasetSplits, resolution: int) -> bool:
    try:
        arch.replace(
            input_channels=splits.input_channels,
            resolution=resolution,
            num_classes=splits.num_classes,
            input=input_spec(splits),
        )
    except ArchConfigError:
        return False
    return True


def _smallest_fitting_resolution(arch: ArchConfig, splits: DatasetSplits) -> int | None:
    """Binary search: feature sizes grow with the input, so fitting is monotone in it."""
    low, high = splits.resolution, _MAX_RESOLUTION
    if not _fits(arch, splits, high):
        return None
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if _fits(arch, splits, middle) else (middle, high)
    return high


def fit_arch_to_dataset(arch: ArchConfig, splits: DatasetSplits) -> ArchConfig:
    """``arch`` with the data set's ``input_channels``, ``resolution``, ``num_classes`` and
    raw-pixel ``input`` spec (its normalization; not part of the archid).

    Raises :class:`~space.errors.DataError` (one line: the model, both geometries and the fix)
    when the architecture cannot take that input, e.g. when its strides would shrink the
    feature map below 1x1.
    """
    changes = {
        "input_channels": splits.input_channels,
        "resolution": splits.resolution,
        "num_classes": splits.num_classes,
        "input": input_spec(splits),
    }
    if all(getattr(arch, field) == value for field, value in changes.items()):
        return arch
    try:
        return arch.replace(**changes)
    except ArchConfigError as exc:
        reason = str(exc).removeprefix("invalid architecture: ")
        smallest = _smallest_fitting_resolution(arch, splits)
        fix = (
            f"train at --resolution {smallest} or more, or pick a model with fewer stride-2 layers"
            if smallest is not None
            else "pick another model"
        )
        res = arch.resolution
        model = arch.name or f"architecture {arch.archid}"
        raise DataError(
            f"model {model!r} ({res}x{res}x{arch.input_channels}, {arch.num_classes} classes) "
            f"cannot take data set {splits.name!r} ({splits.geometry()}): {reason}; {fix}"
        ) from None
