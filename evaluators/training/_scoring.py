"""Scoring a model on a split: the eval forward (the integer program) and, below the last
epoch of successive halving, the training forward with batch statistics."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pikenas.evaluators.data.datasets import (
    DatasetSplits,
    Split,
    batch_normalization,
    iterate_batches,
)

__all__ = ["batch_statistics_eval", "evaluate_split"]


@torch.no_grad()
def evaluate_split(
    model: torch.nn.Module,
    split: Split,
    splits: DatasetSplits,
    batch_size: int,
    channels_last: bool,
) -> tuple[float, float]:
    """``(mean cross-entropy, top-1 accuracy)`` of ``model`` on ``split``."""
    model.eval()  # eval mode: the integer program, exact, no autocast
    return _scores(model, split, splits, batch_size, channels_last)


def _scores(
    model: torch.nn.Module, split: Split, splits: DatasetSplits, batch_size: int,
    channels_last: bool,
) -> tuple[float, float]:
    """``(mean cross-entropy, top-1 accuracy)`` of the model's forward in its current mode."""
    device = split.images.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    for images, labels in iterate_batches(
        split,
        batch_size,
        **batch_normalization(getattr(model, "arch", None), splits),
        channels_last=channels_last,
    ):
        logits = model(images).float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(dim=1) == labels).sum()
    return float(loss_sum) / len(split), int(correct) / len(split)


@torch.no_grad()
def batch_statistics_eval(
    model: torch.nn.Module,
    split: Split,
    splits: DatasetSplits,
    batch_size: int,
    channels_last: bool,
) -> tuple[float, float]:
    """``(mean cross-entropy, top-1 accuracy)`` of the *training* forward on ``split``: fake
    quantization with each batch's own normalisation statistics, in batches of about
    ``batch_size`` (equal sizes, fixed order). The model's state and the RNG are restored."""
    saved = {name: value.clone() for name, value in model.state_dict().items()}
    rng = torch.get_rng_state()
    count = len(split)
    even = math.ceil(count / math.ceil(count / max(1, batch_size)))
    model.train()
    try:
        return _scores(model, split, splits, even, channels_last)
    finally:
        model.load_state_dict(saved)
        torch.set_rng_state(rng)
        model.eval()
