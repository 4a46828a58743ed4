"""pikenas: architecture search for low-precision CNNs, scored by accuracy and ACE v2.

The four subpackages, imported only downward (``space`` <- ``evaluators`` <- ``results`` <-
``search``):

* :mod:`pikenas.space` — architecture descriptions (``ArchConfig``, ``SearchSpace``), the
  integer program (``space.program``), quantized layers and blocks (``space.nn``), the zoo;
* :mod:`pikenas.evaluators` — ACE v1 / v2 (``evaluators.cost``), data sets, training, verify;
* :mod:`pikenas.results` — trial records, Pareto front, figures, dashboard, export bundles;
* :mod:`pikenas.search` — the trial loop, successive halving, backends, the CLI.

The names below are the ones a user needs first; each loads its module on first use, so
``import pikenas`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_LAZY: dict[str, str] = {
    "ArchConfig": "pikenas.space.arch",
    "PikeNASError": "pikenas.space.errors",
    "build_model": "pikenas.space.nn.build",
    "get_zoo_arch": "pikenas.space.zoo",
    "zoo_names": "pikenas.space.zoo",
    "IntegerProgram": "pikenas.space.program",
    "count_ace": "pikenas.evaluators.cost",
    "CostTable": "pikenas.evaluators.cost",
    "TrainConfig": "pikenas.evaluators.training",
    "train": "pikenas.evaluators.training",
    "evaluate": "pikenas.evaluators.training",
    "load_dataset": "pikenas.evaluators.data",
    "load_trials": "pikenas.results",
    "load_bundle": "pikenas.results.export",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pikenas' has no attribute {name!r}")
    source = "load" if name == "load_trials" else name
    value = getattr(importlib.import_module(module), source)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
