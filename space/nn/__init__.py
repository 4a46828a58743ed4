"""Quantized building blocks: quantizers, layers, norms (float BN, QuantNorm), activations,
PikeLPN and PokeBNN blocks, and ``build_model(arch)``. Every module lowers itself into the
integer program (:mod:`pikenas.space.program`)."""

from __future__ import annotations

from pikenas.space.nn.activations import ACTIVATIONS, DPReLU, PReLU, ReLU, make_activation
from pikenas.space.nn.build import PikeNet, build_model
from pikenas.space.nn.layers import QuantConv2d, QuantLinear
from pikenas.space.nn.norms import BatchNormStage, QuantNormStage
from pikenas.space.nn.quantizers import (
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
    "ACTIVATIONS",
    "QUANTIZERS",
    "BatchNormStage",
    "BinaryQuantizer",
    "DPReLU",
    "FloatQuantizer",
    "PReLU",
    "PikeNet",
    "Pow2Quantizer",
    "QuantConv2d",
    "QuantLinear",
    "QuantNormStage",
    "Quantizer",
    "ReLU",
    "TernaryQuantizer",
    "UniformQuantizer",
    "build_model",
    "make_activation",
    "make_activation_quantizer",
    "make_quantizer",
]
