"""pikenas.space: architecture descriptions, quantizers, PikeLPN blocks and ``build_model``.

Importing ``space`` imports pydantic only; the torch-based names load on first use
(never optuna, ray or plotly).
"""

from __future__ import annotations

import importlib
from typing import Any

from pikenas.space.arch import (
    ARCH_VERSION,
    ArchConfig,
    ConvQuantSpec,
    ConvStemSpec,
    HeadSpec,
    PikeBlockSpec,
    PokeBottleneckSpec,
    PokeStemSpec,
)
from pikenas.space.errors import (
    ArchConfigError,
    CostModelError,
    DataError,
    DiskError,
    EvaluationError,
    PikeNASError,
    RunDirError,
    RuntimeFailureError,
    SearchConfigError,
    UnknownNameError,
)

# Names whose modules import torch are loaded on first use (PEP 562), so that importing the
# errors or ArchConfig (every CLI start, ``pikenas --help``) does not pay torch's import.
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        ["ACTIVATIONS", "DPReLU", "PReLU", "ReLU", "make_activation"], "nn.activations"
    ),
    **dict.fromkeys(["PikeNet", "build_model"], "nn.build"),
    **dict.fromkeys(["QuantConv2d", "QuantLinear"], "nn.layers"),
    **dict.fromkeys(["BatchNormStage", "QuantNormStage"], "nn.norms"),
    **dict.fromkeys(
        [
            "QUANTIZERS",
            "BinaryQuantizer",
            "FloatQuantizer",
            "Pow2Quantizer",
            "Quantizer",
            "TernaryQuantizer",
            "UniformQuantizer",
            "make_activation_quantizer",
            "make_quantizer",
        ],
        "nn.quantizers",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pikenas.space' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pikenas.space.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ARCH_VERSION",
    "ArchConfig",
    "ConvQuantSpec",
    "ConvStemSpec",
    "PokeStemSpec",
    "PikeBlockSpec",
    "PokeBottleneckSpec",
    "HeadSpec",
    "build_model",
    "PikeNet",
    "QUANTIZERS",
    "Quantizer",
    "FloatQuantizer",
    "UniformQuantizer",
    "Pow2Quantizer",
    "BinaryQuantizer",
    "TernaryQuantizer",
    "make_quantizer",
    "make_activation_quantizer",
    "ACTIVATIONS",
    "ReLU",
    "PReLU",
    "DPReLU",
    "make_activation",
    "QuantConv2d",
    "QuantLinear",
    "BatchNormStage",
    "QuantNormStage",
    "PikeNASError",
    "ArchConfigError",
    "UnknownNameError",
    "CostModelError",
    "DataError",
    "EvaluationError",
    "SearchConfigError",
    "RunDirError",
    "RuntimeFailureError",
    "DiskError",
]


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
