"""A pow2 QuantNorm stage folds the sign of its multiplier into the weight codes: uniform b-bit
codes ``-2^(b-1)`` become ``+2^(b-1)``, which needs b + 1 bits; ACE charges that width."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pikenas.space.nn._requant import sign_folded_bits
from pikenas.space.nn.build import build_model
from pikenas.space.program.ir import range_bits
from pikenas.space.program.pricing import primitives
from pikenas.space.zoo.catalog import get_zoo_arch

torch.set_num_threads(1)


@pytest.mark.parametrize(
    ("bits", "codes", "expected"),
    [(8, (-128, 127), 9), (4, (-8, 7), 5), (2, (-2, 1), 3), (4, (-64, 64), 4), (1, (-1, 1), 1),
     (2, (-1, 1), 2), (8, (0, 255), 8), (8, None, 8)],
)
def test_folded_width(bits: int, codes: tuple[int, int] | None, expected: int) -> None:
    assert sign_folded_bits(bits, codes) == expected


def _negated_extreme_code() -> tuple[object, str]:
    """tiny-pikelpn with channel 0 of the first depthwise conv holding code -128 and a
    negative QuantNorm multiplier after it."""
    model = build_model(get_zoo_arch("tiny-pikelpn"), seed=0).eval()
    block = model.blocks[0]
    with torch.no_grad():
        block.depthwise.weight[0].fill_(0.01)
        block.depthwise.weight[0, 0, 0, 0] = -1000.0  # clamps to the most negative code
        block.depthwise_stage.weight[0] = -1.0
    return model, "blocks.0.depthwise"


def test_the_folded_weight_fits_the_width_it_is_charged_at() -> None:
    model, layer = _negated_extreme_code()
    program = model.program()
    conv = next(o for o in program.ops if o.op == "conv" and o.layer == layer)
    weight = program.constants[conv.inputs[1]]
    codes = program.arrays[weight.name]
    assert codes[0].max() == 128  # the fold happened: -128 negated
    assert range_bits(int(codes.min()), int(codes.max())) == 9 <= weight.bits
    (kind, _, weight_bits, _, _), = primitives(program, conv)
    assert kind == "mac" and weight_bits == 9


def test_a_float_bn_network_keeps_its_weight_width() -> None:
    program = build_model(get_zoo_arch("tiny-w8a8"), seed=0).program()
    widths = {c.bits for c in program.constants.values() if c.dtype == "int" and "weight" in c.name}
    assert widths == {8}
    assert np.all([a.dtype.kind in "if" for a in program.arrays.values()])
