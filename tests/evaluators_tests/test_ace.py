"""ACE v1 / ACE v2 counter: hand-computed tiny networks, strictness, cost tables.

Zoo reference numbers (MobileNetV1, PokeBNN) are in test_ace_zoo.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from evaluators.ace import ROOT_LAYER, TORCH_HANDLERS, AceReport, CostTable, count_ace
from space.costs import CostContainer, CostDeclaration, Op, ShapePreserving, accumulator_bits
from space.errors import CostModelError

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]


# ---- tiny modules that declare their own operations -------------------------------------
class ToyQuantConv(nn.Module):
    """A 3x3 'same' conv, 4-bit weights on 8-bit inputs, declared as an integer conv."""

    weight_bits = 4
    input_bits = 8

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_empty((x.shape[0], self.weight.shape[0], x.shape[2], x.shape[3]))

    def inference_ops(self, input_shape, output_shape) -> CostDeclaration:
        fan_in = self.weight.shape[1] * 9
        macs = math.prod(output_shape) * fan_in
        return CostDeclaration(
            (Op("mac", macs, self.weight_bits, self.input_bits, label="conv"),),
            {},
            self.weight.numel(),
        )


class ToyQuantNormPow2(nn.Module):
    """QuantNorm with pow2 DQ on an A-bit accumulator: shift, add, two clip compares."""

    def __init__(self, accumulator: int) -> None:
        super().__init__()
        self.accumulator = accumulator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def inference_ops(self, input_shape, output_shape) -> CostDeclaration:
        elements = math.prod(output_shape)
        a = self.accumulator
        ops = (
            Op("shift", elements, a, a, label="qn_shift"),
            Op("add", elements, a, a, label="qn_bias"),
            Op("compare", 2 * elements, a, a, label="clip"),
        )
        return CostDeclaration(ops, {"quantnorm": elements}, 2 * output_shape[1])


class ToyFloatRescale(nn.Module):
    """A float rescale and rounding of every element (a float requantization without clip)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def inference_ops(self, input_shape, output_shape) -> CostDeclaration:
        elements = math.prod(output_shape)
        ops = (
            Op("mul", elements, 32, 32, True, "requant_scale"),
            Op("round", elements, 32, 32, True, "round"),
        )
        return CostDeclaration(ops, {"requantize": elements}, 0)


class ToyBlock(CostContainer, nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = ToyQuantConv(2, 3)
        # accumulator: 4 + 8 + ceil(log2(2 * 9 = 18)) = 4 + 8 + 5 = 17 bits
        self.norm = ToyQuantNormPow2(accumulator_bits(4, 8, 18))
        self.rescale = ToyFloatRescale()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rescale(self.norm(self.conv(x)))


TOY_INPUT = (1, 2, 4, 4)
# Hand count for ToyBlock on (1, 2, 4, 4); E = output elements = 1*3*4*4 = 48.
# conv:    mac 48 * (2*3*3) = 864 at 4 x 8 bits -> ACE v1 = 864 * 32 = 27,648 = its ACE v2
# norm:    accumulator A = 17
#          shift   48 at (17, 17): first    -> 48 * 17      =    816
#          add     48 at (17, 17): max      -> 48 * 17      =    816
#          compare 96 at (17, 17): max      -> 96 * 17      =  1,632
# rescale: mul     48 float 32 x 32: product -> 48 * 1024   = 49,152
#          round   48 float 32 x 32: max     -> 48 * 32     =  1,536
# ACE v2 = 27,648 + 816 + 816 + 1,632 + 49,152 + 1,536 = 81,600
# elementwise = 81,600 - 27,648 = 53,952
# params = conv weight 3*2*3*3 = 54 + norm 2*3 = 6 -> 60
# With float operands at 16 bits: mul 48 * 256 = 12,288, round 48 * 16 = 768
#   -> ACE v2 = 27,648 + 816 + 816 + 1,632 + 12,288 + 768 = 43,968 (ACE v1 unchanged)
TOY_ACE_V1 = 27_648
TOY_ACE_V2 = 81_600
TOY_ACE_V2_FP16 = 43_968


def toy_report(**kwargs) -> AceReport:
    with torch.device("meta"):
        model = ToyBlock()
    return count_ace(model, input_shape=TOY_INPUT, **kwargs)


def test_toy_block_every_integer_and_float_op_kind() -> None:
    report = toy_report()
    assert report.macs == 864
    assert report.ace_v1 == TOY_ACE_V1
    assert report.ace_v2 == TOY_ACE_V2
    assert report.mac_cost == TOY_ACE_V1
    assert report.elementwise_cost == 53_952
    assert report.elementwise_share == pytest.approx(53_952 / 81_600)
    assert report.params == 60
    assert report.op_totals == {
        "mac": 27_648,
        "mul": 49_152,
        "add": 816,
        "round": 1_536,
        "compare": 1_632,
        "shift": 816,
    }
    assert report.elementwise_elements == {"quantnorm": 48, "requantize": 48}
    rows = {(row.layer, row.op): row for row in report.breakdown}
    assert set(rows) == {
        ("conv", "mac"),
        ("norm", "shift"),
        ("norm", "add"),
        ("norm", "compare"),
        ("rescale", "mul"),
        ("rescale", "round"),
    }
    assert (rows["norm", "compare"].count, rows["norm", "compare"].bits_a) == (96, 17)
    assert rows["rescale", "mul"].float_operands and rows["rescale", "mul"].cost == 49_152


def test_float_bits_16_counts_float_operands_at_16_bits() -> None:
    report = toy_report(cost_table=CostTable.default(float_bits=16))
    assert report.ace_v2 == TOY_ACE_V2_FP16
    assert report.ace_v1 == TOY_ACE_V1  # ACE v1 ignores the cost table
    mul = next(row for row in report.breakdown if row.op == "mul")
    assert (mul.bits_a, mul.bits_b, mul.cost) == (16, 16, 12_288)
    assert report.float_bits == 16 and report.cost_table == "ace_v2-fp16"


def test_scaled_table_multiplies_each_kind() -> None:
    data = CostTable.default().to_dict()
    data["ops"]["shift"]["scale"] = 3
    data["ops"]["mac"]["scale"] = 2
    report = toy_report(cost_table=CostTable.from_dict(data))
    # shift 816 -> 2,448 (+1,632); mac 27,648 -> 55,296 (+27,648)
    assert report.ace_v2 == TOY_ACE_V2 + 2 * 816 + TOY_ACE_V1
    assert report.ace_v1 == TOY_ACE_V1


def test_breakdown_sums_to_totals() -> None:
    for table in (CostTable.default(), CostTable.default(16), _energy_table()):
        report = toy_report(cost_table=table)
        assert sum(row.cost for row in report.breakdown) == report.ace_v2
        assert sum(row.cost for row in report.breakdown if row.op == "mac") == report.mac_cost
        assert sum(row.ace_v1 for row in report.breakdown) == report.ace_v1
        assert sum(row.count for row in report.breakdown if row.op == "mac") == report.macs
        assert sum(layer.params for layer in report.layers) == report.params
        layer_cost = sum(layer.mac_cost + layer.elementwise_cost for layer in report.layers)
        assert layer_cost == pytest.approx(report.ace_v2, rel=1e-12)


# ---- plain torch modules (float handlers) ------------------------------------------------
def float_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def test_float_torch_network_by_hand() -> None:
    # Input (1, 3, 8, 8); everything float: 32-bit operands.
    # conv 3->8, 3x3, pad 1: MACs = 8*8*8 outputs * 27 = 13,824; cost 13,824 * 1024 = 14,155,776
    # BN on 512 elements: mul 512 * 1024 = 524,288 + add 512 * 32 = 16,384
    # ReLU: compare 512 * 32 = 16,384
    # global pool: add 8*64 = 512 terms * 32 = 16,384; mul 8 * 1024 = 8,192
    # Linear 8->10: MACs 80 * 1024 = 81,920; bias add 10 * 32 = 320
    # ACE v2 = 14,155,776 + 524,288 + 16,384 + 16,384 + 16,384 + 8,192 + 81,920 + 320
    #        = 14,819,648;  ACE v1 = (13,824 + 80) * 1024 = 14,237,696
    # params = 216 (conv) + 16 (BN scale, shift) + 90 (linear) = 322
    report = count_ace(float_net(), input_shape=(1, 3, 8, 8))
    assert report.macs == 13_904
    assert report.ace_v1 == 14_237_696
    assert report.ace_v2 == 14_819_648
    assert report.params == 322
    assert report.elementwise_elements == {"batchnorm": 512, "relu": 512, "pool": 8}
    assert [layer.layer for layer in report.layers] == ["0", "1", "2", "3", "4", "5"]


def test_real_weights_are_counted_on_a_meta_copy() -> None:
    model = float_net()
    before = model[0].weight.detach().clone()
    report = count_ace(model, input_shape=(1, 3, 8, 8))
    assert report.ace_v2 == 14_819_648
    assert model[0].weight.device.type == "cpu"
    assert torch.equal(model[0].weight, before)
    assert model.training  # modes restored / untouched


def test_pool_windows_count_only_in_bounds_terms() -> None:
    # AvgPool2d(3, stride 2, pad 1) on 4x4 -> 2x2. Per axis, window 0 covers rows -1..1 (2 in
    # bounds), window 1 rows 1..3 (3): 5 per axis -> 5*5 = 25 adds per channel; 4 muls.
    report = count_ace(nn.AvgPool2d(3, stride=2, padding=1), input_shape=(1, 2, 4, 4))
    ops = {row.op: row.count for row in report.breakdown}
    assert ops == {"add": 2 * 25, "mul": 2 * 4}
    # AdaptiveAvgPool2d(2) on 5x5: bins [0, 3) and [2, 5): 6 per axis -> 36 adds per channel.
    report = count_ace(nn.AdaptiveAvgPool2d(2), input_shape=(1, 2, 5, 5))
    ops = {row.op: row.count for row in report.breakdown}
    assert ops == {"add": 2 * 36, "mul": 2 * 4}


def test_relu6_and_prelu_handlers() -> None:
    model = nn.Sequential(nn.ReLU6(), nn.PReLU(4))
    report = count_ace(model, input_shape=(1, 4, 2, 2))
    # 16 elements: ReLU6 2 compares each (32 bits): 32 * 32 = 1,024;
    # PReLU select 16 * 32 = 512 + slope mul 16 * 1024 = 16,384
    assert report.ace_v2 == 1_024 + 512 + 16_384
    assert report.params == 4
    assert report.elementwise_elements == {"relu": 16, "prelu": 16}


@pytest.mark.parametrize("module_type", sorted(TORCH_HANDLERS, key=lambda t: t.__name__))
def test_every_registered_handler_counts_a_sample(module_type: type[nn.Module]) -> None:
    samples: dict[type, tuple[nn.Module, tuple[int, ...]]] = {
        nn.Conv2d: (nn.Conv2d(2, 4, 3, padding=1), (1, 2, 4, 4)),
        nn.Linear: (nn.Linear(6, 3), (2, 6)),
        nn.BatchNorm2d: (nn.BatchNorm2d(2), (1, 2, 3, 3)),
        nn.BatchNorm1d: (nn.BatchNorm1d(5), (2, 5)),
        nn.ReLU: (nn.ReLU(), (1, 2, 3, 3)),
        nn.ReLU6: (nn.ReLU6(), (1, 2, 3, 3)),
        nn.PReLU: (nn.PReLU(), (1, 2, 3, 3)),
        nn.AdaptiveAvgPool2d: (nn.AdaptiveAvgPool2d(1), (1, 2, 3, 3)),
        nn.AvgPool2d: (nn.AvgPool2d(2), (1, 2, 4, 4)),
        nn.Flatten: (nn.Flatten(), (1, 2, 3, 3)),
        nn.Identity: (nn.Identity(), (1, 2, 3, 3)),
        nn.Dropout: (nn.Dropout(0.5), (1, 2, 3, 3)),
    }
    assert module_type in samples, f"add a sample (and a hand count) for {module_type}"
    module, shape = samples[module_type]
    report = count_ace(module, input_shape=shape)
    assert report.params == sum(p.numel() for p in module.parameters()) or isinstance(
        module, nn.BatchNorm2d | nn.BatchNorm1d
    )
    expected = {
        nn.Conv2d: 4 * 16 * 18 * 1024 + 4 * 16 * 32,  # macs + bias adds
        nn.Linear: 2 * 3 * 6 * 1024 + 2 * 3 * 32,
        nn.BatchNorm2d: 18 * (1024 + 32),
        nn.BatchNorm1d: 10 * (1024 + 32),
        nn.ReLU: 18 * 32,
        nn.ReLU6: 2 * 18 * 32,
        nn.PReLU: 18 * (32 + 1024),
        nn.AdaptiveAvgPool2d: 18 * 32 + 2 * 1024,
        nn.AvgPool2d: 32 * 32 + 8 * 1024,
        nn.Flatten: 0,
        nn.Identity: 0,
        nn.Dropout: 0,
    }[module_type]
    assert report.ace_v2 == expected


# ---- strictness ----------------------------------------------------------------------
class Mystery(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def test_unknown_module_raises_naming_type_and_path() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Sequential(nn.ReLU(), Mystery()))
    with pytest.raises(CostModelError, match=r"'1\.1'.*Mystery"):
        count_ace(model, input_shape=(1, 3, 4, 4))


def test_subclass_of_known_torch_module_is_not_trusted() -> None:
    class MyConv(nn.Conv2d):
        pass

    with pytest.raises(CostModelError, match="MyConv"):
        count_ace(nn.Sequential(MyConv(3, 4, 1)), input_shape=(1, 3, 4, 4))


def test_sequential_subclass_with_own_forward_is_not_a_container() -> None:
    class Doubling(nn.Sequential):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 2

    with pytest.raises(CostModelError, match="Doubling"):
        count_ace(Doubling(nn.ReLU()), input_shape=(1, 3, 4, 4))


def test_container_with_its_own_parameters_is_refused() -> None:
    class Scaled(CostContainer, nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.ones(1))
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(x) * self.gain

    with pytest.raises(CostModelError, match="gain"):
        count_ace(Scaled(), input_shape=(1, 3, 4, 4))


def test_module_that_never_ran() -> None:
    class Skips(CostContainer, nn.Module):
        def __init__(self, unused: nn.Module) -> None:
            super().__init__()
            self.act = nn.ReLU()
            self.unused = unused

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(x)

    # a parameter-free module that did not run costs nothing
    report = count_ace(Skips(nn.Dropout()), input_shape=(1, 1, 2, 2))
    assert report.ace_v2 == 4 * 32
    # one with parameters would be an undercount
    with pytest.raises(CostModelError, match="never ran"):
        count_ace(Skips(nn.Conv2d(1, 1, 1)), input_shape=(1, 1, 2, 2))


def test_module_called_twice_is_counted_twice_with_params_once() -> None:
    class Twice(CostContainer, nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.conv(x))

    report = count_ace(Twice(), input_shape=(1, 2, 3, 3))
    assert report.macs == 2 * (18 * 2)
    assert report.params == 4


def test_module_registered_under_two_names_is_counted_per_call() -> None:
    shared = nn.ReLU()
    model = nn.Sequential(shared, nn.Sequential(shared))
    report = count_ace(model, input_shape=(1, 1, 2, 2))
    assert report.ace_v2 == 2 * 4 * 32  # two calls of 4 compares, not four


def test_declaring_root_and_missing_input_shape() -> None:
    with torch.device("meta"):
        conv = ToyQuantConv(2, 3)
    report = count_ace(conv, input_shape=TOY_INPUT)
    assert report.ace_v1 == TOY_ACE_V1
    assert report.breakdown[0].layer == ROOT_LAYER
    with pytest.raises(CostModelError, match="input_shape"):
        count_ace(conv)


def test_inference_ops_must_return_a_declaration() -> None:
    class Wrong(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

        def inference_ops(self, input_shape, output_shape):
            return [Op("add", 1, 8, 8)]

    with pytest.raises(CostModelError, match="CostDeclaration"):
        count_ace(Wrong(), input_shape=(1, 1, 2, 2))


def test_failing_forward_is_a_cost_model_error() -> None:
    with pytest.raises(CostModelError, match="forward pass"):
        count_ace(nn.Linear(3, 2), input_shape=(1, 5))


# ---- the report ------------------------------------------------------------------------
def test_report_json_dataframe_and_table() -> None:
    report = toy_report()
    data = json.loads(json.dumps(report.to_dict()))
    for key in (
        "ace_v1",
        "ace_v2",
        "macs",
        "params",
        "elementwise_share",
        "elementwise_elements",
        "breakdown",
    ):
        assert key in data
    assert data["ace_v2"] == TOY_ACE_V2
    assert {"layer", "op", "count", "bits_a", "bits_b", "cost"} <= set(data["breakdown"][0])
    frame = report.to_dataframe()
    assert len(frame) == len(report.breakdown)
    assert int(frame["cost"].sum()) == TOY_ACE_V2
    table = report.to_table()
    assert "81,600" in table and "27,648" in table
    assert "norm (ToyQuantNormPow2)" in table


# ---- cost tables ---------------------------------------------------------------------
def _energy_table() -> CostTable:
    return CostTable.load(REPO / "configs" / "cost_tables" / "energy_45nm_illustrative.yaml")


def test_default_table_round_trips_through_dict() -> None:
    table = CostTable.default()
    assert CostTable.from_dict(table.to_dict()) == table
    assert table.integral and table.float_bits == 32


def test_load_yaml_and_json(tmp_path: Path) -> None:
    bf16 = CostTable.load(REPO / "configs" / "cost_tables" / "ace_v2_bf16.yaml")
    assert bf16.float_bits == 16
    assert toy_report(cost_table=bf16).ace_v2 == TOY_ACE_V2_FP16
    path = tmp_path / "double.json"
    data = CostTable.default().to_dict()
    del data["name"]
    for price in data["ops"].values():
        price["scale"] = 2
    path.write_text(json.dumps(data))
    table = CostTable.load(path)
    assert table.name == "double"
    assert toy_report(cost_table=table).ace_v2 == 2 * TOY_ACE_V2


def test_energy_table_prices_float_ops_separately() -> None:
    table = _energy_table()
    assert table.unit == "pJ" and not table.integral
    report = toy_report(cost_table=table)
    # mac 864 * 32 * 0.0032; mul 48 * 1024 * 0.0036 (float); round 48 * 32 * 0.028 (float);
    # shift 48 * 17 * 0.0015; add 48 * 17 * 0.0031; compare 96 * 17 * 0.0031
    expected = (
        864 * 32 * 0.0032
        + 48 * 1024 * 0.0036
        + 48 * 32 * 0.028
        + 48 * 17 * 0.0015
        + 48 * 17 * 0.0031
        + 96 * 17 * 0.0031
    )
    assert report.ace_v2 == pytest.approx(expected, rel=1e-12)
    assert report.ace_v1 == TOY_ACE_V1


def test_with_float_bits_switch() -> None:
    assert CostTable.default().with_float_bits(16) == CostTable.default(16)
    assert CostTable.default(16).with_float_bits(32) == CostTable.default()
    assert _energy_table().with_float_bits(16).name == "energy-45nm-illustrative@fp16"


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
    data["float_bits"] = 8
    path = tmp_path / "fp8.yaml"
    path.write_text(json.dumps(data))
    with pytest.raises(CostModelError, match="float_bits"):
        CostTable.load(path)
    with pytest.raises(CostModelError, match="no such file"):
        CostTable.load(tmp_path / "absent.yaml")


def test_shape_preserving_modules_skip_their_arithmetic_in_the_shape_pass() -> None:
    class Exploding(ShapePreserving, ToyFloatRescale):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("the shape pass must not run this arithmetic")

    class Net(CostContainer, nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = ToyQuantConv(2, 3)
            self.norm = ToyQuantNormPow2(17)
            self.rescale = Exploding()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.rescale(self.norm(self.conv(x)))

    with torch.device("meta"):
        model = Net()
    assert count_ace(model, input_shape=TOY_INPUT).ace_v2 == TOY_ACE_V2
    with pytest.raises(RuntimeError):  # the patch is undone afterwards
        model.rescale(torch.empty(TOY_INPUT, device="meta"))
