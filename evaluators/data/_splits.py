"""The in-memory data set type (:class:`DatasetSplits`) and split helpers."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from pikenas.evaluators.data._transforms import resize, to_float
from pikenas.space.errors import DataError

__all__ = [
    "Split",
    "Augmentation",
    "DatasetSplits",
    "stratified_split",
    "stratified_subset",
    "channel_stats",
    "read_regular_file",
    "min_class_size",
]

# The seed of every fixed split and subset: independent of the run's seed, so that every
# candidate and every run sees the same train / validation / test images.
SPLIT_SEED = 20240400


@dataclass(frozen=True)
class Split:
    """One part of a data set: ``images (N, C, R, R)`` (``uint8`` pixels in ``[0, 255]``, as
    every registered loader gives; ``float32`` in about ``[0, 1]`` for hand-made splits) and
    ``labels (N,)`` ``int64`` class indices."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(
                f"{self.images.shape[0]} images but {self.labels.shape[0]} labels in one split"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def select(self, indices: torch.Tensor) -> Split:
        return Split(self.images[indices], self.labels[indices])


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation: random crop after zero padding of ``crop_padding`` pixels
    (0 = none) and a random horizontal flip."""

    crop_padding: int = 0
    horizontal_flip: bool = False


@dataclass(frozen=True)
class DatasetSplits:
    """A whole data set in memory: fixed train / validation / test splits plus its geometry
    and per-channel normalization (``mean``/``std`` in the ``[0, 1]`` pixel scale, computed on
    the training split). Treat the tensors as read-only: loaded sets are cached and shared."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmentation: Augmentation = Augmentation()
    class_names: tuple[str, ...] = field(default=())

    @property
    def input_channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def resolution(self) -> int:
        return int(self.train.images.shape[-1])

    def geometry(self) -> str:
        """``'8x8x1, 10 classes'``: for messages."""
        res = self.resolution
        return f"{res}x{res}x{self.input_channels}, {self.num_classes} classes"

    def resized(self, resolution: int) -> DatasetSplits:
        """The same data set with every image resized to ``resolution`` x ``resolution``; the
        crop padding scales with the size (an eighth of it for CIFAR-style augmentation)."""
        if resolution == self.resolution:
            return self
        padding = self.augmentation.crop_padding
        if padding:
            padding = max(1, round(padding * resolution / self.resolution))
        return replace(
            self,
            train=Split(resize(self.train.images, resolution), self.train.labels),
            val=Split(resize(self.val.images, resolution), self.val.labels),
            test=Split(resize(self.test.images, resolution), self.test.labels),
            augmentation=replace(self.augmentation, crop_padding=padding),
        )


def stratified_split(
    labels: np.ndarray, fractions: tuple[float, ...], seed: int = SPLIT_SEED
) -> list[np.ndarray]:
    """Split indices ``0..len(labels)-1`` into parts with the given fractions of every class.

    Per class, the indices are shuffled with ``seed`` and cut into consecutive pieces of
    ``round(fraction * class_count)`` for every part but the first, which takes the rest. Each
    returned index array is sorted.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        counts = [round(fraction * len(members)) for fraction in fractions[1:]]
        start = len(members) - sum(counts)
        parts[0].append(members[:start])
        for part_index, count in enumerate(counts, start=1):
            parts[part_index].append(members[start : start + count])
            start += count
    return [np.sort(np.concatenate(part)) for part in parts]


def min_class_size(fractions: tuple[float, ...]) -> int:
    """The fewest images a class needs so that :func:`stratified_split` with ``fractions``
    gives it at least one image in every part (the same rounding as the split)."""
    for count in range(1, 10_000):
        held_out = [round(fraction * count) for fraction in fractions[1:]]
        if min(held_out, default=1) >= 1 and count - sum(held_out) >= 1:
            return count
    raise ValueError(f"fractions {fractions} leave some part empty for every class size")


def read_regular_file(path: Path, max_bytes: int, what: str) -> bytes:
    """The bytes of ``path``, opened only when it is a regular file of at most ``max_bytes``.

    The one place data readers open a file: the open never blocks (a FIFO or device named like
    a data file is refused, not read), and the size is checked before anything is allocated.
    Raises :class:`DataError` (one line naming ``path`` and ``what`` it should be).
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise DataError(f"cannot open {what} {path} ({exc.strerror or exc})") from None
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise DataError(
                f"{what} {path} is not a regular file (a FIFO, device or folder); replace it "
                "with a real file or remove it"
            )
        if info.st_size > max_bytes:
            raise DataError(
                f"{what} {path} is {info.st_size:,} bytes, over the {max_bytes:,}-byte limit "
                "for one such file; it is not a valid file of this kind"
            )
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew after the check
        raise DataError(f"{what} {path} grew past {max_bytes:,} bytes while being read")
    return data


def stratified_subset(split: Split, fraction: float, seed: int = SPLIT_SEED) -> Split:
    """The same fixed ``fraction`` of every class of ``split`` (at least one image per class)."""
    if fraction >= 1.0:
        return split
    rng = np.random.default_rng(seed)
    labels = split.labels.numpy()
    chosen = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        chosen.append(members[: max(1, round(fraction * len(members)))])
    return split.select(torch.from_numpy(np.sort(np.concatenate(chosen))))


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of ``(N, C, H, W)`` images in the ``[0, 1]``
    scale (a floor of 1e-6 on the deviation keeps constant channels finite)."""
    sums = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros(images.shape[1], dtype=torch.float64)
    for chunk in images.split(4096):
        values = to_float(chunk).double()
        sums += values.sum(dim=(0, 2, 3))
        squares += values.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = sums / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)
    return tuple(mean.tolist()), tuple(std.tolist())


#: the share of a training set held out (stratified) for validation when a data set ships only
#: training and test splits (CIFAR, IDX sets).
VAL_FRACTION = 0.1


def hold_out_validation(
    name: str,
    train_val: Split,
    test: Split,
    num_classes: int,
    augmentation: Augmentation,
    class_names: tuple[str, ...] = (),
) -> DatasetSplits:
    """A data set from its training and test splits: a stratified :data:`VAL_FRACTION` of the
    training images held out for validation, the normalization statistics from the rest."""
    train_indices, val_indices = stratified_split(
        train_val.labels.numpy(), (1 - VAL_FRACTION, VAL_FRACTION)
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
        augmentation=augmentation,
        class_names=class_names,
    )
