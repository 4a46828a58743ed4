"""Quantization-aware training: ``train(arch, config)`` (full, checkpointed, resumable) and
``evaluate(arch, config)`` (the proxy), configured by :class:`TrainConfig`."""

from __future__ import annotations

from pikenas.evaluators.training.config import TrainConfig, TrainResult
from pikenas.evaluators.training.loop import evaluate, train

__all__ = ["TrainConfig", "TrainResult", "evaluate", "train"]
