"""ACE v1 / ACE v2 counted from the integer program: a network worked out by hand, strictness,
the report's forms, cost tables.

Zoo reference numbers (MobileNetV1, PokeBNN) are in test_ace_zoo.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from pikenas.evaluators.cost import AceReport, CostTable, count_ace
from pikenas.space.arch import ArchConfig, ConvQuantSpec, ConvStemSpec, HeadSpec, PikeBlockSpec
from pikenas.space.errors import CostModelError
from pikenas.space.nn.build import build_model
from pikenas.space.program.builder import LoweringError, lower

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]

# A network small enough to cost by hand: 1x4x4 input, 2 channels, 3 classes.
TOY = ArchConfig(
    name="toy",
    input_channels=1,
    resolution=4,
    num_classes=3,
    stem=ConvStemSpec(
        out_channels=2, stride=1, activation_bits=4, norm="quantnorm", scale_format="pow2"
    ),
    blocks=(
        PikeBlockSpec(
            out_channels=2,
            depthwise=ConvQuantSpec(weight_bits=4),
            pointwise=ConvQuantSpec(weight_bits=4),
            activation_bits=4,
        ),
    ),
    head=HeadSpec(linear=ConvQuantSpec(weight_bits=8, weight_granularity="per_tensor")),
)
# Hand count, E = 32 conv output elements (2 x 4 x 4), the input has 16 pixels.
# input quantizer (float): mul 16 x 32*32, clip 2 x 16 x 32, round 16 x 32    =  17,920
# stem conv: 288 MACs (32 x 9) at 9 x 8 bits: the pow2 stage folds its signs into the 8-bit
#   weight codes, and -128 negated is +128 (9 bits)                          =  20,736
#   accumulator: |acc| <= 9 * 128 * 128 = 147,456 (19 bits)
# stem QuantNorm pow2, ReLU, 4-bit unsigned out. T = 147,456; bias in [-2T, 2T + r] with the
#   rounding constant r <= 2^20 (exponents down to -(t_bits + 1) = -21, t_bits = 20 for 3T):
#   bias constant 22 bits -> add 32 x 22 = 704; t in [-3T, 3T + 2^20] (22 bits) -> shift
#   32 x 22 = 704; the shifted value (up to << 4: 26 bits) is clipped to [0, 15]: 2 x 32 x 26
#   = 1,664                                                                     =   3,072
# depthwise: 288 MACs at 4 x 4                                                  =   4,608
# depthwise float BN, fused (ReLU into the clip): mul 32 x 1024, add 32 x 32, clip 2 x 32 x 32,
#   round 32 x 32                                                               =  36,864
# pointwise: 64 MACs at 4 x 4                                                   =   1,024
# pointwise float BN, fused, as the depthwise one                               =  36,864
# head pool: the integer sum of 16 codes in [0, 15] per channel: 30 adds at 8 bits (240); one
#   float multiply per channel (2 x 1024); clip 2 x 2 x 32; round 2 x 32          =   2,480
# linear: 6 MACs at 8 x 8 (384), dequantize 3 x 1024, bias 3 x 32               =   3,552
TOY_ACE_V1 = 20_736 + 4_608 + 1_024 + 384
TOY_ACE_V2 = 127_120
TOY_MACS = 288 + 288 + 64 + 6


def test_toy_network_by_hand() -> None:
    report = count_ace(TOY)
    assert report.macs == TOY_MACS
    assert report.ace_v1 == TOY_ACE_V1
    assert report.ace_v2 == TOY_ACE_V2
    assert report.mac_cost == TOY_ACE_V1
    assert report.elementwise_cost == TOY_ACE_V2 - TOY_ACE_V1
    layers = {layer.layer: layer for layer in report.layers}
    assert layers["stem.stage"].elementwise_cost == 3_072
    assert layers["blocks.0.depthwise_stage"].elementwise_cost == 36_864
    assert layers["head.pool"].elementwise_cost == 2_480
    assert layers["stem.input_quantizer"].elementwise_cost == 17_920
    assert report.elementwise_elements == {
        "requantize": 16,
        "quantnorm": 32,
        "batchnorm": 64,
        "pool": 2,
    }
    # stored for inference: weights (18 + 18 + 4 + 6), per-channel stage constants
    # (stem: bias, shift; BN stages: multiplier, bias), scalars (input 1/step, pool multiplier),
    # the head's dequantize multiplier and bias
    assert report.params == 18 + 18 + 4 + 6 + 2 * 2 + 2 * 2 + 2 * 2 + 1 + 1 + 3 + 3


def test_pow2_quantnorm_has_no_multiply_and_int8_one() -> None:
    for scale_format, multiplies in (("pow2", 0), ("int8", 1)):
        arch = TOY.replace(stem=TOY.stem.model_copy(update={"scale_format": scale_format}))
        rows = [row for row in count_ace(arch).breakdown if row.layer == "stem.stage"]
        assert sum(row.count for row in rows if row.op == "mul") == multiplies * 32, scale_format
        assert not any(row.float_operands for row in rows)


def test_fp16_is_refused_nothing_executes_it() -> None:
    with pytest.raises(CostModelError, match="runs float32"):
        CostTable.default(16)


def test_scaled_table_multiplies_each_kind() -> None:
    data = CostTable.default().to_dict()
    for price in data["ops"].values():
        price["scale"] = 3
    report = count_ace(TOY, cost_table=CostTable.from_dict(data))
    assert report.ace_v2 == 3 * TOY_ACE_V2 and report.ace_v1 == TOY_ACE_V1


def test_breakdown_sums_to_totals() -> None:
    report = count_ace(TOY)
    assert sum(row.cost for row in report.breakdown) == report.ace_v2
    assert sum(row.ace_v1 for row in report.breakdown) == report.ace_v1
    assert sum(layer.mac_cost + layer.elementwise_cost for layer in report.layers) == (
        report.ace_v2
    )
    assert sum(report.op_totals.values()) == report.ace_v2
    assert report.elementwise_share == pytest.approx(report.elementwise_cost / report.ace_v2)


def test_trained_weights_and_the_meta_device_give_the_same_count() -> None:
    model = build_model(TOY, seed=3)
    assert count_ace(model).to_dict() == count_ace(TOY).to_dict()
    assert count_ace(lower(model.eval())).to_dict() == count_ace(TOY).to_dict()
    assert next(model.parameters()).device.type == "cpu"  # the model itself is untouched


# ---- strictness ----------------------------------------------------------------------
class Mystery(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def test_a_part_that_cannot_lower_is_named() -> None:
    model = build_model(TOY)
    model.blocks[0].depthwise_stage = Mystery()
    with pytest.raises(LoweringError, match=r"blocks\.0.*Mystery|Mystery.*blocks\.0"):
        count_ace(model)
    model = build_model(TOY)
    model.blocks.append(Mystery())
    with pytest.raises(LoweringError, match=r"'blocks\.1'.*Mystery"):
        count_ace(model)


def test_only_pikenas_networks_and_configs_are_counted() -> None:
    with pytest.raises(CostModelError, match="build_model"):
        count_ace(nn.Sequential(nn.Conv2d(3, 4, 1)))
    with pytest.raises(CostModelError, match="ArchConfig"):
        count_ace("mobilenet")  # type: ignore[arg-type]


def test_report_json_dataframe_and_table() -> None:
    report = count_ace(TOY)
    assert isinstance(report, AceReport)
    data = json.loads(json.dumps(report.to_dict()))
    for key in (
        "ace_v1",
        "ace_v2",
        "macs",
        "params",
        "elementwise_share",
        "elementwise_elements",
        "breakdown",
        "layers",
    ):
        assert key in data
    assert data["ace_v2"] == TOY_ACE_V2
    assert {"layer", "op", "count", "bits_a", "bits_b", "cost"} <= set(data["breakdown"][0])
    frame = report.to_dataframe()
    assert len(frame) == len(report.breakdown)
    assert int(frame["cost"].sum()) == TOY_ACE_V2
    table = report.to_table()
    assert "127,120" in table and "20,736" in table and "stem.stage" in table


# ---- cost tables ---------------------------------------------------------------------
def _energy_table() -> CostTable:
    return CostTable.load(REPO / "configs" / "cost_tables" / "energy_45nm_illustrative.yaml")


def test_default_table_round_trips_through_dict() -> None:
    table = CostTable.default()
    assert CostTable.from_dict(table.to_dict()) == table
    assert table.integral and table.float_bits == 32


def test_load_yaml_and_json(tmp_path: Path) -> None:
    path = tmp_path / "double.json"
    data = CostTable.default().to_dict()
    del data["name"]
    for price in data["ops"].values():
        price["scale"] = 2
    path.write_text(json.dumps(data))
    table = CostTable.load(path)
    assert table.name == "double"
    assert count_ace(TOY, cost_table=table).ace_v2 == 2 * TOY_ACE_V2


def test_energy_table_prices_float_ops_separately() -> None:
    table = _energy_table()
    assert table.unit == "pJ" and not table.integral
    report = count_ace(TOY, cost_table=table)
    expected = sum(
        row.count * table.prices[row.op].unit_cost(row.bits_a, row.bits_b, row.float_operands)
        for row in count_ace(TOY).breakdown
    )
    assert report.ace_v2 == pytest.approx(expected, rel=1e-12)
    float_adds = [r for r in report.breakdown if r.op == "add" and r.float_operands]
    int_adds = [r for r in report.breakdown if r.op == "add" and not r.float_operands]
    assert float_adds and int_adds
    per_float = float_adds[0].cost / (float_adds[0].count * 32)
    per_int = int_adds[0].cost / (int_adds[0].count * int_adds[0].bits_a)
    assert per_float > 5 * per_int  # the table prices a float add far above an integer one
    assert report.ace_v1 == TOY_ACE_V1


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ("ops: [unclosed", ".yaml", "malformed"),
        ('{"ops": ', ".json", "malformed"),
        ("- 1\n- 2\n", ".yaml", "mapping"),
        ("name: x\n", ".yaml", "'ops'"),
        ("colour: red\nops: {}\n", ".yaml", "colour"),
        ("ops: {mac: {rule: product}, divide: {rule: max}}\n", ".yaml", "ops.divide"),
        ("ops: {mac: {rule: square}}\n", ".yaml", "ops.mac.rule"),
        ("ops: {mac: {rule: product, weight: 2}}\n", ".yaml", "ops.mac.weight"),
        ("ops: {mac: {rule: product, scale: -1}}\n", ".yaml", "ops.mac.scale"),
        ("ops: {mac: {rule: product, scale: true}}\n", ".yaml", "ops.mac.scale"),
        ("ops: {mac: {rule: product}}\n", ".yaml", "ops.mul is missing"),
    ],
)
def test_malformed_tables_are_rejected(
    tmp_path: Path, text: str, suffix: str, message: str
) -> None:
    path = tmp_path / f"table{suffix}"
    path.write_text(text)
    with pytest.raises(CostModelError, match=message) as info:
        CostTable.load(path)
    assert str(path) in str(info.value)


def test_float_bits_and_missing_file_rejected(tmp_path: Path) -> None:
    data = CostTable.default().to_dict()
    for width in (8, 16):
        data["float_bits"] = width
        path = tmp_path / f"fp{width}.yaml"
        path.write_text(json.dumps(data))
        with pytest.raises(CostModelError, match="float_bits"):
            CostTable.load(path)
    with pytest.raises(CostModelError, match="no such file"):
        CostTable.load(tmp_path / "absent.yaml")
