"""Data sets, loaded without any download: digits, synthetic, Fashion-MNIST / MNIST (IDX),
CIFAR-10/100, image folders."""

from __future__ import annotations

from pikenas.evaluators.data.datasets import (
    DATASETS,
    DatasetSplits,
    Split,
    iterate_batches,
    load_dataset,
)

__all__ = ["DATASETS", "DatasetSplits", "Split", "iterate_batches", "load_dataset"]
