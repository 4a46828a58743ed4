"""pikenas.space: architecture descriptions, quantizers, PikeLPN blocks and ``build_model``.

Importing ``space`` imports torch and pydantic only (no optuna, ray or plotly).
"""

from __future__ import annotations

from space.activations import ACTIVATIONS, DPReLU, PReLU, ReLU, make_activation
from space.arch import (
    ARCH_VERSION,
    ArchConfig,
    ConvQuantSpec,
    ConvStemSpec,
    HeadSpec,
    PikeBlockSpec,
    PokeBottleneckSpec,
    PokeStemSpec,
)
from space.build import PikeNet, build_model
from space.errors import (
    ArchConfigError,
    CostModelError,
    DataError,
    EvaluationError,
    PikeNASError,
    RunDirError,
    SearchConfigError,
    UnknownNameError,
)
from space.layers import QuantConv2d, QuantLinear
from space.norms import BatchNormStage, QuantNormStage
from space.quantizers import (
    QUANTIZERS,
    BinaryQuantizer,
    FloatQuantizer,
    Pow2Quantizer,
    Quantizer,
    TernaryQuantizer,
    UniformQuantizer,
    make_activation_quantizer,
    make_quantizer,
)

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
]
